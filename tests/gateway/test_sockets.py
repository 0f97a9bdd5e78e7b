"""Codex's Responses WebSocket answered by Clutch (clutch_websocket=route, the default), through a real
gateway with aiohttp's WebSocket client speaking what Codex 0.169.0 sends: a pre-warm (`generate:
false`) answered locally, turns continued with `previous_response_id`, each turn routed (a launch pin,
an alias to a chat-only provider), cascaded before its first event, recorded in /requests and the usage
store, errors as the error events Codex reads, and the socket's own lifetime (one turn at a time, the
size bound, pings, a close mid-turn stopping the provider). No WebSocket ever reaches the fake provider:
every turn arrives there as an HTTP POST through Clutch's engine (x-clutch-flow).
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time

import aiohttp
import httpx
import pytest
from harness import gateway_on_rules, trust

from addons.wire.identity import Identity, username_for

RULES = textwrap.dedent("""\
    version: 1
    providers:
      openai: {base_url: "https://api.openai.com/v1", dialects: [openai_responses], hosts: [api.openai.com],
               key_env: OPENAI_API_KEY}
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
                   key_env: OPENROUTER_API_KEY}
    aliases:
      ws-routed: "openrouter:ws/chat-model"
      ws-cascade: "openrouter:ws/fail-429"
      ws-silent: "openrouter:ws/hang-after-headers"
    cascades:
      "openrouter:ws/fail-429": ["openrouter:ws/after-429"]
      "openrouter:ws/hang-after-headers": ["openrouter:ws/after-silence"]
    fallback: {method: cascade}
    compression: {mode: "off"}
""")
AGENT_KEY, ROUTER_KEY = "sk-proj-ws-agent-4471", "sk-or-v1-ws-rules-9913"
ANSWER = "pong from the fake upstream"
MAX_MESSAGE = 16384
TERMINAL = {"response.completed", "response.incomplete", "response.failed", "error"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, fake, pki):
    workdir = tmp_path_factory.mktemp("sockets")
    process = gateway_on_rules(workdir, fake, pki, RULES, "--set", "clutch_retries=0",
                               "--set", "clutch_silence_timeout_ms=500",
                               "--set", f"clutch_websocket_max_message={MAX_MESSAGE}",
                               "--set", f"clutch_state_dir={workdir / 'state'}",
                               env={"OPENROUTER_API_KEY": ROUTER_KEY})
    yield process
    process.stop()


class Socket:
    """One Responses WebSocket through the gateway, opened as Codex opens it."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session, self.ws = session, ws

    async def send(self, **create) -> None:
        await self.ws.send_str(json.dumps({"type": "response.create", **create}))

    async def events(self) -> list[dict]:
        """The events of one turn, up to its final one."""
        found = []
        while True:
            message = await asyncio.wait_for(self.ws.receive(), 30)
            assert message.type == aiohttp.WSMsgType.TEXT, message
            event = json.loads(message.data)
            found.append(event)
            if event["type"] in TERMINAL:
                return found

    async def turn(self, **create) -> list[dict]:
        await self.send(**create)
        return await self.events()

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


async def connect(gateway, session_id: str, *, model: str | None = None, autoping: bool = True) -> Socket:
    user = username_for(Identity(agent="codex", session=session_id, model=model))
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(
            "wss://api.openai.com/v1/responses", proxy=gateway.proxy_url(user), ssl=trust(gateway.bundle),
            autoping=autoping, headers={"authorization": f"Bearer {AGENT_KEY}", "originator": "codex_exec",
                                        "session-id": session_id, "openai-beta": "responses_websockets=2026-02-06",
                                        "x-codex-turn-metadata": '{"turn_id":""}'})
    except BaseException:
        await session.close()
        raise
    return Socket(session, ws)


