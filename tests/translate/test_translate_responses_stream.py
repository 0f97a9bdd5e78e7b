"""Streams translated between the Responses API and Chat Completions, checked with the official `openai`
SDK's own stream parsing and accumulators: `openai.Stream` + `ResponseStream` (the accumulator behind
`client.responses.stream`, which checks lifecycle ids, output indexes and that every item is finished)
for Responses, `ChatCompletionStreamState` for chat.

Upstream fixtures are the event sequences of the providers' documentation (URL above each), fed whole,
byte by byte and in odd-sized pieces.
"""

import json
import re

import httpx2
import openai
import pytest
from openai import omit
from openai.lib.streaming.responses import ResponseStream
from openai.types.responses import ResponseStreamEvent
from test_translate_stream import (ANTHROPIC_TOOL_STREAM, OPENAI_TEXT_STREAM, OPENAI_TOOL_CALL_ARGS,
                                   OPENAI_TOOL_STREAM, OPENROUTER_MIDSTREAM_ERROR, OPENROUTER_REASONING_STREAM,
                                   anthropic_frames, chat_chunks, chat_frames, sdk_completion, sdk_message, translate)

from addons.wire.dialects import Dialect
from addons.translate.vocabulary import Flavour
from addons.translate.responses import responses_to_chat_request
from addons.translate.responses_chat import ResponsesToChatStream
from addons.translate.responses_stream import MAX_HELD, ChatToResponsesStream
from addons.translate.pairs import stream_translator

# https://platform.openai.com/docs/guides/function-calling (the get_weather function of the examples),
# the apply_patch custom tool as Codex declares it, and a Responses request that uses both
GET_WEATHER = {"type": "function", "name": "get_weather", "description": "Get current weather for a location.",
               "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                              "required": ["location"], "additionalProperties": False}, "strict": True}
APPLY_PATCH = {"type": "custom", "name": "apply_patch", "description": "Edit files. A FREEFORM tool.",
               "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"}}
REQUEST = {"model": "gpt-5.5", "instructions": "You are Codex.", "input": "What's the weather like in Paris?",
           "tools": [GET_WEATHER, APPLY_PATCH], "tool_choice": "auto", "parallel_tool_calls": True, "stream": True,
           "store": False}
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hi\n*** End Patch\n"


def context_for(request=REQUEST):
    return responses_to_chat_request(request, "target/model", Flavour.OPENROUTER, [])[1]


FRAME = re.compile(rb"event: (?P<type>[a-z_.]+)\ndata: (?P<data>[^\n]+)\n\n")


def responses_frames(data: bytes) -> list[dict]:
    """Exact Responses framing: `event: <type>\\ndata: <json>\\n\\n` with a matching type, and every
    event's sequence_number one more than the one before, from 0."""
    frames, end = [], 0
    for match in FRAME.finditer(data):
        assert match.start() == end, data[end:match.start()]
        payload = json.loads(match["data"])
        assert payload["type"] == match["type"].decode()
        assert payload["sequence_number"] == len(frames)
        frames.append(payload)
        end = match.end()
    assert end == len(data), data[end:]
    return frames


def sdk_response(data: bytes, request=REQUEST):
    """The SDK's own parsing (openai.Stream of ResponseStreamEvent) and accumulation (ResponseStream, as
    `client.responses.stream` uses it): the events it yields and its final Response."""
    response = httpx2.Response(200, content=data, headers={"content-type": "text/event-stream"},
                               request=httpx2.Request("POST", "https://api.openai.com/v1/responses"))
    client = openai.OpenAI(api_key="test", base_url="https://api.openai.com/v1")
    raw = openai.Stream(cast_to=ResponseStreamEvent, response=response, client=client)
    stream = ResponseStream(raw_stream=raw, text_format=omit, input_tools=request.get("tools", omit),
                            starting_after=None)
    events = list(stream)
    return events, stream


# ------------------------------------------------------------------------------------- chat -> Responses

@pytest.mark.parametrize("size", [None, 1, 7, 64])
def test_chat_text_stream_is_the_documented_responses_event_sequence(size):
    translator = ChatToResponsesStream("fallback", context_for())
    out = translate(translator, OPENAI_TEXT_STREAM, size)
    frames = responses_frames(out)
    assert [f["type"] for f in frames] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * 3, "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    events, stream = sdk_response(out)
    final = stream.get_final_response()
    assert final.id == "resp_123" and final.model == "gpt-4o-mini" and final.status == "completed"
    assert final.output_text == "Hello! How can I help?"
    assert [e.snapshot for e in events if e.type == "response.output_text.delta"][-1] == "Hello! How can I help?"
    # the request's own fields are repeated, as the Responses API does
    assert final.instructions == "You are Codex." and [t.name for t in final.tools] == ["get_weather", "apply_patch"]
    assert translator.first_content and translator.error is None


