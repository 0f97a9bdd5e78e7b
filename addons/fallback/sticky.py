"""Sticky sessions after a fallback: once a session's request for a primary was answered by another
target, its next requests for that primary go there first, for a while.

Pure logic, no mitmproxy. Switching models in the middle of a conversation throws away the provider's
prompt cache (every turn resends the whole history, now at full price and slower), so a session stays
on the target that last answered it. The stickiness expires `ttl_s` after the last answer (cc-proxy
uses 5 minutes, OpenRouter's own cache affinity 10 minutes of inactivity): by then the cache is cold
anyway and the primary, which may have recovered, is tried again.

Entries live in memory only, in an LRU bounded by `max_entries`; after a restart every session starts
on its primary. Not thread-safe: it lives on the gateway's event loop.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable


class StickyTable:
    def __init__(self, ttl_s: float = 300.0, clock: Callable[[], float] = time.time,
                 max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1 (got {max_entries})")
        self._clock = clock
        self.max_entries = max_entries
        # (session, primary) -> (winner, when it last answered), least recently used first. The ttl is
        # applied on reading, so a new ttl from configure() holds for existing entries too. (An
        # OrderedDict rather than cachetools' LRUCache: snapshot() must read without reordering.)
        self._entries: collections.OrderedDict[tuple[str, str], tuple[str, float]] = collections.OrderedDict()
        # team mode: told (session, primary, winner or None, when) on every change, to share it
        self.on_change: Callable[[str, str, str | None, float], None] | None = None
        self.configure(ttl_s)

    def configure(self, ttl_s: float) -> None:
        """A new ttl, for existing entries too; 0 turns stickiness off."""
        if not ttl_s >= 0:
            raise ValueError(f"ttl_s must be 0 or more (got {ttl_s})")
        self.ttl_s = float(ttl_s)

    def get(self, session: str, primary: str) -> str | None:
        """The target that answered this session's last request for `primary`, while within the ttl."""
        key = (session, primary)
        entry = self._entries.get(key)
        if entry is None:
            return None
        winner, answered_at = entry
        if self._clock() - answered_at >= self.ttl_s:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return winner

    def set(self, session: str, primary: str, winner: str) -> None:
        """`winner` answered; the ttl starts again. The primary itself answering ends the stickiness."""
        if winner == primary:
            self.forget(session, primary)
            return
        now = self._clock()
        self._put(session, primary, winner, now)
        if self.on_change is not None:
            self.on_change(session, primary, winner, now)

    def forget(self, session: str, primary: str) -> None:
        """The sticky target failed: the session goes back to its cascade's order. (In team mode the
        request's start adopted what the shared state held, so nothing here means nothing there.)"""
        if self._entries.pop((session, primary), None) is not None and self.on_change is not None:
            self.on_change(session, primary, None, self._clock())

    def _put(self, session: str, primary: str, winner: str, at: float) -> None:
        key = (session, primary)
        self._entries[key] = (winner, at)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def adopt(self, session: str, primary: str, entry: tuple[str | None, float] | None) -> None:
        """What the shared state says of this session (team mode): (winner, when it answered), or
        (None, when a replica sent it back to the cascade's order). Taken when newer than what this
        replica knows; None (nothing shared, e.g. after an outage) changes nothing."""
        key = (session, primary)
        if entry is None:
            return
        known = self._entries.get(key)
        if known is not None and known[1] >= entry[1]:
            return
        winner, at = entry
        if winner is None:
            self._entries.pop(key, None)
        else:
            self._put(session, primary, winner, at)

    def snapshot(self) -> list[dict]:
        """Live entries, the longest-lived first: [{"session", "primary", "target", "expires_in_s"}]."""
        now = self._clock()
        live = []
        for key, (winner, answered_at) in list(self._entries.items()):
            left = answered_at + self.ttl_s - now
            if left <= 0:
                del self._entries[key]
                continue
            live.append({"session": key[0], "primary": key[1], "target": winner, "expires_in_s": round(left, 3)})
        return sorted(live, key=lambda entry: -entry["expires_in_s"])
