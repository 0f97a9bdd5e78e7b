"""Circuit breakers per target ("provider:model"): stop sending requests to a model that keeps failing,
and after a cooldown let exactly one request (the probe) find out whether it recovered.

Pure logic, no mitmproxy. Time comes from an injected wall clock, so tests move time without sleeping
and persisted times mean the same after a restart.

    closed --failures reach the threshold--> open --cooldown passed--> half_open (one probe)
    half_open --probe succeeded--> closed;  half_open --probe failed--> open (fresh cooldown)

Why this shape (what LiteLLM, Portkey, claude-code-router (CCR) and claude-code-proxy (ccp) do, and
where they go wrong):
- failures are weighted and counted in a sliding window, not consecutively: a hard failure (5xx,
  timeout, refused connection) weighs 1.0, a soft one (an answer that cannot be used) 0.5, so a model
  that fails now and then over an hour never trips. Which failures count at all (not a 400 about the
  request, not the agent's own cancellation) is the caller's decision.
- cooldowns are short (60 s by default, like CCR v3; ccp's 300 s kept recovered models out for minutes).
- one probe, not the whole backlog: LiteLLM's and Portkey's breakers simply close when the cooldown
  ends and send every waiting request to a model that may still be down.
- the state the cascade reads is the state that is persisted (ccp persisted a registry nothing read),
  by wall-clock times, so a restart keeps the remaining cooldown instead of forgetting the outage.
- the table is bounded (`max_targets`): targets come from the model names agents send, so a client
  that names thousands of failing models must not grow it for ever. When it is full, closed breakers
  whose failures left the window go first, then closed ones least recently failed, and only then
  open ones; a tenth of the table is freed at once, so the cost is spread over many failures.

Not thread-safe: it lives on the gateway's event loop, where allow() is atomic between awaits.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
HARD, SOFT = 1.0, 0.5  # failure weights

# A probe that never reported back (a lost task, a bug) must not keep a target shut for good; an answer
# can legitimately stream for many minutes, so the lease is long. A second probe is the worst case.
PROBE_LEASE_S = 900.0

_EPSILON = 1e-9  # weights like 0.1 do not add up exactly
MAX_TARGETS = 4096  # breakers kept at most (targets with failures in the window, or not closed)


@dataclasses.dataclass
class _Breaker:
    state: str = CLOSED
    failures: collections.deque[tuple[float, float]] = dataclasses.field(default_factory=collections.deque)
    opened_at: float | None = None
    until: float | None = None  # end of the cooldown (kept in half_open, for the record)
    reason: str = ""  # the last failure's
    probe_since: float | None = None  # half_open: when the probe was handed out; None = the probe is free


class BreakerBoard:
    def __init__(self, threshold: float = 3.0, window_s: float = 60.0, cooldown_s: float = 60.0,
                 clock: Callable[[], float] = time.time, probe_lease_s: float = PROBE_LEASE_S,
                 max_targets: int = MAX_TARGETS) -> None:
        self._clock = clock
        # only breakers that are not closed-and-clean, least recently failed first
        self._breakers: dict[str, _Breaker] = {}
        self.probe_lease_s = probe_lease_s
        self.max_targets = max(1, max_targets)
        self.version = 0
        # told when a breaker opens here (key, opened_at, until, reason) and when its probe closes it:
        # a team gateway's replicas share their open breakers (shared_state.py)
        self.on_open: Callable[[str, float, float, str], None] | None = None
        self.on_close: Callable[[str], None] | None = None
        self.configure(threshold, window_s, cooldown_s)

    def configure(self, threshold: float, window_s: float, cooldown_s: float) -> None:
        """New settings; breakers keep their state, a running cooldown keeps its end."""
        if not threshold > 0 or not window_s > 0 or not cooldown_s >= 0:
            raise ValueError(f"breaker settings need threshold > 0, window_s > 0, cooldown_s >= 0 "
                             f"(got {threshold}, {window_s}, {cooldown_s})")
        self.threshold, self.window_s, self.cooldown_s = float(threshold), float(window_s), float(cooldown_s)

    # ------------------------------------------------------------ questions

    def allow(self, key: str) -> bool:
        """May a request go to `key` now? In half_open the first caller gets True and is the probe:
        it must end with success(), failure() or release()."""
        now = self._clock()
        breaker = self._current(key, now)
        if breaker is None or breaker.state == CLOSED:
            return True
        if breaker.state == HALF_OPEN and breaker.probe_since is None:
            breaker.probe_since = now
            return True
        return False

    def is_open(self, key: str) -> bool:
        """True while nothing may go to `key` (cooldown running, or the probe in flight). Never claims
        the probe, so a cascade can filter its candidates with it and call allow() on the one it tries."""
        breaker = self._current(key, self._clock())
        if breaker is None:
            return False
        return breaker.state == OPEN or (breaker.state == HALF_OPEN and breaker.probe_since is not None)

    def state(self, key: str) -> str:
        breaker = self._current(key, self._clock())
        return breaker.state if breaker else CLOSED

    def retry_after(self, key: str) -> float | None:
        """Seconds until an open breaker lets its probe through; 0.0 while the probe is in flight (its
        verdict is due any moment); None when requests may go now."""
        now = self._clock()
        breaker = self._current(key, now)
        if breaker is None:
            return None
        if breaker.state == OPEN:  # (an open breaker always has an end; none would mean now)
            return max(0.0, breaker.until - now) if breaker.until is not None else 0.0
        if breaker.state == HALF_OPEN and breaker.probe_since is not None:
            return 0.0
        return None

    # ------------------------------------------------------------ verdicts

    def failure(self, key: str, weight: float = HARD, reason: str = "") -> None:
        if not weight > 0:
            return
        now = self._clock()
        breaker = self._current(key, now)
        if breaker is None:
            if len(self._breakers) >= self.max_targets:
                self._make_room(now)
            breaker = self._breakers[key] = _Breaker()
        else:
            self._breakers[key] = self._breakers.pop(key)  # the most recently failed goes last
        if breaker.state == OPEN:
            # a request sent before the breaker opened: it says nothing new, and counting it would
            # stretch the cooldown by however long that request took to fail
            return
        breaker.failures.append((now, float(weight)))
        if reason:
            breaker.reason = reason
        if breaker.state == HALF_OPEN or self._weight(breaker, now) >= self.threshold - _EPSILON:
            self._open(key, breaker, now)
        self.version += 1

    def success(self, key: str) -> None:
        breaker = self._current(key, self._clock())
        if breaker is None:
            return  # the common case costs nothing and changes nothing (no save)
        if breaker.state == OPEN:
            return  # a request sent before the breaker opened; the probe decides
        if breaker.state == HALF_OPEN:
            logger.info("breaker %s closed: the probe succeeded", key)
            if self.on_close is not None:
                self.on_close(key)
        del self._breakers[key]  # closed with no failures is the same as no breaker at all
        self.version += 1

    def adopt(self, key: str, opened_at: float, until: float, reason: str) -> bool:
        """Another replica opened `key`'s breaker until `until`: open it here too, unless it already is
        (for as long or longer). Not told back to on_open. True when this opened it."""
        now = self._clock()
        if until <= now:
            return False
        breaker = self._current(key, now)
        if breaker is not None and breaker.state == OPEN and breaker.until is not None and breaker.until >= until:
            return False
        if breaker is None:
            if len(self._breakers) >= self.max_targets:
                self._make_room(now)
            breaker = self._breakers[key] = _Breaker()
        breaker.state, breaker.opened_at, breaker.until = OPEN, opened_at, until
        breaker.probe_since, breaker.reason = None, reason
        logger.info("breaker %s open until %s, as another replica found: %s", key,
                    time.strftime("%H:%M:%S", time.localtime(until)), reason or "failures")
        self.version += 1
        return True

    def drop_adopted(self, key: str, until: float) -> None:
        """A breaker adopted until `until` that the shared state no longer holds (a reset on another
        replica): closed here too, unless this replica opened it again since."""
        breaker = self._current(key, self._clock())
        if breaker is not None and breaker.state == OPEN and breaker.until == until:
            del self._breakers[key]
            self.version += 1

    def release(self, key: str) -> None:
        """The probe ended without a verdict (the agent cancelled, a failure that does not count):
        the next caller may probe. Harmless for callers that were not the probe."""
        breaker = self._current(key, self._clock())
        if breaker is not None and breaker.state == HALF_OPEN:
            breaker.probe_since = None

    def reset(self, selected: Callable[[str], bool]) -> dict[str, dict[str, Any]]:
        """A fresh start for the targets `selected` picks (breaker_reset.selector): their breakers and
        failure counts are forgotten. Returns what each was: {key: {"state", "failures", "until"}}."""
        now = self._clock()
        cleared = {}
        for key in [key for key in self._breakers if selected(key)]:
            breaker = self._current(key, now)
            if breaker is None:
                continue
            cleared[key] = {"state": breaker.state, "failures": round(self._weight(breaker, now), 3),
                            "until": breaker.until if breaker.state == OPEN else None}
            del self._breakers[key]
        if cleared:
            self.version += 1
        return cleared

    # ------------------------------------------------------------ reporting and persistence

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Breakers that are not closed, or closed with failures in the window (times: epoch seconds)."""
        now = self._clock()
        self._prune(now)
        return {key: {"state": b.state, "failures": round(self._weight(b, now), 3), "opened_at": b.opened_at,
                      "until": b.until, "reason": b.reason, "probe_in_flight": b.probe_since is not None}
                for key, b in sorted(self._breakers.items())}

    def to_json(self) -> dict:
        now = self._clock()
        self._prune(now)
        return {"breakers": {key: {"state": b.state, "failures": [[at, weight] for at, weight in b.failures],
                                   "opened_at": b.opened_at, "until": b.until, "reason": b.reason}
                             for key, b in self._breakers.items()}}

    def load(self, data: dict) -> None:
        """Replace the state with what to_json() saved (maybe in an earlier run). Entries that make no
        sense are skipped with a warning: a bad state file must not stop the gateway."""
        now = self._clock()
        self._breakers.clear()
        entries = data.get("breakers") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            entries = {}
            logger.warning("breaker state has no 'breakers' object; starting with closed breakers")
        for key, entry in entries.items():
            try:
                breaker = self._restore(entry, now)
            except (TypeError, ValueError, KeyError, AttributeError) as e:
                logger.warning("breaker state for %s ignored: %s", key, e)
                continue
            if breaker is not None:
                self._breakers[str(key)] = breaker
        if len(self._breakers) > self.max_targets:
            self._make_room(now)
        self.version += 1

    # ------------------------------------------------------------ internals

    def _current(self, key: str, now: float) -> _Breaker | None:
        """The breaker of `key` with time applied: a passed cooldown gives half_open, an expired probe
        lease gives the probe back."""
        breaker = self._breakers.get(key)
        if breaker is None:
            return None
        if breaker.state == OPEN and (breaker.until is None or now >= breaker.until):
            breaker.state, breaker.probe_since = HALF_OPEN, None
            self.version += 1
        if breaker.state == HALF_OPEN and breaker.probe_since is not None \
                and now - breaker.probe_since >= self.probe_lease_s:
            logger.warning("breaker %s: the probe sent %.0f s ago never reported; another may go",
                           key, now - breaker.probe_since)
            breaker.probe_since = None
        return breaker

    def _weight(self, breaker: _Breaker, now: float) -> float:
        """The weighted failures within the window; older ones are forgotten."""
        while breaker.failures and now - breaker.failures[0][0] >= self.window_s:
            breaker.failures.popleft()
        return sum(weight for _, weight in breaker.failures)

    def _open(self, key: str, breaker: _Breaker, now: float) -> None:
        breaker.state, breaker.opened_at, breaker.until = OPEN, now, now + self.cooldown_s
        breaker.probe_since = None
        logger.warning("breaker %s open for %.0f s: %s", key, self.cooldown_s, breaker.reason or "failures")
        if self.on_open is not None:
            self.on_open(key, now, breaker.until, breaker.reason)

    def _prune(self, now: float) -> None:
        for key in list(self._breakers):
            breaker = self._current(key, now)
            if breaker is None:
                continue
            self._weight(breaker, now)
            if breaker.state == CLOSED and not breaker.failures:
                del self._breakers[key]

    def _make_room(self, now: float) -> None:
        """Bring the table to nine tenths of max_targets: forget clean breakers, then closed ones least
        recently failed, and open ones only when nothing else is left."""
        self._prune(now)
        keep = self.max_targets * 9 // 10
        excess = len(self._breakers) - keep
        if excess <= 0:
            return
        closed = [key for key, breaker in self._breakers.items() if breaker.state == CLOSED]
        victims = closed[:excess]
        if len(victims) < excess:
            spared = set(closed)
            victims += [key for key in self._breakers if key not in spared][:excess - len(victims)]
        for key in victims:
            del self._breakers[key]
        logger.warning("breaker table full (%d targets): forgot %d breakers (%d of them closed)",
                       self.max_targets, len(victims), min(len(closed), len(victims)))
        self.version += 1

    def _restore(self, entry: dict, now: float) -> _Breaker | None:
        breaker = _Breaker(reason=str(entry.get("reason") or ""))
        for at, weight in entry.get("failures") or []:
            at, weight = _finite(at), _finite(weight)
            if weight > 0 and now - at < self.window_s:
                breaker.failures.append((at, weight))
        state = entry.get("state")
        if state == OPEN:
            opened_at, until = _finite(entry["opened_at"]), _finite(entry["until"])
            # the remaining cooldown, never longer than the one it was opened with (a clock set back)
            remaining = min(until - now, until - opened_at)
            if remaining > 0:
                breaker.state, breaker.opened_at, breaker.until = OPEN, opened_at, now + remaining
            else:  # the cooldown passed while the gateway was down
                breaker.state, breaker.opened_at, breaker.until = HALF_OPEN, opened_at, until
        elif state == HALF_OPEN:  # a probe in flight died with the old process: the probe is free
            breaker.state = HALF_OPEN
            breaker.opened_at, breaker.until = _optional(entry.get("opened_at")), _optional(entry.get("until"))
        elif state == CLOSED:
            return breaker if breaker.failures else None
        else:
            raise ValueError(f"unknown state {state!r}")
        return breaker


def _optional(value: Any) -> float | None:
    return None if value is None else _finite(value)


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a number")
    return float(value)
