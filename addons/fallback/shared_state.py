"""State shared by every gateway replica on one Redis (`clutch_state=redis://...`, team mode).

No mitmproxy. Two parts:

* **Quotas**: an rpm quota of N admits N requests across all replicas, not N each. The counts live
  in Redis and are checked and taken in one Lua script, so two replicas that ask at the same moment
  cannot both take the last request of a minute. The semantics are the local book's (quotas.py):
  `rpm` a sliding 60 s window, `rpd` the UTC day, a request must fit the model's quota and its
  provider's, and the wait returned is how long until every limit that holds it back has cleared.
  Keys expire on their own (a minute's window after 61 s, a day's count an hour after its UTC
  midnight), so Redis holds nothing that no longer counts.
* **Open breakers**: a replica whose breaker opens writes it into one hash (target -> when it opened,
  until when, why); every replica reads the hash before it orders a request's candidates, so a model
  one replica found broken is skipped by all, with no request of theirs spent on it. The probe that
  closes it is each replica's own (at most one per replica when the cooldown ends); a probe that
  succeeds takes the entry out. Failures are counted by each replica for itself.

What stays local: 429 cooldowns, the free-model daily cap, sticky sessions. Redis unreachable or
slow: the caller goes on with its local state and says so (Resilience: `/health` "degraded").
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

from addons.config.rules import Quota

PREFIX = "clutch:quota:"
BREAKERS = "clutch:breakers"  # hash: target -> {"opened_at", "until", "reason"} of an open breaker
TIMEOUT_S = 1.0  # a Redis that takes longer is unreachable: the replica goes on alone (Resilience)

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


class RedisUnreachable(Exception):
    """Redis could not answer (down, refusing, slower than TIMEOUT_S, or an error of its own)."""


class SharedState:
    def __init__(self, url: str) -> None:
        # imported here: only team mode pays for redis-py (about 11 MB and 0.1 s at start-up)
        from redis import asyncio as aioredis
        from redis.exceptions import RedisError

        self.url = url
        self._errors = (RedisError, OSError)
        self._redis = aioredis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
                                              decode_responses=True)
        self._take = self._redis.register_script(_TAKE)

    async def take(self, limits: Sequence[tuple[str, Quota]]) -> float | None:
        """Take one request from every limit at once (None), or nothing and the wait. `limits`: the quota
        keys ("provider" or "provider:model") that count this request, with their quotas. Raises
        RedisUnreachable when Redis cannot answer."""
        counted = [(key, quota) for key, quota in limits if quota.rpm or quota.rpd]
        if not counted:
            return None
        keys = [name for key, _ in counted for name in (f"{PREFIX}{key}:minute", f"{PREFIX}{key}:day")]
        args: list[str | int] = [secrets.token_hex(8)]
        for _, quota in counted:
            args += [quota.rpm or 0, quota.rpd or 0]
        try:
            wait = await self._take(keys=keys, args=args)
        except self._errors as e:
            raise RedisUnreachable(f"{type(e).__name__}: {e}") from e
        return float(wait) if wait is not None else None

    async def open_breakers(self) -> dict[str, dict[str, Any]]:
        """Every breaker a replica opened whose cooldown has not ended: {target: {"opened_at", "until",
        "reason"}}. Raises RedisUnreachable."""
        try:
            entries = await self._redis.hgetall(BREAKERS)
        except self._errors as e:
            raise RedisUnreachable(f"{type(e).__name__}: {e}") from e
        now = time.time()
        found: dict[str, dict[str, Any]] = {}
        stale: list[str] = []
        for name, text in entries.items():
            target = name.decode() if isinstance(name, bytes) else name  # decode_responses: always str
            try:
                entry = json.loads(text)
                until = float(entry["until"])
            except (ValueError, TypeError, KeyError):
                stale.append(target)
                continue
            if until > now:
                found[target] = {"opened_at": float(entry.get("opened_at") or now), "until": until,
                                 "reason": str(entry.get("reason") or "")}
            else:
                stale.append(target)
        if stale:
            await self._forget(stale)
        return found

    async def breaker_opened(self, target: str, opened_at: float, until: float, reason: str) -> None:
        entry = json.dumps({"opened_at": opened_at, "until": until, "reason": reason[:300]})
        try:
            await self._redis.hset(BREAKERS, target, entry)
        except self._errors as e:
            raise RedisUnreachable(f"{type(e).__name__}: {e}") from e

    async def breakers_closed(self, targets: Sequence[str]) -> None:
        await self._forget(list(targets))

    async def _forget(self, targets: list[str]) -> None:
        if not targets:
            return
        try:
            await self._redis.hdel(BREAKERS, *targets)
        except self._errors as e:
            raise RedisUnreachable(f"{type(e).__name__}: {e}") from e

    async def ping(self) -> None:
        """Returns once Redis answers; raises RedisUnreachable."""
        try:
            await self._redis.ping()
        except self._errors as e:
            raise RedisUnreachable(f"{type(e).__name__}: {e}") from e

    async def close(self) -> None:
        await self._redis.aclose()


def describe(url: str) -> str:
    """The URL without its password, for logs and /health."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}"