@pytest.mark.parametrize("size", [None, 1, 9])
def test_chat_tool_call_stream_becomes_a_function_call_with_its_call_id(size):
    out = translate(ChatToResponsesStream("m", context_for()), OPENAI_TOOL_STREAM, size)
    frames = responses_frames(out)
    deltas = [f["delta"] for f in frames if f["type"] == "response.function_call_arguments.delta"]
    assert "".join(deltas) == "".join(OPENAI_TOOL_CALL_ARGS)
    [done] = [f for f in frames if f["type"] == "response.function_call_arguments.done"]
    assert done["name"] == "get_weather"
    events, stream = sdk_response(out)
    final = stream.get_final_response()
    [call] = final.output
    assert (call.type, call.call_id, call.name) == ("function_call", "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather")
    assert json.loads(call.arguments) == {"location": "Paris, France"} and call.status == "completed"
    assert call.id.startswith("fc_")
    # usage: cached tokens inside the input, as chat counts them
    assert (final.usage.input_tokens, final.usage.input_tokens_details.cached_tokens,
            final.usage.output_tokens, final.usage.total_tokens) == (82, 64, 17, 99)


def test_a_call_of_the_custom_tool_comes_back_as_a_custom_tool_call_with_its_raw_input():
    arguments = json.dumps({"input": PATCH})
    stream = chat_chunks(
        {"role": "assistant", "content": "Adding the file."},
        {"tool_calls": [{"index": 0, "id": "call_patch", "type": "function",
                         "function": {"name": "apply_patch", "arguments": ""}}]},
        *({"tool_calls": [{"index": 0, "function": {"arguments": arguments[i:i + 10]}}]}
          for i in range(0, len(arguments), 10)),
        finish="tool_calls")
    out = translate(ChatToResponsesStream("m", context_for()), stream, 5)
    frames = responses_frames(out)
    assert "response.function_call_arguments.delta" not in {f["type"] for f in frames}
    [done] = [f for f in frames if f["type"] == "response.custom_tool_call_input.done"]
    assert done["input"] == PATCH
    _, sdk = sdk_response(out)
    message, call = sdk.get_final_response().output
    assert message.content[0].text == "Adding the file."
    assert (call.type, call.call_id, call.name, call.input) == ("custom_tool_call", "call_patch", "apply_patch", PATCH)


@pytest.mark.parametrize("size", [None, 3, 11])
def test_openrouter_reasoning_becomes_a_reasoning_item_with_summary_events(size):
    out = translate(ChatToResponsesStream("m", context_for()), OPENROUTER_REASONING_STREAM, size)
    frames = responses_frames(out)
    kinds = [f["type"] for f in frames]
    assert kinds[2:5] == ["response.output_item.added", "response.reasoning_summary_part.added",
                          "response.reasoning_summary_text.delta"]
    assert "response.reasoning_summary_text.done" in kinds and "response.reasoning_summary_part.done" in kinds
    _, stream = sdk_response(out)
    final = stream.get_final_response()
    reasoning, message = final.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "The user wants the capital of France."
    assert message.content[0].text == "Paris is the capital."
    assert final.usage.output_tokens_details.reasoning_tokens == 22
    assert final.id == "resp_gen-1750000000-AbCdEfGh"


def test_a_length_stop_is_an_incomplete_response():
    stream = chat_chunks({"role": "assistant", "content": "Half"}, finish="length")
    frames = responses_frames(translate(ChatToResponsesStream("m", context_for()), stream))
    assert frames[-1]["type"] == "response.incomplete"
    response = frames[-1]["response"]
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["content"][0]["text"] == "Half"


def test_openrouter_midstream_error_becomes_response_failed():
    translator = ChatToResponsesStream("m", context_for())
    out = translate(translator, OPENROUTER_MIDSTREAM_ERROR, 13)
    frames = responses_frames(out)
    assert frames[-1]["type"] == "response.failed"
    assert frames[-1]["response"]["error"] == {"code": "server_error",
                                               "message": "Provider disconnected unexpectedly"}
    assert "response.completed" not in {f["type"] for f in frames}
    assert translator.error["code"] == "server_error"
    events, _ = sdk_response(out)
    assert events[-1].type == "response.failed" and events[-1].response.status == "failed"


