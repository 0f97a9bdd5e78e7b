"""State shared by every gateway replica on one Redis (`clutch_state=redis://...`, team mode).

No mitmproxy. The day's spending is shared too, by accounting/shared_spend.py.

* **Quotas**: an rpm quota of N admits N requests across all replicas, not N each. The counts live
  in Redis and are checked and taken in one Lua script, so two replicas that ask at the same moment
  cannot both take the last request of a minute. The semantics are the local book's (quotas.py):
  `rpm` a sliding 60 s window, `rpd` the UTC day, a request must fit the model's quota and its
  provider's, and the wait returned is how long until every limit that holds it back has cleared.
  Keys expire on their own (a minute's window after 61 s, a day's count an hour after its UTC
  midnight), so Redis holds nothing that no longer counts.
* **What holds a model back**: open breakers (target -> when it opened, until when, why), 429
  cooldowns and free-model daily caps (key -> until), one hash each. A replica writes what it learns;
  every replica reads all three in one round trip (`view`) before it orders a request's candidates, so
  a model one replica found broken or resting is skipped by all, with no request of theirs spent on
  it. The probe that closes a breaker is each replica's own (at most one per replica when the cooldown
  ends); a probe that succeeds takes the entry out. Failures are counted by each replica for itself.
* **Sticky sessions**: the target that last answered a session's requests for a primary, under a key
  that expires with the stickiness, read before that session's next request is ordered.

Redis unreachable or slow: the caller goes on with its local state and says so (Resilience: `/health`
"degraded").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import secrets
import time
from collections.abc import Sequence
from typing import Any

from addons.config.rules import Quota
from addons.team.redis_link import RedisLink, first_failure

PREFIX = "clutch:quota:"
BREAKERS = "clutch:breakers"  # hash: target -> {"opened_at", "until", "reason"} of an open breaker
COOLDOWNS = "clutch:cooldowns"  # hash: target or provider -> when its 429 cooldown ends
FREE_CAPS = "clutch:free_caps"  # hash: provider -> when its `:free` models may go again
STICKY = "clutch:sticky:"  # + a digest of (session, primary): {"target", "at"}, expiring with the stickiness
MAX_SHARED_HOLDS = 1000  # entries each of COOLDOWNS and FREE_CAPS holds at most
MAX_TARGET_CHARS = 500  # a sticky target longer than this is not shared
MAX_SHARED_BREAKERS = 1000  # open breakers the hash holds at most: its names come from agents' model names
MAX_COOLDOWN_S = 86_400.0  # an entry claiming a longer cooldown is nonsense, and skipped

# KEYS: per limit, its minute set and the prefix of its day counters. ARGV: a unique member, then per
# limit its rpm and rpd (0: none). Time is Redis's own (TIME): one clock for every replica, for the
# minute window and for the UTC day alike (Unix days are 86,400 s). Returns nil (taken) or the wait,
# as a string.
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local today = math.floor(now / 86400)
local to_midnight = (today + 1) * 86400 - now
local member = ARGV[1]
local wait = 0
for i = 1, #KEYS / 2 do
  local rpm, rpd = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local minute, day = KEYS[2 * i - 1], KEYS[2 * i] .. ':' .. today
  if rpm > 0 then
    redis.call('ZREMRANGEBYSCORE', minute, '-inf', now - 60)
    local used = redis.call('ZCARD', minute)
    if used >= rpm then
      local entry = redis.call('ZRANGE', minute, used - rpm, used - rpm, 'WITHSCORES')
      wait = math.max(wait, tonumber(entry[2]) + 60 - now)
    end
  end
  if rpd > 0 and tonumber(redis.call('GET', day) or '0') >= rpd then
    wait = math.max(wait, to_midnight)
  end
end
if wait > 0 then
  return tostring(wait)
end
for i = 1, #KEYS / 2 do
  local rpm, rpd = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  if rpm > 0 then
    redis.call('ZADD', KEYS[2 * i - 1], now, member)
    redis.call('EXPIRE', KEYS[2 * i - 1], 61)
  end
  if rpd > 0 then
    local day = KEYS[2 * i] .. ':' .. today
    redis.call('INCR', day)
    redis.call('EXPIRE', day, math.ceil(to_midnight) + 3600)
  end
end
return nil
"""


