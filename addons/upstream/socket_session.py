"""One Responses WebSocket that Clutch answers itself, on the loopback connection mitmproxy relays it over.

No mitmproxy here: the Sockets addon points Codex's upgrade at its loopback server and hands the
connection to a `SocketSession`, with a way to send a turn (`TurnSender`: an ordinary HTTP request
through the gateway, where every addon sees it). The session speaks RFC 6455 with wsproto (sans-IO,
on the asyncio streams), and the Responses WebSocket protocol with responses_socket.py:

* each `response.create` is one turn: its whole request goes out through the gateway, and the answer's
  SSE events come back as text messages, in order, as they arrive. The gateway commits to a candidate
  before it answers, so a cascade is over before the first event is relayed;
* an error answer (status >= 400), a stream that ends without its final event, or a failure of Clutch's
  own logic becomes an error event the client reads as an HTTP error of that status, so the agent shows
  its message instead of waiting for its idle timeout;
* `generate: false` is answered here, with no request: nothing to generate, nothing to pay for;
* one turn at a time: a create while a turn runs is refused (Codex never sends one); a message larger
  than `Limits.message_bytes` is refused unread (its pieces are dropped as they arrive);
* pings are answered; a close from the client, or the connection dropping, cancels the turn in flight,
  which closes its request through the gateway, and the engine stops the provider's generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Event, Ping, Request, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from addons.upstream.responses_socket import (
    Create,
    Limits,
    Memory,
    Recorder,
    Refused,
    Turn,
    error_event,
    error_from_answer,
    events_of_response,
    local_id,
    prewarm_events,
    read_message,
    with_status,
)
from addons.wire.sse import SSEParser

logger = logging.getLogger(__name__)

_READ = 1 << 16
MAX_ERROR_BODY = 1 << 20  # an error answer is read whole, up to this much
MAX_WHOLE_ANSWER = 64 << 20  # an answer that was not streamed, likewise
_BAD_HANDSHAKE = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class Answer(Protocol):
    """The gateway's answer to a turn's request."""

    status: int
    headers: Mapping[str, str]  # lower-case names

    def chunks(self) -> AsyncIterator[bytes]: ...


class Unreachable(Exception):
    """The turn's request found no gateway to answer it (connection refused, reset, TLS)."""


# (the turn, its number on this socket) -> the gateway's answer to its request
TurnSender = Callable[[Turn, int], AbstractAsyncContextManager[Answer]]


