"""Engine: Clutch's own upstream path for every recognised LLM request.

The `request` hook points an LLM flow at the engine's loopback server (mitmproxy then connects
there as to any upstream); the server hands the request to the relay (relay.py), which tries the
cascade's candidates with a pooled client and per-attempt timeouts and streams the first acceptable
answer back as it arrives. `responseheaders` restores the original URL, so mitmweb shows what the
agent called, and streams SSE through to the agent. The flow's comment and marker show the attempts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import weakref

from mitmproxy import ctx, exceptions, http

from addons.compression import policy as compression
from addons.config.rules import ModelTarget
from addons.fallback import cascade
from addons.fallback.sharing import EarlyTake
from addons.flows.fail_closed import guarded
from addons.flows.meta import ATTEMPTS, COMPRESSION, WEBSOCKET_TURN, call_of, identity_of, route_of
from addons.models.rankings_book import RankingsBook
from addons.resilience import Resilience
from addons.resolve import Resolve
from addons.routing.plan import Plan, PlanError, build_plan, flavour_of, url_of, with_body
from addons.routing.router import Decision
from addons.rulebook import Rulebook
from addons.translate.vocabulary import Flavour
from addons.upstream.client import Timeouts, UpstreamClient, make_client, ssl_context
from addons.upstream.loopback import LoopbackServer, ResponseWriter
from addons.upstream.relay import Attempt, Job, Relay
from addons.wire import dialects
from addons.wire.dialects import LLMCall
from addons.wire.identity import session_key

logger = logging.getLogger(__name__)

# Longest the response and error hooks wait for the relay to finish its books. mitmproxy sends a streamed
# answer's last chunk to the agent after the response hook, so this wait is the agent's too: nothing when
# the provider reported its usage, the milliseconds of a tiktoken count when it did not. Saved flows
# (`-w`, mitmweb) are written in the same hook, which is why the books are not finished later instead.
SETTLE_S = 5.0


@dataclasses.dataclass
class _Pending:
    flow: http.HTTPFlow
    original: tuple[bytes, str, int, bytes]  # scheme, host, port, path
    body: bytes  # the request body as the agent sent it (still content-encoded)
    content_length: str | None  # the agent's Content-Length header, if it sent one
    headers: list[tuple[bytes, bytes]]  # as the agent sent them: the flow's own copy has its keys masked
    refreshed: asyncio.Future | None = None  # team mode: what the other replicas shared, read during the hop
    early: EarlyTake | None = None  # team mode: the primary's quotas, taken during the hop


class Engine:
    def __init__(self, resolve: Resolve, rulebook: Rulebook, resilience: Resilience,
                 rankings: RankingsBook | None = None, drain=None):
        self._resolve = resolve
        self._rulebook = rulebook
        self._resilience = resilience
        self._rankings = rankings  # replacements when every model of a chain has an open breaker
        self._server = LoopbackServer(self._serve)
        self._server_lock = asyncio.Lock()
        self._secret = secrets.token_urlsafe(12)
        self._pending: dict[str, _Pending] = {}
        self._attempts: weakref.WeakKeyDictionary[http.HTTPFlow, list[Attempt]] = weakref.WeakKeyDictionary()
        self._jobs: weakref.WeakKeyDictionary[http.HTTPFlow, Job] = weakref.WeakKeyDictionary()
        self._client: UpstreamClient | None = None
        self._retired: list[UpstreamClient] = []
        self.timeouts = Timeouts()
        self._drain = drain  # shutdown.Drain: admits requests, and refuses them once the gateway stops
        self._serving: dict[asyncio.Task, Job] = {}
        self._stopping: str | None = None  # why the jobs still serving were ended (stop_serving)

    def load(self, loader):
        loader.add_option("clutch_connect_timeout_ms", int, 10_000, "Per attempt: time to connect upstream.")
        loader.add_option("clutch_first_byte_timeout_ms", int, 120_000,
                          "Per attempt: time until the provider's response headers.")
        loader.add_option("clutch_idle_timeout_ms", int, 120_000,
                          "Per attempt: longest silence between two pieces of a response body.")
        loader.add_option("clutch_http_client", str, "aiohttp",
                          "The engine's upstream HTTP client: aiohttp or httpx.", choices=["aiohttp", "httpx"])
        loader.add_option("clutch_trace_upstream", bool, False,
                          "Send an x-clutch-flow header upstream naming the flow (for tests and debugging).")

    def configure(self, updated):
        if updated & {"clutch_connect_timeout_ms", "clutch_first_byte_timeout_ms", "clutch_idle_timeout_ms"}:
            values = (ctx.options.clutch_connect_timeout_ms, ctx.options.clutch_first_byte_timeout_ms,
                      ctx.options.clutch_idle_timeout_ms)
            if min(values) <= 0:
                raise exceptions.OptionsError("clutch_*_timeout_ms options must be positive milliseconds")
            self.timeouts = Timeouts(*(v / 1000 for v in values))
        if "clutch_http_client" in updated and ctx.options.clutch_http_client not in ("aiohttp", "httpx"):
            raise exceptions.OptionsError(
                f"clutch_http_client must be aiohttp or httpx, not {ctx.options.clutch_http_client!r}")
        if updated & {"clutch_http_client", "clutch_resolve", "ssl_insecure", "ssl_verify_upstream_trusted_ca"}:
            self._replace_client()

    def _replace_client(self) -> None:
        if self._client is not None:
            self._retired.append(self._client)  # closed at shutdown; flows in flight keep using it
        self._client = make_client(
            ctx.options.clutch_http_client,
            resolve=self._resolve.lookup,
            context=ssl_context(ctx.options.ssl_verify_upstream_trusted_ca, ctx.options.ssl_insecure),
        )

    async def done(self):
        await self._server.close()
        for client in [self._client, *self._retired]:
            if client is not None:
                await client.aclose()

    def took(self, flow: http.HTTPFlow) -> bool:
        """The engine sends this flow's request (from its own copy of it): the flow may be changed."""
        return flow.id in self._pending

    # ------------------------------------------------------------ mitmproxy hooks

    @guarded("the engine", http.Response.make)
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        call = call_of(flow)
        if call is None:
            return
        if self._drain is not None and not self._drain.admit(flow):
            message = "Clutch is shutting down; this request was not sent (try again when it is back)"
            flow.response = http.Response.make(503, dialects.error_body(call.dialect, 503, message),
                                               {"content-type": "application/json",
                                                "x-clutch-error": "shutting_down"})
            return
        port = await self._ensure_server()
        request = flow.request
        self._pending[flow.id] = _Pending(flow, (request.data.scheme, request.data.host, request.data.port,
                                                 request.data.path),
                                          request.raw_content or b"", request.headers.get("content-length"),
                                          list(request.headers.fields))
        # team mode: what other replicas shared (breakers, cooldowns, this session's sticky target) and
        # the primary's quotas, read and taken in one round trip while mitmproxy hands the flow over
        if self._resilience.sharing.shared is not None:
            pending = self._pending[flow.id]
            pending.refreshed, pending.early = self._resilience.sharing.look_ahead(
                str(_primary_of(flow, call)), session_key(identity_of(flow), flow.request.headers))
        self._attempts[flow] = []
        # The engine sends the body from here; mitmproxy need not copy it over loopback first
        # (about 1-2 ms and one more copy in memory for a 250 KB agent request).
        request.raw_content = b""
        request.headers["content-length"] = "0"
        # Point mitmproxy at the engine; the Host header and the flow's record keep the provider.
        request.data.scheme = b"http"
        request.data.host = "127.0.0.1"
        request.data.port = port
        request.data.path = f"/{self._secret}/{flow.id}".encode()

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        pending = self._pending.pop(flow.id, None)
        if pending is None:
            return
        self._restore(flow, pending)
        call, response = call_of(flow), flow.response
        if response is None:  # mitmproxy calls this hook with the response's headers; never without
            return
        # Stream SSE, and any successful answer to a streaming request (Gemini's streamGenerateContent
        # without alt=sse sends a JSON array piece by piece); errors and plain JSON stay buffered,
        # so mitmweb shows them without store_streamed_bodies.
        streaming = call is not None and call.stream and 200 <= response.status_code < 300
        if streaming or "text/event-stream" in response.headers.get("content-type", ""):
            response.stream = True

    async def response(self, flow: http.HTTPFlow) -> None:
        pending = self._pending.pop(flow.id, None)
        if pending is not None:  # answered before it reached the engine (an error of Clutch's own)
            self._unused_early(pending)
        await self._settled(flow)
        self._report(flow)
        self._jobs.pop(flow, None)  # its parsed body and plans: the flow itself waits for the collector

    async def error(self, flow: http.HTTPFlow) -> None:
        pending = self._pending.pop(flow.id, None)
        if pending is not None:
            self._restore(flow, pending)
            self._unused_early(pending)  # the flow may have ended before the engine served it
        await self._settled(flow)
        self._report(flow)
        self._jobs.pop(flow, None)

    async def _settled(self, flow: http.HTTPFlow) -> None:
        """Wait until the relay is done with the flow: the agent can have its last byte (or be gone)
        before the relay has finished its books (an estimate counted in a thread, an aborted attempt)."""
        job = self._jobs.get(flow)
        if job is None or job.done.is_set():
            return
        try:
            await asyncio.wait_for(job.done.wait(), SETTLE_S)
        except TimeoutError:
            logger.warning("the engine was still busy with %s after %g s; its record may be incomplete",
                           flow.id, SETTLE_S)

    def _report(self, flow: http.HTTPFlow) -> None:
        attempts, call = self._attempts.get(flow), call_of(flow)
        if attempts is None or call is None:  # not an LLM call the engine took
            return
        flow.metadata[ATTEMPTS] = [dataclasses.asdict(a) for a in attempts]
        job = self._jobs.get(flow)
        flow.comment = _comment(flow, call, attempts, job)
        tried = [a for a in attempts if a.ended != "skipped"]
        if job is not None and job.served_by is None and tried:
            flow.marked = ":x:"  # every candidate failed
        elif any(a.fallback and a.committed_s is not None for a in attempts):
            flow.marked = ":repeat:"  # a fallback answered (a retry of the primary is not one)

    @staticmethod
    def _restore(flow: http.HTTPFlow, pending: _Pending) -> None:
        """Make the flow the agent's request again, as mitmweb and later hooks should see it."""
        data = flow.request.data
        data.scheme, data.host, data.port, data.path = pending.original
        flow.request.raw_content = pending.body
        if pending.content_length is None:
            flow.request.headers.pop("content-length", None)
        else:
            flow.request.headers["content-length"] = pending.content_length

    # ------------------------------------------------------------ the engine itself

    async def _ensure_server(self) -> int:
        async with self._server_lock:
            if not self._server.port:
                await self._server.start()
                logger.debug("engine listening on 127.0.0.1:%d", self._server.port)
        return self._server.port

    async def _serve(self, target: str, out: ResponseWriter) -> None:
        _, secret, flow_id = (target.split("/", 2) + ["", ""])[:3]
        pending = self._pending.get(flow_id) if secret == self._secret else None
        if pending is None:
            await out.start(404, "Not Found", [(b"content-type", b"text/plain")])
            await out.send(b"unknown engine path\n")
            await out.end()
            return
        try:
            await self._serve_pending(pending, flow_id, out)
        finally:
            self._unused_early(pending)

    def _unused_early(self, pending: _Pending) -> None:
        """Team mode: the primary's early quota take, when no attempt used it, is given back."""
        self._resilience.sharing.give_back(pending.early, unless_used=True)

    async def _serve_pending(self, pending: _Pending, flow_id: str, out: ResponseWriter) -> None:
        try:
            if pending.refreshed is not None:  # team mode: what other replicas shared (never fails)
                # shielded: an agent that leaves meanwhile must not cut the round trip whose quota
                # take the finally above gives back once it is in
                await asyncio.shield(pending.refreshed)
            client = self._ready_client()
            job = self._job(pending)
        except Exception as e:  # fails closed: the agent gets an error in its dialect, nothing is sent
            logger.exception("the engine could not plan %s; the request is refused, not forwarded", flow_id)
            call = call_of(pending.flow)
            message = (f"Clutch: internal error while planning this request ({type(e).__name__}: {e}); it was "
                       f"not sent anywhere. The gateway log has the details (flow {flow_id}).")
            await out.start(500, "Clutch internal error", [(b"content-type", b"application/json"),
                                                           (b"x-clutch-error", b"internal_error"),
                                                           (b"x-should-retry", b"false")])
            await out.send(dialects.error_body(call.dialect if call else None, 500, message))
            await out.end()
            return
        if self._stopping is not None:  # reached the engine after the drain ended the rest: no new request
            await _stopped(job, out, self._stopping)
            job.plan_for = _released
            job.done.set()
            return
        resilience = self._resilience
        relay = Relay(client, self.timeouts, breakers=resilience.breakers, quotas=resilience.quotas,
                      sticky=resilience.sticky, holds=resilience.holds, retries=resilience.retries,
                      admit=resilience.sharing.admitter(pending.early))
        task = asyncio.current_task()
        assert task is not None, "the loopback server serves each request in a task of its own"
        self._serving[task] = job
        try:
            await relay.serve(job, out)
        except asyncio.CancelledError:
            if self._stopping is None or task.cancelling() == 0:
                raise
            task.uncancel()  # ended by stop_serving: the agent is told, in its dialect
            await _stopped(job, out, self._stopping)
        finally:
            self._serving.pop(task, None)
            job.plan_for = _released  # its closure holds the flow, which the job must not keep alive
            job.done.set()

    def stop_serving(self, message: str) -> None:
        """End every request still being served (the gateway is stopping): a stream gets an error event
        in the agent's dialect, a request with no answer yet a 503; the upstream requests are closed."""
        self._stopping = message
        for task in list(self._serving):
            task.cancel()

    def _ready_client(self) -> UpstreamClient:
        if self._client is None:  # configure makes one before the first request
            raise RuntimeError("the engine has no upstream client (its options were never configured)")
        return self._client

    def _job(self, pending: _Pending) -> Job:
        """The relay's view of a flow: its candidates, in order, and how to build each one's request."""
        flow = pending.flow
        call = call_of(flow)
        if call is None:  # the request hook took the flow for its call; nothing removes that
            raise RuntimeError(f"flow {flow.id} has lost the LLM call it was taken for")
        identity = identity_of(flow)
        rules = self._rulebook.rules
        routed = route_of(flow)
        scheme, host, port, path = pending.original
        url = url_of(scheme.decode(), host, port, path.decode("utf-8", "surrogateescape"))
        headers = pending.headers
        if routed is None:  # no Route addon loaded: forward as the agent sent it
            decision = Decision("unchanged", None, "no router")
            first = build_plan(call, None, rules, url, headers, pending.body)
        else:
            decision, first = routed
        primary = _primary_of(flow, call)
        session = session_key(identity, flow.request.headers)
        if decision.rule == "bypass" or not call.model or call.body is None:
            # bypass never changes the model; an unread body cannot be sent to another one
            chosen = cascade.Candidates([primary]) if not self._resilience.breakers.is_open(str(primary)) else \
                cascade.Candidates([], [(primary, "breaker open")])
        else:
            chosen = cascade.order(primary, rules, breakers=self._resilience.breakers,
                                   quotas=self._resilience.quotas, sticky=self._resilience.sticky, session=session,
                                   ranked=self._rankings.for_chain if self._rankings is not None else None)
        native = rules.fallback.method in ("openrouter_native", "both")

        def plan_for(target: ModelTarget) -> Plan:
            plan = first if target == primary else build_plan(
                call, dataclasses.replace(decision, rule="cascade", target=target, notes=[]), rules, url, headers,
                pending.body, self._rulebook.keys, agent=identity.agent)
            provider = rules.providers.get(plan.provider)
            if native and provider and plan.upstream_dialect in cascade.NATIVE_DIALECTS \
                    and flavour_of(plan.provider, provider) is Flavour.OPENROUTER:
                plan = _with_native_fallbacks(plan, chosen.native, target, rules)
            return plan

        explain = [(b"x-clutch-route", _explain(routed).encode("utf-8", "replace"))] if routed else []
        trace = [(b"x-clutch-flow", flow.id.encode())] if ctx.options.clutch_trace_upstream else []
        job = Job(flow.request.method, call.dialect, call.body, call.stream, primary, chosen.order, plan_for,
                  self._attempts[flow], explain, trace, session, native, chosen.skipped, chosen.wait_s,
                  _wants_usage(call))
        job.sticky = str(chosen.sticky) if chosen.sticky else None
        for target, why in chosen.skipped:  # shown in the trail: why a candidate was not asked
            job.attempts.append(Attempt("", str(target), error=why, ended="skipped"))
        self._jobs[flow] = job
        return job


