"""Today's spending on a team gateway's shared state (Redis), so a daily budget holds across replicas.

No mitmproxy. Per UTC day, one hash `clutch:spend:<day>`: a field `t:<scope>:<name>` (tokens) and one
`n:<scope>:<name>` (nano-dollars: integers, so adding is exact) for each agent, provider and user, and
`_since`, when the first attempt counted in it ended. Every replica adds each finished attempt's
spending (one script call, in the background); a budget check reads the fields it needs (one HMGET).

**Counters that start late.** A hash made after its day began (Redis just added to a gateway, or
restarted without its data) lacks what ended before `_since`. The usage database has every replica's
rows, so those are read from it (`spent(day, by, ended_before=_since)`, the *base*) and added; the add
script skips an attempt that ended before `_since`, which the base has. Both sides compare the same
number, the attempt's end on its replica's clock (reports.ended_at and ENDED), so an attempt counts in
exactly one of them. An attempt that ended before `_since` but whose row had not reached the database
yet is missed by a base read; rows wait at most seconds in a replica's spool, so the base is read again
every BASE_FRESH_S while the hash is younger than BASE_SETTLE_S, and kept for the day after that.

Keys expire two days after they were made; a hash holds at most MAX_FIELDS fields (names come from
agents), past which new names are not counted on Redis. A check never goes below the replica's own
book (its day's seed from the database and its own requests since), which counts what the counters can
miss: those names, and a replica that died with spending not yet added. An attempt's add leaves a
marker for DONE_S, so that a retry after a call that timed out (and may have run) counts it once.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence

from addons.accounting.budgets import spent_keys
from addons.accounting.reports import ended_at
from addons.team.redis_link import RedisLink, first_failure

PREFIX = "clutch:spend:"
DONE = "clutch:spend-done:"  # + an attempt's id: counted already (a retry must not count it twice)
DONE_S = 3_600  # how long an attempt's marker lasts: its retries come within an outage's retries
BATCH = 200  # additions sent in one round trip
SINCE = "_since"
LIFETIME_S = 2 * 86_400
MAX_FIELDS = 4_000
NANO = 1_000_000_000
BASE_FRESH_S = 5.0
BASE_SETTLE_S = 120.0

# KEYS[1]: the day's hash, KEYS[2]: the attempt's marker. ARGV: when the attempt ended, the hash's
# lifetime, its most fields, then (field, amount) pairs. Returns 1 when counted, 0 when the attempt
# ended before the hash's `_since`, 2 when it was counted already (a retry after a call timed out).
_ADD = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[4])) then
  return 2
end
local since = redis.call('HGET', KEYS[1], '_since')
if not since then
  redis.call('HSET', KEYS[1], '_since', ARGV[1])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
  since = ARGV[1]
end
if tonumber(ARGV[1]) < tonumber(since) then
  return 0
end
local room = tonumber(ARGV[3]) - redis.call('HLEN', KEYS[1])
for i = 5, #ARGV, 2 do
  local known = redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1
  if known or room > 0 then
    if not known then
      room = room - 1
    end
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""

Key = tuple[str, str]  # (scope, name)


@dataclasses.dataclass(frozen=True)
class Addition:
    """One attempt's spending, as the add script takes it."""
    id: str  # request_id:attempt
    day: str
    ended: float
    amounts: tuple[tuple[str, int], ...]  # (field, amount)


def additions(rows: Iterable[dict]) -> list[Addition]:
    """What usage rows add to the shared counters; rows that spent nothing add nothing."""
    found = []
    for row in rows:
        tokens = int((row.get("input_tokens") or 0) + (row.get("output_tokens") or 0))
        nano = round((row.get("cost_usd") or 0.0) * NANO)
        if (tokens <= 0 and nano <= 0) or not row.get("day"):
            continue
        amounts = []
        for scope, name in spent_keys(row):
            amounts += [(_field("t", scope, name), tokens), (_field("n", scope, name), nano)]
        found.append(Addition(f"{row.get('request_id')}:{row.get('attempt')}", row["day"], ended_at(row),
                              tuple(amounts)))
    return found


