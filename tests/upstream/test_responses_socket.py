"""The Responses WebSocket protocol as Clutch answers it (addons/upstream/responses_socket.py), on the shapes a
real Codex 0.169.0 sends (its pre-warm and its continued turn, as read from a saved flow) and the
error events Codex's client reads (openai/codex, codex-rs/codex-api/src/endpoint/responses_websocket.rs:
an `error` event maps to an HTTP error only when it carries a status)."""

from __future__ import annotations

import json

import pytest

from addons.upstream.responses_socket import (Limits, Memory, Recorder, Refused, error_from_answer, events_of_response,
                                     prewarm_events, read_message, with_status)

INSTRUCTIONS = {"type": "message", "id": "msg_1", "role": "developer",
                "content": [{"type": "input_text", "text": "You are Codex."}]}
PROMPT = {"type": "message", "id": "msg_2", "role": "user", "content": [{"type": "input_text", "text": "say hi"}],
          "internal_chat_message_metadata_passthrough": {"turn_id": "t1"}}
ANSWER = {"id": "msg_3", "type": "message", "status": "completed", "role": "assistant",
          "content": [{"type": "output_text", "text": "hi", "annotations": []}]}
# Codex 0.169.0's messages, less the tools and most of the metadata
PREWARM = {"type": "response.create", "model": "gpt-5.5", "stream": True, "input": [INSTRUCTIONS], "tools": [],
           "tool_choice": "auto", "store": False, "generate": False,
           "client_metadata": {"x-codex-turn-metadata": '{"turn_id":""}', "request_kind": "prewarm"}}


def turn_message(previous: str, items: list) -> str:
    return json.dumps({"type": "response.create", "model": "gpt-5.5", "stream": True, "previous_response_id": previous,
                       "input": items, "tools": [], "store": False,
                       "client_metadata": {"x-codex-turn-metadata": '{"turn_id":"t1"}', "turn_id": "t1",
                                           "bad\nname": "x", "x-multi-line": "a\r\nb"}})


def test_a_prewarm_then_a_turn_continued_from_it():
    memory = Memory(Limits())
    warm = read_message(json.dumps(PREWARM))
    assert not warm.generate and warm.previous is None
    warm_turn = memory.turn(warm)
    events = prewarm_events(warm, "resp_warm", 1000.0)
    assert [e["type"] for e in events] == ["response.created", "response.completed"]
    assert events[1]["response"] == {**events[0]["response"], "status": "completed"}
    assert events[1]["response"]["output"] == [] and events[1]["response"]["model"] == "gpt-5.5"
    memory.remember("resp_warm", warm_turn.input_json, "[]")

    turn = memory.turn(read_message(turn_message("resp_warm", [PROMPT])))
    body = json.loads(turn.body)
    assert body["input"] == [INSTRUCTIONS, PROMPT] and body["stream"] is True
    assert {"type", "generate", "previous_response_id"}.isdisjoint(body)
    assert body["client_metadata"]["turn_id"] == "t1" and body["tools"] == []
    assert json.loads(turn.input_json) == [INSTRUCTIONS, PROMPT]
    # client_metadata entries that can be header values, by name; never one with a line break
    assert turn.headers == {"x-codex-turn-metadata": '{"turn_id":"t1"}', "turn_id": "t1"}

    recorder = Recorder()
    for event in [{"type": "response.created", "response": {"id": "resp_1", "output": []}},
                  {"type": "response.output_item.added", "item": {**ANSWER, "status": "in_progress"}},
                  {"type": "response.output_item.done", "item": ANSWER}]:
        assert not recorder.see(event)
    assert recorder.see({"type": "response.completed", "response": {"id": "resp_1", "output": [ANSWER]}})
    assert recorder.continuable
    memory.remember(recorder.response_id, turn.input_json, recorder.output_json())
    follow = {"type": "function_call_output", "call_id": "call_1", "output": "done"}
    again = json.loads(memory.turn(read_message(turn_message("resp_1", [follow]))).body)
    assert again["input"] == [INSTRUCTIONS, PROMPT, ANSWER, follow]


def test_a_string_input_and_a_body_without_input():
    memory = Memory(Limits())
    turn = memory.turn(read_message(json.dumps({"type": "response.create", "model": "m", "input": "hello"})))
    assert json.loads(turn.body) == {"model": "m", "input": "hello", "stream": True}
    memory.remember("r1", turn.input_json, "[]")
    after = json.loads(memory.turn(read_message(json.dumps({"type": "response.create", "previous_response_id": "r1",
                                                             "input": "again"}))).body)
    assert after["input"] == [{"type": "message", "role": "user", "content": "hello"},
                              {"type": "message", "role": "user", "content": "again"}]
    bare = memory.turn(read_message(json.dumps({"type": "response.create", "model": "m"})))
    assert json.loads(bare.body) == {"model": "m", "stream": True} and bare.input_json == "[]"


