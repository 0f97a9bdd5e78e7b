"""Route: decides the provider and model of every LLM request and prepares the upstream request
(the Engine sends it). The decision is explained in the flow comment, in the flow's metadata and in
an `x-clutch-route` response header.
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import ctx, exceptions, http

from addons.flows.fail_closed import guarded
from addons.flows.meta import call_of, identity_of, set_route
from addons.models.rankings_book import RankingsBook
from addons.routing.custom_router import CustomRouter, RouterContext
from addons.routing.plan import PlanError, build_plan, url_of
from addons.routing.router import RouteRequest, decide, layer_for, needs_token_count, request_signals
from addons.rulebook import Rulebook
from addons.wire import dialects, header_values, tokens

logger = logging.getLogger(__name__)

_COUNT_IN_THREAD_BYTES = 64 * 1024  # tokenizing more than this takes milliseconds: keep the loop free


class Route:
    def __init__(self, rulebook: Rulebook, rankings: RankingsBook | None = None):
        self._rulebook = rulebook
        self._rankings = rankings  # the model scan's picks for launch tiers m and f
        self._custom = CustomRouter()
        self.timeout_s = 2.0

    def load(self, loader):
        loader.add_option("clutch_router_timeout_ms", int, 2000,
                          "Time limit for the rules' custom router; past it, routing falls through to the rules.")

    def configure(self, updated):
        if "clutch_router_timeout_ms" in updated:
            if ctx.options.clutch_router_timeout_ms <= 0:
                raise exceptions.OptionsError("clutch_router_timeout_ms must be a positive number of milliseconds")
            self.timeout_s = ctx.options.clutch_router_timeout_ms / 1000

    def done(self):
        self._custom.close()

    @guarded("routing", http.Response.make)
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        call = call_of(flow)
        if call is None:
            return
        rules = self._rulebook.rules
        identity = identity_of(flow)
        raw = flow.request.raw_content or b""
        wanted = RouteRequest(call.dialect, call.provider, call.model, call.body, len(raw), identity)
        launch_profile = identity.tier if identity.tier and identity.tier.isdigit() else None
        layer = layer_for(rules, identity.agent, launch_profile)
        count = None
        if needs_token_count(wanted, layer):
            count = await _count(call.dialect, call.body, layer.long_context_threshold, len(raw))
        custom, custom_note = None, None
        path = rules.custom_router_path(layer.routes.get("custom"))
        if path is not None and call.body is not None and identity.route != "b":
            context = RouterContext(identity.agent, identity.session, str(call.dialect), call.provider, call.model,
                                    count, tuple(request_signals(wanted, layer, count)))
            outcome = await self._custom.run(path, call.body, context, self.timeout_s)
            custom, custom_note = outcome.target, outcome.note
        decision = decide(wanted, rules, layer, custom_result=custom, tokens=count,
                          ranked=self._rankings.pick if self._rankings is not None else None)
        if custom_note:
            decision.notes.append(custom_note)
        request = flow.request
        url = url_of(request.scheme, request.host, request.port, request.path)
        try:
            plan = build_plan(call, decision, rules, url, list(request.headers.fields), raw, self._rulebook.keys,
                              agent=identity.agent)
        except PlanError as e:
            logger.warning("cannot route %s: %s", flow.id, e)
            flow.response = http.Response.make(
                e.status, dialects.error_body(call.dialect, e.status, f"Clutch: {e}"),
                {"content-type": "application/json", "x-clutch-error": e.kind,
                 "x-clutch-route": header_values.text(decision.describe())})
            flow.comment = f"clutch: {identity.describe()} route {decision.describe()} ({decision.reason}); {e}"
            return
        set_route(flow, decision, plan)
        if plan.changed:
            logger.debug("route %s: %s (%s) -> %s", flow.id, decision.describe(), decision.reason, plan.describe())


async def _count(dialect, body, threshold: int, size: int) -> int:
    if size > _COUNT_IN_THREAD_BYTES:
        return await asyncio.to_thread(tokens.request_tokens, dialect, body, stop_above=threshold)
    return tokens.request_tokens(dialect, body, stop_above=threshold)

