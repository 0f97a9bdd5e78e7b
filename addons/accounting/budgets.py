"""Daily budgets: how many tokens and dollars each agent, provider and user spent today, against the
rules' limits (`budgets:`) and a team gateway's users' own (`clutch users add NAME --budget`).

Pure logic, no mitmproxy. Days are UTC days, as providers bill them. The book starts each day from
the usage store's rows (so a restart, or budgets that a reload adds, count what was already spent)
and adds every finished request's rows as they come. A request is judged by what was spent before it
started: requests in flight are not yet counted, so a burst can overshoot a limit by what those
requests cost.

Counting each row exactly once: until the book is seeded for a day it counts nothing (the store will
have those rows). A seed has two steps, `begin_seed` and `seed`: the store is read in between, after
every row that finished before `begin_seed` was written (Usage.read_in_order), and the rows that
finish in between are kept aside and added to what the store said.
"""

from __future__ import annotations

import calendar
import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

from addons.accounting.reports import day_of
from addons.config.rules import Budgets, Limit


@dataclasses.dataclass(frozen=True)
class Breach:
    scope: str  # "agent" | "provider" | "user"
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


Spent = Callable[[str, str], tuple[int, float]]  # (scope, name) -> today's tokens and dollars


class BudgetBook:
    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self.budgets = Budgets()
        self.users: dict[str, Limit] = {}  # a team gateway's users' daily budgets (clutch users)
        self._day = ""  # the day the counts are for; "" before the first seed
        self._seeded = False  # the counts hold the store's rows of _day
        self._spent: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])  # (scope, name) -> tokens, usd
        self._attempt = 0  # the seed in progress (begin_seed's number)
        self._pending: list[dict] | None = None  # rows finished while the store is read (None: no seed running)
        self._pending_day = ""

    def now(self) -> float:
        return self._clock()

    def configure(self, budgets: Budgets) -> None:
        self.budgets = budgets

    def configure_users(self, users: Mapping[str, float | None]) -> None:
        """The users' daily dollar budgets (None: no budget). 0 is a budget: nothing may be spent."""
        self.users = {name: Limit.model_construct(tokens_per_day=None, usd_per_day=float(usd))
                      for name, usd in users.items() if usd is not None}

    @property
    def active(self) -> bool:
        return bool(self.budgets.agents or self.budgets.providers or self.users)

    @property
    def seeded(self) -> bool:
        return self._seeded and self._day == day_of(self._clock())

    def needs_seed(self) -> bool:
        return not self.seeded

    def begin_seed(self) -> int:
        """Start seeding today: from now on rows are kept aside until seed(). Returns the seed's number."""
        self._attempt += 1
        self._pending, self._pending_day = [], day_of(self._clock())
        return self._attempt

    @property
    def seeding_day(self) -> str:
        return self._pending_day

    def seed(self, attempt: int, by_agent: dict[str, dict], by_provider: dict[str, dict],
             by_user: dict[str, dict] | None = None) -> bool:
        """Today's counts = what the store held at the seed's read (usage_store.spent) + the rows that
        finished since begin_seed. False (and nothing changes) when a newer seed took over."""
        if attempt != self._attempt or self._pending is None:
            return False
        pending, self._pending = self._pending, None
        self._day, self._seeded = self._pending_day, True
        self._spent.clear()
        for scope, found in (("agent", by_agent), ("provider", by_provider), ("user", by_user or {})):
            for name, spent in found.items():
                self._spent[(scope, name)] = [spent.get("tokens") or 0, spent.get("cost_usd") or 0.0]
        self._add(pending)
        return True

    def abandon_seed(self, attempt: int) -> None:
        """The store could not be read: the next request seeds again."""
        if attempt == self._attempt:
            self._pending = None

    def record(self, rows: Iterable[dict]) -> None:
        self._add(rows)

    def _add(self, rows: Iterable[dict]) -> None:
        for row in rows:
            day = row.get("day") or ""
            if self._pending is not None and day == self._pending_day:
                self._pending.append(row)  # the store read may not have it: added after the read
                continue
            if not self._seeded or day < self._day:
                continue  # not seeded: the store has it; yesterday's request finishing late: yesterday's
            if day > self._day:
                self._seeded = False  # a new UTC day: its first request seeds it (the store has this row)
                continue
            tokens = (row.get("input_tokens") or 0) + (row.get("output_tokens") or 0)
            cost = row.get("cost_usd") or 0.0
            for key in spent_keys(row):
                spent = self._spent[key]
                spent[0] += tokens
                spent[1] += cost

    def spent(self, scope: str, name: str) -> tuple[int, float]:
        """Today's tokens and dollars; (0, 0.0) while today is not seeded (the caller seeds first)."""
        if not self.seeded:
            return 0, 0.0
        tokens, usd = self._spent.get((scope, name), (0, 0.0))
        return int(tokens), usd

    def applies(self, agent: str | None, provider: str | None, user: str | None = None) -> bool:
        """A budget limits this agent, this provider or this user."""
        return bool(self.limited(agent, provider, user))

    def limited(self, agent: str | None, provider: str | None,
                user: str | None = None) -> list[tuple[str, str, Limit]]:
        """The (scope, name, limit) that a request of this agent, to this provider, by this user counts against."""
        found = []
        for scope, name, limits in (("agent", agent, self.budgets.agents),
                                    ("provider", provider, self.budgets.providers), ("user", user, self.users)):
            limit = limits.get(name) if name else None
            if name and limit is not None:
                found.append((scope, name, limit))
        return found

    def over(self, agent: str | None, provider: str | None, user: str | None = None,
             spent: Spent | None = None) -> Breach | None:
        """The first limit already reached by the agent, the provider, then the user; None when within
        budget. `spent` says what was spent (default: this book's count; the caller seeds today first),
        a team gateway's shared counters when they answer."""
        for scope, name, limit in self.limited(agent, provider, user):
            breach = self._check(scope, name, limit, spent or self.spent)
            if breach is not None:
                return breach
        return None

    def _check(self, scope: str, name: str, limit: Limit, spent: Spent) -> Breach | None:
        tokens, usd = spent(scope, name)
        midnight = next_utc_midnight(self._clock())
        if limit.tokens_per_day is not None and tokens >= limit.tokens_per_day:
            return Breach(scope, name, "tokens", tokens, limit.tokens_per_day, midnight)
        if limit.usd_per_day is not None and usd >= limit.usd_per_day:
            return Breach(scope, name, "usd", usd, limit.usd_per_day, midnight)
        return None

    def snapshot(self) -> dict:
        """What each budgeted agent and provider spent today, against its limit (for /resilience)."""
        found = {}
        for scope, limits in (("agent", self.budgets.agents), ("provider", self.budgets.providers),
                              ("user", self.users)):
            for name, limit in sorted(limits.items()):
                tokens, usd = self.spent(scope, name)
                found[f"{scope}:{name}"] = {"tokens": tokens, "tokens_per_day": limit.tokens_per_day,
                                            "usd": round(usd, 6), "usd_per_day": limit.usd_per_day,
                                            "over": self._check(scope, name, limit, self.spent) is not None}
        return {"day": self._day, "seeded": self.seeded, "over": self.budgets.over, "limits": found}


def spent_keys(row: dict) -> list[tuple[str, str]]:
    """The (scope, name) a usage row's spending counts for: its agent, its provider, and its user if any."""
    keys = [("agent", row.get("agent") or "unknown"), ("provider", row.get("provider") or "")]
    if row.get("user_name"):
        keys.append(("user", row["user_name"]))
    return keys


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def next_utc_midnight(now: float) -> float:
    day = time.gmtime(now)
    return calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0)) + 86400
