"""Where the Usage addon's writer thread puts each batch of rows: into the store, or, while a PostgreSQL
store cannot be reached, into the spool (spool.py), replayed in order once it answers again.

Pure logic, no mitmproxy, one thread. Order is kept: while the spool holds rows, a new batch goes behind
them, never around them. A batch the database refuses for its content (not for being away) is written
row by row, so one bad row costs only itself, and the spool never sticks on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from addons.accounting.postgres import UsageStoreUnreachable
from addons.accounting.reports import UsageStoreError
from addons.accounting.spool import Spool

logger = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5  # after an outage is noticed, the spool is replayed this soon, then
RETRY_MAX_S = 5.0  # at most this long apart: a returning database gets its rows within seconds


class RowWriter:
    def __init__(self, store: Any, spool: Spool | None = None, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.spool = spool
        self._clock = clock
        self.written = 0  # rows in the database (replayed ones included)
        self.dropped = 0  # rows lost: refused by the database, or not spooled (spool full or absent)
        self.last_drop: str | None = None
        self.unreachable: str | None = None  # why the database is away, since when (None: it answers)
        self._wait_s = RETRY_FIRST_S
        self._next_try = 0.0
        self._orphans_checked = False

    @property
    def spooled(self) -> int:
        return len(self.spool) if self.spool is not None else 0

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Write `rows` now, or spool them behind the rows already spooled. Raises only what the
        database's own errors are (for the caller to log and count), never for an outage."""
        if self.spooled or self.unreachable:
            self._spool(rows)
            self.retry()
            return
        try:
            self.written += self._add(rows)
        except UsageStoreUnreachable as e:
            self._down(e)
            self._spool(rows)

    def due_in(self) -> float | None:
        """Seconds until the spool should be tried again; None when nothing waits."""
        if not self.spooled and not self.unreachable and self._orphans_checked:
            return None
        return max(0.0, self._next_try - self._clock())

    def retry(self, force: bool = False) -> bool:
        """Replay the spool (and any stopped replica's) if it is time, or `force`; True when the
        database holds every row."""
        if not force and self._clock() < self._next_try:
            return not self.spooled
        try:
            if self.spool is not None:
                if self.spooled:
                    self._replay(self.spool)
                if not self._orphans_checked or self.unreachable:
                    for orphan in self.spool.orphans():
                        logger.info("usage: replaying %d rows a stopped gateway spooled in %s", len(orphan),
                                    orphan.path)
                        self._replay(orphan)
            self._orphans_checked = True
            if self.unreachable:
                self.store.connect()
        except UsageStoreUnreachable as e:
            self._down(e)
            return False
        if self.unreachable:
            logger.warning("usage: the usage database %s answers again; every spooled row is in it", self.store.name)
        self.unreachable, self._wait_s = None, RETRY_FIRST_S
        return True

    def _replay(self, spool: Spool) -> None:
        replayed = 0
        for batch in spool.batches():
            replayed += self._add(batch)
        if spool.torn:
            self.drop(spool.torn, f"{spool.torn} lines of {spool.path} were cut short (a crash while spooling)")
        spool.clear()
        self.written += replayed

    def _add(self, rows: list[dict[str, Any]]) -> int:
        try:
            return self.store.add(rows)
        except UsageStoreUnreachable:
            raise
        except UsageStoreError as e:
            if len(rows) == 1:
                self.drop(1, str(e))
                return 0
        written = 0
        for row in rows:  # one bad row must not cost the others, nor stop the spool
            written += self._add([row])
        return written

    def _spool(self, rows: list[dict[str, Any]]) -> None:
        kept = self.spool.append(rows) if self.spool is not None else 0
        if kept < len(rows):
            where = f"the spool {self.spool.path} is full" if self.spool is not None else "there is no spool"
            self.drop(len(rows) - kept, f"{where} while {self.store.name} cannot be reached")

    def drop(self, count: int, why: str) -> None:
        """Count and log `count` rows lost, and why (the last reason goes to /health)."""
        self.dropped += count
        self.last_drop = f"{self.dropped} usage rows lost (last: {why}, at {time.strftime('%H:%M:%S')})"
        logger.error("usage: %d rows lost: %s", count, why)

    def _down(self, error: UsageStoreError) -> None:
        if self.unreachable is None:
            logger.warning("usage: %s; rows are spooled to %s and written when it answers", error,
                           self.spool.path if self.spool is not None else "(no spool)")
            self.unreachable = f"{error} (since {time.strftime('%H:%M:%S')})"
        self._next_try = self._clock() + self._wait_s
        self._wait_s = min(RETRY_MAX_S, self._wait_s * 2)
