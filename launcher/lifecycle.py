"""The background gateway `xx` manages: start (pid file, log file, wait for /health), stop, status, log.

`xx start` runs the same mitmdump command as `./clutch start` (launcher.gateway.mitm_arguments),
detached into its own session so it outlives the terminal, with its output in `~/.xx/gateway.log`
and its PID in `~/.xx/gateway.pid`. Stopping goes by that PID, and only when the process still is a
Clutch gateway (its command line names addons/clutch.py), so a recycled PID is never killed.

The gateway inherits the environment of the command that starts it, provider keys included (they
serve requests the rules send to another provider), minus every proxy variable: a gateway must not
send its own traffic to a proxy, least of all to itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from addons.config.paths import places
from launcher.config import XXConfig, xx_home
from launcher.gateway import mitm_arguments, mitmproxy_tool
from launcher.launch import is_proxy_or_ca
from launcher.ports import port_free

LOG_ROTATE_BYTES = 5 * 1024 * 1024
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class GatewayError(RuntimeError):
    """The gateway could not be started, reached or stopped; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class GatewayFiles:
    folder: Path

    @property
    def pid(self) -> Path:
        return self.folder / "gateway.pid"

    @property
    def log(self) -> Path:
        return self.folder / "gateway.log"


def files_for(environ: dict[str, str] | None = None) -> GatewayFiles:
    return GatewayFiles(xx_home(environ))


def base_url(config: XXConfig) -> str:
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"http://{host}:{config.port}"


def health(config: XXConfig, timeout: float = 2.0) -> dict | None:
    """The gateway's /health, or None when nothing (or something that is not Clutch) answers."""
    return _get_json(config, "/health", timeout)


def resilience(config: XXConfig, timeout: float = 2.0) -> dict | None:
    return _get_json(config, "/resilience", timeout)


def recent_requests(config: XXConfig, after: int = 0, timeout: float = 5.0) -> dict | None:
    return _get_json(config, f"/requests?after={after}", timeout)