class SocketSession:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, send_turn: TurnSender,
                 limits: Limits, *, name: str = "", clock: Callable[[], float] = time.time):
        self._reader, self._writer = reader, writer
        self._send_turn, self._limits, self._clock = send_turn, limits, clock
        self.name = name
        self._ws = WSConnection(ConnectionType.SERVER)
        self._memory = Memory(limits)
        self._parts: list[str] = []
        self._size = 0
        self._oversize = False
        self._tasks: set[asyncio.Task] = set()  # turns, and finished turns whose stream is still read out
        self._busy: int | None = None  # the turn that runs and has not sent its final event
        self.turns = 0  # turns sent through the gateway
        self.prewarms = 0  # generate: false, answered here
        self.refused = 0  # messages answered with an error event instead of a turn

    # ------------------------------------------------------------ the connection

    async def run(self, head: bytes) -> None:
        """Complete the handshake whose request head mitmproxy sent, then serve the socket until it closes."""
        try:
            if not await self._handshake(head):
                return
            while True:
                data = await self._reader.read(_READ)
                try:
                    self._ws.receive_data(data or None)
                except RemoteProtocolError as e:
                    logger.info("websocket %s: protocol error from the client: %s", self.name, e)
                    await self._write(self._ws.send(CloseConnection(1002, "protocol error")))
                    return
                for event in self._ws.events():
                    if not await self._on_event(event):
                        return
                if not data:
                    return
        except ConnectionError:
            pass  # mitmproxy closed the connection: the client went away
        finally:
            await self._stop_turn()

    async def close(self, code: int = 1001, reason: str = "Clutch is shutting down") -> None:
        """End the socket from this side (the gateway stops)."""
        await self._stop_turn()
        if self._ws.state is ConnectionState.OPEN:
            with contextlib.suppress(ConnectionError, LocalProtocolError):
                await self._write(self._ws.send(CloseConnection(code, reason)))
        self._writer.close()

    async def _handshake(self, head: bytes) -> bool:
        try:
            self._ws.receive_data(head)
            requests = [event for event in self._ws.events() if isinstance(event, Request)]
        except RemoteProtocolError as e:
            logger.warning("websocket %s: not a WebSocket handshake: %s", self.name, e)
            requests = []
        if not requests:
            self._writer.write(_BAD_HANDSHAKE)
            await self._writer.drain()
            return False
        # no extensions: mitmproxy then relays plain frames both ways (it would otherwise inflate
        # Codex's compressed frames only to compress them again for this loopback hop)
        await self._write(self._ws.send(AcceptConnection()))
        return True

    async def _on_event(self, event: Event) -> bool:
        """Handle one protocol event; False when the socket is closed."""
        if isinstance(event, (TextMessage, BytesMessage)):
            whole = self._collect(event.data if isinstance(event, TextMessage) else "", event.message_finished)
            if isinstance(event, BytesMessage) and event.message_finished:
                whole = Refused(400, "Clutch: binary messages are not part of the Responses WebSocket protocol; "
                                     "send response.create as a text message", "unsupported_message_type")
            if isinstance(whole, Refused):
                await self._refuse(whole)
            elif whole is not None:
                try:
                    await self._on_message(whole)
                except ConnectionError:
                    raise
                except Exception:  # Clutch's own logic failed on this message: refuse it, visibly
                    logger.exception("websocket %s: a message failed inside Clutch", self.name)
                    await self._send_event(error_event(500, "Clutch: this message failed inside Clutch; see its log"))
        elif isinstance(event, Ping):
            await self._write(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            await self._stop_turn()
            if self._ws.state is ConnectionState.REMOTE_CLOSING:
                with contextlib.suppress(ConnectionError):
                    await self._write(self._ws.send(event.response()))
            return False
        return True

    def _collect(self, piece: str, finished: bool) -> str | Refused | None:
        """Add a piece of a message: the whole text once it is finished, a refusal when it grew too large
        (its pieces are dropped as they come), None while it is not finished."""
        if not self._oversize:
            self._size += len(piece.encode("utf-8"))
            if self._size > self._limits.message_bytes:
                self._oversize, self._parts = True, []
            else:
                self._parts.append(piece)
        if not finished:
            return None
        text, oversize = "".join(self._parts), self._oversize
        self._parts, self._size, self._oversize = [], 0, False
        if oversize:
            return Refused(413, f"Clutch: a Responses WebSocket message may hold at most "
                                f"{self._limits.message_bytes} bytes", "message_too_large")
        return text

    # ------------------------------------------------------------ messages

    async def _on_message(self, text: str) -> None:
        try:
            create = read_message(text)
            if create is None:
                return
            if self._busy is not None:
                raise Refused(400, "Clutch: a response is already in progress on this WebSocket; wait for its "
                                   "response.completed before the next response.create", "response_already_in_flight")
            turn = self._memory.turn(create)
        except Refused as refused:
            await self._refuse(refused)
            return
        if not create.generate:
            await self._prewarm(create, turn)
            return
        self.turns += 1
        self._busy = self.turns
        task = asyncio.create_task(self._run_turn(turn, self.turns))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refuse(self, refused: Refused) -> None:
        self.refused += 1
        logger.info("websocket %s: refused a message (%s)", self.name, refused.code)
        await self._send_event(refused.event())

    async def _prewarm(self, create: Create, turn: Turn) -> None:
        self.prewarms += 1
        response_id = local_id()
        self._memory.remember(response_id, turn.input_json, "[]")
        await self._send_texts([_dumps(event) for event in prewarm_events(create, response_id, self._clock())])

    # ------------------------------------------------------------ turns

    async def _run_turn(self, turn: Turn, number: int) -> None:
        recorder = Recorder()
        try:
            async with self._send_turn(turn, number) as answer:
                kind = answer.headers.get("content-type", "")
                if answer.status >= 400:
                    body = await _read(answer, MAX_ERROR_BODY)
                    await self._end(turn, recorder, error_from_answer(answer.status, body, dict(answer.headers)))
                elif "text/event-stream" in kind:
                    await self._relay_stream(turn, recorder, answer)
                else:
                    await self._relay_whole(turn, recorder, answer)
        except asyncio.CancelledError:
            raise
        except Unreachable as e:
            await self._end(turn, recorder, error_event(502, f"Clutch: the turn could not reach the gateway: {e}"))
        except ConnectionError:
            return  # the client went away while its events were written
        except Exception:
            # a failure of Clutch's own logic ends this turn, visibly, and leaves the socket usable
            logger.exception("websocket %s: turn %d failed", self.name, number)
            await self._end(turn, recorder, error_event(500, "Clutch: this turn failed inside Clutch; see its log"))
        finally:
            if self._busy == number:
                self._busy = None

    async def _relay_stream(self, turn: Turn, recorder: Recorder, answer: Answer) -> None:
        parser = SSEParser()
        async for chunk in answer.chunks():
            texts = []  # the events of this piece of the stream, written at once
            for sse in parser.feed(chunk):
                if recorder.final is not None or sse.data == "[DONE]":
                    continue  # after the final event: the rest of the stream is only read out
                event = _json_object(sse.data)
                if event is None:
                    continue  # not an event a client can read
                text = sse.data
                if event.get("type") == "error":
                    event = with_status(event)
                    text = _dumps(event)
                if recorder.see(event):
                    self._settle(turn, recorder)
                texts.append(text)
            await self._send_texts(texts)
        if recorder.final is None:
            await self._end(turn, recorder, error_event(502, "Clutch: the provider's stream ended before "
                                                             "response.completed", code="stream_cut"))

    async def _relay_whole(self, turn: Turn, recorder: Recorder, answer: Answer) -> None:
        body = await _read(answer, MAX_WHOLE_ANSWER)
        response = _json_object(body.decode("utf-8", "replace"))
        if response is None or response.get("object") != "response":
            await self._end(turn, recorder, error_event(502, "Clutch: the answer was neither a stream nor a "
                                                             "Response object", code="bad_answer"))
            return
        for event in events_of_response(response):
            if recorder.see(event):
                self._settle(turn, recorder)
            await self._send_event(event)

    async def _end(self, turn: Turn, recorder: Recorder, event: dict[str, Any]) -> None:
        """End the turn with an error event."""
        recorder.see(event)
        self._settle(turn, recorder)
        await self._send_event(event)

    def _settle(self, turn: Turn, recorder: Recorder) -> None:
        """The turn's final event is about to go out: remember what a later turn continues from, and
        take the next create (the client may send it the moment it reads this event)."""
        if recorder.continuable and recorder.response_id is not None:
            self._memory.remember(recorder.response_id, turn.input_json, recorder.output_json())
        self._busy = None

    async def _stop_turn(self) -> None:
        tasks = list(self._tasks)  # each removes itself from the set when done
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------ writing

    async def _send_event(self, event: dict[str, Any]) -> None:
        await self._send_texts([_dumps(event)])

    async def _send_texts(self, texts: list[str]) -> None:
        """Each text as a message of its own, written together (mitmproxy then relays them in one go)."""
        if texts and self._ws.state is ConnectionState.OPEN:
            await self._write(b"".join(self._ws.send(TextMessage(data=text)) for text in texts))

    async def _write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()


def _dumps(value: Any) -> str:
    # ASCII: Clutch's own events may quote what a client sent, which can hold a lone surrogate
    return json.dumps(value, separators=(",", ":"))


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


async def _read(answer: Answer, limit: int) -> bytes:
    body = bytearray()
    async for chunk in answer.chunks():
        body += chunk[:limit - len(body)]
        if len(body) >= limit:
            break
    return bytes(body)