def test_a_context_length_error_carries_the_code_codex_compacts_on():
    upstream = (b'data: {"error": {"message": "This model\'s maximum context length is 8192 tokens.", '
                b'"type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}\n\n')
    frames = responses_frames(translate(ChatToResponsesStream("m", context_for()), upstream))
    assert [f["type"] for f in frames] == ["response.created", "response.in_progress", "response.failed"]
    assert frames[-1]["response"]["error"]["code"] == "context_length_exceeded"


def test_an_answer_too_large_to_hold_fails_visibly():
    translator = ChatToResponsesStream("m", context_for())
    piece = chat_chunks({"content": "x" * (1 << 20)}).removesuffix(b"data: [DONE]\n\n")
    out = b"".join(translator.feed(piece) for _ in range(MAX_HELD // (1 << 20) + 1))
    frames = responses_frames(out)
    assert frames[-1]["type"] == "response.failed" and "MiB" in frames[-1]["response"]["error"]["message"]
    assert translator.feed(piece) == b"" and translator.finish() == b""


def test_an_empty_chat_stream_still_makes_a_well_formed_response():
    _, stream = sdk_response(translate(ChatToResponsesStream("fallback", context_for()), b""))
    final = stream.get_final_response()
    assert final.model == "fallback" and final.output == [] and final.usage is None


# ------------------------------------------------------------------------------------- Responses -> chat

def responses_events(*events):
    return b"".join(f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': n})}\n\n".encode()
                    for n, e in enumerate(events))


RESPONSE = {"id": "resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654", "object": "response",
            "created_at": 1741290958, "status": "in_progress", "model": "gpt-4.1-2025-04-14", "output": [],
            "usage": None}
USAGE = {"input_tokens": 37, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 11,
         "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 48}
MESSAGE = {"id": "msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654", "type": "message", "role": "assistant"}
# https://platform.openai.com/docs/api-reference/responses-streaming (a text answer's events)
RESPONSES_TEXT_STREAM = responses_events(
    {"type": "response.created", "response": RESPONSE},
    {"type": "response.in_progress", "response": RESPONSE},
    {"type": "response.output_item.added", "output_index": 0, "item": {**MESSAGE, "status": "in_progress",
                                                                       "content": []}},
    {"type": "response.content_part.added", "item_id": MESSAGE["id"], "output_index": 0, "content_index": 0,
     "part": {"type": "output_text", "text": "", "annotations": []}},
    *({"type": "response.output_text.delta", "item_id": MESSAGE["id"], "output_index": 0, "content_index": 0,
       "delta": piece} for piece in ("Hi", " there", "!")),
    {"type": "response.output_text.done", "item_id": MESSAGE["id"], "output_index": 0, "content_index": 0,
     "text": "Hi there!"},
    {"type": "response.output_item.done", "output_index": 0, "item": {
        **MESSAGE, "status": "completed",
        "content": [{"type": "output_text", "text": "Hi there!", "annotations": []}]}},
    {"type": "response.completed", "response": {**RESPONSE, "status": "completed", "usage": USAGE}})
CALL = {"id": "fc_12345xyz", "call_id": "call_12345xyz", "type": "function_call", "name": "get_weather"}
# https://platform.openai.com/docs/guides/function-calling ("Streaming": output_item.added with the call,
# function_call_arguments.delta pieces, .done, output_item.done)
RESPONSES_CALL_STREAM = responses_events(
    {"type": "response.created", "response": RESPONSE},
    {"type": "response.output_item.added", "output_index": 0, "item": {**CALL, "arguments": ""}},
    *({"type": "response.function_call_arguments.delta", "item_id": CALL["id"], "output_index": 0, "delta": piece}
      for piece in ('{"', "location", '":"', "Paris, France", '"}')),
    {"type": "response.function_call_arguments.done", "item_id": CALL["id"], "output_index": 0,
     "arguments": '{"location":"Paris, France"}'},
    {"type": "response.output_item.done", "output_index": 0,
     "item": {**CALL, "arguments": '{"location":"Paris, France"}', "status": "completed"}},
    {"type": "response.completed", "response": {**RESPONSE, "status": "completed", "usage": USAGE}})


@pytest.mark.parametrize("size", [None, 1, 7])
def test_responses_text_stream_reads_as_chat_chunks(size):
    translator = ResponsesToChatStream("fallback", include_usage=True)
    out = translate(translator, RESPONSES_TEXT_STREAM, size)
    frames = chat_frames(out)
    assert frames[-1] == "[DONE]" and frames[-2]["choices"] == []
    completion, chunks = sdk_completion(out)
    assert completion.id == "chatcmpl-67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654"
    assert completion.choices[0].message.content == "Hi there!" and completion.choices[0].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (37, 11)
    assert translator.first_content


@pytest.mark.parametrize("size", [None, 5])
def test_responses_function_call_stream_becomes_chat_tool_call_deltas(size):
    out = translate(ResponsesToChatStream("m", include_usage=False), RESPONSES_CALL_STREAM, size)
    completion, _ = sdk_completion(out)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert (call.id, call.function.name) == ("call_12345xyz", "get_weather")
    assert json.loads(call.function.arguments) == {"location": "Paris, France"}
    assert all("usage" not in f for f in chat_frames(out)[:-1])


def test_items_that_came_whole_are_not_lost():
    # a provider may send an item whole in output_item.done, without deltas
    stream = responses_events(
        {"type": "response.created", "response": RESPONSE},
        {"type": "response.output_item.added", "output_index": 0, "item": {**CALL, "arguments": ""}},
        {"type": "response.output_item.done", "output_index": 0, "item": {**CALL, "arguments": '{"location":"Oslo"}'}},
        {"type": "response.output_item.done", "output_index": 1, "item": {
            **MESSAGE, "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]}},
        {"type": "response.completed", "response": {**RESPONSE, "status": "completed", "usage": USAGE}})
    completion, _ = sdk_completion(translate(ResponsesToChatStream("m", include_usage=False), stream))
    message = completion.choices[0].message
    assert message.content == "Checking." and message.tool_calls[0].function.arguments == '{"location":"Oslo"}'


def test_response_failed_becomes_a_chat_error_chunk_without_done():
    stream = responses_events(
        {"type": "response.created", "response": RESPONSE},
        {"type": "response.failed", "response": {**RESPONSE, "status": "failed", "error": {
            "code": "rate_limit_exceeded", "message": "Rate limit reached. Please try again in 20s."}}})
    translator = ResponsesToChatStream("m", include_usage=True)
    frames = chat_frames(translate(translator, stream))
    assert "[DONE]" not in frames
    assert frames[-1]["error"]["code"] == "rate_limit_exceeded"
    assert translator.error["message"].startswith("Rate limit reached")
    with pytest.raises(openai.APIError):
        sdk_completion(translate(ResponsesToChatStream("m", include_usage=True), stream))


# ------------------------------------------------------------------ Responses <-> Anthropic, through chat

def test_anthropic_tool_stream_reaches_a_responses_agent_through_chat():
    translator = stream_translator(Dialect.OPENAI_RESPONSES, Dialect.ANTHROPIC, "m", False, context_for())
    out = translate(translator, ANTHROPIC_TOOL_STREAM, 9)
    _, stream = sdk_response(out)
    final = stream.get_final_response()
    message, call = final.output
    assert message.content[0].text == "Okay, let's check the weather for San Francisco, CA:"
    assert (call.call_id, call.name) == ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather")
    assert json.loads(call.arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert final.usage.input_tokens == 472 and translator.first_content and translator.error is None


def test_responses_stream_reaches_an_anthropic_agent_through_chat():
    translator = stream_translator(Dialect.ANTHROPIC, Dialect.OPENAI_RESPONSES, "m", False, None)
    out = translate(translator, RESPONSES_CALL_STREAM, 4)
    anthropic_frames(out)
    message = sdk_message(out)
    [tool_use] = message.content
    assert (tool_use.id, tool_use.name) == ("call_12345xyz", "get_weather")
    assert tool_use.input == {"location": "Paris, France"}
    assert message.stop_reason == "tool_use" and message.usage.input_tokens == 37


def test_hostile_event_shapes_never_crash_a_stream_translator():
    """Every field of real-shaped chunks and events, replaced by junk of another type, is translated or
    skipped, never an exception (a provider's bytes are not trusted to be well-formed)."""
    from test_translate_responses import mutations, replaced
    chat_events = [json.loads(block[6:]) for block in OPENROUTER_REASONING_STREAM.split(b"\n\n")
                   if block.startswith(b"data: {")] + [json.loads(block[6:]) for block in OPENAI_TOOL_STREAM.split(
                       b"\n\n") if block.startswith(b"data: {")]
    responses = [json.loads(block.split(b"data: ", 1)[1]) for block in
                 (RESPONSES_CALL_STREAM + RESPONSES_TEXT_STREAM).split(b"\n\n") if b"data: " in block]
    checked = 0
    for events, make in ((chat_events, lambda: ChatToResponsesStream("m", context_for())),
                         (responses, lambda: ResponsesToChatStream("m", True))):
        for n, event in enumerate(events):
            for path, junk in mutations(event):
                stream = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n"
                                  for e in [*events[:n], replaced(event, path, junk), *events[n + 1:]])
                translator = make()
                translator.feed(stream)
                translator.finish()
                checked += 1
    assert checked > 1000
