"""A real HAProxy (Debian's package, installed by ./clutch test) in front of gateway replicas, for the
team-gateway tests and the replicas benchmark: one loopback port that agents use as HTTPS_PROXY, TCP
mode (the CONNECT, the TLS and the proxy password pass through to a replica untouched), the replicas
checked with GET /health, a connection a replica refuses retried on another. The configuration is
docs/team.md's. Started in the foreground and stopped by its PID; ready means its master said its
worker loaded the configuration."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

from harness import free_port
from system_servers import need, read_until

HAPROXY = Path(os.environ.get("CLUTCH_HAPROXY", "/usr/sbin/haproxy"))


def haproxy_config(port: int, replicas: list[int], check_ms: int = 1000) -> str:
    """docs/team.md's configuration for these ports (kept equal by tests/gateway/test_replicas.py)."""
    servers = "\n".join(f"    server replica{n} 127.0.0.1:{replica} check" for n, replica in enumerate(replicas, 1))
    return f"""\
global
    log stdout format raw local0 info
    maxconn 4096

defaults
    mode tcp
    log global
    option dontlognull
    timeout connect 2s
    timeout client 10m
    timeout server 10m
    retries 3
    option redispatch 1

frontend clutch
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance leastconn
    option httpchk
    http-check send meth GET uri /health ver HTTP/1.1 hdr Host clutch.local
    http-check expect status 200
    default-server inter {check_ms} fall 2 rise 2 on-marked-down shutdown-sessions
{servers}
"""


def find_haproxy() -> Path | None:
    found = HAPROXY if HAPROXY.is_file() else shutil.which("haproxy")
    return Path(found) if found else None


def need_haproxy() -> Path:
    """HAProxy; skip without it, except in CI (CLUTCH_REQUIRE_E2E), where it fails."""
    return need(find_haproxy(), "haproxy", "haproxy")


class HAProxy:
    def __init__(self, workdir: Path, replicas: list[int], port: int | None = None, binary: Path | None = None,
                 check_ms: int = 1000):
        self.binary = binary or need_haproxy()
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(haproxy_config(self.port, replicas, check_ms))
        self.lines: list[str] = []
        # master-worker (-W) in the foreground (-db): the master says when its worker has loaded
        self.process = subprocess.Popen([str(self.binary), "-W", "-db", "-f", str(self.config)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir)
        self._ready(["Loading success."])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self, wanted: list[str], timeout: float = 20) -> None:
        said = read_until(self.process, [line.encode() for line in wanted], "haproxy", timeout, self.stop)
        self.lines = said.decode(errors="replace").splitlines()
        self._seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as pipe:
            for raw in pipe:
                with self._seen:
                    self.lines.append(raw.decode(errors="replace").rstrip())
                    self._seen.notify_all()

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """The first log line with `text` (e.g. a server marked DOWN by its check), as HAProxy writes it."""
        with self._seen:
            if not self._seen.wait_for(lambda: any(text in line for line in self.lines), timeout):
                raise TimeoutError(f"haproxy never said {text!r}:\n" + "\n".join(self.lines[-20:]))
            return next(line for line in self.lines if text in line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
