"""Budget: the rules' daily token and dollar limits per agent and per provider (`budgets:`).

Runs after Route, when the provider a request goes to is known. Over a limit, the request gets a 429
in the agent's own dialect, which says which budget, how much was spent and when it resets (with
`retry-after` and `x-should-retry: false`, so the OpenAI and Anthropic SDKs do not retry for hours);
or, with `over: free`, it goes to a free model instead: `budgets.free_model`, else `launch_tiers.f`,
else the model scan's best free model.

Today's spending is read from the usage store before the first request that needs it (after a
start, a new UTC day, or a reload that adds budgets), on the usage writer's thread: the event loop
never waits for the disk, and the read sees exactly the rows that finished before it (budgets.py says
why nothing is counted twice). When the store cannot be read in time, the request is refused with a
503 that says so: budgets that cannot be checked are not silently ignored.

When the usage database was broken and moved aside (accounting/salvage.py), today's spending is what
could be read back from it. `clutch_budget_unknown` says what budgeted requests get when that read
was not complete: `recovered` (the default) checks them against what was recovered, `refuse`
refuses them with a 503 until the operator sets `recovered` or restarts the gateway. The default
keeps agents working: a damaged page loses a few rows, not the day, and /health says what was lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import time

from mitmproxy import ctx, http

from addons.accounting.budgets import Breach, BudgetBook, Spent
from addons.accounting.postgres import is_postgres_url
from addons.accounting.reports import SPENT_BY, day_of
from addons.accounting.shared_spend import BATCH, Addition, SharedSpend, SpendBase, additions, combined
from addons.config.rules import ModelTarget
from addons.fallback.shared_state import SharedState
from addons.flows.fail_closed import guarded
from addons.flows.meta import call_of, identity_of, route_of, set_route
from addons.resilience import Resilience
from addons.routing.plan import PlanError, build_plan, url_of
from addons.routing.router import Decision
from addons.rulebook import Rulebook
from addons.team.redis_link import RedisUnreachable
from addons.usage import Usage
from addons.wire import dialects
from addons.wire.dialects import LLMCall

logger = logging.getLogger(__name__)

SEED_TIMEOUT_S = 5.0  # the writer may be waiting for a database another process locked; past this, refused
MAX_UNSHARED = 50_000  # attempts' spending waiting for the shared state to answer again (oldest dropped)
FLUSH_AT_EXIT_S = 2.0


class SpendingUnknown(Exception):
    """Today's spending could not be read from the usage store; the message says why."""


