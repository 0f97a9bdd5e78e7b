"""Request quotas per model and per provider: may a target get a request now, and if not, for how long
must it wait.

Pure logic, no mitmproxy. Time comes from an injected wall clock (epoch seconds).

The rules' `quotas` are keyed by a provider ("openrouter": all its models counted together) or by a
target ("openrouter:qwen/qwen3-coder": that model alone); a request must fit both. `rpm` is a sliding
60 s window (a fixed minute would allow twice the rate across its edge), `rpd` counts the UTC day
(when OpenRouter's daily limits reset). A 429 puts the model (or the whole provider) in a cooldown.

OpenRouter's `:free` limits belong to the account, not to a model (its free-variant docs: 20 requests
a minute and 50 or 1000 a day, "not per model"): once the daily free cap is hit, every `:free` model
of that provider waits until UTC midnight, so a cascade goes straight to paid or other providers
instead of spending a request on each free model.

Only keys that have a quota are counted, plus cooldowns still running; old timestamps are pruned, so
memory stays bounded whatever the traffic. Not thread-safe: it lives on the gateway's event loop.
"""

from __future__ import annotations

import collections
import datetime
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from addons.config.rules import Quota

logger = logging.getLogger(__name__)

MINUTE_S = 60.0
NO_QUOTA_COOLDOWN_S = 0.0  # a target with no quota in the rules rests for the 429's own Retry-After only
MAX_COOLDOWN_S = 86_400.0  # a Retry-After beyond a day is a bug or an absolute time, not advice
FREE_SUFFIX = ":free"


