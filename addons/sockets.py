"""Sockets: Codex's Responses WebSocket (`GET /v1/responses` + `Upgrade: websocket` on a provider host).

Option `clutch_websocket`:

* `route` (default): Clutch answers the upgrade itself and no WebSocket reaches a provider (the user
  may hold no key for the agent's own provider when the rules send it elsewhere). The flow is pointed
  at a loopback server of this addon, which completes the handshake; mitmproxy relays the frames, so
  mitmweb shows every message. Each `response.create` becomes an ordinary POST /v1/responses through
  the gateway's own proxy port, with the agent's headers and proxy identity and an
  `x-clutch-websocket` marker, so it is routed, cascaded, translated, budgeted, accounted and
  journaled like any request, as a flow of its own; its events come back as text messages
  (socket_session.py). Without a regular proxy listener to send turns to, the upgrade is refused
  (426) as with `refuse`.
* `refuse`: 426, and Codex uses HTTPS through the engine at once.
* `pass`: mitmproxy carries the WebSocket to the provider untouched (Usage books each
  `response.completed` it sees).

Placed after Classify and before Compress: a turn's marker is checked and removed before routing
copies the request's headers.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import secrets
from pathlib import Path

from mitmproxy import ctx, exceptions, http

from addons.certs import ca_files
from addons.flows.meta import WEBSOCKET, WEBSOCKET_TURN, identity_of
from addons.routing.plan import url_of
from addons.upstream.gateway_client import GatewayClient
from addons.upstream.loopback import LoopbackServer, ResponseWriter
from addons.upstream.responses_socket import Limits, Turn
from addons.upstream.socket_session import SocketSession
from addons.wire import dialects
from addons.wire.identity import same_identity_username

logger = logging.getLogger(__name__)

MODES = ("route", "refuse", "pass")
MARKER = "x-clutch-websocket"  # on each turn's request: "<socket token>/<turn number>"
# Headers of the upgrade that belong to the handshake, or that the turn's client sets itself.
_HANDSHAKE = frozenset({"host", "connection", "upgrade", "sec-websocket-key", "sec-websocket-version",
                        "sec-websocket-extensions", "sec-websocket-protocol", "content-length", "content-type",
                        "transfer-encoding", "keep-alive", "te", "trailer", "accept", "accept-encoding",
                        "proxy-authorization", "proxy-connection", MARKER})
_WEBSOCKETS_BETA = "responses_websockets="  # Codex's openai-beta token for the WebSocket protocol


@dataclasses.dataclass
class _Socket:
    flow: http.HTTPFlow
    original: tuple[bytes, str, int, bytes]  # scheme, host, port, path of the upgrade
    url: str  # where each turn is POSTed (the upgrade's own URL, https)
    headers: list[tuple[str, str]]  # the upgrade's headers a turn carries
    proxy_authorization: str | None  # the agent's identity, spelled for the gateway's proxy port
    token: str
    session: SocketSession | None = None


class Sockets:
    def __init__(self) -> None:
        self._server = LoopbackServer(self._not_found, upgrade=self._upgrade)
        self._server_lock = asyncio.Lock()
        self._secret = secrets.token_urlsafe(12)
        self._password = secrets.token_urlsafe(12)  # of the turns' proxy credentials; Clutch checks none
        self._sockets: dict[str, _Socket] = {}  # by the upgrade flow's id
        self._tokens: dict[str, str] = {}  # marker token -> upgrade flow id
        self._client: GatewayClient | None = None
        self._retired: list[GatewayClient] = []  # closed at shutdown; sockets may still hold them
        self.limits = Limits()

    def load(self, loader):
        loader.add_option("clutch_websocket", str, "route",
                          "Codex's Responses-over-WebSocket upgrade: 'route' answers it in Clutch and sends "
                          "each response.create through the gateway as its own request (routed, cascaded, "
                          "recorded); 'refuse' answers 426 so Codex uses HTTPS; 'pass' lets mitmproxy carry "
                          "the WebSocket to the provider untouched.", choices=list(MODES))
        loader.add_option("clutch_websocket_max_message", int, Limits.message_bytes,
                          "With clutch_websocket=route: the largest client message, in bytes; larger ones "
                          "are refused with an error event.")

    def configure(self, updated):
        if "clutch_websocket" in updated and ctx.options.clutch_websocket not in MODES:
            raise exceptions.OptionsError(
                f"clutch_websocket must be route, refuse or pass, not {ctx.options.clutch_websocket!r}")
        if "clutch_websocket_max_message" in updated:
            if ctx.options.clutch_websocket_max_message <= 0:
                raise exceptions.OptionsError("clutch_websocket_max_message must be a positive number of bytes")
            self.limits = dataclasses.replace(self.limits, message_bytes=ctx.options.clutch_websocket_max_message)

    async def done(self):
        for socket in list(self._sockets.values()):
            if socket.session is not None:
                await socket.session.close()
        await self._server.close()
        for client in [self._client, *self._retired]:
            if client is not None:
                await client.aclose()

    # ------------------------------------------------------------ mitmproxy hooks

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        marker = flow.request.headers.pop(MARKER, None)
        if marker is not None:
            self._mark_turn(flow, marker)
        if not flow.metadata.get(WEBSOCKET):
            return
        mode = ctx.options.clutch_websocket
        flow.metadata[WEBSOCKET] = mode
        if mode == "pass":
            return
        proxy = _proxy_address() if mode == "route" else None
        if proxy is None:
            why = "it serves the Responses API over HTTPS" if mode == "refuse" else \
                "it has no regular proxy listener to send the WebSocket's turns through"
            self._refuse(flow, why)
            return
        await self._route(flow, proxy)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        socket = self._sockets.get(flow.id)
        if socket is not None:  # mitmweb shows the URL the agent called, not the loopback server
            data = flow.request.data
            data.scheme, data.host, data.port, data.path = socket.original

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None:  # the upgrade did not happen (the loopback server refused it)
            self._forget(flow.id)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        socket = self._sockets.get(flow.id)
        if socket is not None and socket.session is not None:
            session = socket.session
            flow.comment = (f"{flow.comment}; {_count(session.turns, 'turn')} sent through the gateway, "
                            f"{_count(session.prewarms, 'pre-warm')} answered locally, "
                            f"{_count(session.refused, 'message')} refused")
        self._forget(flow.id)

    def error(self, flow: http.HTTPFlow) -> None:
        self._forget(flow.id)

    # ------------------------------------------------------------ the upgrade

    def _refuse(self, flow: http.HTTPFlow, why: str) -> None:
        flow.response = http.Response.make(
            426, dialects.error_body(dialects.Dialect.OPENAI_RESPONSES, 426,
                                     f"Clutch does not serve this Responses WebSocket: {why}; retry without "
                                     "WebSocket."),
            {"content-type": "application/json"})
        flow.comment = f"clutch: refused the Responses WebSocket upgrade (426): {why}; the agent falls back to HTTPS"

    async def _route(self, flow: http.HTTPFlow, proxy: str) -> None:
        if self._client is None or self._client.proxy_url != proxy:  # the first socket, or a new listen port
            if self._client is not None:
                self._retired.append(self._client)
            confdir = Path(ctx.options.confdir).expanduser().resolve()
            self._client = GatewayClient(proxy, ca_files(confdir).ca_cert)
        port = await self._ensure_server()
        request = flow.request
        original = (request.data.scheme, request.data.host, request.data.port, request.data.path)
        url = url_of(request.scheme, request.host, request.port, request.path)
        username = same_identity_username(identity_of(flow))
        token = secrets.token_urlsafe(12)
        self._sockets[flow.id] = _Socket(flow, original, url, _turn_headers(request.headers),
                                         _basic(username, self._password) if username else None, token)
        self._tokens[token] = flow.id
        request.data.scheme = b"http"
        request.data.host = "127.0.0.1"
        request.data.port = port
        request.data.path = f"/{self._secret}/{flow.id}".encode()
        flow.comment = (f"clutch: {identity_of(flow).describe()} Responses WebSocket answered by Clutch "
                        "(clutch_websocket=route): each response.create is its own request through the gateway")

    def _mark_turn(self, flow: http.HTTPFlow, marker: str) -> None:
        """A turn of one of this gateway's sockets (the marker's token is known only to it)."""
        token, _, number = marker.partition("/")
        socket_id = self._tokens.get(token)
        if socket_id is not None and number.isdigit():
            flow.metadata[WEBSOCKET_TURN] = {"socket": socket_id, "turn": int(number)}

    def _forget(self, flow_id: str) -> None:
        socket = self._sockets.pop(flow_id, None)
        if socket is not None:
            self._tokens.pop(socket.token, None)

    # ------------------------------------------------------------ the loopback server

    async def _ensure_server(self) -> int:
        async with self._server_lock:
            if not self._server.port:
                await self._server.start()
        return self._server.port

    async def _not_found(self, target: str, out: ResponseWriter) -> None:
        await out.start(404, "Not Found", [(b"content-type", b"text/plain")])
        await out.send(b"this server answers WebSocket upgrades only\n")
        await out.end()

    async def _upgrade(self, target: str, head: bytes, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        _, secret, flow_id = (target.split("/", 2) + ["", ""])[:3]
        socket = self._sockets.get(flow_id) if secret == self._secret else None
        if socket is None or socket.session is not None or self._client is None:
            writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
            return
        client = self._client

        def send_turn(turn: Turn, number: int):
            headers = [(name, turn.headers.get(name.lower(), value)) for name, value in socket.headers]
            headers.append((MARKER, f"{socket.token}/{number}"))
            return client.post(socket.url, headers, turn.body, socket.proxy_authorization)

        socket.session = SocketSession(reader, writer, send_turn, self.limits, name=flow_id)
        await socket.session.run(head)


def _turn_headers(headers) -> list[tuple[str, str]]:
    """The upgrade's headers that a turn carries (the agent's key, Codex's session headers), and the
    ones of an HTTP request with a JSON body and an SSE answer."""
    kept = []
    for name, value in headers.items(multi=True):
        lower = name.lower()
        if lower in _HANDSHAKE:
            continue
        if lower == "openai-beta":
            value = ",".join(t for t in value.split(",") if not t.strip().startswith(_WEBSOCKETS_BETA))
            if not value.strip():
                continue
        kept.append((name, value))
    return [*kept, ("content-type", "application/json"), ("accept", "text/event-stream"),
            ("accept-encoding", "identity")]


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _proxy_address() -> str | None:
    """The gateway's own proxy port (its first regular or upstream-mode listener), as a proxy URL."""
    proxyserver = ctx.master.addons.get("proxyserver")
    for server in getattr(proxyserver, "servers", []):
        if server.mode.type_name not in ("regular", "upstream") or not server.listen_addrs:
            continue
        host, port = str(server.listen_addrs[0][0]), int(server.listen_addrs[0][1])
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    return None
