"""The crash guard: an interactive agent runs inside a named tmux session, and `xx` reattaches to it.

A dropped SSH connection or a closed terminal then leaves the agent running; the same `xx` command
attaches to it again instead of starting a second agent on the same work. The session is named
after the agent and the folder (`xx-claude-myproject`), or the session id for mode s.

The launch's argv and environment reach the tmux pane through a private file (0600, read and deleted
by the runner at once), not through tmux's command line or its global environment: the environment
holds the proxy token and the user's keys, and a tmux server started earlier has an older one.
The runner waits for the agent; when it fails, it keeps the pane open until Enter, so the agent's
last words stay readable.

    python -m launcher.crashguard SPEC_FILE     (what the tmux pane runs)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from addons.config.statefile import save_json

ROOT = Path(__file__).resolve().parent.parent


class CrashGuardError(RuntimeError):
    pass


def session_name(agent: str, cwd: Path, session: str | None = None) -> str:
    """`xx-<agent>-<folder or session id>`, in the characters tmux accepts in a target name."""
    label = session or cwd.name or "root"
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"xx-{agent}-{label}")[:80]


def tmux_binary() -> str:
    found = shutil.which("tmux")
    if not found:
        raise CrashGuardError("the crash guard needs tmux, which is not installed (apt install tmux / "
                              "brew install tmux), or launch without --tmux")
    return found


def exists(name: str, tmux: str | None = None) -> bool:
    tmux = tmux or tmux_binary()
    # "=name" matches the exact session name, not a prefix
    return subprocess.run([tmux, "has-session", "-t", f"={name}"], capture_output=True).returncode == 0


def write_spec(folder: Path, argv: list[str], env: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)  # an existing folder too: specs hold the user's keys
    path = folder / f"launch-{secrets.token_hex(8)}.json"
    save_json(path, {"argv": argv, "env": env})  # 0600, atomic
    return path


def start_commands(name: str, spec: Path, cwd: Path, tmux: str, inside_tmux: bool) -> list[list[str]]:
    """The tmux commands that create the session (detached) and bring the user to it."""
    runner = ["env", f"PYTHONPATH={ROOT}", sys.executable, "-m", "launcher.crashguard", str(spec)]
    create = [tmux, "new-session", "-d", "-s", name, "-c", str(cwd), *runner]
    return [create, attach_command(name, tmux, inside_tmux)]


def attach_command(name: str, tmux: str, inside_tmux: bool) -> list[str]:
    # inside tmux, attaching would nest a client: switch this client instead
    return [tmux, "switch-client" if inside_tmux else "attach-session", "-t", f"={name}"]


def run_spec(spec: Path) -> int:
    """Inside the pane: read and delete the spec, run the agent, keep a failure on screen."""
    data = json.loads(spec.read_text())
    spec.unlink()
    argv, env = data["argv"], data["env"]
    try:
        code = subprocess.call(argv, env=env)
    except FileNotFoundError:
        print(f"xx: {argv[0]} is not installed (not found on PATH)", file=sys.stderr)
        code = 127
    except KeyboardInterrupt:
        code = 130
    if code not in (0, 130):
        print(f"\nxx: {argv[0]} exited with code {code}. Press Enter to close this tmux session.")
        try:
            input()
        except EOFError:
            pass
    return code


if __name__ == "__main__":
    sys.exit(run_spec(Path(sys.argv[1])))
