"""The spool: a team gateway's usage rows on their way to PostgreSQL, in a local file, so that neither a
database that is away nor a `kill -9` of the gateway loses a finished request's row.

Pure logic, no mitmproxy. Every finished request's rows are appended here (one JSON object per line,
one `write` on an O_APPEND descriptor) on the event loop, before the writer thread is told of them. The
kernel keeps a written line when the process is killed, so the file is a write-ahead log: the writer
reads the lines after its offset, writes them to the database in order, a batch at a time, and moves
the offset past them; once the offset reaches the end, the file is emptied. While the database is away
the lines wait in the file, not in memory, and the writer fsyncs them.

Nothing is doubled: a line may reach the database twice (a crash after a batch was committed and before
the file was emptied, a commit whose answer was lost), and the store's ON CONFLICT DO NOTHING on the
row's key (postgres.py) turns that into once. A line cut short by a crash is cut off when the file is
next opened, and counted.

A spool belongs to one database: its file is named after it (`usage-spool-<key>-<n>.jsonl`, the key a
hash of the database's host, port, name and user), so rows spooled for one database never go to
another when the option changes. Several replicas can share one state folder: each takes a slot `<n>`
under an exclusive lock (flock) for as long as it runs. A slot with lines and no holder is a stopped
replica's: `orphans` hands it to a running writer of the same database, which replays it and removes
the file while it still holds the lock.

Bounded: a spool stops taking rows at `max_bytes`; the rows refused are counted, and /health says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from addons.config.statefile import save_bytes

SLOTS = 16
MAX_BYTES = 256 * 1024 * 1024  # about 350,000 rows: hours of a team's traffic while the database is away
COMPACT_BYTES = 4 * 1024 * 1024  # written lines at the head past this are dropped even if lines follow
READ_BYTES = 1024 * 1024  # read at a time


class SpoolError(Exception):
    """No spool file can be taken (every slot held, or the folder cannot be written)."""


class Spool:
    """Thread-safe: `append` on the event loop, the rest on the writer thread."""

    def __init__(self, path: Path, fd: int, max_bytes: int = MAX_BYTES, prefix: str = "usage-spool-"):
        self.path = path
        self.prefix = prefix
        self._fd = fd
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.refused = 0  # rows not spooled: the spool was full
        self.torn = 0  # lines a crash cut short, or that cannot be read
        self._offset = 0  # bytes before this are in the database
        self.size = os.fstat(fd).st_size
        self._recover_carry()
        self._cut_torn_tail()
        self.rows = self._count_lines()  # lines in the file
        self._done = 0  # lines before _offset

    @classmethod
    def claim(cls, folder: Path, key: str = "", max_bytes: int = MAX_BYTES) -> Spool:
        """Take the first slot of database `key` that no other running replica holds (its leftover
        lines, if any, come with it)."""
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        prefix = f"usage-spool-{key}-" if key else "usage-spool-"
        for number in range(1, SLOTS + 1):
            path = folder / f"{prefix}{number}.jsonl"
            fd = _lock(path)
            if fd is not None:
                return cls(path, fd, max_bytes, prefix)
        raise SpoolError(f"all {SLOTS} spool files {prefix}*.jsonl in {folder} are held by running gateways")

    def orphans(self) -> Iterator[Spool]:
        """The other slots of this database that hold lines and no running replica: each is yielded
        locked; if the caller emptied it, its file is removed before the lock is let go (so no replica
        can take a slot whose file is about to vanish)."""
        for number in range(1, SLOTS + 1):
            path = self.path.parent / f"{self.prefix}{number}.jsonl"
            holds = (path.exists() and path.stat().st_size > 0) or path.with_name(path.name + ".carry").exists()
            if path == self.path or not holds:
                continue
            fd = _lock(path, create=False)
            if fd is None:
                continue
            orphan = Spool(path, fd, self.max_bytes, self.prefix)
            try:
                yield orphan
            finally:
                if orphan.size == 0:
                    with contextlib.suppress(OSError):
                        path.unlink()
                orphan.close()

    @property
    def pending(self) -> int:
        """Lines not yet in the database."""
        return self.rows - self._done

    def append(self, rows: list[dict[str, Any]]) -> int:
        """Add `rows` at the end, in the kernel's hands before this returns (not fsynced); those past
        max_bytes are refused and counted. Returns how many were spooled."""
        lines: list[bytes] = []
        with self._lock:
            size = self.size
            waiting = size - self._offset  # the bound is on what waits, not on lines already written
            for row in rows:
                line = json.dumps(row, separators=(",", ":")).encode() + b"\n"
                if waiting + len(line) > self.max_bytes:
                    self.refused += len(rows) - len(lines)
                    break
                lines.append(line)
                size += len(line)
                waiting += len(line)
            if lines:
                try:
                    _write_all(self._fd, b"".join(lines))
                except OSError:  # a full disk: no half line stays behind to run into the next
                    with contextlib.suppress(OSError):
                        os.ftruncate(self._fd, self.size)
                    raise
                self.size, self.rows = size, self.rows + len(lines)
        return len(lines)

    def read(self, limit: int) -> tuple[list[dict[str, Any]], tuple[int, int]]:
        """Up to `limit` rows after the offset, in order, and where they end (for `consumed`). Lines
        that cannot be read are skipped and counted in `torn`."""
        with self._lock:
            end = self.size
        offset, lines = self._offset, 0
        found: list[dict[str, Any]] = []
        while offset < end and len(found) < limit:
            chunk = os.pread(self._fd, min(READ_BYTES, end - offset), offset)
            if not chunk:
                break
            cut = chunk.rfind(b"\n") + 1
            if cut == 0:  # a line longer than READ_BYTES: not one of ours
                cut = len(chunk)
            for line in chunk[:cut].splitlines(keepends=True):
                if len(found) >= limit:
                    break
                offset += len(line)
                lines += 1
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if isinstance(row, dict):
                    found.append(row)
                else:
                    self.torn += 1
        return found, (offset, lines)

    def consumed(self, end: tuple[int, int]) -> None:
        """The rows `read` gave with `end` are in the database."""
        self._offset = end[0]
        self._done += end[1]

    def compact(self) -> None:
        """Drop the lines already in the database: all of them (the file is emptied) when nothing
        follows, else once they pass COMPACT_BYTES and what follows is less. Then what follows moves to
        the head of the file by way of a carry file, written whole first, so a crash at any moment
        leaves every waiting line in one file or the other (`_recover_carry`)."""
        with self._lock:
            if self._offset == 0:
                return
            rest_bytes = self.size - self._offset
            if rest_bytes and (self._offset < COMPACT_BYTES or rest_bytes > COMPACT_BYTES):
                return
            rest = os.pread(self._fd, rest_bytes, self._offset) if rest_bytes else b""
            carry = self._carry()
            if rest:
                save_bytes(carry, rest)
            os.ftruncate(self._fd, 0)
            if rest:
                _write_all(self._fd, rest)
                os.fsync(self._fd)
                carry.unlink()
            self.size, self._offset = len(rest), 0
            self.rows, self._done = self.rows - self._done, 0

    def sync(self) -> None:
        """On disk, not only in the kernel's hands (while the database is away: a power cut keeps them)."""
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the file releases its lock
            self._fd = -1  # never a number the next open may reuse

    def _carry(self) -> Path:
        return self.path.with_name(self.path.name + ".carry")

    def _recover_carry(self) -> None:
        """A crash while compacting: a complete carry file holds every line that waited (the spool may
        have lost them to its truncation), so it becomes the spool; a half-written one is dropped (the
        spool was not touched yet)."""
        carry = self._carry()
        for half in carry.parent.glob(f".{carry.name}.*.tmp"):  # save_bytes's, cut short
            with contextlib.suppress(FileNotFoundError):
                half.unlink()
        if not carry.exists():
            return
        data = carry.read_bytes()
        os.ftruncate(self._fd, 0)
        _write_all(self._fd, data)
        os.fsync(self._fd)
        carry.unlink()
        self.size = len(data)

    def _cut_torn_tail(self) -> None:
        """A crash in the middle of a write leaves a line without its end: cut it off, so the next
        line does not run into it."""
        if self.size == 0 or os.pread(self._fd, 1, self.size - 1) == b"\n":
            return
        start = max(0, self.size - READ_BYTES)
        tail = os.pread(self._fd, self.size - start, start)
        keep = start + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        os.ftruncate(self._fd, keep)
        self.size = keep
        self.torn += 1

    def _count_lines(self) -> int:
        count, offset = 0, 0
        while offset < self.size:
            chunk = os.pread(self._fd, min(READ_BYTES, self.size - offset), offset)
            if not chunk:
                break
            count += chunk.count(b"\n")
            offset += len(chunk)
        return count


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    while written < len(data):  # a regular file takes it whole unless the disk is full (then: OSError)
        written += os.write(fd, data[written:])


def _lock(path: Path, create: bool = True) -> int | None:
    """`path` opened for reading and appending under an exclusive lock, or None if another holds it
    (or, after the lock was taken, the name no longer leads to the file locked: it was removed)."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    for _ in range(3):
        try:
            fd = os.open(path, flags, 0o600)  # rows say who spent what: the owner's business only
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # removed between our open and our lock: open the name again
    return None
