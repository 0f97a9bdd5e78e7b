"""The shared spend counters (addons/accounting/shared_spend.py) on a real redis-server, and their base
read from a real usage store: every attempt counts once, in the counters or in the base, however late
the counters started; a hash holds a bounded number of names."""

from __future__ import annotations

import asyncio
import calendar

import pytest

from addons.accounting import shared_spend
from addons.accounting.budgets import BudgetBook
from addons.accounting.reports import SPENT_BY
from addons.accounting.shared_spend import SharedSpend, SpendBase, additions, combined
from addons.accounting.store import UsageStore
from addons.config.rules import Budgets
from addons.fallback.shared_state import SharedState

NOON = calendar.timegm((2026, 12, 1, 12, 0, 0))
DAY = "2026-12-01"



def row(ts: float, user="ana", agent="claude", tokens=(100, 50), cost=0.01, n=0) -> dict:
    return {"ts": ts, "day": DAY, "duration_ms": 1500.0, "agent": agent, "provider": "openrouter", "user_name": user,
            "input_tokens": tokens[0], "output_tokens": tokens[1], "cost_usd": cost, "request_id": f"r{ts}-{n}",
            "attempt": 0, "outcome": "success", "model": "m", "served": True}


def run(work):
    return asyncio.run(work)


async def with_spend(url: str, work):
    shared = SharedState(url)
    try:
        await shared.redis.flushdb()
        return await work(SharedSpend(shared))
    finally:
        await shared.close()


def test_every_attempt_counts_once_in_the_counters_or_in_the_base(redis, tmp_path):
    """Rows that ended before the day's counters began are the base's (read from the store); the add
    script skips them; those after are the counters'. Together: each row once."""
    rows = [row(NOON + i, n=i) for i in range(6)]  # ends at NOON+i+1.5
    store = UsageStore(tmp_path / "usage.db")
    store.add(rows)

    async def work(spend: SharedSpend):
        # the counters begin with the 4th row (a Redis that came late): the first three are skipped
        counted = await spend.add(additions(rows[3:4]))
        counted += await spend.add(additions(rows[:3]) + additions(rows[4:]))
        counted += await spend.add(additions(rows[4:5]))  # a retry after a call that timed out: counted once
        since, live = await spend.read(DAY, [("user", "ana"), ("agent", "claude"), ("provider", "openrouter")])
        return counted, since, live

    counted, since, live = run(with_spend(redis.url, work))
    assert counted == [1, 0, 0, 0, 1, 1, 2] and since == NOON + 3 + 1.5
    assert live[("user", "ana")] == (450, pytest.approx(0.03))
    base = {by: store.spent(DAY, by, ended_before=since) for by in SPENT_BY}
    assert base["user"]["ana"] == {"tokens": 450, "cost_usd": 0.03}
    cache = SpendBase(clock=lambda: NOON + 10)
    cache.put(DAY, since, NOON + 10, base)
    spent = combined(cache.current(DAY, since), live, floor=lambda scope, name: (0, 0.0))
    assert spent("user", "ana") == (900, pytest.approx(0.06))  # all six rows, once each
    assert spent("agent", "claude")[0] == 900 and spent("user", "bo") == (0, 0.0)
    own = combined({}, {}, floor=lambda scope, name: (7, 0.5))  # this replica's own book is the floor
    assert own("user", "ana") == (7, 0.5)
    book = BudgetBook(clock=lambda: NOON + 10)
    book.configure(Budgets())
    book.configure_users({"ana": 0.06, "bo": None})
    breach = book.over("claude", "openrouter", "ana", spent)
    assert (breach.scope, breach.name, breach.measure) == ("user", "ana", "usd")
    store.close()


def test_no_counters_yet_means_the_whole_day_is_the_base_read_again_while_young(tmp_path):
    now = [NOON]
    cache = SpendBase(clock=lambda: now[0])
    assert cache.current(DAY, None) is None
    cache.put(DAY, None, now[0], {"user": {"ana": {"tokens": 5, "cost_usd": 1.0}}})
    assert cache.current(DAY, None) == {("user", "ana"): (5, 1.0)}
    now[0] += shared_spend.BASE_FRESH_S
    assert cache.current(DAY, None) is None  # rows may have landed since: read again
    since = NOON + 100
    cache.put(DAY, since, since + shared_spend.BASE_SETTLE_S, {})
    now[0] = since + 10_000
    assert cache.current(DAY, since) == {}  # read once the counters were settled: kept for the day
    assert cache.current(DAY, since + 1) is None  # counters that began again (Redis lost them)


def test_a_hash_counts_at_most_max_fields_names(redis, monkeypatch):
    monkeypatch.setattr(shared_spend, "MAX_FIELDS", 8)  # _since + 7 fields: agent, provider, user x 2 = 6, +1

    async def work(spend: SharedSpend):
        for n, user in enumerate(("ana", "bo", "cy")):
            await spend.add(additions([row(NOON + n, user=user)]))
        await spend.add(additions([row(NOON + 5, user="ana")]))  # a known name still counts
        return await spend.read(DAY, [("user", "ana"), ("user", "bo"), ("user", "cy")]), \
            await spend.shared.redis.hlen(shared_spend.PREFIX + DAY), \
            await spend.shared.redis.ttl(shared_spend.PREFIX + DAY)

    (since, live), fields, ttl = run(with_spend(redis.url, work))
    assert live[("user", "ana")] == (300, pytest.approx(0.02))
    assert live[("user", "bo")] == (150, 0.0)  # room for its tokens' field only
    assert live[("user", "cy")] == (0, 0.0) and fields == 8
    assert 0 < ttl <= shared_spend.LIFETIME_S


def test_rows_that_spent_nothing_add_nothing():
    refused = {**row(NOON), "input_tokens": None, "output_tokens": None, "cost_usd": None, "outcome": "refused"}
    [one] = additions([refused, row(NOON)])
    assert one.day == DAY and one.ended == NOON + 1.5
    assert dict(one.amounts)["n:user:ana"] == 10_000_000 and dict(one.amounts)["t:provider:openrouter"] == 150
