"""What the team-gateway tests' real servers share (redis_server.py, postgres_server.py,
haproxy_server.py): each is a Debian package that ./clutch test installs, skipped where it is missing
except in CI, where that fails; each runs as a child whose merged output is read until it says it is
ready, then drained, so its writes never block on a full pipe."""

from __future__ import annotations

import os
import selectors
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from harness import process_allowed


def need(found: Path | None, name: str, package: str) -> Path:
    """`found` (the server's binary or folder); without it, skip, or fail in CI (CLUTCH_REQUIRE_E2E)."""
    import pytest

    process_allowed(name)
    if found is not None:
        return found
    reason = (f"{name} is missing: `CLUTCH_INSTALL_SYSTEM=1 ./clutch test` installs {package} (Debian's "
              f"package) for the team-gateway tests")
    if os.environ.get("CLUTCH_REQUIRE_E2E"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def read_until(process: subprocess.Popen, wanted: list[bytes], name: str, timeout: float,
               give_up: Callable[[], None]) -> bytes:
    """What `process` wrote until every line of `wanted` was in it, read as it is written. Past
    `timeout`: `give_up()` (stop it) and TimeoutError; if it exits first: RuntimeError, with its output."""
    assert process.stdout is not None
    said = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not all(line in said for line in wanted):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                give_up()
                raise TimeoutError(f"{name} did not get ready:\n{said.decode(errors='replace')}")
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"{name} exited ({process.wait()}):\n{said.decode(errors='replace')}")
            said += chunk
    return said


def drain_in_background(pipe) -> None:
    """Read and drop the rest of a server's output."""
    threading.Thread(target=_drain, args=(pipe,), daemon=True).start()


def _drain(pipe) -> None:
    with pipe:
        while pipe.read1(65536):
            pass
