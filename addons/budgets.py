"""Daily budgets: how many tokens and dollars each agent and provider spent today, against the rules'
limits (`budgets:`).

Pure logic, no mitmproxy. Days are UTC days, as providers bill them. The book starts each day from
the usage store's rows (so a restart keeps what was spent) and adds every finished request's rows as
they come. A request is judged by what was spent before it started: requests in flight are not yet
counted, so a burst can overshoot a limit by what those requests cost.
"""

from __future__ import annotations

import calendar
import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from addons.rules import Budgets, Limit
from addons.usage_store import day_of


@dataclasses.dataclass(frozen=True)
class Breach:
    scope: str  # "agent" | "provider"
    name: str
    measure: str  # "tokens" | "usd"
    used: float
    limit: float
    resets_at: float  # the next UTC midnight, epoch seconds

    def describe(self) -> str:
        if self.measure == "usd":
            spent = f"{_usd(self.used)} of its {_usd(self.limit)} a day"
        else:
            spent = f"{int(self.used):,} of its {int(self.limit):,} tokens a day"
        hours, rest = divmod(max(0, int(self.resets_at - time.time())), 3600)
        return (f"{self.scope} {self.name} is over its daily budget: {spent} spent today "
                f"(the budget resets at 00:00 UTC, in {hours}h{rest // 60:02d}m)")


class BudgetBook:
    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self.budgets = Budgets()
        self._day = ""
        self._spent: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])  # (scope, name) -> tokens, usd

    def now(self) -> float:
        return self._clock()

    def configure(self, budgets: Budgets) -> None:
        self.budgets = budgets

    @property
    def active(self) -> bool:
        return bool(self.budgets.agents or self.budgets.providers)

    def needs_seed(self) -> bool:
        return self._day != day_of(self._clock())

    def seed(self, day: str, by_agent: dict[str, dict], by_provider: dict[str, dict]) -> None:
        """Start `day` from what the usage store holds for it (usage_store.spent)."""
        self._day = day
        self._spent.clear()
        for scope, found in (("agent", by_agent), ("provider", by_provider)):
            for name, spent in found.items():
                self._spent[(scope, name)] = [spent.get("tokens") or 0, spent.get("cost_usd") or 0.0]

    def record(self, rows: Iterable[dict]) -> None:
        for row in rows:
            if row.get("day") != self._day:
                if row.get("day", "") < self._day:
                    continue  # yesterday's request finishing late: yesterday's budget
                self.seed(row["day"], {}, {})
            tokens = (row.get("input_tokens") or 0) + (row.get("output_tokens") or 0)
            cost = row.get("cost_usd") or 0.0
            for key in (("agent", row.get("agent") or "unknown"), ("provider", row.get("provider") or "")):
                spent = self._spent[key]
                spent[0] += tokens
                spent[1] += cost

    def spent(self, scope: str, name: str) -> tuple[int, float]:
        tokens, usd = self._spent.get((scope, name), (0, 0.0))
        return int(tokens), usd

    def over(self, agent: str | None, provider: str | None) -> Breach | None:
        """The first limit already reached by the agent, then by the provider; None when within budget."""
        if self.needs_seed():  # a new UTC day: nothing spent yet
            self.seed(day_of(self._clock()), {}, {})
        for scope, name, limits in (("agent", agent, self.budgets.agents), ("provider", provider, self.budgets.providers)):
            limit = limits.get(name) if name else None
            if limit is not None:
                breach = self._check(scope, name, limit)
                if breach is not None:
                    return breach
        return None

    def _check(self, scope: str, name: str, limit: Limit) -> Breach | None:
        tokens, usd = self.spent(scope, name)
        midnight = next_utc_midnight(self._clock())
        if limit.tokens_per_day is not None and tokens >= limit.tokens_per_day:
            return Breach(scope, name, "tokens", tokens, limit.tokens_per_day, midnight)
        if limit.usd_per_day is not None and usd >= limit.usd_per_day:
            return Breach(scope, name, "usd", usd, limit.usd_per_day, midnight)
        return None

    def snapshot(self) -> dict:
        """What each budgeted agent and provider spent today, against its limit (for /resilience)."""
        found = {}
        for scope, limits in (("agent", self.budgets.agents), ("provider", self.budgets.providers)):
            for name, limit in sorted(limits.items()):
                tokens, usd = self.spent(scope, name)
                found[f"{scope}:{name}"] = {"tokens": tokens, "tokens_per_day": limit.tokens_per_day,
                                            "usd": round(usd, 6), "usd_per_day": limit.usd_per_day,
                                            "over": self._check(scope, name, limit) is not None}
        return {"day": self._day, "over": self.budgets.over, "limits": found}


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def next_utc_midnight(now: float) -> float:
    day = time.gmtime(now)
    return calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0)) + 86400
