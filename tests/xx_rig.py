"""What the `xx` tests share: a temporary HOME with an xx config aimed at the fake provider, fake agent
executables that record their argv and environment (and can make a real request through the proxy
with curl), and running `xx` itself as a user would, in a subprocess.

The background gateway that `xx` starts is stopped by the PID in its pid file (`stop_gateway`), so no
test leaves one behind.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from harness import PROVIDER_HOSTS, ROOT

from launcher import terminal
from launcher.agents import AGENTS

# A fake agent: records argv and environment (NUL-separated), then, when XX_FAKE_REQUEST names a URL,
# POSTs XX_FAKE_BODY there with curl, which honours the launch's https_proxy and CURL_CA_BUNDLE the
# way the real agents honour HTTPS_PROXY and their CA variables. `auth status` answers as Claude Code
# 2.1.330 does (JSON with loggedIn; exit 1 when not logged in): logged in when XX_FAKE_LOGGED_IN is
# set; each such question is counted in $XX_RECORD.auth.
FAKE_AGENT = """#!/bin/sh
[ "$1" = "--version" ] && { echo "fake $(basename "$0") 1.2.3"; exit 0; }
record="${XX_RECORD:-/dev/null}"
if [ "$1 $2" = "auth status" ]; then
    [ -n "$XX_RECORD" ] && echo asked >> "$XX_RECORD.auth"
    [ -n "$XX_FAKE_LOGGED_IN" ] && { echo '{"loggedIn": true, "authMethod": "claude.ai"}'; exit 0; }
    echo '{"loggedIn": false, "authMethod": "none"}'
    exit 1
fi
for a in "$@"; do printf '%s\\0' "$a"; done > "$record.argv"
env -0 > "$record.env"
pwd > "$record.cwd"
echo started >> "$record.starts"
[ -n "$XX_FAKE_SLEEP" ] && sleep "$XX_FAKE_SLEEP"
if [ -n "$XX_FAKE_REQUEST" ]; then
    set -- -sS --max-time 30 -H 'content-type: application/json'
    [ -n "$ANTHROPIC_API_KEY" ] && set -- "$@" -H "x-api-key: $ANTHROPIC_API_KEY"
    [ -n "$OPENROUTER_API_KEY" ] && set -- "$@" -H "authorization: Bearer $OPENROUTER_API_KEY"
    exec curl "$@" --data "$XX_FAKE_BODY" "$XX_FAKE_REQUEST"
fi
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fake_agents(folder: Path, names: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for spec in AGENTS.values():
        if names is None or spec.name in names:
            path = folder / spec.binary
            path.write_text(FAKE_AGENT)
            path.chmod(0o755)
    return folder


def write_config(home: Path, fake_port: int, upstream_ca: Path, **fields) -> dict:
    """~/.xx/config.json for a gateway on a free port that `xx` starts against the fake provider."""
    gateway_args = ["--set", "clutch_trace_upstream=true", "--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"]
    for host in PROVIDER_HOSTS:
        gateway_args += ["--set", f"clutch_resolve={host}:443=127.0.0.1:{fake_port}"]
    config = {"gateway": f"127.0.0.1:{free_port()}", "confdir": str(home / "certs"),
              "gateway_args": gateway_args, **fields}
    (home / ".xx").mkdir(parents=True, exist_ok=True)
    (home / ".xx" / "config.json").write_text(json.dumps(config, indent=1))
    return config


def xx_env(home: Path, bin_folder: Path | None = None, **more: str) -> dict[str, str]:
    path = f"{bin_folder}:{os.environ['PATH']}" if bin_folder else os.environ["PATH"]
    return {"PATH": path, "HOME": str(home), "LANG": "C.UTF-8", "PYTHONPATH": str(ROOT), **more}


def run_xx(env: dict[str, str], *args: str, timeout: float = 120, cwd: Path | None = None,
           **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher.xx", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=str(cwd or env["HOME"]), **kwargs)


def recorded(record: Path) -> tuple[list[str], dict[str, str]]:
    argv = [a.decode() for a in record.with_suffix(".argv").read_bytes().split(b"\0")[:-1]]
    env = dict(item.split("=", 1) for item in record.with_suffix(".env").read_bytes().decode().split("\0") if item)
    return argv, env


def gateway_pid(home: Path) -> int | None:
    try:
        return int((home / ".xx" / "gateway.pid").read_text())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError, IndexError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop_gateway(home: Path) -> None:
    """Stop a gateway `xx` started under this HOME, by the PID in its pid file."""
    pid = gateway_pid(home)
    if pid is None or not alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def processes_with_home(home: Path) -> list[int]:
    """PIDs of live processes whose environment has HOME=home: what an agent run left behind, even
    when it escaped its process group (OpenClaw's `openclaw-agent` worker starts a session of its own)."""
    wanted = f"HOME={home}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in environ and alive(int(entry)):
            found.append(int(entry))
    return found


def stop_processes_with_home(home: Path) -> None:
    for pid in processes_with_home(home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# What `xx` prints, checked against the terminal's width (launcher/terminal.py)

def fits(text: str, width: int) -> None:
    """Every line of `text` within `width` columns (the ones that are not, in the failure)."""
    long = [line for line in text.splitlines() if len(line) > width]
    assert not long, f"{len(long)} line(s) wider than {width}:\n" + "\n".join(long)


def _groupings(parts: list[str]):
    """Every way to put consecutive parts on consecutive lines."""
    for cuts in itertools.product([False, True], repeat=len(parts) - 1):
        groups, current = [], parts[0]
        for cut, part in zip(cuts, parts[1:], strict=True):
            if cut:
                groups.append(current)
                current = part
            else:
                current += part
        yield [*groups, current]


def shows(text: str, model: str) -> bool:
    """`model` is on a line whole, or wrapped after its `provider:` / `vendor/` onto the next lines at the
    same column (what wrap_model does in a narrow key column)."""
    lines = text.splitlines()
    for groups in _groupings(terminal._model_parts(model)):
        for i, line in enumerate(lines):
            start = line.find(groups[0])
            while start >= 0:
                below = lines[i:i + len(groups)]
                if len(below) == len(groups) and all(
                        row[start:start + len(g)] == g and row[start + len(g):start + len(g) + 1] in ("", " ")
                        for row, g in zip(below, groups, strict=True)):
                    return True
                start = line.find(groups[0], start + 1)
    return False
