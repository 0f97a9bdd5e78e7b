"""A usage database SQLite cannot read: find out, move it aside, and save today's rows from it.

Pure logic, no mitmproxy. A `usage.db` breaks the way files do: cut short mid-page (a full disk, a
copy that stopped), a header that is not SQLite's ("file is not a database"), a page of zeros in the
middle (a bad sector, a crash of the file system). Before this module, the gateway turned accounting
off with one log line and today's budgets started again from zero: an agent over its budget got
answers again. Now the broken file is renamed `usage.db.broken-<UTC time>` (with its -wal and -shm:
a WAL left beside the new file would be replayed into it), a fresh database takes its place, and
today's rows that can still be read from the broken copy are written into the fresh one, so the
budgets, which read today's spending from the store, go on from what was spent.

Reading a damaged B-tree: a query whose pages include a bad one fails as a whole, so the attempts
table is read by rowid range, newest first (rows are appended in time order), and a range that
fails is halved until the rows that can be read are read and the ones that cannot are counted.
The walk stops at the first range that is wholly before today, or at a time limit.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import struct
import time
from pathlib import Path

from addons.accounting.reports import ATTEMPT_COLUMNS, day_of

# the attempts table's columns in schema version 1 (store.MIGRATIONS), before cache_saved_usd
_FIRST_SCHEMA_COLUMNS = 29

CORRUPT = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
_CHUNK = 512  # rowids per read: small enough that a bad page costs little to bisect
SALVAGE_TIME_S = 10.0  # longest a start-up spends reading the broken copy
_MIN_ROW_BYTES = 16  # an upper bound for rowids when max(id) itself cannot be read


@dataclasses.dataclass
class Salvage:
    """What became of a broken usage database."""

    broken: Path  # where the broken file now is
    reason: str  # what SQLite said about it
    day: str  # the UTC day whose rows were saved
    rows: list[dict] = dataclasses.field(default_factory=list)  # today's rows read from it
    unreadable: int = 0  # rowids in today's part of the table that could not be read
    complete: bool = True  # the walk reached rows before today (not cut by errors or the time limit)

    def describe(self) -> str:
        text = (f"the usage database was unreadable ({self.reason}); moved aside to {self.broken}, a new one "
                f"was started; {len(self.rows)} of today's rows ({self.day}) recovered from it")
        if self.unreadable:
            text += f", {self.unreadable} unreadable"
        if not self.complete:
            text += ", others could not be read"
        return text

    @property
    def lossless(self) -> bool:
        """Every row of today was read back: the budgets know today's spending in full."""
        return self.complete and not self.unreadable


def is_corruption(error: BaseException) -> bool:
    """SQLite's own word that a file is damaged (not: locked, missing, read-only, full)."""
    return isinstance(error, sqlite3.DatabaseError) and getattr(error, "sqlite_errorname", None) in CORRUPT


def damage(path: Path) -> str | None:
    """What is wrong with the database at `path`, or None when SQLite finds nothing wrong (or the
    file is absent, or cannot be opened for another reason: that is not damage, and not ours to move).
    PRAGMA quick_check reads every page once: about 40 ms for 100,000 rows."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return None
    try:
        found = db.execute("PRAGMA quick_check(1)").fetchone()
        if found and found[0] != "ok":
            return str(found[0])
        return None
    except sqlite3.DatabaseError as e:
        return str(e) if is_corruption(e) else None
    finally:
        db.close()


def move_aside(path: Path, now: float | None = None) -> Path:
    """Rename the broken file (and its -wal and -shm) to `<name>.broken-<UTC time>`; the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    target = path.with_name(f"{path.name}.broken-{stamp}")
    number = 1
    while target.exists():  # two breaks in one second
        number += 1
        target = path.with_name(f"{path.name}.broken-{stamp}-{number}")
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    return target


def salvage(broken: Path, reason: str, now: float | None = None, time_limit_s: float = SALVAGE_TIME_S) -> Salvage:
    """Today's attempt rows that can still be read from the broken copy at `broken`."""
    now = time.time() if now is None else now
    result = Salvage(broken, " ".join(reason.split()), day_of(now))
    padded = _padded_copy(broken)
    try:
        db = sqlite3.connect(padded or broken, timeout=10)
    except sqlite3.Error:
        result.complete = False
        return result
    try:
        _walk(db, result, time.monotonic() + time_limit_s)
    finally:
        db.close()
        if padded is not None:
            for leftover in (padded, padded.with_name(padded.name + "-wal"), padded.with_name(padded.name + "-shm")):
                leftover.unlink(missing_ok=True)
    return result