class QuotaBook:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # None until configure(): a load() that comes first keeps every count for configure() to sort
        self._quotas: dict[str, Quota] | None = None
        self._minute: dict[str, collections.deque[float]] = {}  # key -> send times within the last minute
        self._day: dict[str, tuple[str, int]] = {}  # key -> (UTC date, requests that day)
        self._cooldowns: dict[str, float] = {}  # target or provider -> end of its 429 cooldown
        self._free_cap: dict[str, float] = {}  # provider -> when its `:free` models may go again
        self.version = 0
        # team mode: told ("cooldown" | "free_cap", key, until) when one begins or runs longer here
        self.on_hold: Callable[[str, str, float], None] | None = None

    def configure(self, quotas: Mapping[str, Quota | dict]) -> None:
        """The rules' quotas; counts of keys that keep their limits survive a reload."""
        self._quotas = {key: q if isinstance(q, Quota) else Quota.model_validate(q) for key, q in quotas.items()}
        self._prune(self._clock())
        self.version += 1

    # ------------------------------------------------------------ questions

    def wait_s(self, target: str) -> float | None:
        """None when `target` ("provider:model", or a bare provider) may get a request now; else the
        seconds until every limit that holds it back has cleared."""
        now = self._clock()
        waits = [self.hold_s(target) or 0.0]
        waits += [self._quota_wait(key, quota, now) for key, quota in self.limits(target)]
        longest = max(waits)
        return longest if longest > 0 else None

    def hold_s(self, target: str) -> float | None:
        """What holds `target` back besides the request counts: a 429 cooldown of it or its provider, the
        free-model daily cap; None when nothing does."""
        now = self._clock()
        provider, _, model = target.partition(":")
        waits = [self._cooldowns.get(key, now) - now for key in dict.fromkeys((target, provider))]
        if model.endswith(FREE_SUFFIX):
            waits.append(self._free_cap.get(provider, now) - now)
        longest = max(waits)
        return longest if longest > 0 else None

    def limits(self, target: str) -> list[tuple[str, Quota]]:
        """The quotas a request to `target` counts against: the model's own and its provider's."""
        found = []
        for key in dict.fromkeys((target, target.partition(":")[0])):
            quota = self._limit(key)
            if quota is not None:
                found.append((key, quota))
        return found

    # ------------------------------------------------------------ events

    def take(self, target: str) -> float | None:
        """Check and count at once: None, and one request counted, when `target` may get it now; else
        the wait, nothing counted. Between awaits on the event loop, nothing else runs in between."""
        wait = self.wait_s(target)
        if wait is None:
            self.consume(target)
        return wait

    def consume(self, target: str) -> None:
        """One request sent to `target`: it counts for the model's quota and for its provider's."""
        now = self._clock()
        counted = False
        for key in dict.fromkeys((target, target.partition(":")[0])):
            quota = self._limit(key)
            if quota is None:
                continue
            if quota.rpm:
                self._recent(key, now).append(now)
                counted = True
            if quota.rpd:
                self._day[key] = (_utc_day(now), self._today(key, now) + 1)
                counted = True
        if counted:
            self.version += 1

    def cooldown(self, target: str, seconds: float | None) -> None:
        """After a 429: `target` waits the longer of the answer's Retry-After (`seconds`) and its quota's
        cooldown_after_429_s (none without a quota). A bare provider name puts all its models in the cooldown."""
        now = self._clock()
        told = seconds if isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0 else 0.0
        duration = min(max(told, self._cooldown_after_429(target)), MAX_COOLDOWN_S)
        if duration <= 0:
            return
        until = now + duration
        if until > self._cooldowns.get(target, 0.0):  # never shortens a running cooldown
            self._cooldowns[target] = until
            self.version += 1
            if self.on_hold is not None:
                self.on_hold("cooldown", target, until)
        self._prune_expired(now)

    def adopt(self, kind: str, key: str, until: float) -> float | None:
        """A cooldown ("cooldown") or free-model cap ("free_cap") another replica shared: it holds here
        too, unless one here runs longer. Bounded as this book's own are. Returns the end it set, or
        None when it set nothing."""
        now = self._clock()
        table = self._cooldowns if kind == "cooldown" else self._free_cap
        until = min(until, now + MAX_COOLDOWN_S if kind == "cooldown" else _next_utc_midnight(now))
        if until > now and until > table.get(key, 0.0):
            table[key] = until
            self.version += 1
            return until
        return None

    def drop_adopted(self, kind: str, key: str, until: float) -> None:
        """An adopted cooldown or cap that the shared state no longer holds (a reset on another
        replica): it ends here too, unless this replica extended it since."""
        table = self._cooldowns if kind == "cooldown" else self._free_cap
        if table.get(key) == until:
            del table[key]
            self.version += 1

    def free_daily_cap(self, provider: str) -> None:
        """The provider answered that the account's free-model requests for today are used up: every
        `:free` model of it waits until the next UTC midnight (accepts a target too)."""
        now = self._clock()
        provider = provider.partition(":")[0]
        self._free_cap[provider] = _next_utc_midnight(now)
        self.version += 1
        if self.on_hold is not None:
            self.on_hold("free_cap", provider, self._free_cap[provider])
        logger.warning("%s: the free-model daily cap is used up; %s models wait until UTC midnight",
                       provider, FREE_SUFFIX)

    def clear_cooldowns(self, selected: Callable[[str], bool]) -> dict[str, dict[str, float]]:
        """A fresh start for what `selected` picks (breaker_reset.selector): their 429 cooldowns and,
        for a provider, its free-model daily cap end now. Request counts stay: they are what was sent.
        Returns {"cooldowns": {key: until}, "free_daily_cap": {provider: until}}."""
        now = self._clock()
        self._prune_expired(now)
        cleared: dict[str, dict[str, float]] = {}
        for name, table in (("cooldowns", self._cooldowns), ("free_daily_cap", self._free_cap)):
            cleared[name] = {key: table.pop(key) for key in [key for key in table if selected(key)]}
        if any(cleared.values()):
            self.version += 1
        return cleared

    # ------------------------------------------------------------ reporting and persistence

    def snapshot(self) -> dict[str, Any]:
        """{key: {"rpm": "used/limit", "rpd": "used/limit", "cooldown_until", "wait_s"}} for every key
        with a quota or a running cooldown, and "free_daily_cap": {provider: until}."""
        now = self._clock()
        self._prune(now)
        found: dict[str, Any] = {}
        for key in sorted(set(self._quotas or {}) | set(self._cooldowns)):
            quota = self._limit(key)
            rpm = f"{len(self._recent(key, now))}/{quota.rpm}" if quota and quota.rpm else None
            rpd = f"{self._today(key, now)}/{quota.rpd}" if quota and quota.rpd else None
            wait = self.wait_s(key)
            found[key] = {"rpm": rpm, "rpd": rpd, "cooldown_until": self._cooldowns.get(key),
                          "wait_s": round(wait, 3) if wait is not None else None}
        found["free_daily_cap"] = dict(sorted(self._free_cap.items()))
        return found

    def to_json(self) -> dict:
        now = self._clock()
        self._prune(now)
        return {"minute": {key: list(stamps) for key, stamps in self._minute.items()},
                "day": {key: [day, count] for key, (day, count) in self._day.items()},
                "cooldowns": dict(self._cooldowns), "free_daily_cap": dict(self._free_cap)}

    def load(self, data: dict) -> None:
        """Replace the counts with what to_json() saved (maybe in an earlier run): today's daily counts,
        the last minute's send times, running cooldowns and free caps. Nonsense is skipped with a warning."""
        now = self._clock()
        today = _utc_day(now)
        self._minute, self._day, self._cooldowns, self._free_cap = {}, {}, {}, {}
        if not isinstance(data, dict):
            data = {}
        for key, stamps in _section(data, "minute"):
            # a send time in the future (a clock set back) counts as now, so it cannot linger
            recent = sorted(min(s, now) for s in map(_finite, stamps) if now - s < MINUTE_S)
            if recent:
                self._minute[key] = collections.deque(recent)
        for key, (day, count) in _section(data, "day"):
            if day == today and _finite(count) > 0:
                self._day[key] = (today, int(count))
        for key, until in _section(data, "cooldowns"):
            if _finite(until) > now:
                self._cooldowns[key] = min(until, now + MAX_COOLDOWN_S)
        for provider, until in _section(data, "free_daily_cap"):
            if _finite(until) > now:
                self._free_cap[provider] = min(until, _next_utc_midnight(now))
        self._prune(now)
        self.version += 1

    # ------------------------------------------------------------ internals

    def _limit(self, key: str) -> Quota | None:
        return self._quotas.get(key) if self._quotas else None

    def _quota_wait(self, key: str, quota: Quota, now: float) -> float:
        wait = 0.0
        if quota.rpm:
            stamps = self._recent(key, now)
            if len(stamps) >= quota.rpm:  # allowed again once the send that makes it `rpm` leaves the window
                wait = stamps[len(stamps) - quota.rpm] + MINUTE_S - now
        if quota.rpd and self._today(key, now) >= quota.rpd:
            wait = max(wait, _next_utc_midnight(now) - now)
        return wait

    def _recent(self, key: str, now: float) -> collections.deque[float]:
        stamps = self._minute.setdefault(key, collections.deque())
        while stamps and now - stamps[0] >= MINUTE_S:
            stamps.popleft()
        return stamps

    def _today(self, key: str, now: float) -> int:
        day, count = self._day.get(key, ("", 0))
        return count if day == _utc_day(now) else 0

    def _cooldown_after_429(self, target: str) -> float:
        """The model's own setting if it names one, else its provider's. Without any quota in the rules
        only the provider's Retry-After counts: the rules asked for no rest, and the provider said how long."""
        own, provider = self._limit(target), self._limit(target.partition(":")[0])
        if own is not None and "cooldown_after_429_s" in own.model_fields_set:
            return float(own.cooldown_after_429_s)
        if provider is not None:
            return float(provider.cooldown_after_429_s)
        return float(own.cooldown_after_429_s) if own is not None else NO_QUOTA_COOLDOWN_S

    def _prune_expired(self, now: float) -> None:
        for table in (self._cooldowns, self._free_cap):
            for key in [k for k, until in table.items() if until <= now]:
                del table[key]

    def _prune(self, now: float) -> None:
        """Drop what can no longer matter: old send times, other days' counts, ended cooldowns, and
        (once configured) the counts of keys whose quota is gone."""
        self._prune_expired(now)
        for key in list(self._minute):
            quota = self._limit(key)
            if not self._recent(key, now) or (self._quotas is not None and not (quota and quota.rpm)):
                del self._minute[key]
        for key in list(self._day):
            quota = self._limit(key)
            if not self._today(key, now) or (self._quotas is not None and not (quota and quota.rpd)):
                del self._day[key]


def _utc_day(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).date().isoformat()


def _next_utc_midnight(now: float) -> float:
    day = datetime.datetime.fromtimestamp(now, datetime.UTC).date() + datetime.timedelta(days=1)
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp()


def _section(data: dict, name: str):
    """The (key, value) pairs of one saved table; a pair that does not parse is logged and skipped."""
    table = data.get(name)
    if table is None:
        return
    if not isinstance(table, dict):
        logger.warning("quota state: %r is not an object; ignored", name)
        return
    for key, value in table.items():
        try:
            if name == "day":
                day, count = value
                _finite(count)
                value = (str(day), count)
            elif name == "minute":
                value = [_finite(s) for s in value]
            else:
                value = _finite(value)
        except (TypeError, ValueError) as e:
            logger.warning("quota state for %s in %r ignored: %s", key, name, e)
            continue
        yield str(key), value


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a number")
    return float(value)
