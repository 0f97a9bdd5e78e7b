"""Classify: recognise LLM requests to configured providers and attach an LLMCall to the flow.

Everything else on a provider host (model lists, OAuth, Claude Code's /api/claude_code/*,
/api/hello) is left alone, so mitmproxy passes it through untouched. An LLM request Clutch cannot
carry (headers past dialects.MAX_HEADERS_BYTES, a body that is not a JSON object, a model that is no
usable name) is answered here, in the agent's dialect, before anything routes or counts it: a body
Clutch cannot read cannot be routed, and forwarding it unread would send it past the rules.

Classify reads the body, so it bounds it (`clutch_max_body_mb`, decoded): an LLM request over the
limit gets a 413 in the agent's dialect and is never held whole in memory. mitmproxy buffers a body
whole before the `request` hook, and a response set earlier does not stop it reading, so a body that
is refused unread, or whose size nobody knows yet (chunked), is streamed instead, into a bounded
Collector (addons/guard/bodies.py) that forwards nothing, to Clutch's own loopback server; that server
answers the refusal, or hands the request on to the engine once the `request` hooks have run.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from mitmproxy import ctx, exceptions, http

from addons.flows import fail_closed
from addons.flows.meta import WEBSOCKET, call_of, set_call
from addons.guard import bodies
from addons.upstream.loopback import LoopbackServer, ResponseWriter
from addons.wire import dialects
from addons.wire.dialects import Dialect

logger = logging.getLogger(__name__)


class Classify:
    def __init__(self, rulebook):
        self._rulebook = rulebook
        self._limit = 32 * bodies.MB
        self._server = LoopbackServer(self._serve)
        self._server_lock = asyncio.Lock()
        self._secret = secrets.token_urlsafe(12)
        self._held: dict[str, tuple[http.HTTPFlow, tuple, dict]] = {}  # flow id -> flow, its address, refusal

    def load(self, loader):
        loader.add_option(bodies.OPTION, int, 32,
                          "Largest LLM request body, decoded, in MB; a larger one (or a decompression "
                          "bomb) gets a 413 in the agent's dialect.")

    def configure(self, updated):
        if bodies.OPTION in updated:
            value = getattr(ctx.options, bodies.OPTION)
            if value < 1:
                raise exceptions.OptionsError(f"{bodies.OPTION} must be at least 1, not {value}")
            self._limit = value * bodies.MB

    async def done(self):
        await self._server.close()

    def _dialect(self, flow: http.HTTPFlow):
        request = flow.request
        if self._rulebook.rules.provider_at(request.host, request.port) is None:
            return None
        if dialects.is_responses_websocket(request.method, request.path, request.headers):
            return None
        return dialects.recognise(request.method, request.path)

    # ------------------------------------------------------------ mitmproxy hooks

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        dialect = self._dialect(flow)
        if dialect is None:
            return
        headers = flow.request.headers
        try:
            length = int(headers.get("content-length", "") or -1)
        except ValueError:
            return  # mitmproxy refuses a malformed length itself
        if length > self._limit:
            refusal = bodies.too_large(dialect, bodies.too_large_message(self._limit, length))
            await self._hold(flow, refusal)
        elif length < 0:  # chunked (HTTP/1) or unannounced (HTTP/2, HTTP/3): its size is known at its end
            await self._hold(flow, None)

    def request(self, flow: http.HTTPFlow) -> None:
        try:
            self._read(flow)
        except Exception as e:  # an LLM request Clutch failed to read is answered, never forwarded unread
            dialect = self._dialect(flow)
            if dialect is None or flow.response is not None:
                raise
            if call_of(flow) is None:
                set_call(flow, dialects.LLMCall(dialect, self._owner(flow), None, False, None, "not read"))
            fail_closed.internal_error(flow, http.Response.make, "reading the request", e)

    def _owner(self, flow: http.HTTPFlow) -> str:
        owner = self._rulebook.rules.provider_at(flow.request.host, flow.request.port)
        return owner[0] if owner else ""

    def _read(self, flow: http.HTTPFlow) -> None:
        if flow.error or not flow.live:
            return
        held = self._held.get(flow.id)
        if held is not None:
            if held[2] is not None:
                return  # refused unread: the loopback server answers
            collector = flow.request.stream
            self._restore(flow, held[1])
            if collector.over:
                self._held[flow.id] = (flow, held[1], bodies.too_large(
                    dialects.recognise(flow.request.method, flow.request.path),
                    bodies.too_large_message(self._limit)))
                return
            flow.request.raw_content = collector.take()
        if flow.response:
            return
        request = flow.request
        owner = self._rulebook.rules.provider_at(request.host, request.port)
        if owner is None:
            return
        if dialects.is_responses_websocket(request.method, request.path, request.headers):
            flow.metadata[WEBSOCKET] = True
            return
        dialect = dialects.recognise(request.method, request.path)
        if dialect is None:
            return
        if why := dialects.headers_too_large(request.headers.fields):
            set_call(flow, dialects.LLMCall(dialect, owner[0], None, False, None, "not read"))
            _refuse(flow, dialect, 431, why, "headers_too_large")
            return
        unread = ""
        try:
            content: bytes | None = bodies.decode(request.raw_content or b"",
                                                  request.headers.get("content-encoding", ""), self._limit)
        except bodies.TooLarge as e:
            status, body, headers = bodies.too_large(dialect, bodies.too_large_message(self._limit,
                                                                                        encoded=e.encoded))
            flow.response = http.Response.make(status, body, headers)
            flow.comment = f"clutch: refused, {e}"
            logger.info("refused %s: %s", flow.id, e)
            return
        except ValueError as e:  # an encoding Clutch cannot decode: refused below, never forwarded unread
            content, unread = None, str(e)
        call = dialects.read_call(dialect, owner[0], request.path, content)
        set_call(flow, call)
        if call.invalid:
            _refuse(flow, dialect, 400, call.invalid, "invalid_model")
        elif content is None:  # 415 for an encoding Clutch does not know, 400 for data that does not decode
            status = 415 if unread.startswith("unknown Content-Encoding") else 400
            _refuse(flow, dialect, status, f"cannot read the request body ({unread}); send JSON, plain or in gzip, "
                                           "deflate, br or zstd; nothing was sent", "unreadable_body")
        elif call.body is None:
            _refuse(flow, dialect, 400, f"{call.body_error}; nothing was sent", "malformed")

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self.error(flow)  # the flow shows the agent's URL again, not Clutch's loopback server

    def response(self, flow: http.HTTPFlow) -> None:
        self.error(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        held = self._held.pop(flow.id, None)
        if held is None:
            return
        if flow.request.host == "127.0.0.1" and flow.request.port == self._server.port:
            self._restore(flow, held[1])
        if held[1][5]:  # the chunked framing of the loopback leg: mitmproxy reads it to end the body there
            flow.request.headers.pop("transfer-encoding", None)

    # ------------------------------------------------------------ bodies streamed to Clutch

    async def _hold(self, flow: http.HTTPFlow, refusal) -> None:
        """Stream the body into a Collector and point the flow at Clutch's loopback server."""
        async with self._server_lock:
            if not self._server.port:
                await self._server.start()
        request = flow.request
        data = request.data
        # The loopback leg is HTTP/1: a body with no length and no chunked framing (an HTTP/2 request
        # that announced none) would read there as empty and be served before its end, and before the
        # request hooks; chunked framing makes mitmproxy send its end only after them.
        framed = "content-length" not in request.headers and "transfer-encoding" not in request.headers
        if framed:
            request.headers["transfer-encoding"] = "chunked"
        self._held[flow.id] = (flow, (data.scheme, data.host, data.port, data.path,
                                      request.headers.get("content-length"), framed), refusal)
        request.stream = bodies.Collector(self._limit)
        if refusal is not None:
            request.headers["content-length"] = "0"  # nothing of it is forwarded
            flow.comment = "clutch: refused unread, " + refusal[1].decode("utf-8", "replace")
        data.scheme, data.host, data.port = b"http", "127.0.0.1", self._server.port
        data.path = f"/{self._secret}/{flow.id}".encode()

    @staticmethod
    def _restore(flow: http.HTTPFlow, original: tuple) -> None:
        data = flow.request.data
        data.scheme, data.host, data.port, data.path, length, framed = original
        if length is not None:
            flow.request.headers["content-length"] = length

    async def _serve(self, target: str, out: ResponseWriter) -> None:
        """A held flow once mitmproxy sent its end: its refusal, the response an addon set, or the
        engine's answer."""
        _, secret, flow_id = (target.split("/", 2) + ["", ""])[:3]
        held = self._held.get(flow_id) if secret == self._secret else None
        if held is None:
            await _send(out, 404, b"unknown Clutch path\n", {"content-type": "text/plain"})
            return
        flow, _, refusal = held
        if refusal is not None:
            await _send(out, *refusal)
        elif flow.response is not None:  # set by an addon's request hook (mitmproxy streams past it)
            response = flow.response
            await _send(out, response.status_code, response.raw_content or b"", dict(response.headers))
        elif call_of(flow) is not None and flow.request.scheme == "http" and flow.request.host == "127.0.0.1":
            await bodies.relay_to(flow.request.port, flow.request.path, out)  # the engine took it
        else:  # the engine did not take it (no Engine loaded): nothing Clutch can forward it to
            dialect = dialects.recognise(flow.request.method, flow.request.path)
            await _send(out, 502, dialects.error_body(dialect, 502, "Clutch: a request without a Content-Length "
                                                                    "could not be handed to the engine"),
                        {"content-type": "application/json"})


async def _send(out: ResponseWriter, status: int, body: bytes, headers: dict[str, str]) -> None:
    fields = [(k.encode(), v.encode()) for k, v in headers.items()
              if k.lower() not in ("content-length", "transfer-encoding", "connection")]
    await out.start(status, "", fields)
    await out.send(body)
    await out.end()


def _refuse(flow: http.HTTPFlow, dialect: Dialect, status: int, why: str, kind: str) -> None:
    logger.warning("refused %s %s with %d: %s", flow.request.method, flow.request.path.split("?", 1)[0][:120],
                   status, why)
    flow.response = http.Response.make(status, dialects.error_body(dialect, status, f"Clutch: {why}"),
                                       {"content-type": "application/json", "x-clutch-error": kind})
    flow.comment = f"clutch: refused with {status}: {why}"
