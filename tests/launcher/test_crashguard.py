"""The crash guard: `xx ... --tmux` runs the agent in a named tmux session and reattaches to it.

Driven for real: a private tmux server (TMUX_TMPDIR in the test's folder), `xx` in a pseudo-terminal
as in a user's shell, a fake agent that stays running; the tmux server is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import stop as stop_process
from xx_rig import fake_agents, recorded, xx_env

from launcher import crashguard

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


def wait_until(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)


def tmux(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["tmux", *args], env=env, capture_output=True, text=True, timeout=10)


def xx_in_a_terminal(env: dict, cwd: Path, *args: str) -> subprocess.Popen:
    primary, secondary = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "launcher.xx", *args], env=env, cwd=str(cwd),
                               stdin=secondary, stdout=secondary, stderr=secondary, start_new_session=True)
    os.close(secondary)
    process.terminal = primary  # the test's end of the terminal, closed with the process
    return process


def finish(process: subprocess.Popen) -> int:
    try:
        return process.wait(15)
    finally:
        stop_process(process)
        os.close(process.terminal)


@pytest.fixture
def tmux_env(tmp_path):
    home = tmp_path / "home"
    (home / ".xx").mkdir(parents=True)
    (home / ".xx" / "config.json").write_text('{"gateway": "127.0.0.1:9", "auto_start": false}')
    sockets = tmp_path / "tmux"
    sockets.mkdir()
    record = tmp_path / "record"
    env = xx_env(home, fake_agents(tmp_path / "bin"), XX_RECORD=str(record), XX_FAKE_SLEEP="60",
                 TMUX_TMPDIR=str(sockets), TERM="xterm", MY_SETTING="kept")
    yield env, record
    server = tmux(env, "display-message", "-p", "#{pid}")
    if server.returncode == 0 and server.stdout.strip().isdigit():
        os.kill(int(server.stdout.strip()), signal.SIGTERM)


def test_runs_in_a_named_session_and_reattaches(tmux_env, tmp_path):
    env, record = tmux_env
    work = tmp_path / "my project"
    work.mkdir()
    name = "xx-claude-my-project"
    first = xx_in_a_terminal(env, work, "cid", "--tmux")
    wait_until(lambda: record.with_suffix(".starts").exists())
    assert tmux(env, "has-session", "-t", f"={name}").returncode == 0
    argv, seen = recorded(record)
    assert argv == ["--dangerously-skip-permissions"]
    assert seen["MY_SETTING"] == "kept" and "HTTPS_PROXY" not in seen
    assert record.with_suffix(".cwd").read_text().strip() == str(work)  # the pane starts in the launch's folder
    assert not list((Path(env["HOME"]) / ".xx" / "run").iterdir())  # the spec file is read and deleted

    wait_until(lambda: tmux(env, "list-clients", "-t", f"={name}").stdout.strip() != "")
    assert tmux(env, "detach-client", "-s", f"={name}").returncode == 0
    assert finish(first) == 0  # the terminal is gone, the agent keeps running
    assert tmux(env, "has-session", "-t", f"={name}").returncode == 0

    second = xx_in_a_terminal(env, work, "cid", "--tmux")
    wait_until(lambda: tmux(env, "list-clients", "-t", f"={name}").stdout.strip() != "")
    tmux(env, "detach-client", "-s", f"={name}")
    assert finish(second) == 0
    assert record.with_suffix(".starts").read_text().count("started") == 1  # attached, not started again


def test_dry_run_names_the_session(tmux_env, tmp_path):
    env, _ = tmux_env
    result = subprocess.run([sys.executable, "-m", "launcher.xx", "hsd", "-s", "abc.1", "--tmux", "--dry-run"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "tmux xx-hermes-abc-1 (created, or attached to when it already runs)" in result.stdout


def test_runner_keeps_a_failure_on_screen_and_deletes_the_spec(tmp_path):
    spec = crashguard.write_spec(tmp_path / "run", ["sh", "-c", "echo boom; exit 3"], {"PATH": os.environ["PATH"]})
    assert oct(spec.stat().st_mode & 0o777) == "0o600"
    assert json.loads(spec.read_text())["argv"][0] == "sh"
    result = subprocess.run([sys.executable, "-m", "launcher.crashguard", str(spec)], input="\n",
                            capture_output=True, text=True, timeout=20,
                            env={**os.environ, "PYTHONPATH": str(crashguard.ROOT)})
    assert result.returncode == 3
    assert "boom" in result.stdout and "exited with code 3. Press Enter" in result.stdout
    assert not spec.exists()


def test_session_names():
    assert crashguard.session_name("claude", Path("/home/me/my.project")) == "xx-claude-my-project"
    assert crashguard.session_name("codex", Path("/"), "019a:b") == "xx-codex-019a-b"
