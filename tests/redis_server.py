"""A real redis-server (Debian's package, installed by ./clutch test) for the team-gateway tests: on a
loopback port of its own, nothing saved to disk, started and stopped by its PID. Ready means its log
said so, read from its stdout as it is written."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from harness import free_port
from system_servers import drain_in_background, need, read_until

REDIS_SERVER = Path(os.environ.get("CLUTCH_REDIS_SERVER", "/usr/bin/redis-server"))
READY = b"Ready to accept connections"


def find_redis() -> Path | None:
    """The redis-server to run ($CLUTCH_REDIS_SERVER, Debian's, or one on PATH), or None."""
    found = REDIS_SERVER if REDIS_SERVER.is_file() else shutil.which("redis-server")
    return Path(found) if found else None


def need_redis() -> Path:
    """The redis-server to run; skip without one, except in CI (CLUTCH_REQUIRE_E2E), where it fails."""
    return need(find_redis(), "redis-server", "redis-server")


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
        read_until(self.process, [READY], "redis-server", timeout, self.stop)
        drain_in_background(self.process.stdout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