# As _TAKE's KEYS and ARGV: takes the member out of the minute windows and one request off today's counts.
_GIVE_BACK = """
local clock = redis.call('TIME')
local today = math.floor(tonumber(clock[1]) / 86400)
for i = 1, #KEYS / 2 do
  local rpm, rpd = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  if rpm > 0 then
    redis.call('ZREM', KEYS[2 * i - 1], ARGV[1])
  end
  local day = KEYS[2 * i] .. ':' .. today
  if rpd > 0 and tonumber(redis.call('GET', day) or '0') > 0 then
    redis.call('DECR', day)
  end
end
return nil
"""

# KEYS[1]: a hash of ends. ARGV: field, until, the hash's most fields. Sets the field unless it holds a
# later end already (or the hash is full).
_LATER = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(current) and tonumber(current) >= tonumber(ARGV[2]) then
  return 0
end
if not current and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS[1]: a hash. ARGV: (field, value) pairs. Deletes each field that still holds the value read: an
# entry another replica rewrote since is kept.
_FORGET_IF = """
local gone = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    gone = gone + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return gone
"""


class SharedState(RedisLink):
    def __init__(self, url: str) -> None:
        """Raises ValueError for a URL redis-py cannot use (a bad port or database)."""
        super().__init__(url)
        self._take = self.redis.register_script(_TAKE)
        self._give_back = self.redis.register_script(_GIVE_BACK)
        self._later = self.redis.register_script(_LATER)
        self._forget_if = self.redis.register_script(_FORGET_IF)

    async def take(self, limits: Sequence[tuple[str, Quota]], member: str | None = None) -> float | None:
        """Take one request from every limit at once (None), or nothing and the wait. `limits`: the quota
        keys ("provider" or "provider:model") that count this request, with their quotas; `member`: the
        request's name in the minute windows (give_back needs it). Raises RedisUnreachable when Redis
        cannot answer."""
        keys, args = _quota_args(limits, member or secrets.token_hex(8))
        if not keys:
            return None
        wait = await self.call(self._take(keys=keys, args=args))
        return float(wait) if wait is not None else None

    async def give_back(self, limits: Sequence[tuple[str, Quota]], member: str) -> None:
        """Undo a `take` of `member` that went unused. Raises RedisUnreachable."""
        keys, args = _quota_args(limits, member)
        if keys:
            await self.call(self._give_back(keys=keys, args=args))

    async def view(self) -> SharedView:
        """What every replica has shared that still holds: open breakers, 429 cooldowns, free-model
        daily caps; one round trip. Entries that ended or make no sense are in `stale`, for
        forget_stale. Raises RedisUnreachable."""
        return (await self.look())[0]

    async def look(self, sticky: tuple[str, str] | None = None, limits: Sequence[tuple[str, Quota]] = (),
                   member: str = "") -> tuple[SharedView, tuple[str | None, float] | None, float | None]:
        """In one round trip, what a request needs before its candidates are ordered: the view, what
        `sticky` (session, primary) is stuck to (as `sticky` gives it), and `limits` taken for
        `member` (None: taken or nothing to take; else the wait, as `take`). Raises RedisUnreachable."""
        keys, args = _quota_args(limits, member) if limits else ([], [])

        async def read():
            async with self.redis.pipeline(transaction=False) as pipe:
                for table in (BREAKERS, COOLDOWNS, FREE_CAPS):
                    pipe.hgetall(table)
                if sticky is not None:
                    pipe.get(sticky_key(*sticky))
                if keys:  # evalsha, not the Script: a pipeline with scripts asks SCRIPT EXISTS first
                    pipe.evalsha(self._take.sha, len(keys), *keys, *args)
                return await pipe.execute(raise_on_error=False)
        results = await self.call(read())
        if keys and isinstance(results[-1], self.no_script):  # a Redis restarted since: load it, once
            results[-1] = await self.call(self._take(keys=keys, args=args))
        failed = first_failure(results)
        if failed is not None:
            if keys and results[-1] is None:  # taken, but the request goes on without the shared state
                await self.call(self._give_back(keys=keys, args=args))
            raise failed
        view = _view_of(*results[:3])
        entry = _sticky_entry(results[3]) if sticky is not None else None
        wait = results[-1] if keys else None
        return view, entry, float(wait) if wait is not None else None

    async def forget_stale(self, stale: dict[str, dict[str, str]]) -> None:
        """Take a view's stale entries out: {table: {field: the value read}}; one that another replica
        rewrote since is kept."""
        for table, entries in stale.items():
            await self.call(self._forget_if(keys=[table], args=[v for pair in entries.items() for v in pair]))

    async def hold(self, table: str, key: str, until: float) -> None:
        """A 429 cooldown (COOLDOWNS) or a free-model daily cap (FREE_CAPS) until `until`, for every
        replica; one that runs longer already stays."""
        await self.call(self._later(keys=[table], args=[key, repr(until), MAX_SHARED_HOLDS]))

    async def holds_ended(self, table: str, keys: Sequence[str]) -> None:
        if keys:
            await self.call(self.redis.hdel(table, *keys))

    async def breaker_opened(self, target: str, opened_at: float, until: float, reason: str) -> None:
        entry = json.dumps({"opened_at": opened_at, "until": until, "reason": reason[:300]})
        if await self.call(self.redis.hlen(BREAKERS)) >= MAX_SHARED_BREAKERS:
            return  # full: this breaker stays this replica's own until older ones end
        await self.call(self.redis.hset(BREAKERS, target, entry))

    async def breakers_closed(self, targets: Sequence[str]) -> None:
        await self._forget(list(targets))

    async def _forget(self, targets: list[str]) -> None:
        if targets:
            await self.call(self.redis.hdel(BREAKERS, *targets))

    # ------------------------------------------------------------ sticky sessions

    async def stick(self, session: str, primary: str, target: str | None, at: float, ttl_s: float) -> None:
        """`target` answered, for every replica; None: back to the cascade's order (kept as such, so a
        replica that still has the old target knows it is over)."""
        if ttl_s <= 0 or (target is not None and len(target) > MAX_TARGET_CHARS):
            return  # a name that long is no model: nothing is shared
        await self.call(self.redis.set(sticky_key(session, primary), json.dumps({"target": target, "at": at}),
                                       px=max(1, int(ttl_s * 1000))))


