"""Engine: Clutch's own upstream path for every recognised LLM request.

The `request` hook points an LLM flow at the engine's loopback server (mitmproxy then connects
there as to any upstream); the server sends the original request to the provider with a pooled
client and per-attempt timeouts, and streams the answer back as it arrives. `responseheaders`
restores the original URL, so mitmweb shows the provider, and streams SSE through to the agent.
Owning the upstream request is what lets the cascade (a later feature) retry and fail over with
streaming; here every flow makes exactly one attempt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
import weakref
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions, http

from addons import dialects
from addons.meta import ATTEMPTS, WEBSOCKET, call_of, identity_of, route_of
from addons.loopback import LoopbackServer, ResponseWriter
from addons.plan import stream_translator, translate_answer
from addons.sse import SSEParser
from addons.resolve import Resolve
from addons.upstream import Timeouts, UpstreamClient, UpstreamError, make_client, ssl_context

logger = logging.getLogger(__name__)


_ERROR_STATUS = {"connect": 502, "protocol": 502, "timeout_connect": 504, "timeout_first_byte": 504,
                 "timeout_idle": 504}


@dataclasses.dataclass
class Attempt:
    url: str
    status: int | None = None
    error: str | None = None
    ttfb_s: float | None = None
    chunks: int = 0
    bytes: int = 0
    events: int = 0  # complete SSE events, for streamed answers
    ended: str = "pending"  # complete | aborted | broken

    def describe(self) -> str:
        outcome = str(self.status) if self.status is not None else self.error
        timing = f" in {self.ttfb_s * 1000:.0f} ms" if self.ttfb_s is not None else ""
        events = f", {self.events} SSE events" if self.events else ""
        ended = f", {self.ended}" if self.ended not in ("complete", "failed") else ""
        return f"{outcome}{timing}{events}{ended}"


@dataclasses.dataclass
class _Pending:
    flow: http.HTTPFlow
    original: tuple[bytes, str, int, bytes]  # scheme, host, port, path
    body: bytes  # the request body as the agent sent it (still content-encoded)
    content_length: str | None  # the agent's Content-Length header, if it sent one


class Engine:
    def __init__(self, resolve: Resolve):
        self._resolve = resolve
        self._server = LoopbackServer(self._serve)
        self._server_lock = asyncio.Lock()
        self._secret = secrets.token_urlsafe(12)
        self._pending: dict[str, _Pending] = {}
        self._attempts: weakref.WeakKeyDictionary[http.HTTPFlow, list[Attempt]] = weakref.WeakKeyDictionary()
        self._client: UpstreamClient | None = None
        self._retired: list[UpstreamClient] = []
        self.timeouts = Timeouts()

    def load(self, loader):
        loader.add_option("clutch_connect_timeout_ms", int, 10_000, "Per attempt: time to connect upstream.")
        loader.add_option("clutch_first_byte_timeout_ms", int, 120_000,
                          "Per attempt: time until the provider's response headers.")
        loader.add_option("clutch_idle_timeout_ms", int, 120_000,
                          "Per attempt: longest silence between two pieces of a response body.")
        loader.add_option("clutch_http_client", str, "aiohttp",
                          "The engine's upstream HTTP client: aiohttp or httpx.", choices=["aiohttp", "httpx"])
        loader.add_option("clutch_websocket", str, "refuse",
                          "Codex's Responses-over-WebSocket upgrade: 'refuse' answers 426 so Codex uses "
                          "HTTPS through the engine at once; 'pass' lets mitmproxy carry the WebSocket "
                          "untouched.", choices=["refuse", "pass"])
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
        if "clutch_websocket" in updated and ctx.options.clutch_websocket not in ("refuse", "pass"):
            raise exceptions.OptionsError(
                f"clutch_websocket must be refuse or pass, not {ctx.options.clutch_websocket!r}")
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

    # ------------------------------------------------------------ mitmproxy hooks

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        if flow.metadata.get(WEBSOCKET) and ctx.options.clutch_websocket == "refuse":
            flow.response = http.Response.make(
                426,
                dialects.error_body(dialects.Dialect.OPENAI_RESPONSES, 426,
                                    "Clutch serves the Responses API over HTTPS; retry without WebSocket."),
                {"content-type": "application/json"},
            )
            flow.comment = "clutch: refused the Responses WebSocket upgrade (426), the agent falls back to HTTPS"
            return
        if call_of(flow) is None:
            return
        port = await self._ensure_server()
        request = flow.request
        self._pending[flow.id] = _Pending(flow, (request.data.scheme, request.data.host, request.data.port,
                                                 request.data.path),
                                          request.raw_content or b"", request.headers.get("content-length"))
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
        # Stream SSE, and any successful answer to a streaming request (Gemini's streamGenerateContent
        # without alt=sse sends a JSON array piece by piece); errors and plain JSON stay buffered,
        # so mitmweb shows them without store_streamed_bodies.
        streaming = call_of(flow).stream and 200 <= flow.response.status_code < 300
        if streaming or "text/event-stream" in flow.response.headers.get("content-type", ""):
            flow.response.stream = True

    def response(self, flow: http.HTTPFlow) -> None:
        self._report(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        pending = self._pending.pop(flow.id, None)
        if pending is not None:
            self._restore(flow, pending)
        self._report(flow)

    def _report(self, flow: http.HTTPFlow) -> None:
        attempts = self._attempts.get(flow)
        if attempts is None:
            return
        flow.metadata[ATTEMPTS] = [dataclasses.asdict(a) for a in attempts]
        flow.comment = _comment(flow, attempts)

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
        flow = pending.flow
        call = call_of(flow)
        routed = route_of(flow)
        plan = routed[1] if routed else None
        if plan is not None:
            url, headers, body = plan.url, list(plan.headers), plan.body
        else:
            scheme, host, port, path = pending.original
            url = _url(scheme.decode(), host, port, path.decode("utf-8", "surrogateescape"))
            headers, body = list(flow.request.headers.fields), pending.body
        explain = [(b"x-clutch-route", _explain(routed).encode("utf-8", "replace"))] if routed else []
        if ctx.options.clutch_trace_upstream:
            headers.append((b"x-clutch-flow", flow.id.encode()))
        attempt = Attempt(url)
        self._attempts[flow].append(attempt)
        started = time.monotonic()
        try:
            upstream = await self._client.send(flow.request.method, url, headers, body, self.timeouts)
        except UpstreamError as e:
            attempt.error, attempt.ended = e.kind, "failed"
            status = _ERROR_STATUS.get(e.kind, 502)
            message = f"Clutch could not reach {urlsplit(url).hostname}: {e}"
            await out.start(status, "Clutch upstream error",
                            [(b"content-type", b"application/json"), (b"x-clutch-error", e.kind.encode()), *explain])
            await out.send(dialects.error_body(call.dialect, status, message))
            await out.end()
            return
        attempt.status = upstream.status
        attempt.ttfb_s = time.monotonic() - started
        try:
            if plan is not None and plan.translated:
                await self._relay_translated(upstream, out, plan, call, attempt, explain)
            else:
                await self._relay(upstream, out, attempt, explain)
            attempt.ended = "complete"
        except UpstreamError as e:
            # Headers are out: the agent sees a truncated body, as it would without Clutch.
            attempt.error, attempt.ended = e.kind, "broken"
            raise ConnectionError(str(e)) from e
        except (ConnectionError, asyncio.CancelledError):
            attempt.ended = "aborted"  # the agent went away; stop paying for the generation
            raise
        finally:
            await upstream.close()

    @staticmethod
    async def _relay(upstream, out: ResponseWriter, attempt: Attempt, explain) -> None:
        events = SSEParser() if _is_event_stream(upstream.headers) else None
        await out.start(upstream.status, upstream.reason, _response_headers(upstream.headers) + explain)
        async for chunk in upstream.chunks():
            attempt.chunks += 1
            attempt.bytes += len(chunk)
            if events is not None:
                attempt.events += len(events.feed(chunk))
            await out.send(chunk)
        await out.end()

    @staticmethod
    async def _relay_translated(upstream, out: ResponseWriter, plan, call, attempt: Attempt, explain) -> None:
        """The answer of a provider in another dialect, translated back into the agent's."""
        kept = [(k, v) for k, v in _response_headers(upstream.headers) if k.lower() in _KEPT_WHEN_TRANSLATED]
        if 200 <= upstream.status < 300 and _is_event_stream(upstream.headers):
            translator = stream_translator(plan, _wants_usage(call))
            await out.start(upstream.status, upstream.reason,
                            [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                             *kept, *explain])
            async for chunk in upstream.chunks():
                attempt.chunks += 1
                attempt.bytes += len(chunk)
                piece = translator.feed(chunk)
                if piece:
                    attempt.events += piece.count(b"\n\n")
                    await out.send(piece)
            tail = translator.finish()
            if tail:
                attempt.events += tail.count(b"\n\n")
                await out.send(tail)
            await out.end()
            return
        raw = b"".join([chunk async for chunk in upstream.chunks()])
        attempt.chunks, attempt.bytes = 1, len(raw)
        status, answer = translate_answer(plan, raw, upstream.status)
        await out.start(status, "OK" if status == upstream.status else "Clutch translated error",
                        [(b"content-type", b"application/json"), *kept, *explain])
        await out.send(answer)
        await out.end()


