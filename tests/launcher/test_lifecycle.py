"""The background gateway `xx` manages: start, status, watch, log, stop, and what goes wrong on the way."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from harness import stop as stop_process
from xx_rig import alive, fits, gateway_pid, run_xx, shows, write_config, xx_env

from launcher import lifecycle
from launcher.tables import WatchLayout, money
from launcher.terminal import shorten_model


def test_start_status_watch_log_stop(xx_home, fake):
    home, config = xx_home
    env = xx_env(home)
    started = run_xx(env, "start")
    assert started.returncode == 0, started.stderr
    pid = gateway_pid(home)
    assert pid and alive(pid)
    assert oct((home / ".xx" / "gateway.pid").stat().st_mode & 0o777) == "0o600"
    assert f"pid {pid}" in started.stdout

    again = run_xx(env, "start")  # already running: nothing new
    assert again.returncode == 0 and gateway_pid(home) == pid

    status = run_xx(env, "status")
    assert status.returncode == 0, status.stderr
    assert f"running on {config['gateway']}, up " in status.stdout and f"{pid}, started by xx" in status.stdout
    assert "rules      " in status.stdout and "Circuit breakers" in status.stdout
    assert max(map(len, status.stdout.splitlines())) <= 80  # not a terminal, no COLUMNS: 80 wide
    raw = json.loads(run_xx(env, "status", "--json").stdout)
    assert raw["pid"] == pid and raw["health"]["status"] == "ok"
    port = config["gateway"].rpartition(":")[2]
    resilience = subprocess.run([sys.executable, "-m", "launcher.gateway", "resilience", "--port", port],
                                env={**env, "COLUMNS": "80"}, capture_output=True, text=True, timeout=60)
    assert resilience.returncode == 0 and "Circuit breakers" in resilience.stdout, resilience.stderr
    fits(resilience.stdout, 80)

    # one LLM request through the gateway, then the live view shows it
    proxy = f"http://xx-qnp.s-w1:tok@{config['gateway']}"
    trusted = ssl.create_default_context(cafile=str(home / "certs" / "clutch-ca-bundle.pem"))
    with httpx.Client(proxy=proxy, verify=trusted, trust_env=False) as client:
        answer = client.post("https://openrouter.ai/api/v1/chat/completions",
                             headers={"authorization": "Bearer sk-or-v1-test"},
                             json={"model": "qwen/qwen3-coder-flash", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200
    tokens = answer.json()["usage"]
    watched = run_xx({**env, "COLUMNS": "160"}, "watch", "--once")  # wide: every column
    assert watched.returncode == 0, watched.stderr
    header, *rows = watched.stdout.splitlines()
    assert header.split()[:4] == ["time", "agent", "launch", "session"]
    line = next(row for row in rows if "qnp" in row)
    assert "qwen" in line and "openrouter:qwen/qwen3-coder-flash" in line and " 200 " in line and "w1" in line
    assert f"{tokens['prompt_tokens']}/{tokens['completion_tokens']}" in line  # as the provider counted them
    assert money(tokens["cost"]) in line
    narrow = run_xx(env, "watch", "--once")  # a pipe without COLUMNS: 80, and a line never wraps
    header, *rows = narrow.stdout.splitlines()
    assert max(map(len, narrow.stdout.splitlines())) <= 80 and header.split()[:2] == ["time", "agent"]
    line = next(row for row in rows if "qwen/qwen3-coder-flash" in row)
    assert " 200 " in line and money(tokens["cost"]) in line

    # the same request in the usage report: a table, JSON and CSV
    table = run_xx(env, "usage", "--by", "agent")
    assert table.returncode == 0, table.stderr
    assert "usage by agent" in table.stdout and "qwen" in table.stdout
    assert max(map(len, table.stdout.splitlines())) <= 80
    report = json.loads(run_xx(env, "usage", "--by", "model", "--json").stdout)
    [row] = report["rows"]
    assert (row["key"], row["requests"], row["input_tokens"]) == \
        ("openrouter:qwen/qwen3-coder-flash", 1, tokens["prompt_tokens"])
    assert report["database"] == raw["health"]["usage_db"]
    csv_lines = run_xx(env, "usage", "--by", "session", "--csv").stdout.splitlines()
    assert csv_lines[0].startswith("key,requests,attempts") and csv_lines[1].startswith("w1,1,1,")
    assert run_xx(env, "usage", "--by", "colour").returncode == 2

    logged = run_xx(env, "log", "--no-follow", "-n", "200")
    assert "HTTP(S) proxy listening" in logged.stdout
    # the start-up banner, once, in the log of a gateway xx started in the background
    assert logged.stdout.count(f"is ready (pid {pid})") == 1
    assert f"  dashboard     http://{config['gateway']}/dashboard" in logged.stdout

    stopped = run_xx(env, "stop")
    assert stopped.returncode == 0 and f"stopped the gateway (pid {pid})" in stopped.stdout
    assert not alive(pid) and gateway_pid(home) is None
    down = run_xx(env, "status")
    assert down.returncode == 1 and "not running" in down.stdout
    assert "no gateway was running" in run_xx(env, "stop").stdout


def test_restart_picks_up_the_new_environment(xx_home):
    home, _ = xx_home
    assert run_xx(xx_env(home), "start").returncode == 0
    first = gateway_pid(home)
    result = run_xx(xx_env(home), "restart")
    assert result.returncode == 0, result.stderr
    assert gateway_pid(home) not in (None, first) and not alive(first)


def test_a_stale_pid_file_is_ignored(xx_home):
    home, _ = xx_home
    (home / ".xx").mkdir(exist_ok=True)
    sleeper = subprocess.Popen(["sleep", "30"])  # alive, but not a Clutch gateway: never to be killed
    try:
        (home / ".xx" / "gateway.pid").write_text(f"{sleeper.pid}\n")
        assert "no gateway was running" in run_xx(xx_env(home), "stop").stdout
        assert sleeper.poll() is None
        assert not (home / ".xx" / "gateway.pid").exists()
    finally:
        stop_process(sleeper)


def test_port_taken_by_another_program(xx_home):
    home, config = xx_home
    port = int(config["gateway"].rpartition(":")[2])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = run_xx(xx_env(home), "start", "--wait", "5")
    assert result.returncode == 1
    assert f"port {port} is taken by another program that is not a Clutch gateway" in result.stderr
    assert gateway_pid(home) is None


def test_a_gateway_that_cannot_start_shows_its_log(xx_home, fake, pki):
    home, config = xx_home
    rules = home / "rules.yaml"
    rules.write_text("version: 1\nproviders:\n  openrouter:\n    base_url: nowhere\n")
    write_config(home, fake.port, pki.ca_cert, gateway=config["gateway"], rules=str(rules))
    result = run_xx(xx_env(home), "start")
    assert result.returncode == 1
    assert "the gateway exited with code" in result.stderr
    assert f"{rules}:4: providers.openrouter.base_url" in result.stderr  # the log's tail names the problem
    assert gateway_pid(home) is None


def test_the_gateway_gets_no_proxy_variables(xx_home):
    home, config = xx_home
    env = xx_env(home, HTTPS_PROXY=f"http://{config['gateway']}", https_proxy="http://elsewhere:1",
                 OPENROUTER_API_KEY="sk-or-v1-kept")
    assert run_xx(env, "start").returncode == 0
    seen = dict(item.split("=", 1) for item in
                open(f"/proc/{gateway_pid(home)}/environ").read().split("\0") if "=" in item)
    assert "HTTPS_PROXY" not in seen and "https_proxy" not in seen
    assert seen["OPENROUTER_API_KEY"] == "sk-or-v1-kept"  # keys stay: rules may send requests elsewhere


def test_follow_reads_new_lines_and_survives_rotation(tmp_path):
    log = tmp_path / "gateway.log"
    log.write_text("one\ntwo\n")
    lines = lifecycle.follow(log, lines=1, poll_s=0.02)
    assert next(lines) == "two"
    got: list[str] = []

    def read(count: int) -> None:
        for line in lines:
            got.append(line)
            if len(got) == count:
                return

    reader = threading.Thread(target=read, args=(3,), daemon=True)
    reader.start()
    time.sleep(0.1)
    with open(log, "a") as file:
        file.write("three\nfour")  # "four" is not a complete line yet
    time.sleep(0.1)
    log.rename(tmp_path / "gateway.log.1")
    log.write_text("after rotation\n")
    reader.join(5)
    assert got == ["three", "four", "after rotation"]
    assert not reader.is_alive()


def test_status_without_any_gateway(tmp_path):
    home = tmp_path / "home"
    (home / ".xx").mkdir(parents=True)
    (home / ".xx" / "config.json").write_text('{"gateway": "127.0.0.1:9"}')
    result = run_xx(xx_env(home), "status")
    assert result.returncode == 1 and "not running on 127.0.0.1:9" in result.stdout
    assert os.listdir(home / ".xx") == ["config.json"]  # status creates nothing


ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# (proxy user name, host, path, model): agents as xx launches them, on OpenRouter's long model ids
TRAFFIC = [
    ("xx-cip.s-4f1c2a", "openrouter.ai", "/api/v1/chat/completions", "anthropic/claude-opus-4.8"),
    ("xx-xnp.s-nightly", "openrouter.ai", "/api/v1/chat/completions", "moonshotai/kimi-k2.6"),
    ("xx-qnp", "openrouter.ai", "/api/v1/chat/completions", "deepseek/deepseek-chat-v3.1:free"),
    ("xx-onp.s-ses_91", "openrouter.ai", "/api/v1/chat/completions", "nvidia/nemotron-3-super-120b-a12b:free"),
    ("xx-hip", "openrouter.ai", "/api/v1/chat/completions", "moonshotai/kimi-k2.6"),
    ("xx-cip.s-4f1c2a", "api.anthropic.com", "/v1/messages", "claude-opus-4-8"),
    ("xx-pnp", "openrouter.ai", "/api/v1/chat/completions", "openrouter/fake-fail-429"),
]


def test_watch_and_usage_fit_80_columns_after_real_traffic(xx_home):
    """A gateway xx started, real requests of five agents through it, then `xx watch` and `xx usage --by
    model` in a pipe: 80 columns, every line within them, every model readable. Their output is saved in
    tests/artifacts/ for a person to look at."""
    home, config = xx_home
    env = xx_env(home)
    assert run_xx(env, "start").returncode == 0
    trusted = ssl.create_default_context(cafile=str(home / "certs" / "clutch-ca-bundle.pem"))
    for user, host, path, model in TRAFFIC:
        with httpx.Client(proxy=f"http://{user}:tok@{config['gateway']}", verify=trusted, trust_env=False,
                          timeout=30) as client:
            if host == "api.anthropic.com":
                client.post(f"https://{host}{path}", headers={"x-api-key": "sk-ant-test", "anthropic-version":
                                                             "2023-06-01"},
                            json={"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]})
            else:
                client.post(f"https://{host}{path}", headers={"authorization": "Bearer sk-or-v1-test"},
                            json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    watched = run_xx({**env, "COLUMNS": "80"}, "watch", "--once")
    used = run_xx({**env, "COLUMNS": "80"}, "usage", "--by", "model")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "xx-watch-80.txt").write_text(watched.stdout)
    (ARTIFACTS / "xx-usage-by-model-80.txt").write_text(used.stdout)
    assert watched.returncode == 0 and used.returncode == 0, watched.stderr + used.stderr
    fits(watched.stdout, 80)
    fits(used.stdout, 80)
    rows = watched.stdout.splitlines()[1:]
    assert len(rows) == len(TRAFFIC)
    layout = WatchLayout.for_width(80)
    served = dict(zip((f.heading for f in layout.fields), layout.widths, strict=True))["served by"]
    for (_, host, _, model), row in zip(TRAFFIC, rows, strict=True):
        target = f"{'anthropic' if host == 'api.anthropic.com' else 'openrouter'}:{model}"
        assert shorten_model(target, served) in row, row  # whole, or shortened the documented way
        if "fail" not in model:
            assert shows(used.stdout, target), used.stdout
    assert "kimi-k2.6" in rows[1] and "deepseek-chat-v3.1:free" in rows[2]
