"""The link from one gateway replica to the Redis every replica of a team gateway shares
(`clutch_state=redis://...`). No mitmproxy.

Each call has TIMEOUT_S in all and no retries: redis-py's default (10, with backoff) would hold a
request for seconds when Redis is away, and a replica whose Redis does not answer goes on with its
own state instead (Resilience says `degraded` and asks again). What is kept on it: quotas, open
breakers, 429 cooldowns, free-model caps and sticky sessions (fallback/shared_state.py), and the day's
spending (accounting/shared_spend.py).
"""

from __future__ import annotations

import asyncio

TIMEOUT_S = 1.0  # a Redis that takes longer is unreachable: the replica goes on alone (Resilience)


class RedisUnreachable(Exception):
    """Redis could not answer (down, refusing, slower than TIMEOUT_S, or an error of its own)."""


class RedisLink:
    def __init__(self, url: str) -> None:
        """Raises ValueError for a URL redis-py cannot use (a bad port or database)."""
        # imported here: only team mode pays for redis-py (about 11 MB and 0.1 s at start-up)
        from redis import asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import NoScriptError, RedisError

        self.url = url
        self.no_script = NoScriptError  # a pipeline's EVALSHA on a Redis that restarted since
        self._errors = (RedisError, OSError, TimeoutError)
        self.redis = aioredis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
                                             retry=Retry(NoBackoff(), 0), decode_responses=True)

    async def call(self, work):
        """One call to Redis, at most TIMEOUT_S in all; RedisUnreachable for anything that goes wrong."""
        try:
            async with asyncio.timeout(TIMEOUT_S):
                return await work
        except self._errors as e:
            raise RedisUnreachable(f"{type(e).__name__}: {e}") from e

    async def ping(self) -> None:
        """Returns once Redis answers; raises RedisUnreachable."""
        await self.call(self.redis.ping())

    async def close(self) -> None:
        await self.redis.aclose()


def first_failure(results: list) -> RedisUnreachable | None:
    """A pipeline's results (`execute(raise_on_error=False)`): its first error, as RedisUnreachable."""
    failed = next((result for result in results if isinstance(result, Exception)), None)
    return RedisUnreachable(f"{type(failed).__name__}: {failed}") if failed is not None else None