class SharedSpend:
    def __init__(self, shared: RedisLink) -> None:
        self.shared = shared
        self._add = shared.redis.register_script(_ADD)

    async def add(self, additions: Sequence[Addition]) -> list[int]:
        """Count attempts, in one round trip: per attempt 1 (counted), 0 (it ended before the day's
        counters began: the base has it) or 2 (counted already). Raises RedisUnreachable; a retry of
        the same additions then counts none twice."""
        if not additions:
            return []

        async def send():
            async with self.shared.redis.pipeline(transaction=False) as pipe:
                for addition in additions:
                    keys = [PREFIX + addition.day, DONE + addition.id[:200]]
                    args: list[str | int | float] = [repr(addition.ended), LIFETIME_S, MAX_FIELDS, DONE_S]
                    for field, amount in addition.amounts:
                        args += [field, amount]
                    # evalsha, not the Script: a pipeline with scripts asks SCRIPT EXISTS first
                    pipe.evalsha(self._add.sha, len(keys), *keys, *args)
                return await pipe.execute(raise_on_error=False)
        results = await self.shared.call(send())
        if any(isinstance(result, self.shared.no_script) for result in results):  # a Redis restarted since
            await self.shared.call(self.shared.redis.script_load(_ADD))
            results = await self.shared.call(send())  # again: the markers keep what ran from counting twice
        failed = first_failure(results)
        if failed is not None:
            raise failed
        return [int(result) for result in results]

    async def read(self, day: str, keys: Sequence[Key]) -> tuple[float | None, dict[Key, tuple[int, float]]]:
        """The day's `_since` (None: no attempt counted yet) and what the counters hold for `keys`.
        Raises RedisUnreachable."""
        fields = [SINCE] + [_field(kind, scope, name) for scope, name in keys for kind in ("t", "n")]
        values = await self.shared.call(self.shared.redis.hmget(PREFIX + day, fields))
        since = _number(values[0])
        counted = {}
        for i, key in enumerate(keys):
            tokens, nano = _number(values[1 + 2 * i]) or 0, _number(values[2 + 2 * i]) or 0
            counted[key] = (int(tokens), nano / NANO)
        return since, counted


class SpendBase:
    """The base: per (day, `_since`), what the usage database says was spent before `_since`; the
    cache of reads that the Budget addon makes on the usage writer's thread."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._read: tuple[str, float | None] | None = None  # the (day, since) of `_spent`
        self._read_at = 0.0
        self._spent: dict[Key, tuple[int, float]] = {}

    def current(self, day: str, since: float | None) -> dict[Key, tuple[int, float]] | None:
        """The base for (day, since) when one was read recently enough; None: read it (`put`)."""
        if self._read != (day, since):
            return None
        settled = since is not None and self._read_at >= since + BASE_SETTLE_S
        if settled or self._clock() - self._read_at < BASE_FRESH_S:
            return self._spent
        return None

    def put(self, day: str, since: float | None, read_at: float,
            by: dict[str, dict[str, dict]]) -> dict[Key, tuple[int, float]]:
        """`by`: {"agent"|"provider"|"user": {name: {"tokens", "cost_usd"}}} as the store's spent() gives.
        Returns the base."""
        self._read, self._read_at = (day, since), read_at
        self._spent = {(scope, name): (int(spent.get("tokens") or 0), float(spent.get("cost_usd") or 0.0))
                       for scope, found in by.items() for name, spent in found.items()}
        return self._spent


def combined(base: dict[Key, tuple[int, float]], counted: dict[Key, tuple[int, float]],
             floor: Callable[[str, str], tuple[int, float]]) -> Callable[[str, str], tuple[int, float]]:
    """budgets.Spent over the base and the shared counters together, and never below `floor`: this
    replica's own book (the day's rows at its start and its own since), which still counts what the
    counters can miss (a replica that died with spending not yet added, a full hash)."""
    def spent(scope: str, name: str) -> tuple[int, float]:
        base_tokens, base_usd = base.get((scope, name), (0, 0.0))
        tokens, usd = counted.get((scope, name), (0, 0.0))
        own_tokens, own_usd = floor(scope, name)
        return max(base_tokens + tokens, own_tokens), max(base_usd + usd, own_usd)
    return spent


def _field(kind: str, scope: str, name: str) -> str:
    return f"{kind}:{scope}:{name}"


def _number(value) -> float | None:
    try:
        number = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and math.isfinite(number) and number >= 0 else None
