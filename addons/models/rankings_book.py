"""RankingsBook: the gateway's copy of the model scan's ranking, for the `m` and `f` tiers and for
cascades whose every model has an open breaker.

Pure logic, no mitmproxy. The ranking is written by `xx scan` (another process) into the usage
store; the book reads it at start and then, at most every `check_every_s` (30 s), asks SQLite's
`PRAGMA data_version` whether another connection committed since, and only then reads the rankings
again (a few dozen rows). So a request pays a clock comparison, a scan shows up within half a minute,
and a store that cannot be read leaves the last good ranking in force. A store across the network (a
team's PostgreSQL, `store.remote`) is read by a thread of its own, so a request never waits on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from addons.config.rules import ModelTarget
from addons.models import ranking

logger = logging.getLogger(__name__)

DEFAULT_REPLACEMENTS = 3


class RankingsBook:
    def __init__(self, store: Any = None, *, check_every_s: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        """`store` is a UsageStore, or a callable returning the current one (or None while there is
        none), so the book follows a store the Usage addon reopens when its option changes."""
        self._store_of = store if callable(store) else (lambda: store)
        self.check_every_s = check_every_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._checked: float | None = None
        self._seen: tuple[int, int] | None = None  # (id of the store object, its data_version)
        self._rankings: list[dict[str, Any]] = []
        self.last_error: str | None = None
        self._reader: threading.Thread | None = None  # reading a remote store

    # ------------------------------------------------------------ loading

    def refresh(self, force: bool = False) -> bool:
        """Re-read the ranking if it may have changed; True when it was read."""
        now = self._clock()
        if not force and self._checked is not None and now - self._checked < self.check_every_s:
            return False
        self._checked = now
        store = self._store_of()
        if store is None:
            return False
        if getattr(store, "remote", False) and not force:
            if self._reader is None or not self._reader.is_alive():
                self._reader = threading.Thread(target=self._read, args=(store, False), name="clutch-rankings",
                                                daemon=True)
                self._reader.start()
            return False
        return self._read(store, force)

    def _read(self, store: Any, force: bool) -> bool:
        try:
            seen = (id(store), store.data_version())
            if not force and seen == self._seen:
                return False
            rows = store.rankings()
        except Exception as e:  # sqlite3's, OSError, the PostgreSQL store's: the last good ranking stays
            if self.last_error != str(e):
                logger.warning("cannot read the model ranking from the usage store: %s; keeping the last one", e)
            self.last_error = str(e)
            return False
        self._seen, self.last_error = seen, None
        if _digest(rows) != _digest(self._rankings):
            logger.info("model ranking: %d models, best %s", len(rows), rows[0]["model"] if rows else "none")
        self._rankings = rows
        return True

    @property
    def rankings(self) -> list[dict[str, Any]]:
        self.refresh()
        return self._rankings

    @property
    def computed_at(self) -> float | None:
        rows = self.rankings
        return rows[0].get("computed_at") if rows else None

    def snapshot(self) -> dict[str, Any]:
        """For the gateway's /rankings endpoint."""
        rows = self.rankings
        picks = {letter: str(found.target) if (found := ranking.pick(rows, letter, self._wall_clock())) else None
                 for letter in ranking.TIER_FREE}
        return {"rankings": rows, "computed_at": self.computed_at, "tiers": picks, "error": self.last_error}

    # ------------------------------------------------------------ using it

    def pick(self, letter: str) -> ranking.TierPick | None:
        """The ranking's model for launch tier `letter` (m or f), with the router's reason."""
        return ranking.pick(self.rankings, letter, self._wall_clock())

    def tier(self, letter: str) -> ModelTarget | None:
        found = self.pick(letter)
        return found.target if found else None

    def replacements(self, exclude: set[str], limit: int = DEFAULT_REPLACEMENTS,
                     free: bool | None = None) -> list[ModelTarget]:
        return ranking.replacements(self.rankings, exclude, limit, free)

    def for_chain(self, chain: Iterable[ModelTarget], limit: int = DEFAULT_REPLACEMENTS) -> list[ModelTarget]:
        """Replacements for a cascade: ranked models not in it; free ones only when every model of
        the chain is free (a breaker must not move a free-only user onto a model that bills)."""
        targets = list(chain)
        if not targets or not self.rankings:
            return []
        known = {row["model"]: bool(row.get("free")) for row in self._rankings}
        all_free = all(known.get(str(t), t.model.endswith(":free")) for t in targets)
        return self.replacements({str(t) for t in targets}, limit, True if all_free else None)


def _digest(rows: Sequence[Mapping[str, Any]]) -> tuple:
    return tuple((r.get("model"), r.get("rank"), r.get("computed_at")) for r in rows)