def _quota_args(limits: Sequence[tuple[str, Quota]], member: str) -> tuple[list[str], list[str | int]]:
    """_TAKE's and _GIVE_BACK's KEYS and ARGV for the limits that count requests (none: nothing to ask)."""
    counted = [(key, quota) for key, quota in limits if quota.rpm or quota.rpd]
    keys = [name for key, _ in counted for name in (f"{PREFIX}{key}:minute", f"{PREFIX}{key}:day")]
    args: list[str | int] = [member]
    for _, quota in counted:
        args += [quota.rpm or 0, quota.rpd or 0]
    return keys, args


@dataclasses.dataclass
class SharedView:
    breakers: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # target -> opened_at, until, reason
    cooldowns: dict[str, float] = dataclasses.field(default_factory=dict)  # target or provider -> until
    free_caps: dict[str, float] = dataclasses.field(default_factory=dict)  # provider -> until
    stale: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)  # to take out (forget_stale)


def _view_of(breakers: dict[str, str], cooldowns: dict[str, str], free_caps: dict[str, str]) -> SharedView:
    now = time.time()
    view = SharedView()
    stale = view.stale  # table -> field -> the value read
    for target, text in breakers.items():
        entry = _breaker(text, now)
        if entry is not None and entry["until"] > now:
            view.breakers[target] = entry
        else:
            stale.setdefault(BREAKERS, {})[target] = text
    for table, found in ((COOLDOWNS, cooldowns), (FREE_CAPS, free_caps)):
        for key, text in found.items():
            until = _number(text)
            if until is not None and now < until <= now + MAX_COOLDOWN_S:
                (view.cooldowns if table == COOLDOWNS else view.free_caps)[key] = until
            else:
                stale.setdefault(table, {})[key] = text
    return view


def _sticky_entry(text: str | None) -> tuple[str | None, float] | None:
    """What a replica last decided for a session's requests for a primary, within the stickiness: (the
    target that answered, when), or (None, when) if it went back to the cascade's order; None when
    nothing is known."""
    try:
        entry = json.loads(text) if text else None
        if not isinstance(entry, dict) or not math.isfinite(at := float(entry["at"])):
            return None
        return (str(entry["target"]) if entry["target"] is not None else None), at
    except (ValueError, TypeError, KeyError):
        return None


def _breaker(text: str, now: float) -> dict[str, Any] | None:
    """A shared breaker's entry, or None when it makes no sense (no replica writes such)."""
    try:
        entry = json.loads(text)
        until, opened_at = float(entry["until"]), float(entry.get("opened_at") or now)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not (math.isfinite(until) and math.isfinite(opened_at) and opened_at <= until
            and until - opened_at <= MAX_COOLDOWN_S):
        return None
    return {"opened_at": opened_at, "until": until, "reason": str(entry.get("reason") or "")[:300]}


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def sticky_key(session: str, primary: str) -> str:
    """Session ids come from agents: the key is a digest, of bounded length whatever they send."""
    return STICKY + hashlib.sha256(f"{session}\0{primary}".encode("utf-8", "surrogatepass")).hexdigest()[:32]
