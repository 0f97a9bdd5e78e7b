"""A minimal HTTP/1.1 server on 127.0.0.1 through which mitmproxy hands flows to the engine.

No mitmproxy here. mitmproxy's own upstream path cannot retry or stream a fallback (measured: a
request re-sent from a `response` hook reaches the agent only once it is complete, that hook
cannot cascade on a timeout or a refused connection, and a flow cannot be re-issued through
mitmproxy's server layer), so LLM flows are pointed at this server; the handler reads the
original request from the flow object and writes the upstream's answer back, chunked, as it
arrives. Only mitmproxy talks to it: it binds loopback and serves paths under a random secret.

A server given an `upgrade` handler hands it WebSocket upgrades whole (the request head and the
connection), for the Responses WebSockets Clutch answers itself (addons/sockets.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from addons.wire.dialects import MAX_HEADERS_BYTES
from addons.wire.header_values import encode

logger = logging.getLogger(__name__)

# Classify answers LLM requests whose headers pass dialects.MAX_HEADERS_BYTES itself; the room above
# it is for what mitmproxy adds or rewrites on the way here.
_MAX_HEAD = MAX_HEADERS_BYTES + 16 * 1024


class ResponseWriter:
    """Writes one chunked HTTP/1.1 response; `drain` after each chunk gives backpressure and
    notices an agent that went away (mitmproxy then closes this connection)."""

    def __init__(self, writer: asyncio.StreamWriter):
        self._writer = writer
        self.started = False
        self.sent_all = False  # the whole response went out: what the handler does next is its own books
        self.on_end: Callable[[], Any] | None = None  # called before the last chunk goes out

    async def start(self, status: int, reason: str, headers: list[tuple[bytes, bytes]]) -> None:
        # every value (and the reason) through header_values.encode: mitmproxy parses this head, so a
        # CR/LF in a value (a model name in x-clutch-model) would become headers of the agent's response
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, encode(reason.encode("latin-1", "replace")) or b"-")]
        for name, value in headers:
            lines.append(encode(name) + b": " + encode(value) + b"\r\n")
        lines.append(b"transfer-encoding: chunked\r\n\r\n")
        self._writer.write(b"".join(lines))
        self.started = True

    async def send(self, chunk: bytes) -> None:
        if chunk:
            self._writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            await self._writer.drain()

    async def raw(self, data: bytes) -> None:
        """Bytes as they are: a whole response relayed from another loopback server."""
        self.started = True
        self._writer.write(data)
        await self._writer.drain()

    async def end(self) -> None:
        self.sent_all = True
        if self.on_end is not None:
            self.on_end()
        self._writer.write(b"0\r\n\r\n")
        await self._writer.drain()


Handler = Callable[[str, ResponseWriter], Awaitable[None]]
# (request target, the request head as received, the connection) -> serve it until it closes
UpgradeHandler = Callable[[str, bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class LoopbackServer:
    def __init__(self, handler: Handler, upgrade: UpgradeHandler | None = None):
        self._handler = handler
        self._upgrade = upgrade
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                _, target, _ = request_line.split(" ", 2)
                headers = {}
                for line in header_lines:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                if self._upgrade is not None and headers.get("upgrade", "").lower() == "websocket":
                    await self._upgrade(target, head, reader, writer)
                    return
                await _discard_body(reader, headers)
                if not await self._handle(target, ResponseWriter(writer), reader):
                    return
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # mitmproxy closed the connection: the agent went away
        except Exception:
            logger.exception("engine loopback connection failed")
        finally:
            writer.close()

    async def _handle(self, target: str, response: ResponseWriter, reader: asyncio.StreamReader) -> bool:
        """Run the handler while watching the connection: mitmproxy closes it when the agent goes away,
        and the handler is then cancelled at once (the relay stops the upstream generation, which is
        billed, instead of noticing only at its next write). The watch stops before the response's last
        chunk goes out, so the next request on this connection is never read by it. False: the
        connection is done."""
        handler = asyncio.ensure_future(self._handler(target, response))
        watch = asyncio.ensure_future(reader.read(1))
        response.on_end = watch.cancel
        try:
            await asyncio.wait({handler, watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done() and not watch.cancelled() and not handler.done():
                if not response.sent_all and (watch.exception() is not None or not watch.result()):
                    handler.cancel()  # EOF or a reset mid-answer: the agent went away
                    await asyncio.wait({handler})
                    return False
                await handler  # bytes mid-answer (mitmproxy sends none): this connection serves no more
                return False
            await handler
            return not (watch.done() and not watch.cancelled())
        finally:
            for task in (handler, watch):
                if not task.done():
                    task.cancel()
                    await asyncio.wait({task})  # gone for good before the next request is read


async def _discard_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
    """The engine reads the request body from the flow itself; what mitmproxy sends is dropped."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return
    length = int(headers.get("content-length", "0") or 0)
    if length:
        await reader.readexactly(length)
