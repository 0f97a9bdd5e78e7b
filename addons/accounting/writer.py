"""What the Usage addon's writer thread does with each batch of finished requests' rows.

Pure logic, no mitmproxy, one thread. Two kinds:

- `RowWriter` (SQLite): the rows go straight into the store, one transaction per batch.
- `SpooledWriter` (PostgreSQL): the rows were appended to the spool (spool.py) on the event loop before
  the thread was told of them; the thread moves them from the spool into the database, in order, a
  batch at a time. While the database cannot take them (postgres.UsageStoreUnavailable: away, read-only,
  a newer schema, ...) they stay in the spool, on disk, and the thread tries again 0.5 s later, then
  twice as long each time up to 5 s; a flush or a read in the meantime does not make it try sooner. A
  batch with a row the database refuses for its content (UsageRowRefused) is written row by row, so one
  bad row costs only itself, and the spool never sticks on it. The other replicas' leftover spools
  (orphans) are looked for at start and every ORPHANS_EVERY_S.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from addons.accounting.postgres import UsageRowRefused
from addons.accounting.reports import UsageStoreError
from addons.accounting.spool import Spool

logger = logging.getLogger(__name__)

BATCH = 500
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0
ORPHANS_EVERY_S = 60.0


class RowWriter:
    spool: Spool | None = None
    unreachable: str | None = None  # why the database is away, since when (None: it answers)

    def __init__(self, store: Any):
        self.store = store
        self.written = 0  # rows in the database
        self.dropped = 0  # rows lost: refused by the database, or not spooled (spool full or absent)
        self.last_drop: str | None = None

    @property
    def spooled(self) -> int:
        return 0

    def take(self, rows: list[dict[str, Any]]) -> bool:
        """The event loop's part, before the rows are queued: True when they must travel in the queue."""
        return True

    def write(self, rows: list[dict[str, Any]]) -> None:
        """The queued rows (SQLite's store errors are raised, for the caller to log and count)."""
        self.written += self.store.add(rows)

    def due_in(self) -> float | None:
        """Seconds until `retry` should run although nothing new came; None: never."""
        return None

    def retry(self) -> bool:
        """Bring what waits into the database, unless the database is away and it is not yet time to
        try again; True when nothing waits."""
        return True

    def drop(self, count: int, why: str) -> None:
        """Count and log `count` rows lost, and why (the last reason goes to /health)."""
        self.dropped += count
        self.last_drop = f"{self.dropped} usage rows lost (last: {why}, at {time.strftime('%H:%M:%S')})"
        logger.error("usage: %d rows lost: %s", count, why)


class SpooledWriter(RowWriter):
    def __init__(self, store: Any, spool: Spool, clock: Callable[[], float] = time.monotonic):
        super().__init__(store)
        self.spool: Spool = spool
        self._clock = clock
        self._wait_s = RETRY_FIRST_S
        self._next_try = 0.0
        self._orphans_at = clock()  # the first retry looks at once
        self._torn = 0
        self._connected = False  # the first retry reaches the server (and has the schema made) at once

    @property
    def spooled(self) -> int:
        return self.spool.pending

    def take(self, rows: list[dict[str, Any]]) -> bool:
        kept = self.spool.append(rows)
        if kept < len(rows):
            self.drop(len(rows) - kept, f"the spool {self.spool.path} is full")
        return False  # the writer reads them from the spool

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.retry()

    def due_in(self) -> float | None:
        due = self._orphans_at
        if self.spooled or self.unreachable:
            due = min(due, self._next_try)
        return max(0.0, due - self._clock())

    def retry(self) -> bool:
        now = self._clock()
        if self.unreachable and now < self._next_try:
            return False
        try:
            if self.unreachable or not self._connected:
                self.store.connect()
                self._connected = True
            if now >= self._orphans_at:
                self._replay_orphans()
            self._drain(self.spool)
        except UsageStoreError as e:  # away, read-only, a newer schema, ...: the rows wait in the spool
            self._down(e)
            return False
        if self.unreachable:
            logger.warning("usage: the usage database %s answers again; every spooled row is in it", self.store.name)
        self.unreachable, self._wait_s = None, RETRY_FIRST_S
        return True

    def _replay_orphans(self) -> None:
        for orphan in self.spool.orphans():
            logger.info("usage: replaying %d rows a stopped gateway spooled in %s", orphan.pending, orphan.path)
            self._drain(orphan)
        self._orphans_at = self._clock() + ORPHANS_EVERY_S

    def _drain(self, spool: Spool) -> None:
        while True:
            rows, end = spool.read(BATCH)
            if end[1] == 0:
                break
            self.written += self._add(rows)
            spool.consumed(end)
            spool.compact()  # as it goes: what waits, not what was written, fills the spool
        spool.compact()
        if spool.torn > (self._torn if spool is self.spool else 0):
            count = spool.torn - (self._torn if spool is self.spool else 0)
            self.drop(count, f"{count} lines of {spool.path} were cut short or unreadable (a crash while spooling)")
            if spool is self.spool:
                self._torn = spool.torn

    def _add(self, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        try:
            return self.store.add(rows)
        except UsageRowRefused as e:
            if len(rows) == 1:
                self.drop(1, str(e))
                return 0
        return sum(self._add([row]) for row in rows)  # one bad row must not cost the others

    def _down(self, error: UsageStoreError) -> None:
        if self.unreachable is None:
            logger.warning("usage: %s; rows wait in %s and are written when it answers", error, self.spool.path)
            self.unreachable = f"{error} (since {time.strftime('%H:%M:%S')})"
        self.spool.sync()  # waiting for a while: on disk, not only in the kernel's hands
        self._next_try = self._clock() + self._wait_s
        self._wait_s = min(RETRY_MAX_S, self._wait_s * 2)
