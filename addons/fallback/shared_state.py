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

import asyncio
import json
import math
import secrets
import time
from collections.abc import Sequence
from typing import Any

from addons.config.rules import Quota

PREFIX = "clutch:quota:"
BREAKERS = "clutch:breakers"  # hash: target -> {"opened_at", "until", "reason"} of an open breaker
TIMEOUT_S = 1.0  # a Redis that takes longer is unreachable: the replica goes on alone (Resilience)
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


class RedisUnreachable(Exception):
    """Redis could not answer (down, refusing, slower than TIMEOUT_S, or an error of its own)."""


class SharedState:
    def __init__(self, url: str) -> None:
        """Raises ValueError for a URL redis-py cannot use (a bad port or database)."""
        # imported here: only team mode pays for redis-py (about 11 MB and 0.1 s at start-up)
        from redis import asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self.url = url
        self._errors = (RedisError, OSError, TimeoutError)
        # no retries: redis-py's default (10, with backoff) would hold a request for seconds when Redis is
        # away; one failure puts the replica on its own state instead, and Resilience asks again
        self._redis = aioredis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
                                              retry=Retry(NoBackoff(), 0), decode_responses=True)
        self._take = self._redis.register_script(_TAKE)

    async def _call(self, work):
        """One call to Redis, at most TIMEOUT_S in all; RedisUnreachable for anything that goes wrong."""
        try:
            async with asyncio.timeout(TIMEOUT_S):
                return await work
        except self._errors as e:
            raise RedisUnreachable(f"{type(e).__name__}: {e}") from e

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
        wait = await self._call(self._take(keys=keys, args=args))
        return float(wait) if wait is not None else None

    async def open_breakers(self) -> dict[str, dict[str, Any]]:
        """Every breaker a replica opened whose cooldown has not ended: {target: {"opened_at", "until",
        "reason"}}. Raises RedisUnreachable."""
        entries = await self._call(self._redis.hgetall(BREAKERS))
        now = time.time()
        found: dict[str, dict[str, Any]] = {}
        stale: list[str] = []
        for name, text in entries.items():
            target = name.decode() if isinstance(name, bytes) else name  # decode_responses: always str
            try:
                entry = json.loads(text)
                until, opened_at = float(entry["until"]), float(entry.get("opened_at") or now)
            except (ValueError, TypeError, KeyError, AttributeError):
                stale.append(target)
                continue
            if not (math.isfinite(until) and math.isfinite(opened_at) and opened_at <= until
                    and until - opened_at <= MAX_COOLDOWN_S):
                stale.append(target)  # nonsense: no replica writes it
            elif until > now:
                found[target] = {"opened_at": opened_at, "until": until, "reason": str(entry.get("reason") or "")[:300]}
            else:
                stale.append(target)
        if stale:
            await self._forget(stale)
        return found

    async def breaker_opened(self, target: str, opened_at: float, until: float, reason: str) -> None:
        entry = json.dumps({"opened_at": opened_at, "until": until, "reason": reason[:300]})
        if await self._call(self._redis.hlen(BREAKERS)) >= MAX_SHARED_BREAKERS:
            return  # full: this breaker stays this replica's own until older ones end
        await self._call(self._redis.hset(BREAKERS, target, entry))

    async def breakers_closed(self, targets: Sequence[str]) -> None:
        await self._forget(list(targets))

    async def _forget(self, targets: list[str]) -> None:
        if targets:
            await self._call(self._redis.hdel(BREAKERS, *targets))

    async def ping(self) -> None:
        """Returns once Redis answers; raises RedisUnreachable."""
        await self._call(self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()
