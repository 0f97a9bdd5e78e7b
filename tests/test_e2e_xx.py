"""End to end: `xx` with the real agent CLIs, and the README's quick start on a fresh HOME.

`xx <agent>np -p PROMPT` must reach the fake provider through the gateway and print the answer;
`xx <agent>nd` must leave the gateway untouched. The only thing that differs from a user's machine is
the xx config in the temporary HOME: the gateway `xx` starts listens on a free port and sends provider
hosts to the fake provider (tests/xx_rig.write_config).
"""

from __future__ import annotations

import json
import os
import subprocess

import httpx
import pytest
from harness import AGENT_BIN, ROOT, agent_binary
from xx_rig import gateway_pid, stop_gateway, write_config

from launcher.config import parse_config

ANSWER = "pong from the fake upstream"
pytestmark = pytest.mark.e2e


def readme_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split(f"<!-- {marker}", 1)[1].split("-->", 1)[1].split(f"<!-- /{marker} -->")[0]
    return block.split("```", 2)[1].split("\n", 1)[1]


def test_readme_config_example_is_valid():
    config = parse_config(readme_block("xx-config"), "README.md")
    assert config.profiles["3"].args_for("claude") == ["--effort", "high"]
    assert config.profiles["7"].model == "ollama:qwen3:4b"


def test_readme_quick_start_on_a_fresh_home(tmp_path, fake, pki):
    agent_binary("opencode", "OpenCode")
    home = tmp_path / "home"
    home.mkdir()
    config = write_config(home, fake.port, pki.ca_cert)
    lines = [line.split("#", 1)[0].strip() for line in readme_block("quick-start").splitlines()]
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
        assert (home / ".bashrc").read_text().count("alias cc='xx cip'") == 1
        assert "run  claude --dangerously-skip-permissions" in result.stdout
        assert ANSWER in result.stdout
        turns = [e for e in fake.entries()[before:] if e["path"] == "/api/v1/chat/completions"]
        assert turns and all(e["headers"]["authorization"] == "Bearer sk-or-v1-quick-start" for e in turns)
        assert all("x-clutch-flow" in e["headers"] for e in turns)
        seen = httpx.get(f"http://{config['gateway']}/requests", timeout=5, trust_env=False).json()["requests"]
        assert {e["launch"] for e in seen} == {"onp"} and {e["agent"] for e in seen} == {"opencode"}
    finally:
        stop_gateway(home)
    assert gateway_pid(home) is not None  # the pid file xx wrote; the process is gone


# ---- Codex's TUI and its background daemon ----

def codex_daemons(home) -> list[int]:
    """PIDs of `codex app-server` processes started from this HOME's ~/.codex (the daemon research §6.3 found)."""
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
    import pty
    import signal
    import time
    primary, secondary = pty.openpty()
    process = subprocess.Popen(argv, env=env, cwd=str(cwd), stdin=secondary, stdout=secondary, stderr=secondary,
                               start_new_session=True)
    os.close(secondary)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and process.poll() is None and not until():
            try:  # keep the terminal drained, as a terminal emulator would
                os.read(primary, 65536) if __import__("select").select([primary], [], [], 0.2)[0] else None
            except OSError:
                break
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        os.close(primary)


def kill_all(pids: list[int]) -> None:
    import signal
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_codex_interactive_launch_leaves_no_daemon(tmp_path, gateway):
    import time
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
        run_in_a_terminal([str(codex)], {**env, "HOME": str(bare_home)}, work, 30,
                          until=lambda: bool(codex_daemons(bare_home)))
        left = codex_daemons(bare_home)
        needed = time.monotonic() - started
        assert left, "the bare Codex TUI left no daemon: the control failed, the test below would prove nothing"
    finally:
        kill_all(codex_daemons(bare_home))

    home = tmp_path / "home"
    (home / ".xx").mkdir(parents=True)
    (home / ".xx" / "config.json").write_text(json.dumps({"gateway": f"127.0.0.1:{gateway.port}",
                                                         "auto_start": False}))
    try:
        run_in_a_terminal([os.sys.executable, "-m", "launcher.xx", "xip"], {**env, "HOME": str(home)}, work,
                          max(10.0, 2 * needed))
        assert codex_daemons(home) == []
        assert (home / ".codex").exists()  # Codex did run under this HOME
    finally:
        kill_all(codex_daemons(home))
