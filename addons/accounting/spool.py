"""The spool: usage rows a PostgreSQL store could not take, kept in a local file until it can.

Pure logic, no mitmproxy. One JSON object per line, appended and fsynced per batch, so a crash of the
gateway keeps every row spooled before it (a line cut short by the crash is skipped on replay, and
counted). Replay reads the file in order, a batch at a time (memory stays bounded whatever its size),
and empties it only after every batch is in the database; a replay cut short by another outage starts
again from the top, and the store's ON CONFLICT DO NOTHING (postgres.py) turns the rows written twice
into one. So: none lost, none doubled.

Several replicas can share one state folder. Each takes a slot file `usage-spool-<n>.jsonl` under an
exclusive lock (flock) for as long as it runs. A slot nobody holds is a replica's that stopped before
its rows could be replayed: `orphans` hands it to the next writer to replay.

Bounded: a spool stops taking rows at `max_bytes`; the rows refused are counted, and /health says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

SLOTS = 16
MAX_BYTES = 256 * 1024 * 1024  # about 350,000 rows: hours of a team's traffic
REPLAY_BATCH = 500


class SpoolError(Exception):
    """No spool file can be taken (every slot held, or the folder cannot be written)."""


class Spool:
    def __init__(self, path: Path, handle: IO[bytes], max_bytes: int = MAX_BYTES):
        self.path = path
        self._file = handle
        self.max_bytes = max_bytes
        self.refused = 0  # rows not spooled: the spool was full
        self.torn = 0  # lines a crash cut short, skipped on replay
        self._file.seek(0, os.SEEK_END)
        self.size = self._file.tell()
        self.rows = _count_lines(self._file) if self.size else 0

    @classmethod
    def claim(cls, folder: Path, max_bytes: int = MAX_BYTES) -> Spool:
        """Take the first slot no other running replica holds (its leftover rows, if any, come with it)."""
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for number in range(1, SLOTS + 1):
            found = _lock(folder / f"usage-spool-{number}.jsonl")
            if found is not None:
                return cls(folder / f"usage-spool-{number}.jsonl", found, max_bytes)
        raise SpoolError(f"all {SLOTS} spool files in {folder} are held by running gateways")

    def orphans(self) -> Iterator[Spool]:
        """The other slots of the folder that hold rows and no running replica: each is yielded locked,
        and released (and its file removed if it was replayed empty) after the caller is done with it."""
        for number in range(1, SLOTS + 1):
            path = self.path.parent / f"usage-spool-{number}.jsonl"
            if path == self.path or not path.exists() or path.stat().st_size == 0:
                continue
            handle = _lock(path)
            if handle is None:
                continue
            orphan = Spool(path, handle, self.max_bytes)
            try:
                yield orphan
            finally:
                empty = orphan.size == 0
                orphan.close()
                if empty:
                    with contextlib.suppress(OSError):
                        path.unlink()

    def __len__(self) -> int:
        return self.rows

    def append(self, rows: list[dict[str, Any]]) -> int:
        """Add `rows` at the end, on disk before this returns; those past max_bytes are refused (counted).
        Returns how many were spooled."""
        lines: list[bytes] = []
        size = self.size
        for row in rows:
            line = json.dumps(row, separators=(",", ":")).encode() + b"\n"
            if size + len(line) > self.max_bytes:
                self.refused += len(rows) - len(lines)
                break
            lines.append(line)
            size += len(line)
        if lines:
            self._file.seek(0, os.SEEK_END)
            self._file.write(b"".join(lines))
            self._file.flush()
            os.fsync(self._file.fileno())
            self.size, self.rows = size, self.rows + len(lines)
        return len(lines)

    def batches(self, size: int = REPLAY_BATCH) -> Iterator[list[dict[str, Any]]]:
        """The spooled rows in order, `size` at a time; lines a crash cut short are skipped."""
        self._file.seek(0)
        batch: list[dict[str, Any]] = []
        torn = 0
        for line in self._file:
            try:
                row = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                row = None
            if not isinstance(row, dict):
                torn += 1
                continue
            batch.append(row)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch
        self.torn = torn

    def clear(self) -> None:
        """Every row is in the database: empty the file."""
        self._file.truncate(0)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.size = self.rows = 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()  # closing the file releases its lock


def _lock(path: Path) -> IO[bytes] | None:
    """`path` opened for reading and appending under an exclusive lock, or None if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # rows say who spent what: the owner's business only
    handle = os.fdopen(fd, "r+b")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _count_lines(handle: IO[bytes]) -> int:
    handle.seek(0)
    return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