async def _stopped(job: Job, out: ResponseWriter, message: str) -> None:
    """The job was ended by stop_serving: its attempt in progress is booked as aborted by the shutdown
    (with the tokens generated so far), and the agent gets an answer that ends well."""
    for attempt in job.attempts:
        if attempt.ended in ("pending", "aborted") and attempt.error is None:
            attempt.ended, attempt.error = "aborted", "shutdown"
    try:
        if not out.started:
            await out.start(503, "Clutch is shutting down", [(b"content-type", b"application/json"),
                                                              (b"x-clutch-error", b"shutdown"), *job.explain])
            await out.send(dialects.error_body(job.client_dialect, 503, message))
            await out.end()
        elif not out.sent_all:
            if job.stream:
                await out.send(dialects.stream_error_event(job.client_dialect, message))
            await out.end()
    except (ConnectionError, OSError):
        pass  # the agent is gone too


def _released(target: ModelTarget) -> Plan:
    """A finished job's plan_for: the closure it replaces holds the flow, which the job must not keep
    alive, and nothing is planned for a request that has its answer."""
    raise PlanError("internal_error", f"the request is finished: {target} is not planned again", 500)


def _with_native_fallbacks(plan: Plan, order: list[ModelTarget], target: ModelTarget, rules) -> Plan:
    """OpenRouter's own `models` fallback list and provider sorting, when there is a fallback to name."""
    models = cascade.native_models(order, target)
    if len(models) < 2:
        return plan
    if plan.sent is None:  # a body Clutch could not read is sent as it came
        return plan
    body = cascade.inject_openrouter(plan.sent, models, rules.fallback.sort, rules.fallback.partition)
    return with_body(plan, body, f"OpenRouter fallbacks {', '.join(models[1:])}")


