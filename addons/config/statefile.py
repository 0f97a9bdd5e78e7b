"""Small JSON state files (breakers, quotas) that survive a restart and never prevent one.

Pure logic, no mitmproxy. A write is atomic: a temporary file in the same folder, flushed and
fsynced, then renamed over the old one, so a crash or a full disk leaves the previous state and never
half a file. State tells which models fail and how much of an account's quota is used, so the folder
is created 0700 and the file is 0600.

A state file that cannot be used is moved aside (kept for a post-mortem) and the caller starts fresh:
losing breaker history costs a few failed requests, a gateway that refuses to start costs the session.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def save_json(path: Path, data: dict) -> None:
    """Replace `path` with `data` as JSON, atomically. Raises OSError (disk full, read-only folder);
    TypeError or ValueError for data JSON cannot hold, before anything is written."""
    # serialise first: an unserialisable value must not leave a temporary file behind
    text = json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n"
    save_bytes(Path(path), text.encode("utf-8"))


def save_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, atomically and durably: written and fsynced under a temporary
    name (`.<name>.*.tmp`), renamed, and the folder fsynced. Raises OSError; a crash leaves the old
    file or the new one whole (and maybe a temporary file)."""
    folder = path.parent
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)  # mkdir's mode passes through the umask
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o600)  # mkstemp's mode already; stated so it is not an assumption
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_folder(folder)


def load_json(path: Path) -> dict | None:
    """The JSON object in `path`; None when the file is missing, unreadable or corrupt (a corrupt file
    is renamed to `<name>.corrupt-<UTC timestamp>` and a warning logged)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:  # permissions, a folder in its place: nothing to move aside safely
        logger.warning("cannot read state file %s (%s); starting with fresh state", path, e.strerror or e)
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8 (a ValueError), absurd nesting
        problem = f"not valid JSON ({e})"
    else:
        if isinstance(data, dict):
            return data
        problem = f"a JSON {type(data).__name__}, not an object"
    aside = _quarantine(path)
    logger.warning("state file %s is %s; %s, starting with fresh state", path, problem,
                   f"moved to {aside.name}" if aside else "could not move it aside")
    return None


def _quarantine(path: Path) -> Path | None:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while aside.exists():  # two bad starts within a second keep both copies
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
        counter += 1
    try:
        os.replace(path, aside)
    except OSError as e:
        logger.warning("cannot rename %s: %s", path, e.strerror or e)
        return None
    return aside


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; not every platform can open a folder, which is fine."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
