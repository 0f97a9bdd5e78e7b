"""BudgetBook: today's spending per agent and provider against the rules' daily limits."""

from __future__ import annotations

import calendar

from addons.accounting.budgets import BudgetBook, next_utc_midnight
from addons.config.rules import Budgets

NOON = calendar.timegm((2026, 12, 1, 12, 0, 0))


def book(**budgets) -> tuple[BudgetBook, list[float]]:
    """A book seeded for today with nothing spent."""
    now = [NOON]
    found = BudgetBook(clock=lambda: now[0])
    found.configure(Budgets.model_validate(budgets))
    found.seed(found.begin_seed(), {}, {})
    return found, now


def row(agent="claude", provider="openrouter", tokens=(100, 50), cost=0.01, day="2026-12-01"):
    return {"agent": agent, "provider": provider, "input_tokens": tokens[0], "output_tokens": tokens[1],
            "cost_usd": cost, "day": day}


def test_an_agent_goes_over_its_dollar_limit_once_it_has_spent_it():
    budgets, _ = book(agents={"claude": {"usd_per_day": 0.025}})
    budgets.record([row(), row()])
    assert budgets.over("claude", "openrouter") is None  # $0.02 of $0.025
    budgets.record([row()])
    breach = budgets.over("claude", "openrouter")
    assert (breach.scope, breach.name, breach.measure) == ("agent", "claude", "usd")
    assert breach.used == 0.03 and breach.resets_at == NOON + 12 * 3600
    assert "agent claude is over its daily budget: $0.0300 of its $0.0250 a day spent today" in breach.describe()
    assert budgets.over("codex", "openrouter") is None  # other agents have no limit


def test_a_provider_token_limit_counts_every_agent():
    budgets, _ = book(providers={"openrouter": {"tokens_per_day": 400}})
    budgets.record([row("claude"), row("codex")])
    assert budgets.over("qwen", "openrouter") is None  # 300 tokens
    budgets.record([row("qwen")])
    assert budgets.over("qwen", "openrouter").measure == "tokens"
    assert budgets.over("qwen", "anthropic") is None


def test_a_new_utc_day_is_seeded_from_the_store_and_late_rows_of_yesterday_do_not_count():
    budgets, now = book(agents={"claude": {"tokens_per_day": 100}})
    budgets.record([row()])
    assert budgets.over("claude", None) is not None
    now[0] = NOON + 12 * 3600 + 1  # just after midnight
    assert budgets.needs_seed() and budgets.over("claude", None) is None
    budgets.record([row(day="2026-12-01")])  # yesterday's request finishing late
    budgets.record([row(day="2026-12-02", tokens=(60, 60))])  # today's, before the seed: the store has it
    assert budgets.spent("agent", "claude") == (0, 0.0)
    budgets.seed(budgets.begin_seed(), {"claude": {"tokens": 120, "cost_usd": 0.01}}, {})
    assert budgets.over("claude", None).used == 120


def test_seeding_from_the_store_keeps_a_restart_over_budget():
    budgets = BudgetBook(clock=lambda: NOON)
    budgets.configure(Budgets.model_validate({"agents": {"claude": {"usd_per_day": 1.0}}}))
    assert budgets.needs_seed()
    budgets.record([row(cost=5.0)])  # not seeded: the store has this row, the seed will count it
    budgets.seed(budgets.begin_seed(), {"claude": {"tokens": 10, "cost_usd": 1.5}}, {})
    assert not budgets.needs_seed() and budgets.over("claude", None).used == 1.5
    assert budgets.snapshot()["limits"]["agent:claude"] == {"tokens": 10, "tokens_per_day": None, "usd": 1.5,
                                                            "usd_per_day": 1.0, "over": True}


def test_rows_that_finish_while_the_store_is_read_count_once():
    budgets = BudgetBook(clock=lambda: NOON)
    budgets.configure(Budgets.model_validate({"agents": {"claude": {"tokens_per_day": 1000}}}))
    attempt = budgets.begin_seed()
    budgets.record([row(tokens=(10, 10))])  # finished after the read was queued: not in what it returns
    assert budgets.seed(attempt, {"claude": {"tokens": 300, "cost_usd": 0.03}}, {})
    assert budgets.spent("agent", "claude") == (320, 0.04)
    budgets.record([row(tokens=(10, 10))])
    assert budgets.spent("agent", "claude")[0] == 340
    assert budgets.spent("provider", "openrouter")[0] == 40  # the store gave no provider totals


def test_an_abandoned_seed_is_ignored_and_the_next_one_counts():
    budgets = BudgetBook(clock=lambda: NOON)
    first = budgets.begin_seed()
    budgets.abandon_seed(first)
    second = budgets.begin_seed()
    assert not budgets.seed(first, {"claude": {"tokens": 999}}, {})  # a late answer to the abandoned read
    assert budgets.needs_seed()
    assert budgets.seed(second, {"claude": {"tokens": 5}}, {})
    assert budgets.spent("agent", "claude") == (5, 0.0)


def test_next_utc_midnight():
    assert next_utc_midnight(NOON) - NOON == 12 * 3600
    assert next_utc_midnight(calendar.timegm((2026, 12, 31, 23, 59, 59))) == calendar.timegm((2027, 1, 1, 0, 0, 0))


def test_a_users_budget_counts_that_users_rows_whatever_the_agent_and_zero_allows_nothing():
    budgets, _ = book()
    budgets.configure_users({"ana": 0.025, "bo": 0.0, "cy": None})
    assert budgets.active and budgets.applies("claude", "openrouter", "ana")
    assert not budgets.applies("claude", "openrouter", "cy")  # no budget: nothing to check
    budgets.record([{**row("claude"), "user_name": "ana"}, {**row("codex"), "user_name": "ana"}, row("qwen")])
    assert budgets.over("qwen", "openrouter", "ana") is None  # $0.02 of $0.025; qwen's row had no user
    budgets.record([{**row("qwen"), "user_name": "ana"}])
    breach = budgets.over("qwen", "openrouter", "ana")
    assert (breach.scope, breach.name) == ("user", "ana") and "user ana is over its daily budget" in breach.describe()
    assert budgets.over("claude", "openrouter", "bo").limit == 0.0  # a budget of 0: nothing may be spent
    assert budgets.snapshot()["limits"]["user:ana"]["over"] is True
    budgets.seed(budgets.begin_seed(), {}, {}, {"bo": {"tokens": 0, "cost_usd": 0.0}, "ana": {"tokens": 1,
                                                                                            "cost_usd": 0.001}})
    assert budgets.spent("user", "ana") == (1, 0.001)