def test_what_is_refused():
    memory = Memory(Limits())
    cases = {
        "not json": "invalid_json",
        "[1, 2]": "invalid_json",
        json.dumps({"type": "response.cancel"}): "unsupported_message_type",
        json.dumps({"type": "response.create", "previous_response_id": 7}): "invalid_value",
        json.dumps({"type": "response.create", "input": {"a": 1}}): "invalid_value",
        json.dumps({"type": "response.create", "previous_response_id": "resp_elsewhere", "input": []}):
            "previous_response_not_found",
    }
    for text, code in cases.items():
        with pytest.raises(Refused) as caught:
            memory.turn(read_message(text))
        event = caught.value.event()
        assert (event["type"], event["status"], event["error"]["code"]) == ("error", 400, code), text
        assert isinstance(event["error"]["message"], str)
    assert read_message(json.dumps({"type": "response.processed", "response_id": "r"})) is None


def test_memory_is_bounded_by_count_and_by_size():
    memory = Memory(Limits(responses=2, state_bytes=1000))
    for name in ("a", "b", "c"):
        memory.remember(name, "[1]", "[2]")
    assert "a" not in memory and "b" in memory and "c" in memory  # the oldest goes
    memory.remember("big", "[" + "1," * 300 + "1]", "[" + "2," * 200 + "2]")  # 1000+ bytes: not kept
    assert "big" not in memory and "b" in memory and "c" in memory
    sized = Memory(Limits(responses=10, state_bytes=1000))
    sized.remember("d", "[" + "1," * 300 + "1]", "[]")
    sized.remember("e", "[" + "1," * 300 + "1]", "[]")  # together over 1000 bytes: the oldest goes
    assert "d" not in sized and "e" in sized and sized.size == 605
    sized.remember("e", "[3]", "[]")  # remembered again: counted once
    assert sized.size == 5


def test_an_error_answer_as_an_error_event():
    openai_error = {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                              "param": None, "code": "invalid_api_key"}}
    event = error_from_answer(401, json.dumps(openai_error).encode(),
                              {"retry-after": "3", "x-clutch-error": "status", "authorization": "Bearer k"})
    assert event == {"type": "error", "status": 401, "headers": {"retry-after": "3", "x-clutch-error": "status"},
                     "error": {"type": "invalid_request_error", "code": "invalid_api_key",
                               "message": "Incorrect API key provided", "param": None}}
    html = error_from_answer(502, b"<html>Bad Gateway</html>", {})
    assert html["status"] == 502 and html["error"]["message"] == "<html>Bad Gateway</html>"
    assert error_from_answer(500, b"", {})["error"]["message"] == "HTTP 500"
    assert error_from_answer(429, b'{"error": "slow down"}', {})["error"]["message"] == "slow down"
    huge = error_from_answer(500, b"x" * 100_000, {})
    assert len(huge["error"]["message"]) == 4000


def test_a_stream_error_event_gets_the_status_a_websocket_client_needs():
    event = with_status({"type": "error", "code": "server_error", "message": "Clutch: the stream broke", "param": None})
    assert event["status"] == 502 and event["error"]["message"] == "Clutch: the stream broke"
    assert event["error"]["code"] == "server_error"
    already = {"type": "error", "status": 429, "error": {"type": "rate_limit_exceeded", "message": "m"}}
    assert with_status(already) is already


def test_a_whole_response_as_its_events():
    response = {"id": "resp_9", "object": "response", "status": "incomplete", "output": [ANSWER, "junk"]}
    events = events_of_response(response)
    assert [e["type"] for e in events] == ["response.created", "response.output_item.done", "response.incomplete"]
    assert [e["sequence_number"] for e in events] == [0, 1, 2]
    assert events[0]["response"]["output"] == [] and events[1]["item"] == ANSWER
    recorder = Recorder()
    assert [recorder.see(e) for e in events] == [False, False, True]
    assert recorder.continuable and json.loads(recorder.output_json()) == [ANSWER]


def test_a_failed_turn_is_not_continued_from():
    recorder = Recorder()
    recorder.see({"type": "response.created", "response": {"id": "resp_f"}})
    assert recorder.see({"type": "response.failed", "response": {"id": "resp_f", "output": []}})
    assert not recorder.continuable
    errored = Recorder()
    assert errored.see({"type": "error", "status": 500, "error": {}}) and not errored.continuable


def test_hostile_messages_are_refused_or_carried_intact():
    memory = Memory(Limits())
    with pytest.raises(Refused) as deep:  # too deep for the JSON parser: refused, not a crash
        read_message('{"type": "response.create", "input": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert deep.value.code == "invalid_json"
    # a lone surrogate is valid JSON but no UTF-8: the body escapes it instead of failing
    lone = json.dumps({"type": "response.create", "model": "m", "input": "caf\u00e9 \ud800"})
    body = memory.turn(read_message(lone)).body
    assert json.loads(body.decode("utf-8"))["input"] == "caf\u00e9 \ud800"
    memory.remember("r\ud800", "[]", "[]")
    continued = json.dumps({"type": "response.create", "previous_response_id": "r\ud800", "input": "\ud800"})
    assert json.loads(memory.turn(read_message(continued)).body.decode())["input"][0]["content"] == "\ud800"
    with pytest.raises(Refused) as unknown:
        memory.turn(read_message(json.dumps({"type": "response.create", "previous_response_id": "\ud800\n"})))
    assert json.dumps(unknown.value.event()).encode()  # the error event quoting it can be sent
