"""End to end: `xx` with the real agent CLIs, and the README's quick start on a fresh HOME.

`xx <agent>np -p PROMPT` must reach the fake provider through the gateway and print the answer;
`xx <agent>nd` must leave the gateway untouched. The only thing that differs from a user's machine is
the xx config in the temporary HOME: the gateway `xx` starts listens on a free port and sends provider
hosts to the fake provider (tests/xx_rig.write_config).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from agent_setups import prepare
from harness import AGENT_BIN, ROOT, FakeProcess, agent_binary, agent_search_path, stop_group
from xx_rig import alive, gateway_pid, stop_gateway, stop_processes_with_home, write_config

from launcher.config import parse_config

ANSWER = "pong from the fake upstream"
pytestmark = pytest.mark.e2e


def doc_block(marker: str, doc: str) -> str:
    """The code block between `<!-- marker` and `<!-- /marker -->` of a document (README.md, docs/...)."""
    text = (ROOT / doc).read_text()
    block = text.split(f"<!-- {marker}", 1)[1].split("-->", 1)[1].split(f"<!-- /{marker} -->")[0]
    return block.split("```", 2)[1].split("\n", 1)[1]


def test_the_docs_xx_config_example_is_valid():
    config = parse_config(doc_block("xx-config", "docs/xx.md"), "docs/xx.md")
    assert config.profiles["3"].args_for("claude") == ["--effort", "high"]
    assert config.profiles["7"].model == "ollama:qwen3:4b"


def test_readme_quick_start_on_a_fresh_home(tmp_path, fake, pki):
    agent_binary("opencode", "OpenCode")
    home = tmp_path / "home"
    home.mkdir()
    config = write_config(home, fake.port, pki.ca_cert)
    lines = [line.split("#", 1)[0].strip() for line in doc_block("quick-start", "README.md").splitlines()]
    lines = [line for line in lines if line]
    assert lines[-2:] == ["xx cip --dry-run", "xx onp -p hi"]
    env = {"PATH": f"{AGENT_BIN}:{os.environ['PATH']}", "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb",
           "OPENROUTER_API_KEY": "sk-or-v1-quick-start",
           # OpenCode's model catalog lives on models.opencode.ai, which this machine cannot reach
           "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1"}
    before = len(fake.entries())
    try:
        # a new user's interactive shell expands aliases; bash -c needs to be told
        script = "\n".join(["shopt -s expand_aliases", "set -e", *lines])
        result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "the gateway answers on" in result.stdout
        written = (home / ".bashrc").read_text()
        assert written.count("alias ccc='xx ccp'") == 1
        # `cc` is the C compiler where one is installed: left out, and said so
        compiler = shutil.which("cc", path=env["PATH"])
        assert ("alias cc='xx cip'" in written) is (compiler is None)
        assert (f"a command on PATH ({compiler})" in result.stderr) is (compiler is not None)
        assert "run  claude --dangerously-skip-permissions" in result.stdout
        assert ANSWER in result.stdout
        turns = [e for e in fake.entries()[before:] if e["path"] == "/api/v1/chat/completions"]
        assert turns and all(e["headers"]["authorization"] == "Bearer sk-or-v1-quick-start" for e in turns)
        assert all("x-clutch-flow" in e["headers"] for e in turns)
        seen = httpx.get(f"http://{config['gateway']}/requests", timeout=5, trust_env=False).json()["requests"]
        assert {e["launch"] for e in seen} == {"onp"} and {e["agent"] for e in seen} == {"opencode"}
    finally:
        pid = gateway_pid(home)
        stop_gateway(home)
    assert pid is not None and not alive(pid)


# ---- Codex's TUI and its background daemon ----

def codex_daemons(home) -> list[int]:
    """PIDs of `codex app-server` processes from this HOME's ~/.codex (the daemon Codex's TUI leaves running)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].startswith(str(home).encode()) and b"app-server" in cmdline:
            found.append(int(entry))
    return found


