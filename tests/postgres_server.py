"""A real PostgreSQL server (Debian's package, installed by ./clutch test) for the team-gateway tests:
a cluster of its own made by initdb in a temporary folder, on a loopback port of its own, password
authentication on TCP, started and stopped by its PID. Ready means its log said so, read from its
output as it is written.

PostgreSQL refuses to run as root: as root (CI, containers) the server runs as the `postgres` user the
Debian package creates, in a folder that user owns."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from harness import free_port
from system_servers import drain_in_background, need, read_until

BINARIES = Path(os.environ.get("CLUTCH_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
READY = b"database system is ready to accept connections"
USER, PASSWORD, DATABASE = "clutch", "team-secret-pw", "clutch"


def find_postgres() -> Path | None:
    """The folder with initdb and postgres ($CLUTCH_POSTGRES_BIN, Debian's newest, or PATH's), or None."""
    candidates = [BINARIES] + sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if (folder / "postgres").is_file() and (folder / "initdb").is_file():
            return folder
    found = shutil.which("postgres")
    return Path(found).resolve().parent if found and shutil.which("initdb") else None


def need_postgres() -> Path:
    """The PostgreSQL binaries; skip without them, except in CI (CLUTCH_REQUIRE_E2E), where it fails."""
    return need(find_postgres(), "postgres", "postgresql")


class PostgresServer:
    def __init__(self, port: int | None = None):
        self.bin = need_postgres()
        self.port = port or free_port()
        self.as_user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        # not under pytest's basetemp: its folders are private to root, and the server may not be root
        self.workdir = Path(tempfile.mkdtemp(prefix="clutch-pg-"))
        self.workdir.chmod(0o755)
        self.data = self.workdir / "data"
        self.process: subprocess.Popen | None = None
        self._initdb()
        self.start()
        self._create_database()

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def _run_as(self) -> dict:
        if self.as_user is None:
            return {}
        return {"user": self.as_user.pw_uid, "group": self.as_user.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        self.data.mkdir(mode=0o700)
        password_file = self.workdir / "pw"
        password_file.write_text(PASSWORD + "\n")
        if self.as_user is not None:
            for path in (self.workdir, self.data, password_file):
                os.chown(path, self.as_user.pw_uid, self.as_user.pw_gid)
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--pwfile", str(password_file),
                        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
                       check=True, capture_output=True, cwd=self.workdir, **self._run_as())
        password_file.unlink()

    def start(self, timeout: float = 30) -> None:
        """Start (again, on the same port and data) and return once it accepts connections."""
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", str(self.workdir), "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "logging_collector=off"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.workdir, **self._run_as())
        read_until(self.process, [READY], "postgres", timeout, self.stop)
        drain_in_background(self.process.stdout)

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/postgres",
                             autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {DATABASE}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open connections are cut, as when the server goes away."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