_DROPPED_RESPONSE = frozenset({b"transfer-encoding", b"content-length", b"connection", b"keep-alive"})
# Headers of the provider's answer that still hold once the body is translated.
_KEPT_WHEN_TRANSLATED = frozenset({b"retry-after", b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests",
                                   b"x-ratelimit-reset-requests", b"x-ratelimit-limit", b"x-ratelimit-remaining",
                                   b"x-ratelimit-reset", b"request-id", b"x-request-id", b"date"})


def _wants_usage(call) -> bool:
    options = (call.body or {}).get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _explain(routed) -> str:
    decision, plan = routed
    if plan.changed:
        text = f"{decision.rule}; {plan.describe()}"
    else:
        text = "unchanged" if decision.rule == "unchanged" else f"{decision.rule}; unchanged"
    return text.replace("\r", " ").replace("\n", " ")


def _is_event_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"content-type" and b"text/event-stream" in v for k, v in headers)


def _response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.lower() not in _DROPPED_RESPONSE]


def _url(scheme: str, host: str, port: int, path: str) -> str:
    default = 443 if scheme == "https" else 80
    netloc = f"[{host}]" if ":" in host else host
    return f"{scheme}://{netloc}{'' if port == default else f':{port}'}{path}"


def _comment(flow: http.HTTPFlow, attempts: list[Attempt]) -> str:
    call = call_of(flow)
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
    return (f"clutch: {identity_of(flow).describe()} {call.dialect} {mode} model={call.model or '?'} "
            f"via {call.provider}{unread}; {route}; upstream: {trail}")
