"""Budget: the rules' daily token and dollar limits per agent and per provider (`budgets:`).

Runs after Route, when the provider a request goes to is known. Over a limit, the request gets a 429
in the agent's own dialect, which says which budget, how much was spent and when it resets (with
`retry-after` and `x-should-retry: false`, so the OpenAI and Anthropic SDKs do not retry for hours);
or, with `over: free`, it goes to a free model instead: `budgets.free_model`, else `launch_tiers.f`,
else the model scan's best free model.
"""

from __future__ import annotations

import dataclasses
import logging
import math

from mitmproxy import http

from addons import dialects
from addons.budgets import Breach, BudgetBook
from addons.meta import call_of, identity_of, route_of, set_route
from addons.plan import PlanError, build_plan, url_of
from addons.rulebook import Rulebook
from addons.rules import ModelTarget
from addons.usage import Usage
from addons.usage_store import day_of

logger = logging.getLogger(__name__)


class Budget:
    def __init__(self, rulebook: Rulebook, usage: Usage, rankings=None):
        self._rulebook = rulebook
        self._usage = usage
        self._rankings = rankings  # RankingsBook: the model scan's best free model
        self.book = BudgetBook()
        rulebook.on_change(lambda rules: self.book.configure(rules.budgets))
        usage.on_rows(self.book.record)

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or not self.book.active:
            return
        call, routed = call_of(flow), route_of(flow)
        if call is None or routed is None:
            return
        self._seed()
        decision, plan = routed
        agent = identity_of(flow).agent
        breach = self.book.over(agent, plan.provider)
        if breach is None:
            return
        free = self._free_target() if self._rulebook.rules.budgets.over == "free" else None
        if free is not None and self.book.over(None, free.provider) is None:
            if self._reroute(flow, free, breach):
                return
        self._refuse(flow, breach, call.dialect, free_wanted=self._rulebook.rules.budgets.over == "free")

    def _seed(self) -> None:
        """Today's spending from the store, once a day (and after a restart)."""
        if not self.book.needs_seed():
            return
        store = self._usage.store
        day = day_of(self.book.now())
        if store is None:
            self.book.seed(day, {}, {})
            return
        self._usage.flush()
        self.book.seed(day, store.spent(day, "agent"), store.spent(day, "provider"))

    def _free_target(self) -> ModelTarget | None:
        rules = self._rulebook.rules
        named = rules.budgets.free_model or rules.launch_tiers.get("f")
        if named:
            return ModelTarget.parse(named)
        if self._rankings is not None:
            return self._rankings.tier("f")
        return None

    def _reroute(self, flow: http.HTTPFlow, free: ModelTarget, breach: Breach) -> bool:
        call = call_of(flow)
        decision, _ = route_of(flow)
        request = flow.request
        over = dataclasses.replace(decision, rule="budget:free", target=free, reason=breach.describe(),
                                   notes=[*decision.notes, "over budget: sent to a free model"])
        try:
            plan = build_plan(call, over, self._rulebook.rules, url_of(request.scheme, request.host, request.port,
                                                                        request.path),
                              list(request.headers.fields), request.raw_content or b"", agent=identity_of(flow).agent)
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
        else:
            message += f" Raise budgets.{breach.scope}s.{breach.name} in {self._rulebook.path}, or wait."
        wait = max(1, math.ceil(breach.resets_at - self.book.now()))
        flow.response = http.Response.make(429, dialects.error_body(dialect, 429, message), {
            "content-type": "application/json", "retry-after": str(wait), "x-should-retry": "false",
            "x-clutch-error": "budget"})
        flow.comment = f"clutch: {identity_of(flow).describe()} refused: {breach.describe()}"

    def snapshot(self) -> dict:
        return self.book.snapshot()