def _padded_copy(broken: Path) -> Path | None:
    """A file cut short makes SQLite refuse every query (its header names more pages than there
    are). A copy padded with zeros to the size the header names reads again, up to the cut: the
    broken copy itself stays as it was. None when the file is not short (or its header unreadable)."""
    try:
        with open(broken, "rb") as f:
            header = f.read(100)
        size = broken.stat().st_size
    except OSError:
        return None
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        return None
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    wanted = struct.unpack(">I", header[28:32])[0] * page_size
    if wanted <= size:
        return None
    copy = broken.with_name(broken.name + ".salvage")
    try:
        shutil.copyfile(broken, copy)
        with open(copy, "r+b") as f:
            f.truncate(wanted)  # the new bytes read as zeros
    except OSError:
        copy.unlink(missing_ok=True)
        return None
    return copy


def _walk(db: sqlite3.Connection, result: Salvage, deadline: float) -> None:
    top, exact = _top_rowid(db)
    if top is None:
        result.complete = False
        return
    names = _columns(db)
    high = top
    while high >= 1:
        if time.monotonic() > deadline:
            result.complete = False
            return
        low = max(1, high - _CHUNK + 1)
        rows, failed = _read(db, names, low, high, result.day)
        result.rows[:0] = rows
        if exact:
            result.unreadable += failed
        elif failed:  # past the table's real end too, for all we know: no count, but not all was read
            result.complete = False
        if rows == [] and not failed and _older(db, low, high, result.day):
            return
        high = low - 1


def _top_rowid(db: sqlite3.Connection) -> tuple[int | None, bool]:
    """The highest rowid to start from, and whether it is the table's own (else an upper bound)."""
    try:
        return db.execute("SELECT max(id) FROM attempts").fetchone()[0] or 0, True
    except sqlite3.DatabaseError:
        pass
    try:  # the newest row by the time index, whose pages are elsewhere (rows are added in time order)
        found = db.execute("SELECT id FROM attempts INDEXED BY attempts_by_time ORDER BY ts DESC LIMIT 1").fetchone()
        if found:
            return found[0] + _CHUNK, False
    except sqlite3.DatabaseError:
        pass
    try:  # the table's right edge is damaged: walk down from what the file could hold
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        return pages * size // _MIN_ROW_BYTES, False
    except sqlite3.DatabaseError:
        return None, False


def _columns(db: sqlite3.Connection) -> tuple[str, ...]:
    """The row columns the broken file's table has: a database of an older schema lacks the newer ones
    (asking for them would fail every read); when even the schema cannot be read, those of the first."""
    try:
        present = {row[1] for row in db.execute("PRAGMA table_info(attempts)")}
    except sqlite3.DatabaseError:
        present = set()
    return tuple(c for c in ATTEMPT_COLUMNS if c in present) or ATTEMPT_COLUMNS[:_FIRST_SCHEMA_COLUMNS]


def _read(db: sqlite3.Connection, names: tuple[str, ...], low: int, high: int, day: str) -> tuple[list[dict], int]:
    """Today's rows with rowids low..high, and how many of those rowids (holding rows or not) failed."""
    try:
        found = db.execute(f"SELECT {', '.join(names)} FROM attempts WHERE id BETWEEN ? AND ? AND day >= ? "
                           "ORDER BY id", (low, high, day)).fetchall()
    except sqlite3.DatabaseError:
        if low == high:
            return [], 1
        middle = (low + high) // 2
        first, bad_first = _read(db, names, low, middle, day)
        second, bad_second = _read(db, names, middle + 1, high, day)
        return first + second, bad_first + bad_second
    return [dict(zip(names, row, strict=True)) for row in found], 0


def _older(db: sqlite3.Connection, low: int, high: int, day: str) -> bool:
    """The range holds rows, all from before `day`: the walk has left today behind."""
    try:
        found = db.execute("SELECT max(day) FROM attempts WHERE id BETWEEN ? AND ?", (low, high)).fetchone()[0]
    except sqlite3.DatabaseError:
        return False
    return found is not None and found < day
