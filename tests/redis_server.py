"""A real redis-server (Debian's package, installed by ./clutch test) for the team-gateway tests: on a
loopback port of its own, nothing saved to disk, started and stopped by its PID. Ready means its log
said so, read from its stdout as it is written."""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from harness import process_allowed

REDIS_SERVER = Path(os.environ.get("CLUTCH_REDIS_SERVER", "/usr/bin/redis-server"))
READY = b"Ready to accept connections"


def find_redis() -> Path | None:
    """The redis-server to run ($CLUTCH_REDIS_SERVER, Debian's, or one on PATH), or None."""
    found = REDIS_SERVER if REDIS_SERVER.is_file() else shutil.which("redis-server")
    return Path(found) if found else None


def need_redis() -> Path:
    """The redis-server to run; skip without one, except in CI (CLUTCH_REQUIRE_E2E), where it fails."""
    import pytest

    process_allowed("redis-server")
    if found := find_redis():
        return found
    reason = (f"{REDIS_SERVER} is missing: `CLUTCH_INSTALL_SYSTEM=1 ./clutch test` installs redis-server "
              "(Debian's package) for the team-gateway tests")
    if os.environ.get("CLUTCH_REQUIRE_E2E"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None):
        self.binary = need_redis()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20) -> None:
        """Start (again, on the same port) and return once it accepts connections."""
        self.process = subprocess.Popen(
            [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--daemonize", "no", "--loglevel", "notice"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.workdir)
        assert self.process.stdout is not None
        said = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while READY not in said:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.stop()
                    raise TimeoutError(f"redis-server did not get ready:\n{said.decode(errors='replace')}")
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"redis-server exited ({self.process.wait()}):\n{said.decode(errors='replace')}")
                said += chunk
        # the rest of its log is read and dropped, so its writes never block on a full pipe
        threading.Thread(target=_drain, args=(self.process.stdout,), daemon=True).start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _drain(pipe) -> None:
    with pipe:
        while pipe.read1(65536):
            pass