def run_in_a_terminal(argv, env, cwd, seconds: float, until=lambda: False) -> None:
    """Run an interactive program in a pseudo-terminal for `seconds` (or until `until()`), then stop its
    process group."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(argv, env=env, cwd=str(cwd), stdin=secondary, stdout=secondary, stderr=secondary,
                               start_new_session=True)
    os.close(secondary)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and process.poll() is None and not until():
            try:  # keep the terminal drained, as a terminal emulator would
                if select.select([primary], [], [], 0.2)[0]:
                    os.read(primary, 65536)
            except OSError:
                break
    finally:
        stop_group(process)
        os.close(primary)


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_codex_interactive_launch_leaves_no_daemon(tmp_path, gateway):
    codex = agent_binary("codex", "Codex CLI")
    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    env = {"PATH": f"{AGENT_BIN}:{os.environ['PATH']}", "LANG": "C.UTF-8", "TERM": "xterm",
           "OPENAI_API_KEY": "sk-codex-daemon-test", "PYTHONPATH": str(ROOT)}

    # control: the bare TUI starts a daemon that outlives it (so this test can see one)
    bare_home = tmp_path / "bare"
    bare_home.mkdir()
    started = time.monotonic()
    try:
        for _ in range(2):  # a fresh install's first TUI start can end before its daemon is up; once more then
            run_in_a_terminal([str(codex)], {**env, "HOME": str(bare_home)}, work, 60,
                              until=lambda: bool(codex_daemons(bare_home)))
            left = codex_daemons(bare_home)
            if left:
                break
        needed = time.monotonic() - started
        assert left, "the bare Codex TUI left no daemon: the control failed, the test below would prove nothing"
    finally:
        kill_all(codex_daemons(bare_home))

    home = tmp_path / "home"
    (home / ".xx").mkdir(parents=True)
    (home / ".xx" / "config.json").write_text(json.dumps({"gateway": f"127.0.0.1:{gateway.port}",
                                                         "auto_start": False}))
    try:
        run_in_a_terminal([sys.executable, "-m", "launcher.xx", "xip"], {**env, "HOME": str(home)}, work,
                          max(10.0, 2 * needed))
        assert codex_daemons(home) == []
        assert (home / ".codex").exists()  # Codex did run under this HOME
    finally:
        kill_all(codex_daemons(home))


# ---- every installable agent through `xx <agent>np` and `xx <agent>nd` ----

AGENT_LETTER = {"claude": "c", "codex": "x", "opencode": "o", "qwen": "q", "pi": "p", "hermes": "h", "openclaw": "w"}


PROMPT = "say hi"


def home_for_gateway(tmp_path, gateway_port: int, auto_start: bool = False) -> Path:
    home = tmp_path / "home"
    (home / ".xx").mkdir(parents=True, exist_ok=True)
    (home / ".xx" / "config.json").write_text(json.dumps({"gateway": f"127.0.0.1:{gateway_port}",
                                                         "auto_start": auto_start}))
    return home


def run_xx_launch(agent: str, code: str, home: Path, work: Path, setup, *agent_args: str,
                  extra_env: dict | None = None, timeout: float = 180,
                  must_finish: bool = True) -> subprocess.CompletedProcess | None:
    """`xx CODE -p PROMPT -- <the setup's provider/model flags> AGENT_ARGS` in a fresh HOME, as a user
    runs it. `must_finish=False`: give up after `timeout` without failing (and keep no output: a
    worker that escapes the process group would hold pipes open). Whatever the agent left running
    is stopped by PID afterwards."""
    agent_binary(agent, agent)
    env = {"PATH": f"{agent_search_path(agent)}:{AGENT_BIN}", "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb",
           "PYTHONPATH": str(ROOT), **setup.env, **(extra_env or {})}
    output = subprocess.PIPE if must_finish else subprocess.DEVNULL
    process = subprocess.Popen([sys.executable, "-m", "launcher.xx", code, "-p", PROMPT, "--", *setup.args,
                                *agent_args], env=env, cwd=work, stdin=subprocess.DEVNULL, stdout=output,
                               stderr=output, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if must_finish:
            stop_group(process)
            pytest.fail(f"xx {code} did not finish within {timeout} s\n{(process.communicate()[1] or '')[-3000:]}")
        return None
    finally:
        stop_group(process)
        stop_processes_with_home(home)
        process.wait(10)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def journal_after(gateway, seq: int) -> list[dict]:
    return httpx.get(f"http://127.0.0.1:{gateway.port}/requests?after={seq}", timeout=5,
                     trust_env=False).json()["requests"]


def journal_mark(gateway) -> int:
    return journal_page(gateway)["next"]


def journal_page(gateway) -> dict:
    return httpx.get(f"http://127.0.0.1:{gateway.port}/requests?after=0", timeout=5, trust_env=False).json()


@pytest.mark.parametrize("agent", list(AGENT_LETTER))
def test_xx_np_reaches_the_fake_through_the_gateway(agent, gateway, fake, tmp_path):
    code = f"{AGENT_LETTER[agent]}np"
    home = home_for_gateway(tmp_path, gateway.port)
    setup = prepare(agent, home, tmp_path / "work")
    seq, before = journal_mark(gateway), len(fake.entries())
    result = run_xx_launch(agent, code, home, tmp_path / "work", setup)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ANSWER in result.stdout
    calls = [e for e in fake.entries()[before:] if setup.is_llm_call(e)]
    assert calls, f"no LLM call of {agent} reached the fake"
    for entry in calls:  # through Clutch's engine, with the agent's own key
        assert "x-clutch-flow" in entry["headers"] and entry["status"] == 200
        assert setup.carries_own_key(entry)
    seen = [e for e in journal_after(gateway, seq) if e["launch"] == code]
    assert seen and {e["agent"] for e in seen} == {agent}
    assert len(seen) == len(calls)


def test_xx_qwen_coder_model_is_aliased_by_the_default_rules(gateway, fake, tmp_path):
    """`coder-model` is Qwen Code's name for its own OAuth service's model (DEFAULT_QWEN_MODEL in its
    cli.js), which it also falls back to where no model is set; a settings.json from a Qwen OAuth login
    carries it. No other provider knows it: the default rules make it a real coder model."""
    home = home_for_gateway(tmp_path, gateway.port)
    setup = prepare("qwen", home, tmp_path / "work")
    without_model = dataclasses.replace(setup, env={k: v for k, v in setup.env.items() if k != "OPENAI_MODEL"})
    seq = journal_mark(gateway)
    result = run_xx_launch("qwen", "qnp", home, tmp_path / "work", without_model, "-m", "coder-model")
    assert result.returncode == 0, result.stderr[-3000:]
    assert ANSWER in result.stdout
    seen = [e for e in journal_after(gateway, seq) if e["launch"] == "qnp"]
    assert seen and [(e["model"], e["rule"], e["served_by"]) for e in seen] == [
        ("coder-model", "alias:coder-model", "openrouter:qwen/qwen3-coder")] * len(seen)


@pytest.fixture(scope="module")
def plain_fake(tmp_path_factory):
    """The fake provider on plain HTTP: what a direct launch can reach with a base URL and no CA."""
    process = FakeProcess(tmp_path_factory.mktemp("plain-fake"), None)
    yield process
    process.stop()


# route d: the agent talks to the provider itself; base URLs stand in for the provider's real address
DIRECT = {
    "claude": lambda port: ({"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}"}, ()),
    "qwen": lambda port: ({"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/api/v1"}, ()),
    # a provider of its own: the fake has no Responses WebSocket, and Codex tries that first
    "codex": lambda port: ({}, ("-c", f'model_providers.direct={{name="direct",base_url="http://127.0.0.1:{port}/v1",'
                                      f'env_key="CODEX_API_KEY",wire_api="responses",supports_websockets=false}}',
                                "-c", "model_provider=direct")),
}


@pytest.mark.parametrize("agent", list(AGENT_LETTER))
def test_xx_nd_leaves_the_gateway_untouched(agent, gateway, fake, plain_fake, tmp_path):
    """Route d: no gateway (none is started, though auto_start is on), and the user's own proxy
    variables, aimed at the gateway here, are removed: the gateway's journal sees nothing. Claude Code,
    Qwen Code and Codex are given the plain-HTTP fake as their provider and must answer from it; the
    others try the real provider, unreachable here, and are stopped after 15 s."""
    code = f"{AGENT_LETTER[agent]}nd"
    home = home_for_gateway(tmp_path, gateway.port, auto_start=True)
    setup = prepare(agent, home, tmp_path / "work")
    env, args = DIRECT[agent](plain_fake.port) if agent in DIRECT else ({}, ())
    stale = gateway.proxy_url("xx-stale")
    seq, before, plain_before = journal_mark(gateway), len(fake.entries()), len(plain_fake.entries())
    result = run_xx_launch(agent, code, home, tmp_path / "work", setup, *args, timeout=60 if agent in DIRECT else 15,
                           extra_env={**env, "HTTPS_PROXY": stale, "https_proxy": stale},
                           must_finish=agent in DIRECT)
    assert journal_after(gateway, seq) == []  # the gateway saw nothing of it
    assert not [e for e in fake.entries()[before:] if "x-clutch-flow" in e["headers"]]
    assert not (home / ".xx" / "gateway.pid").exists()  # and xx started none
    if agent in DIRECT:
        assert result.returncode == 0, result.stderr[-3000:]
        assert ANSWER in result.stdout
        direct = plain_fake.entries()[plain_before:]
        assert direct and all("x-clutch-flow" not in e["headers"] for e in direct)


# ---- launch hygiene with the real agents (issue 14, point 10) ----

def real_env(home: Path, **more: str) -> dict[str, str]:
    return {"PATH": f"{AGENT_BIN}:{os.environ['PATH']}", "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb",
            "PYTHONPATH": str(ROOT), **more}


def run_real(env: dict[str, str], *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), env=env, cwd=env["HOME"], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_claude_and_codex_diagnostics_say_xx_turned_their_updaters_off(xx_home):
    """Each agent's own diagnostics, asked through `xx <agent>i<route> -- doctor`: Claude Code's on the
    proxy route (through the gateway xx starts) and the direct one, Codex's on the direct one. The
    controls are the bare binaries under the same HOME."""
    claude, codex = agent_binary("claude", "Claude Code"), agent_binary("codex", "Codex CLI")
    home, _ = xx_home
    env = real_env(home, ANTHROPIC_API_KEY="sk-ant-api03-e2e-updates")
    xx = [sys.executable, "-m", "launcher.xx"]
    bare = run_real(env, str(claude), "doctor")
    assert bare.returncode == 0, bare.stderr
    assert "Auto-updates: enabled" in bare.stdout  # the control: on unless told otherwise
    for code in ("cid", "cip"):
        result = run_real(env, *xx, code, "--", "doctor")
        assert result.returncode == 0, result.stderr
        assert "Auto-updates: disabled (set by env: DISABLE_AUTOUPDATER)" in result.stdout, (code, result.stdout)
    assert gateway_pid(home) is not None  # cip ran through the gateway

    bare = run_real(env, str(codex), "doctor")
    assert "startup update check     true" in bare.stdout, bare.stdout[-2000:]
    result = run_real(env, *xx, "xid", "--", "doctor")
    assert "startup update check     false" in result.stdout, result.stdout[-2000:]


def test_claude_tui_never_tries_to_update_itself_under_xx(xx_home, tmp_path):
    """The updater itself: Claude Code's interactive TUI, installed by npm, first asks npm for its
    latest version (`npm view @anthropic-ai/claude-code@latest version`), then `npm install -g`s it:
    that is how it landed in the system's global npm folder. An `npm` first on PATH records every call
    and fails it, so nothing is ever installed (a real one did install it, seen while writing this
    test). The control is the user's own DISABLE_AUTOUPDATER=0, which xx leaves alone: there Claude
    Code asks npm; under plain `xx cip` it must not, for twice as long as the control needed."""
    agent_binary("claude", "Claude Code")
    home, _ = xx_home
    key = "sk-ant-api03-e2e-tui-update-probe"
    (home / ".claude.json").write_text(json.dumps({  # no onboarding, no "use this API key?" question
        "hasCompletedOnboarding": True, "theme": "dark",
        "customApiKeyResponses": {"approved": [key[-20:]], "rejected": []},
        "projects": {str(home): {"hasTrustDialogAccepted": True}}}))
    probe = tmp_path / "probe"
    probe.mkdir()
    calls = tmp_path / "npm-calls"
    (probe / "npm").write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexit 1\n')
    (probe / "npm").chmod(0o755)
    env = real_env(home, ANTHROPIC_API_KEY=key, TERM="xterm", PATH=f"{probe}:{AGENT_BIN}:{os.environ['PATH']}",
                   npm_config_prefix=str(tmp_path / "npm-prefix"))  # and a real npm would install there
    xx = [sys.executable, "-m", "launcher.xx", "cip", "--no-yolo"]
    started = time.monotonic()
    run_in_a_terminal(xx, {**env, "DISABLE_AUTOUPDATER": "0"}, home, 120, until=calls.exists)
    needed = time.monotonic() - started
    assert calls.exists(), "the control asked npm nothing: this test would prove nothing"
    assert "view @anthropic-ai/claude-code@latest version" in calls.read_text()
    calls.unlink()
    run_in_a_terminal(xx, env, home, max(15.0, 2 * needed), until=calls.exists)
    assert not calls.exists(), calls.read_text()
    assert not (tmp_path / "npm-prefix").exists()


def test_claude_sent_away_without_a_key(xx_home, fake):
    """No ANTHROPIC_API_KEY and no login: a launch pinned to another provider starts (xx's
    placeholder) and answers from it, the gateway sending the provider's key; a launch that sends
    only some requests away is told why Claude Code stops, before it does."""
    agent_binary("claude", "Claude Code")
    home, _ = xx_home
    env = real_env(home, OPENROUTER_API_KEY="sk-or-v1-e2e-claude-away")
    # first, with claude-code-proxy's BIG_MODEL, which the gateway xx starts here gets too: opus
    # requests go to OpenRouter, the rest stay on Anthropic
    some = run_real({**env, "BIG_MODEL": "openrouter:moonshotai/kimi-k2.6"}, sys.executable, "-m", "launcher.xx",
                    "cnp", "-p", "say hi")
    assert some.returncode != 0 and "Not logged in · Please run /login" in some.stdout  # Claude Code's refusal
    assert ("xx: Claude Code has neither ANTHROPIC_API_KEY nor ANTHROPIC_AUTH_TOKEN, and some of its requests go to "
            "other providers (tiers.big -> openrouter:moonshotai/kimi-k2.6; rules: the gateway's rules") in some.stderr

    before = len(fake.entries())
    result = run_real(env, sys.executable, "-m", "launcher.xx", "cnpd", "-p", "say hi")
    assert result.returncode == 0, result.stderr[-3000:]
    assert ANSWER in result.stdout
    assert "xx: every request of this launch leaves Anthropic (launch_tiers.d -> " in result.stderr
    turns = [e for e in fake.entries()[before:] if e["method"] == "POST" and e["host"] == "openrouter.ai"]
    assert turns and all(e["headers"]["authorization"] == "Bearer sk-or-v1-e2e-claude-away" for e in turns)
    assert all(e["model"] == "deepseek/deepseek-v4-flash" for e in turns)
