"""A replica's side of the shared state (addons/fallback/sharing.py) on a real redis-server: the early
quota take of a request's primary is used by its first admit, given back at once when another target
goes first, given back once it is in when the request ends before it answered, and never used after it
was given back; a take made on a shared state the options replaced is made again on the new one."""

from __future__ import annotations

import asyncio

from addons.fallback.breakers import BreakerBoard
from addons.fallback.quotas import QuotaBook
from addons.fallback.shared_state import SharedState
from addons.fallback.sharing import Sharing
from addons.fallback.sticky import StickyTable

PRIMARY = "acme:m1"
MINUTE = "clutch:quota:acme:m1:minute"



def sharing_on(url: str) -> Sharing:
    quotas = QuotaBook()
    quotas.configure({PRIMARY: {"rpm": 5}})
    sharing = Sharing(BreakerBoard(), quotas, StickyTable(ttl_s=60))
    sharing.use(SharedState(url))
    return sharing


async def counted(sharing: Sharing, expected: int) -> int:
    """The primary's minute count once it is `expected` (give-backs run in the background), or as it
    is after 10 s."""
    assert sharing.shared is not None
    for _ in range(500):
        found = await sharing.shared.redis.zcard(MINUTE)
        if found == expected:
            return found
        await asyncio.sleep(0.02)  # a poll of Redis: the background give-back is the event waited for
    return found


def run(redis, work):
    async def main():
        sharing = sharing_on(redis.url)
        try:
            await sharing.shared.redis.flushdb()
            return await work(sharing)
        finally:
            await sharing.close()
    return asyncio.run(main())


def test_the_first_admit_of_the_primary_uses_the_early_take(redis):
    async def work(sharing: Sharing):
        looked, early = sharing.look_ahead(PRIMARY, "s1")
        await looked
        assert await counted(sharing, 1) == 1  # taken during the hop
        assert await sharing.admitter(early)(PRIMARY) is None
        assert early.used and await counted(sharing, 1) == 1  # not taken twice
    run(redis, work)


def test_a_first_admit_of_another_target_gives_the_early_take_back_at_once(redis):
    async def work(sharing: Sharing):
        looked, early = sharing.look_ahead(PRIMARY, "s2")
        await looked
        admit = sharing.admitter(early)
        assert await admit("acme:fallback") is None  # a sticky target first: the primary's take goes back
        assert early.given_back and await counted(sharing, 0) == 0
        assert await admit(PRIMARY) is None  # the primary tried later takes anew, once
        assert await counted(sharing, 1) == 1
    run(redis, work)


def test_a_request_that_ends_before_its_look_answered_gives_the_take_back_once_it_is_in(redis):
    async def work(sharing: Sharing):
        looked, early = sharing.look_ahead(PRIMARY, None)
        sharing.give_back(early, unless_used=True)  # the agent left during the hop
        await looked
        assert await counted(sharing, 0) == 0
        assert await sharing.admitter(early)(PRIMARY) is None  # a given-back take is never used
        assert await counted(sharing, 1) == 1
    run(redis, work)


def test_a_take_on_a_replaced_shared_state_is_made_again_on_the_new_one(redis):
    async def work(sharing: Sharing):
        looked, early = sharing.look_ahead(PRIMARY, None)
        await looked
        sharing.use(SharedState(redis.url))  # clutch_state set again
        assert await sharing.admitter(early)(PRIMARY) is None
        assert await counted(sharing, 1) == 1  # the old take given back, the new one made
        assert sharing.quotas.snapshot()[PRIMARY]["rpm"] == "1/5"  # this replica's own view counts it once
    run(redis, work)