def _wants_usage(call) -> bool:
    options = (call.body or {}).get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _explain(routed) -> str:
    decision, plan = routed
    # a body changed on the agent's own target (prompt-cache breakpoints, a repair) is not a route
    if plan.changed and decision.target is not None:
        text = f"{decision.rule}; {plan.describe()}"
    else:
        text = "unchanged" if decision.rule == "unchanged" else f"{decision.rule}; unchanged"
    return text.replace("\r", " ").replace("\n", " ")


def _comment(flow: http.HTTPFlow, call: LLMCall, attempts: list[Attempt], job: Job | None) -> str:
    trail = " -> ".join(a.describe() for a in attempts) or "no attempt"
    mode = "stream" if call.stream else "non-stream"
    unread = f" (body unread: {call.body_error})" if call.body_error else ""
    routed = route_of(flow)
    if routed is None:
        route = "forwarded unchanged"
    else:
        decision, plan = routed
        why = decision.reason if decision.rule == "unchanged" else f"route {decision.rule} ({decision.reason})"
        route = f"{why} -> {plan.describe()}" if plan.changed else f"{why}, forwarded unchanged"
        if plan.notes:
            route += "; " + "; ".join(plan.notes)
    if job is not None and job.sticky:
        route += f"; sticky session: {job.sticky} first"
    served = ""
    if job is not None and job.served_by and job.served_by != str(job.primary):
        native = any(a.via == "openrouter" for a in attempts)
        served = f"; served by {job.served_by}" + (" (OpenRouter fallback)" if native else "")
    turn = flow.metadata.get(WEBSOCKET_TURN)
    socket = f" (turn {turn['turn']} of Responses WebSocket {turn['socket']})" if turn else ""
    return (f"clutch: {identity_of(flow).describe()} {call.dialect} {mode}{socket} model={call.model or '?'} "
            f"via {call.provider}{unread}; {route}; attempts: {trail}{served}{_compression_note(flow)}")


def _compression_note(flow: http.HTTPFlow) -> str:
    summary = flow.metadata.get(COMPRESSION)
    if not summary:
        return ""
    note = f" ({summary['note']})" if summary.get("note") else ""  # estimated counts, or why uncompressed
    return "; compression " + compression.describe_compression(
        summary["mode"], summary["cuts"], summary.get("tokens_before"), summary.get("tokens_after")) + note


def _primary_of(flow: http.HTTPFlow, call: LLMCall) -> ModelTarget:
    """The request's primary target: the route's, else what the agent asked for."""
    routed = route_of(flow)
    return (routed[0].target if routed is not None else None) or ModelTarget(call.provider, call.model or "")