def reset_breakers(config: XXConfig, target: str | None, timeout: float = 5.0) -> dict:
    """POST /breakers/reset: clear the breakers and 429 cooldowns of every target (None), a provider's
    models, or one provider:model. Returns the gateway's answer (what was cleared)."""
    body = json.dumps({"target": target} if target else {}).encode()
    request = urllib.request.Request(base_url(config) + "/breakers/reset", data=body, method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with _DIRECT.open(request, timeout=timeout) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError as e:
        why = f"{e.code} {e.reason}"
        with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
            why = f"{e.code}: {json.loads(e.read())['error']}"
        raise GatewayError(f"the gateway on {config.gateway} refused the reset ({why})") from None
    except (OSError, ValueError):
        raise GatewayError(f"no gateway answers on {config.gateway} (xx start)") from None
    if not isinstance(data, dict) or not isinstance(data.get("cleared"), dict):
        raise GatewayError(f"the gateway on {config.gateway} gave no reset answer (an older Clutch?)")
    return data


# no proxy for the gateway's own endpoints, whatever the environment says (urllib, not httpx: xx runs
# this on every launch, and httpx is a fifth of its start-up)
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get_json(config: XXConfig, path: str, timeout: float) -> dict | None:
    request = urllib.request.Request(base_url(config) + path)
    if config.token:  # a team gateway's endpoints (but /health) need the user's token
        request.add_header("Authorization", f"Bearer {config.token}")
    try:
        with _DIRECT.open(request, timeout=timeout) as response:
            data = json.loads(response.read())
    except (OSError, ValueError):  # URLError and HTTPError are OSErrors; a timeout is one too
        return None
    if not isinstance(data, dict):
        return None
    if path == "/health" and data.get("status") not in ("ok", "degraded"):  # degraded: up, with problems
        return None
    return data


def read_pid(files: GatewayFiles) -> int | None:
    """The PID in the pid file, if that process is alive and is a Clutch gateway; a stale file is removed."""
    try:
        pid = int(files.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    if _is_gateway(pid):
        return pid
    with contextlib.suppress(OSError):
        files.pid.unlink()
    return None


def _is_gateway(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: not ours to manage
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
        return any(word.endswith(b"addons/clutch.py") for word in words)
    return True  # no /proc (macOS): trust the pid file


def ca_folder(config: XXConfig, found: dict | None = None) -> Path:
    """Where the gateway's CA is: the running gateway's (`found`, its /health) if it says, else the
    folder a gateway xx starts would use (the config's confdir, or Clutch's own: `clutch paths`)."""
    if found and found.get("ca_cert"):
        return Path(found["ca_cert"]).parent
    return Path(config.confdir).expanduser() if config.confdir else places().ca


def gateway_argv(config: XXConfig) -> list[str]:
    try:
        mitmdump = mitmproxy_tool("mitmdump")
    except FileNotFoundError as e:
        raise GatewayError(str(e)) from None
    confdir = ca_folder(config)
    rules = Path(config.rules).expanduser() if config.rules else None
    return [str(mitmdump), *mitm_arguments(config.port, rules, None, list(config.gateway_args), confdir)]


def gateway_environment(environ: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in environ.items() if not is_proxy_or_ca(name)}


def start(config: XXConfig, environ: dict[str, str], *, wait_s: float = 30.0,
          say: Callable[[str], None] = lambda text: None) -> dict:
    """Start the gateway in the background unless it already answers; return its /health."""
    found = health(config)
    if found is not None:
        return found
    if config.host not in _LOOPBACK_HOSTS:
        raise GatewayError(f"the gateway {config.gateway} does not answer, and xx starts gateways on loopback "
                           f"only: start it on that machine, or set \"gateway\" to 127.0.0.1:PORT")
    files = files_for(environ)
    files.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    pid = read_pid(files)
    if pid is None:
        if not port_free(config.port):
            raise GatewayError(f"port {config.port} is taken by another program that is not a Clutch gateway "
                               f"(no /health there): stop it, or choose another \"gateway\" port in the xx config")
        _rotate(files.log)
        argv = gateway_argv(config)
        say(f"starting the gateway on {config.gateway} (log: {files.log})")
        with open(files.log, "ab") as log:
            begun = log.tell()
            log.write(f"\n--- xx start {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
            log.flush()
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       cwd=str(files.folder), env=gateway_environment(environ),
                                       start_new_session=True)
        pid = process.pid
        _write_private(files.pid, f"{pid}\n")
    else:
        process = None
        say(f"the gateway (pid {pid}) is starting; waiting for it")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        found = health(config, timeout=1.0)
        if found is not None:
            return found
        if process is not None and process.poll() is not None:
            with contextlib.suppress(OSError):
                files.pid.unlink()
            raise _start_failed(process.returncode, files.log, begun)
        if process is None and not _is_gateway(pid):
            raise GatewayError(f"the gateway (pid {pid}) exited while starting; see {files.log}")
        time.sleep(0.1)
    stop(environ)
    raise GatewayError(f"the gateway did not answer /health on {config.gateway} within {wait_s:.0f} s (stopped "
                       f"it again); the end of {files.log}:\n{tail(files.log, 15)}")


def _start_failed(code: int, log: Path, begun: int) -> GatewayError:
    """Why the gateway exited while starting: what it wrote to stderr this time (a broken rules or
    keys file is one line, `file:line: field: message`), else the end of its log. Lines of
    mitmproxy's own log start with a [time] stamp; the rest came from stderr."""
    try:
        with open(log, "rb") as file:
            file.seek(begun)
            text = file.read(64 * 1024).decode(errors="replace")
    except OSError:
        text = ""
    said = [line for line in text.splitlines() if line.strip() and not _STAMPED.match(line)
            and not line.startswith(("--- xx start", "Error logged during startup", "Errors logged during startup"))]
    if said and not any("Traceback" in line for line in said):
        return GatewayError("\n".join(said[:5]) + f"\n(the gateway exited with code {code} while starting; "
                                                 f"its log: {log})")
    return GatewayError(f"the gateway exited with code {code} while starting; the end of {log}:\n{tail(log, 15)}")


_STAMPED = re.compile(r"\[\d\d:\d\d:\d\d\.\d+\]")


# SIGTERM to SIGKILL: the gateway's drain (clutch_drain_timeout_ms, 10 s), the 5 s in which the streams
# it then ends are booked, and a margin.
STOP_TIMEOUT_S = 20.0


def stop(environ: dict[str, str], timeout: float = STOP_TIMEOUT_S) -> int | None:
    """Stop the gateway xx started (SIGTERM, then SIGKILL); return its PID, or None if none ran."""
    files = files_for(environ)
    pid = read_pid(files)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
    with contextlib.suppress(OSError):
        files.pid.unlink()
    return pid


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # our own child, now reaped
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        if state.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False  # a zombie: exited, waiting for a parent that is not us
    return True


def _rotate(log: Path) -> None:
    with contextlib.suppress(OSError):
        if log.stat().st_size > LOG_ROTATE_BYTES:
            log.replace(log.with_suffix(".log.1"))


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def follow(path: Path, lines: int = 40, poll_s: float = 0.25) -> Iterator[str]:
    """The last `lines` lines of the log, then every new line as it is written (like `tail -F`:
    a rotated or recreated file is reopened)."""
    yield from tail(path, lines).splitlines()
    handle = None
    inode = None
    position = path.stat().st_size if path.exists() else 0
    pending = ""
    while True:
        try:
            stat = path.stat()
        except FileNotFoundError:
            time.sleep(poll_s)
            continue
        if inode is not None and (stat.st_ino != inode or stat.st_size < position):
            position = 0  # rotated or truncated: read the new file from its start
            if handle:
                pending += handle.read()  # what the old file got before it was replaced
                handle.close()
            handle = None
            if pending:
                yield pending  # the old file's unterminated last line
                pending = ""
        if handle is None:
            handle = open(path, errors="replace")
            handle.seek(position)
            inode = stat.st_ino
        chunk = handle.read()
        if chunk:
            position = handle.tell()
            pending += chunk
            *complete, pending = pending.split("\n")
            yield from complete
        else:
            time.sleep(poll_s)