class Budget:
    def __init__(self, rulebook: Rulebook, usage: Usage, resilience: Resilience, rankings=None):
        self._rulebook = rulebook
        self._usage = usage
        self._resilience = resilience
        self._rankings = rankings  # RankingsBook: the model scan's best free model
        self.book = BudgetBook()
        self._seeding: asyncio.Task | None = None
        self.unknown = "recovered"  # clutch_budget_unknown
        # team mode: every replica's spending on the shared state (accounting/shared_spend.py)
        self._spend: SharedSpend | None = None
        self._base = SpendBase()
        self._base_reading: tuple[tuple[str, float | None], asyncio.Future] | None = None
        self._unshared: collections.deque[Addition] = collections.deque(maxlen=MAX_UNSHARED)
        self._sharing: asyncio.Task | None = None
        self._overflowing = False
        rulebook.on_change(lambda rules: self.book.configure(rules.budgets))
        usage.on_rows(self._record)
        resilience.sharing.on_up(self._share_soon)
        resilience.sharing.before_close(self._flush)

    def load(self, loader):
        loader.add_option("clutch_budget_unknown", str, "recovered",
                          "When the usage database was broken and today's spending could not all be read "
                          "back: 'recovered' checks budgets against what was recovered, 'refuse' refuses "
                          "budgeted requests until this is set to 'recovered' or the gateway restarts.",
                          choices=["recovered", "refuse"])

    def configure(self, updated):
        if "clutch_budget_unknown" in updated:
            self.unknown = ctx.options.clutch_budget_unknown
        if updated & {"clutch_state", "clutch_usage_db"} and ctx.options.clutch_state.strip() \
                and not is_postgres_url(ctx.options.clutch_usage_db):
            logger.warning("budgets: spending is shared on Redis, but usage rows stay in this replica's own "
                           "store: if Redis loses the day's counters, other replicas' spending before then "
                           "is not counted here. A team gateway keeps usage in PostgreSQL (clutch_usage_db).")

    def _record(self, rows: list[dict]) -> None:
        if self._usage.store is None and self.book.needs_seed():
            self.book.seed(self.book.begin_seed(), {}, {})  # no store to read: count from here on
        self.book.record(rows)
        if self._resilience.sharing.shared is not None:
            if len(self._unshared) == MAX_UNSHARED and not self._overflowing:
                self._overflowing = True  # said once until the queue drains
                logger.warning("budgets: %d attempts' spending wait for the shared state; more are not added to "
                               "its counters (the usage database and this replica's count keep them)",
                               MAX_UNSHARED)
            self._unshared.extend(additions(rows))
            self._share_soon()

    @guarded("the budget check", http.Response.make)
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or not self.book.active:
            return
        call, routed = call_of(flow), route_of(flow)
        if call is None or routed is None:
            return
        decision, plan = routed
        agent, user = identity_of(flow).agent, identity_of(flow).user
        if not self.book.applies(agent, plan.provider, user):
            return
        lost = self._usage.salvaged
        if self.unknown == "refuse" and lost is not None and not lost.lossless:
            self._unknown(flow, f"{lost.describe()}; clutch_budget_unknown=refuse (set it to 'recovered' to "
                                f"check budgets against what was recovered)", call.dialect, retry=False)
            return
        try:
            await self.ready()
            breach = self.book.over(agent, plan.provider, user, await self._shared_spent(agent, plan.provider, user))
            if breach is None:
                return
            free = self._free_target() if self._rulebook.rules.budgets.over == "free" else None
            if free is not None and self.book.over(None, free.provider, None,
                                                   await self._shared_spent(None, free.provider, None)) is None:
                if self._reroute(flow, call, decision, free, breach):
                    return
        except SpendingUnknown as e:
            self._unknown(flow, str(e), call.dialect)
            return
        self._refuse(flow, breach, call.dialect, free_wanted=self._rulebook.rules.budgets.over == "free")

    async def ready(self) -> None:
        """Seed today's spending from the usage store unless that is done; concurrent callers share
        one read. Raises SpendingUnknown when the store cannot be read within SEED_TIMEOUT_S."""
        if not self.book.needs_seed():
            return
        if self._seeding is None or self._seeding.done():
            self._seeding = asyncio.ensure_future(self._seed())
        # shielded: a caller that goes away must not cancel the read the others wait for
        await asyncio.shield(self._seeding)

    async def _seed(self) -> None:
        attempt = self.book.begin_seed()
        day = self.book.seeding_day
        try:
            found = await self._spent_in_store(day, None, "today's spending")
        except SpendingUnknown:
            self.book.abandon_seed(attempt)
            raise
        if found is None:  # usage records are off: nothing was kept to start from
            self.book.seed(attempt, {}, {})
            return
        self.book.seed(attempt, found["agent"], found["provider"], found["user"])
        logger.info("budgets: today's spending read from the usage store (%s)", day)

    async def _spent_in_store(self, day: str, ended_before: float | None, what: str) -> dict | None:
        """The usage store's spent() of `day` by each of SPENT_BY, read on the writer's thread after the
        rows already queued; None without a store. SpendingUnknown past SEED_TIMEOUT_S or on an error."""
        pending = self._usage.read_in_order(lambda store: {by: store.spent(day, by, ended_before) for by in SPENT_BY})
        if pending is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(pending), SEED_TIMEOUT_S)
        except Exception as e:
            how = f"took longer than {SEED_TIMEOUT_S:g} s" if isinstance(e, TimeoutError) else \
                f"failed ({type(e).__name__}: {e})"
            logger.warning("budgets: reading %s from the usage store %s", what, how)
            raise SpendingUnknown(f"reading today's spending from the usage store {how}") from None

    # ------------------------------------------------------------ team mode: the shared counters

    async def _shared_spent(self, agent: str | None, provider: str | None, user: str | None) -> Spent | None:
        """Today's spending of every replica (shared_spend.py), or None while there is no shared state
        that answers: this replica's own book then judges. Raises SpendingUnknown when the base cannot
        be read from the usage database."""
        shared = self._resilience.sharing.answering()
        keys = [(scope, name) for scope, name, _ in self.book.limited(agent, provider, user)]
        if shared is None or not keys:
            return None
        day = day_of(self.book.now())
        try:
            since, counted = await self._spend_on(shared).read(day, keys)
        except RedisUnreachable as e:
            self._resilience.sharing.down(shared, e)
            return None
        return combined(await self._base_of(day, since), counted, floor=self.book.spent)

    def _spend_on(self, shared: SharedState) -> SharedSpend:
        if self._spend is None or self._spend.shared is not shared:  # clutch_state changed
            self._spend = SharedSpend(shared)
        return self._spend

    async def _base_of(self, day: str, since: float | None) -> dict:
        """What the usage database has of `day` before the shared counters began; one read at a time."""
        found = self._base.current(day, since)
        if found is not None:
            return found
        reading = self._base_reading
        if reading is None or reading[0] != (day, since) or reading[1].done():
            reading = ((day, since), asyncio.ensure_future(self._read_base(day, since)))
            self._base_reading = reading
        return await asyncio.shield(reading[1])

    async def _read_base(self, day: str, since: float | None) -> dict:
        read_at = time.time()
        found = await self._spent_in_store(day, since, "what the shared counters lack")
        return self._base.put(day, since, read_at, found or {})

    def _share_soon(self) -> None:
        """Add the attempts' spending that waits to the shared counters, in a task of its own."""
        shared = self._resilience.sharing.answering()
        if shared is None or not self._unshared or (self._sharing is not None and not self._sharing.done()):
            return
        try:
            self._sharing = asyncio.get_running_loop().create_task(self._share(shared))
        except RuntimeError:  # no event loop (a test recording rows directly): shared when one runs
            pass

    async def _share(self, shared: SharedState) -> None:
        spend = self._spend_on(shared)
        while self._unshared and self._resilience.sharing.answering() is shared:
            batch = [self._unshared.popleft() for _ in range(min(BATCH, len(self._unshared)))]
            try:
                await spend.add(batch)
            except RedisUnreachable as e:
                self._unshared.extendleft(reversed(batch))  # again when it answers (on_shared_up), none twice
                self._resilience.sharing.down(shared, e)
                return
            except Exception:  # a bug must not stop the others: these are in the usage database
                logger.exception("budgets: adding %d attempts' spending to the shared counters failed", len(batch))
        self._overflowing = False

    async def _flush(self) -> None:
        """Before the gateway closes its shared state: hand it the spending still waiting, for a while."""
        if self._unshared and self._resilience.sharing.answering() is not None:
            self._share_soon()
        if self._sharing is not None and not self._sharing.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._sharing), FLUSH_AT_EXIT_S)

    def _unknown(self, flow: http.HTTPFlow, why: str, dialect, retry: bool = True) -> None:
        message = f"Clutch: budgets are configured but cannot be checked: {why}."
        # a slow read clears in seconds; the operator's decision does not: the SDKs must not retry it
        headers = {"retry-after": "5"} if retry else {"x-should-retry": "false"}
        flow.response = http.Response.make(503, dialects.error_body(
            dialect, 503, message + (" Try again shortly." if retry else "")), {
            "content-type": "application/json", **headers, "x-clutch-error": "budget_unknown"})
        flow.comment = f"clutch: {identity_of(flow).describe()} refused: budgets cannot be checked: {why}"

    def _free_target(self) -> ModelTarget | None:
        rules = self._rulebook.rules
        named = rules.budgets.free_model or rules.launch_tiers.get("f")
        if named:
            return ModelTarget.parse(named)
        if self._rankings is not None:
            return self._rankings.tier("f")
        return None

    def _reroute(self, flow: http.HTTPFlow, call: LLMCall, decision: Decision, free: ModelTarget,
                 breach: Breach) -> bool:
        request = flow.request
        over = dataclasses.replace(decision, rule="budget:free", target=free, reason=breach.describe(),
                                   notes=[*decision.notes, "over budget: sent to a free model"])
        try:
            plan = build_plan(call, over, self._rulebook.rules, url_of(request.scheme, request.host, request.port,
                                                                        request.path),
                              list(request.headers.fields), request.raw_content or b"", self._rulebook.keys,
                              agent=identity_of(flow).agent)
        except PlanError as e:
            logger.warning("over budget, and the free model %s cannot take %s: %s", free, flow.id, e)
            return False
        set_route(flow, over, plan)
        logger.info("%s; %s goes to %s", breach.describe(), flow.id, free)
        return True

    def _refuse(self, flow: http.HTTPFlow, breach: Breach, dialect, free_wanted: bool) -> None:
        message = f"Clutch: {breach.describe()}."
        if free_wanted:
            message += " No free model could take the request (set budgets.free_model or launch_tiers.f)."
        elif breach.scope == "user":
            message += f" This gateway's admin can raise it (clutch users budget {breach.name} USD); or wait."
        else:
            message += f" Raise budgets.{breach.scope}s.{breach.name} in {self._rulebook.path}, or wait."
        wait = max(1, math.ceil(breach.resets_at - self.book.now()))
        flow.response = http.Response.make(429, dialects.error_body(dialect, 429, message), {
            "content-type": "application/json", "retry-after": str(wait), "x-should-retry": "false",
            "x-clutch-error": "budget"})
        flow.comment = f"clutch: {identity_of(flow).describe()} refused: {breach.describe()}"

    def snapshot(self) -> dict:
        return self.book.snapshot()