def user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def developer(text: str) -> dict:
    return {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": text}]}


def text_of(events: list[dict]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def entries(fake, model: str) -> list[dict]:
    return [e for e in fake.entries() if e.get("model") == model]


def journal(gateway) -> list[dict]:
    return gateway.local("/requests")["requests"]


def wait_until(predicate, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError("condition not met")


async def test_a_pinned_turn_goes_to_a_chat_only_provider_and_gets_translated_responses_events(gateway, fake):
    before = len(fake.entries())
    socket = await connect(gateway, "ws-pin", model="openrouter:ws/pinned")
    try:
        # Codex's first message: a pre-warm of its instructions, answered by Clutch, asked of no provider
        warm = await socket.turn(model="gpt-5.5", generate=False, input=[developer("Be brief.")], tools=[],
                                 store=False, stream=True)
        assert [e["type"] for e in warm] == ["response.created", "response.completed"]
        prewarm_id = warm[-1]["response"]["id"]
        assert warm[-1]["response"]["output"] == [] and warm[0]["response"]["id"] == prewarm_id
        assert len(fake.entries()) == before
        first = await socket.turn(model="gpt-5.5", previous_response_id=prewarm_id, input=[user("say hi")],
                                  store=False, stream=True)
        # the translated chat stream, as the Responses events Codex reads
        kinds = [e["type"] for e in first]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert {"response.output_item.added", "response.output_text.delta", "response.output_item.done"} <= set(kinds)
        assert text_of(first) == ANSWER
        reply_id = first[-1]["response"]["id"]
        second = await socket.turn(model="gpt-5.5", previous_response_id=reply_id, input=[user("and again")])
        assert text_of(second) == ANSWER
    finally:
        await socket.close()
    calls = entries(fake, "ws/pinned")
    assert len(calls) == 2 and len(fake.entries()) == before + 2  # one HTTP request per turn, no WebSocket
    for entry in calls:
        assert (entry["method"], entry["host"], entry["path"]) == ("POST", "openrouter.ai", "/api/v1/chat/completions")
        assert entry["headers"]["authorization"] == f"Bearer {ROUTER_KEY}" and "x-clutch-flow" in entry["headers"]
        assert "x-clutch-websocket" not in entry["headers"] and "openai-beta" not in entry["headers"]
    # each turn carried the whole conversation: the pre-warm's instructions, earlier turns and answers
    assert calls[0]["request_json"]["messages"] == [{"role": "system", "content": "Be brief."},
                                                    {"role": "user", "content": "say hi"}]
    assert [(m["role"], m["content"]) for m in calls[1]["request_json"]["messages"]] == [
        ("system", "Be brief."), ("user", "say hi"), ("assistant", ANSWER), ("user", "and again")]
    # the live view shows each turn as a request of the agent's, with the socket it came on
    turns = wait_until(lambda: [e for e in journal(gateway) if e["session"] == "ws-pin"])
    assert [(e["agent"], e["model"], e["target"], e["status"], e["websocket"]["turn"]) for e in turns] == [
        ("codex", "gpt-5.5", "openrouter:ws/pinned", 200, 1), ("codex", "gpt-5.5", "openrouter:ws/pinned", 200, 2)]
    assert turns[0]["websocket"]["socket"] == turns[1]["websocket"]["socket"]
    rows = wait_until(lambda: gateway.usage_rows(session="ws-pin"))
    assert len(rows) == 2  # the pre-warm has none: nothing was asked of a provider
    for row in rows:
        assert (row["agent"], row["requested_model"], row["provider"], row["model"], row["outcome"]) == \
            ("codex", "gpt-5.5", "openrouter", "ws/pinned", "success")
        assert row["input_tokens"] and row["output_tokens"] and not row["tokens_estimated"]


async def test_previous_response_id_is_expanded_into_the_whole_input(gateway, fake):
    """On a provider that speaks Responses itself, the turn's input is exactly the earlier input, the
    output items the client received, and the new items; nothing is left for the provider to remember."""
    socket = await connect(gateway, "ws-expand")
    try:
        first_input = [developer("You are a test."), user("first")]
        first = await socket.turn(model="gpt-ws-expand", input=first_input, store=False,
                                  client_metadata={"x-codex-turn-metadata": '{"turn_id":"t1"}', "x-not-sent": "1"})
        output = [e["item"] for e in first if e["type"] == "response.output_item.done"]
        assert output and text_of(first) == ANSWER
        await socket.turn(model="gpt-ws-expand", previous_response_id=first[-1]["response"]["id"],
                          input=[user("second")], store=False)
    finally:
        await socket.close()
    one, two = entries(fake, "gpt-ws-expand")
    assert (one["host"], one["path"]) == ("api.openai.com", "/v1/responses")
    assert one["headers"]["authorization"] == f"Bearer {AGENT_KEY}"  # unrouted: the agent's own key
    assert one["request_json"]["input"] == first_input and one["request_json"]["stream"] is True
    assert two["request_json"]["input"] == first_input + output + [user("second")]
    for entry in (one, two):
        assert {"previous_response_id", "type", "generate"}.isdisjoint(entry["request_json"])
    # what Codex's HTTPS requests carry as a header comes per turn in client_metadata; it replaces the
    # upgrade's header of that name, and adds none the upgrade did not have
    assert one["headers"]["x-codex-turn-metadata"] == '{"turn_id":"t1"}'
    assert two["headers"]["x-codex-turn-metadata"] == '{"turn_id":""}' and "x-not-sent" not in one["headers"]


async def test_an_unknown_previous_response_id_is_refused_and_the_socket_goes_on(gateway, fake):
    before = len(fake.entries())
    socket = await connect(gateway, "ws-unknown")
    try:
        [error] = await socket.turn(model="gpt-ws-unknown", previous_response_id="resp_from_another_socket",
                                    input=[user("hi")])
        assert error["type"] == "error" and error["status"] == 400
        assert error["error"]["code"] == "previous_response_not_found"
        assert "resp_from_another_socket" in error["error"]["message"]
        assert len(fake.entries()) == before
        events = await socket.turn(model="gpt-ws-unknown", input=[user("hi")])
        assert text_of(events) == ANSWER
    finally:
        await socket.close()


async def test_a_cascade_is_applied_before_the_first_event(gateway, fake):
    socket = await connect(gateway, "ws-cascade")
    try:
        limited = await socket.turn(model="ws-cascade", input=[user("hi")])
        silent = await socket.turn(model="ws-silent", input=[user("hi")])
    finally:
        await socket.close()
    for events in (limited, silent):
        # the agent saw one response, from the candidate that answered: no error, nothing of the failure
        assert [e["type"] for e in events].count("response.created") == 1
        assert events[-1]["type"] == "response.completed" and text_of(events) == ANSWER
    [failed] = entries(fake, "ws/fail-429")
    assert failed["status"] == 429 and entries(fake, "ws/after-429")[0]["status"] == 200
    hung = fake.wait_for(lambda e: e.get("model") == "ws/hang-after-headers")
    assert hung["outcome"] == "aborted"  # abandoned at the commit timeout, for the next candidate
    assert entries(fake, "ws/after-silence")[0]["status"] == 200
    served = wait_until(lambda: [e for e in journal(gateway) if e["session"] == "ws-cascade"])
    assert [(e["served_by"], e["attempts"], e["fallback"]) for e in served] == [
        ("openrouter:ws/after-429", 2, True), ("openrouter:ws/after-silence", 2, True)]


async def test_an_upstream_error_arrives_as_the_error_event_codex_reads(gateway, fake):
    socket = await connect(gateway, "ws-error")
    try:
        [error] = await socket.turn(model="gpt-ws-fail-401", input=[user("hi")])
        events = await socket.turn(model="gpt-ws-after-error", input=[user("hi")])
    finally:
        await socket.close()
    # {"type": "error", "status": N, "error": {...}}: Codex reads it as an HTTP error of that status
    assert error["type"] == "error" and error["status"] == 401
    assert error["error"]["code"] == "invalid_api_key" and "Incorrect API key" in error["error"]["message"]
    assert text_of(events) == ANSWER  # the socket stays usable
    assert entries(fake, "gpt-ws-fail-401")[0]["status"] == 401


async def test_a_whole_answer_whose_status_is_not_a_string_still_becomes_the_turns_events(gateway, fake):
    """A provider that answers the turn with a whole Response object whose `status` is ["completed"]:
    the turn still ends with response.completed and the answer's text. Reading the status as a dict
    key raised TypeError, and the turn ended with Clutch's internal error event instead."""
    socket = await connect(gateway, "ws-odd-status")
    try:
        events = await socket.turn(model="gpt-ws-status-not-a-string", input=[user("hi")])
    finally:
        await socket.close()
    assert entries(fake, "gpt-ws-status-not-a-string")[0]["status"] == 200
    assert [e["type"] for e in events] == ["response.created", "response.output_item.done", "response.completed"]
    item = events[1]["item"]
    assert item["type"] == "message" and item["content"][0]["text"] == ANSWER


async def test_a_stream_that_breaks_after_its_first_event_ends_with_an_error_event(gateway):
    """After the commit point nothing is restarted: a provider's error event, or a stream cut off, ends
    the turn with an error event that carries a status, so Codex fails the turn at once (an error event
    without one it would not read as an error, and it would wait for its idle timeout). The fake's delay
    puts the break after the first text reached the agent."""
    socket = await connect(gateway, "ws-broken")
    try:
        broken = await socket.turn(model="gpt-ws-midstream-error-delay-300", input=[user("hi")])
        cut = await socket.turn(model="gpt-ws-stream-cut-delay-300", input=[user("hi")])
        after = await socket.turn(model="gpt-ws-after-broken", input=[user("hi")])
    finally:
        await socket.close()
    for events in (broken, cut):
        assert text_of(events)  # the text that came before the break
        error = events[-1]
        assert (error["type"], error["status"]) == ("error", 502) and error["error"]["message"]
    assert "error while processing your request" in broken[-1]["error"]["message"]
    assert text_of(after) == ANSWER


async def test_closing_the_socket_mid_turn_stops_the_provider(gateway, fake):
    socket = await connect(gateway, "ws-abort")
    try:
        await socket.send(model="gpt-ws-slow-abort", input=[user("hi")])
        while True:  # read until the first text arrives, then leave
            event = json.loads((await asyncio.wait_for(socket.ws.receive(), 30)).data)
            if event["type"] == "response.output_text.delta":
                break
    finally:
        await socket.close()
    entry = fake.wait_for(lambda e: e.get("model") == "gpt-ws-slow-abort")
    assert entry["outcome"] == "aborted" and entry["chunks_sent"] < 10
    journaled = wait_until(lambda: [e for e in journal(gateway) if e["session"] == "ws-abort"])
    assert journaled[0]["outcome"] == "aborted"


async def test_one_turn_at_a_time_a_bound_on_message_size_and_hostile_messages(gateway, fake):
    socket = await connect(gateway, "ws-busy")
    try:
        await socket.send(model="gpt-ws-slow-busy", input=[user("hi")])
        await socket.send(model="gpt-ws-second", input=[user("too soon")])
        events = await socket.events()
        refused = [e for e in events if e["type"] == "error"]
        assert refused[0]["status"] == 400 and refused[0]["error"]["code"] == "response_already_in_flight"
        rest = await socket.events()  # the first turn goes on to its end
        assert rest[-1]["type"] == "response.completed" and text_of(events + rest) == "".join(
            ["pong from the fake upstream"])
        [large] = await socket.turn(model="gpt-ws-large", input=[user("x" * (MAX_MESSAGE + 1))])
        assert large["status"] == 413 and large["error"]["code"] == "message_too_large"
        await socket.ws.send_str("not json")
        [bad] = await socket.events()
        assert bad["status"] == 400 and bad["error"]["code"] == "invalid_json"
        await socket.ws.send_str(json.dumps({"type": "response.cancel"}))
        [unknown] = await socket.events()
        assert unknown["status"] == 400 and unknown["error"]["code"] == "unsupported_message_type"
        await socket.ws.send_bytes(b"\x00\x01")
        [binary] = await socket.events()
        assert binary["status"] == 400
        # a lone surrogate is valid JSON and no UTF-8: the turn's body carries it escaped
        assert text_of(await socket.turn(model="gpt-ws-after", input=[user("hi \ud800")])) == ANSWER
    finally:
        await socket.close()
    assert not entries(fake, "gpt-ws-second") and not entries(fake, "gpt-ws-large")
    [after] = entries(fake, "gpt-ws-after")
    assert after["request_json"]["input"][0]["content"][0]["text"] == "hi \ud800"


async def test_pings_are_answered(gateway):
    socket = await connect(gateway, "ws-ping", autoping=False)
    try:
        await socket.ws.ping(b"are you there")
        message = await asyncio.wait_for(socket.ws.receive(), 10)
        assert (message.type, message.data) == (aiohttp.WSMsgType.PONG, b"are you there")
    finally:
        await socket.close()


def test_the_gateway_logged_no_failure_and_no_key(gateway):
    """Run last in this module: nothing above made Clutch's own logic fail, and no key reached the log."""
    output = gateway.output()
    assert "Traceback" not in output and "failed inside Clutch" not in output
    assert AGENT_KEY not in output and ROUTER_KEY not in output


@pytest.fixture(scope="module")
def refusing(tmp_path_factory, fake, pki):
    process = gateway_on_rules(tmp_path_factory.mktemp("sockets-refuse"), fake, pki, RULES,
                               "--set", "clutch_websocket=refuse")
    yield process
    process.stop()


def test_refuse_answers_the_upgrade_with_426(refusing, fake):
    """clutch_websocket=refuse: Codex's upgrade gets 426 (Codex then uses HTTPS at once); nothing
    reaches the provider."""
    before = len(fake.entries())
    with httpx.Client(proxy=refusing.proxy_url(), verify=trust(refusing.ca_cert)) as client:
        response = client.get("https://api.openai.com/v1/responses",
                              headers={"upgrade": "websocket", "connection": "Upgrade",
                                       "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert response.status_code == 426
    assert response.json()["error"]["message"].startswith("Clutch does not serve this Responses WebSocket")
    assert len(fake.entries()) == before


@pytest.mark.parametrize("grace_ms, outcome", [(10_000, "fault:slow"), (0, "aborted")])
def test_the_gateway_closes_its_sockets_when_it_stops(tmp_path, fake, pki, grace_ms, outcome):
    """A stopping gateway lets the turn in flight finish within clutch_drain_timeout_ms (with no grace
    the turn is ended and the provider's stream aborted), then ends each socket with 1001 (going
    away) and exits cleanly."""
    model = f"gpt-ws-slow-shutdown-{grace_ms}"
    gateway = gateway_on_rules(tmp_path, fake, pki, RULES, "--set", f"clutch_drain_timeout_ms={grace_ms}")

    async def talk():
        socket = await connect(gateway, "ws-shutdown")
        try:
            await socket.send(model=model, input=[user("hi")])
            first = json.loads((await asyncio.wait_for(socket.ws.receive(), 30)).data)
            stopping = asyncio.get_running_loop().run_in_executor(None, gateway.stop)
            kinds = []
            while True:
                message = await asyncio.wait_for(socket.ws.receive(), 30)
                if message.type != aiohttp.WSMsgType.TEXT:
                    return first, kinds, message, await stopping
                kinds.append(json.loads(message.data)["type"])
        finally:
            await socket.close()

    try:
        first, kinds, closed, code = asyncio.run(talk())
    finally:
        gateway.stop()
    assert first["type"] == "response.created"
    assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1001
    assert code == 0
    assert ("response.completed" in kinds) is (outcome != "aborted"), kinds
    assert fake.wait_for(lambda e: e.get("model") == model)["outcome"] == outcome
