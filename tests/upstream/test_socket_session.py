"""A Responses WebSocket session (addons/upstream/socket_session.py) on a real loopback TCP connection, with
aiohttp's WebSocket client on the other end, for the turns a gateway rarely produces: Clutch's own logic
failing inside a turn, an answer that ends before its final event, an answer that was not streamed, a
gateway that cannot be reached. The turns' answers here are canned; what the gateway really answers is
tests/gateway/test_sockets.py. Each must end the turn with an error event Codex reads (it carries a status) and
leave the socket usable."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import pytest

from addons.upstream.responses_socket import Limits
from addons.upstream.socket_session import SocketSession, Unreachable

ANSWER_EVENTS = [{"type": "response.created", "response": {"id": "resp_ok", "output": []}},
                 {"type": "response.output_text.delta", "delta": "hi"},
                 {"type": "response.completed", "response": {"id": "resp_ok", "output": []}}]


class Canned:
    """An answer as the gateway would give it: a status, headers and the body in pieces."""

    def __init__(self, status: int, content_type: str, pieces: list[bytes]):
        self.status, self.headers, self._pieces = status, {"content-type": content_type}, pieces

    async def chunks(self):
        for piece in self._pieces:
            yield piece


def sse(*events: dict) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + json.dumps(e).encode() + b"\n\n" for e in events)


def turns(*answers):
    """A TurnSender that gives each turn the next of `answers` (an exception is raised instead)."""
    queue = list(answers)

    @contextlib.asynccontextmanager
    async def send(turn, number):
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        yield answer

    return send


@contextlib.asynccontextmanager
async def session_with(send_turn):
    async def serve(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        try:
            await SocketSession(reader, writer, send_turn, Limits(), name="test").run(head)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as client:
            async with client.ws_connect(f"ws://127.0.0.1:{port}/v1/responses") as ws:
                yield ws
    finally:
        server.close()


async def turn(ws) -> list[dict]:
    await ws.send_str(json.dumps({"type": "response.create", "model": "m", "input": "hi"}))
    found = []
    while not found or found[-1]["type"] not in ("response.completed", "error"):
        found.append(json.loads((await asyncio.wait_for(ws.receive(), 10)).data))
    return found


@pytest.mark.parametrize("failure, status, code", [
    (RuntimeError("a bug in Clutch"), 500, "server_error"),
    (Unreachable("connection refused"), 502, "server_error"),
    (Canned(200, "text/event-stream", [sse(*ANSWER_EVENTS[:2])]), 502, "stream_cut"),
    (Canned(200, "text/plain", [b"not an answer"]), 502, "bad_answer"),
    (Canned(200, "text/event-stream", [sse({"type": "error", "code": "server_error", "message": "broke"})]),
     502, "server_error"),
])
async def test_a_turn_that_goes_wrong_ends_with_an_error_event_and_the_socket_goes_on(failure, status, code):
    good = Canned(200, "text/event-stream", [sse(*ANSWER_EVENTS)[:17], sse(*ANSWER_EVENTS)[17:]])
    async with session_with(turns(failure, good)) as ws:
        events = await turn(ws)
        assert (events[-1]["type"], events[-1]["status"], events[-1]["error"]["code"]) == ("error", status, code)
        assert [e["type"] for e in await turn(ws)] == ["response.created", "response.output_text.delta",
                                                      "response.completed"]


async def test_a_whole_response_comes_as_its_events():
    whole = {"id": "resp_whole", "object": "response", "status": "completed",
             "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}]}
    async with session_with(turns(Canned(200, "application/json", [json.dumps(whole).encode()]))) as ws:
        events = await turn(ws)
    assert [e["type"] for e in events] == ["response.created", "response.output_item.done", "response.completed"]
    assert events[-1]["response"] == whole
