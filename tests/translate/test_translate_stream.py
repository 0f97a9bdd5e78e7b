"""Streams translated both ways, checked with the official SDKs' own stream accumulators.

Upstream fixtures are the event sequences of the providers' public documentation (URL above each);
the translated output is decoded by `anthropic.Stream` + `MessageStream` and by `openai.Stream` +
`ChatCompletionStreamState`, exactly as an agent's SDK would decode it.
"""

import json
import re

import anthropic
import httpx2
import openai
import pytest
from anthropic.lib.streaming import MessageStream
from anthropic.types import RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from addons.translate.anthropic_to_chat import anthropic_to_chat_request
from addons.translate.chat_to_anthropic import chat_to_anthropic_request
from addons.translate.vocabulary import Flavour
from addons.translate.stream import anthropic_stream_to_chat, chat_stream_to_anthropic


# ------------------------------------------------------------------------------------------ fixtures

def chat_chunks(*deltas, model="gpt-4o-mini", cid="chatcmpl-123", finish=None, usage=None, prefix=b""):
    """Chunk envelopes as in https://platform.openai.com/docs/api-reference/chat-streaming ."""
    out = bytearray(prefix)
    for delta in deltas:
        out += b"data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": 1694268190,
                                       "model": model, "system_fingerprint": "fp_44709d6fcb",
                                       "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                    "finish_reason": None}]}).encode() + b"\n\n"
    if finish:
        out += b"data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": 1694268190,
                                       "model": model, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                                                    "finish_reason": finish}]}).encode() + b"\n\n"
    if usage:
        out += b"data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": 1694268190,
                                       "model": model, "choices": [], "usage": usage}).encode() + b"\n\n"
    return bytes(out) + b"data: [DONE]\n\n"


# https://platform.openai.com/docs/guides/function-calling ("Streaming": the get_weather call's
# delta.tool_calls, first fragment with id and name, then argument pieces with id/name null)
OPENAI_TOOL_CALL_ARGS = ['{"', "location", '":"', "Paris", ",", " France", '"}']
OPENAI_TOOL_STREAM = chat_chunks(
    {"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "type": "function",
         "function": {"arguments": "", "name": "get_weather"}}]},
    *({"tool_calls": [{"index": 0, "id": None, "type": None, "function": {"arguments": piece, "name": None}}]}
      for piece in OPENAI_TOOL_CALL_ARGS),
    finish="tool_calls",
    usage={"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99,
           "prompt_tokens_details": {"cached_tokens": 64}, "completion_tokens_details": {"reasoning_tokens": 0}})

# https://platform.openai.com/docs/api-reference/chat-streaming (text deltas, then finish_reason "stop")
OPENAI_TEXT_STREAM = chat_chunks({"role": "assistant", "content": ""}, {"content": "Hello"}, {"content": "!"},
                                 {"content": " How can I help?"}, finish="stop")

# https://openrouter.ai/docs/api-reference/streaming (": OPENROUTER PROCESSING" comments) with the
# streamed reasoning of https://openrouter.ai/docs/use-cases/reasoning-tokens (delta.reasoning) and the
# final usage chunk with cost of https://openrouter.ai/docs/use-cases/usage-accounting
OPENROUTER_REASONING_STREAM = chat_chunks(
    {"role": "assistant", "content": "", "reasoning": "The user wants "},
    {"content": "", "reasoning": "the capital of France."},
    {"content": "Paris"}, {"content": " is the capital."},
    finish="stop", model="deepseek/deepseek-r1", cid="gen-1750000000-AbCdEfGh",
    usage={"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50, "cost": 0.00009,
           "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 22}},
    prefix=b": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\n")

# https://openrouter.ai/docs/api-reference/streaming ("Error handling during streaming": an error after
# tokens were sent arrives as a chunk with an error object and finish_reason "error", HTTP status 200)
OPENROUTER_MIDSTREAM_ERROR = (
    chat_chunks({"role": "assistant", "content": "The answer"}, model="openai/gpt-4o").removesuffix(b"data: [DONE]\n\n")
    + b'data: {"id":"cmpl-abc123","object":"chat.completion.chunk","created":1234567890,"model":"gpt-3.5-turbo",'
      b'"provider":"openai","error":{"code":"server_error","message":"Provider disconnected unexpectedly"},'
      b'"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}\n\n')


def anthropic_events(*events):
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


# https://docs.anthropic.com/en/docs/build-with-claude/streaming ("Basic streaming request")
ANTHROPIC_BASIC_STREAM = anthropic_events(
    {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message",
                                          "role": "assistant", "content": [], "model": "claude-opus-4-6",
                                          "stop_reason": None, "stop_sequence": None,
                                          "usage": {"input_tokens": 25, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
     "usage": {"output_tokens": 15}},
    {"type": "message_stop"})

# https://docs.anthropic.com/en/docs/build-with-claude/streaming ("Streaming request with tool use")
ANTHROPIC_TOOL_JSON = ['', '{"location":', ' "San', ' Francisc', 'o,', ' CA"', ', ', '"unit": "fah', 'renheit"}']
ANTHROPIC_TOOL_STREAM = anthropic_events(
    {"type": "message_start", "message": {"id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message",
                                          "role": "assistant", "model": "claude-opus-4-6", "stop_sequence": None,
                                          "usage": {"input_tokens": 472, "output_tokens": 2}, "content": [],
                                          "stop_reason": None}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
      for t in ("Okay", ",", " let", "'s", " check", " the", " weather", " for", " San", " Francisco", ",", " CA",
                ":")),
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1,
     "content_block": {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
                       "input": {}}},
    *({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": p}}
      for p in ANTHROPIC_TOOL_JSON),
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 89}},
    {"type": "message_stop"})

# https://docs.anthropic.com/en/docs/build-with-claude/streaming ("Streaming request with extended thinking")
ANTHROPIC_THINKING_STREAM = anthropic_events(
    {"type": "message_start", "message": {"id": "msg_01EZfbCz1W6nWJfnTRMUKwVE", "type": "message",
                                          "role": "assistant", "content": [], "model": "claude-opus-4-6",
                                          "stop_reason": None, "stop_sequence": None}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {
        "type": "thinking_delta",
        "thinking": "I need to find the GCD of 1071 and 462 using the Euclidean algorithm.\n\n1071 = 2 × 462 + 147"}},
    *({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": step}}
      for step in ("\n462 = 3 × 147 + 21", "\n147 = 7 × 21 + 0")),
    {"type": "content_block_delta", "index": 0, "delta": {
        "type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {
        "type": "text_delta", "text": "The greatest common divisor of 1071 and 462 is **21**."}},
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}},
    {"type": "message_stop"})

# https://docs.anthropic.com/en/docs/build-with-claude/streaming ("Error events")
ANTHROPIC_ERROR_EVENT = (b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
                         b'"message": "Overloaded"}}\n\n')

# https://docs.anthropic.com/en/docs/build-with-claude/tool-use (the get_weather tool of the examples)
GET_WEATHER = {"name": "get_weather", "description": "Get the current weather in a given location",
               "input_schema": {"type": "object", "properties": {
                   "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}}


# ----------------------------------------------------------------------------------------- helpers

def translate(translator, data: bytes, size: int | None = None) -> bytes:
    """Feed in pieces of `size` bytes (None: all at once), then finish."""
    size = size or len(data) or 1
    out = b"".join(translator.feed(data[i:i + size]) for i in range(0, len(data), size))
    return out + translator.finish()


ANTHROPIC_FRAME = re.compile(rb"event: (?P<type>[a-z_]+)\ndata: (?P<data>[^\n]+)\n\n")


def anthropic_frames(data: bytes) -> list[dict]:
    """Exact Anthropic framing: every event is `event: <type>\\ndata: <json>\\n\\n` with a matching type."""
    frames, end = [], 0
    for match in ANTHROPIC_FRAME.finditer(data):
        assert match.start() == end, data[end:match.start()]
        payload = json.loads(match["data"])
        assert payload["type"] == match["type"].decode()
        frames.append(payload)
        end = match.end()
    assert end == len(data), data[end:]
    return frames


def chat_frames(data: bytes) -> list:
    """Exact OpenAI framing: `data: <json>\\n\\n` ... and `data: [DONE]\\n\\n`."""
    assert data.endswith(b"\n\n")
    blocks = data[:-2].split(b"\n\n")
    assert all(block.startswith(b"data: ") and b"\n" not in block for block in blocks), data
    return [block[6:].decode() if block == b"data: [DONE]" else json.loads(block[6:]) for block in blocks]


def sdk_message(data: bytes):
    """The Anthropic SDK's own accumulation of the stream (MessageStream.get_final_message)."""
    response = httpx2.Response(200, content=data, headers={"content-type": "text/event-stream"},
                               request=httpx2.Request("POST", "https://api.anthropic.com/v1/messages"))
    client = anthropic.Anthropic(api_key="test", base_url="https://api.anthropic.com")
    raw = anthropic.Stream(cast_to=RawMessageStreamEvent, response=response, client=client)
    return MessageStream(raw, anthropic.NOT_GIVEN).get_final_message()


def sdk_completion(data: bytes):
    """The OpenAI SDK's own accumulation of the stream (ChatCompletionStreamState), and the chunks."""
    response = httpx2.Response(200, content=data, headers={"content-type": "text/event-stream"},
                               request=httpx2.Request("POST", "https://api.openai.com/v1/chat/completions"))
    client = openai.OpenAI(api_key="test", base_url="https://api.openai.com/v1")
    state = ChatCompletionStreamState()
    chunks = list(openai.Stream(cast_to=ChatCompletionChunk, response=response, client=client))
    for chunk in chunks:
        state.handle_chunk(chunk)
    return state.get_final_completion(), chunks


# --------------------------------------------------------------------------------- chat -> Anthropic

@pytest.mark.parametrize("size", [None, 1, 7, 64])
def test_chat_tool_call_stream_becomes_anthropic_tool_use(size):
    translator = chat_stream_to_anthropic("fallback-model")
    out = translate(translator, OPENAI_TOOL_STREAM, size)
    frames = anthropic_frames(out)
    assert [f["type"] for f in frames] == (
        ["message_start", "content_block_start"] + ["content_block_delta"] * len(OPENAI_TOOL_CALL_ARGS)
        + ["content_block_stop", "message_delta", "message_stop"])
    start = frames[1]
    assert start["content_block"] == {"type": "tool_use", "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                                      "name": "get_weather", "input": {}}
    message = sdk_message(out)
    assert message.id == "msg_123" and message.model == "gpt-4o-mini"
    [tool_use] = message.content
    assert (tool_use.type, tool_use.id, tool_use.name) == ("tool_use", "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather")
    assert tool_use.input == {"location": "Paris, France"}
    partial = "".join(f["delta"]["partial_json"] for f in frames if f["type"] == "content_block_delta")
    assert json.loads(partial) == {"location": "Paris, France"}
    assert message.stop_reason == "tool_use"
    # cached prompt tokens are counted apart in Anthropic usage
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (18, 64, 17)
    assert translator.first_content and translator.error is None


def test_chat_text_stream_reads_as_an_anthropic_message():
    out = translate(chat_stream_to_anthropic("m"), OPENAI_TEXT_STREAM, 5)
    message = sdk_message(out)
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hello! How can I help?"
    assert message.stop_reason == "end_turn"


def test_openrouter_reasoning_stream_becomes_thinking_then_text():
    translator = chat_stream_to_anthropic("m")
    out = translate(translator, OPENROUTER_REASONING_STREAM, 11)
    frames = anthropic_frames(out)
    starts = [f["content_block"]["type"] for f in frames if f["type"] == "content_block_start"]
    assert starts == ["thinking", "text"]
    message = sdk_message(out)
    assert message.id == "msg_gen-1750000000-AbCdEfGh" and message.model == "deepseek/deepseek-r1"
    assert message.content[0].thinking == "The user wants the capital of France."
    assert message.content[0].signature == ""
    assert message.content[1].text == "Paris is the capital."
    assert (message.usage.input_tokens, message.usage.output_tokens) == (20, 30)


def test_chat_stream_with_text_then_two_tool_calls_uses_new_blocks():
    stream = chat_chunks(
        {"role": "assistant", "content": "Checking both."},
        {"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"location": "Paris"}'}}]},
        # Kimi K2 style id (https://platform.moonshot.ai/docs/guide/use-kimi-k2-to-setup-agent), not Anthropic-safe
        {"tool_calls": [{"index": 1, "id": "functions.get_time:1", "type": "function",
                         "function": {"name": "get_time", "arguments": '{"tz":'}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": ' "CET"}'}}]},
        finish="tool_calls")
    out = translate(chat_stream_to_anthropic("m"), stream, 3)
    frames = anthropic_frames(out)
    assert [(f["index"], f["content_block"]["type"]) for f in frames if f["type"] == "content_block_start"] == [
        (0, "text"), (1, "tool_use"), (2, "tool_use")]
    message = sdk_message(out)
    assert [(b.type, getattr(b, "id", None)) for b in message.content] == [
        ("text", None), ("tool_use", "call_a"), ("tool_use", "functions_get_time_1")]
    assert message.content[2].input == {"tz": "CET"}


def test_chat_stream_without_finish_or_done_is_closed_by_finish():
    stream = chat_chunks({"role": "assistant", "content": "Half an ans"}).removesuffix(b"data: [DONE]\n\n")
    translator = chat_stream_to_anthropic("m")
    out = translator.feed(stream)
    assert b"message_stop" not in out
    out += translator.finish()
    assert translator.finish() == b""
    message = sdk_message(out)
    assert message.content[0].text == "Half an ans" and message.stop_reason == "end_turn"


def test_empty_chat_stream_still_makes_a_well_formed_message():
    translator = chat_stream_to_anthropic("fallback-model")
    out = translate(translator, b"")
    message = sdk_message(out)
    assert message.model == "fallback-model" and message.content == []
    assert not translator.first_content


def test_openrouter_midstream_error_becomes_anthropic_error_event():
    translator = chat_stream_to_anthropic("m")
    out = translate(translator, OPENROUTER_MIDSTREAM_ERROR, 13)
    frames = anthropic_frames(out)
    assert frames[-1] == {"type": "error", "error": {"type": "api_error",
                                                     "message": "Provider disconnected unexpectedly"}}
    assert "message_stop" not in [f["type"] for f in frames]
    assert translator.error == {"code": "server_error", "message": "Provider disconnected unexpectedly"}
    assert translator.first_content
    with pytest.raises(anthropic.APIStatusError) as raised:
        sdk_message(out)
    assert raised.value.body["error"]["message"] == "Provider disconnected unexpectedly"


def test_openai_error_as_first_event_becomes_anthropic_error_event():
    # https://platform.openai.com/docs/guides/error-codes (server_error body), sent inside a 200 stream
    upstream = (b'data: {"error": {"message": "The server had an error while processing your request. Sorry about '
                b'that!", "type": "server_error", "param": null, "code": null}}\n\n')
    translator = chat_stream_to_anthropic("m")
    frames = anthropic_frames(translate(translator, upstream))
    assert frames == [{"type": "error", "error": {"type": "api_error", "message": (
        "The server had an error while processing your request. Sorry about that!")}}]
    assert not translator.first_content and translator.error["type"] == "server_error"


# --------------------------------------------------------------------------------- Anthropic -> chat

@pytest.mark.parametrize("size", [None, 1, 9])
def test_anthropic_tool_stream_becomes_chat_tool_call_deltas(size):
    translator = anthropic_stream_to_chat("fallback", include_usage=True)
    out = translate(translator, ANTHROPIC_TOOL_STREAM, size)
    frames = chat_frames(out)
    assert frames[-1] == "[DONE]"
    assert frames[-2]["choices"] == [] and frames[-2]["usage"]["prompt_tokens"] == 472
    assert len({f["id"] for f in frames[:-1]}) == 1
    completion, chunks = sdk_completion(out)
    assert completion.id == "chatcmpl-014p7gG3wDgGV9EUtLvnow3U" and completion.model == "claude-opus-4-6"
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Okay, let's check the weather for San Francisco, CA:"
    [call] = choice.message.tool_calls
    assert (call.id, call.function.name) == ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather")
    assert json.loads(call.function.arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (472, 89)
    assert translator.first_content and translator.error is None


def test_anthropic_basic_stream_without_usage_option():
    out = translate(anthropic_stream_to_chat("m", include_usage=False), ANTHROPIC_BASIC_STREAM, 4)
    frames = chat_frames(out)
    assert all("usage" not in f for f in frames[:-1])
    completion, _ = sdk_completion(out)
    assert completion.choices[0].message.content == "Hello!"
    assert completion.choices[0].finish_reason == "stop"


def test_anthropic_thinking_stream_becomes_openrouter_reasoning_deltas():
    out = translate(anthropic_stream_to_chat("m", include_usage=True), ANTHROPIC_THINKING_STREAM, 17)
    frames = chat_frames(out)
    reasoning = "".join(f["choices"][0]["delta"].get("reasoning", "") for f in frames[:-1] if f["choices"])
    assert reasoning == ("I need to find the GCD of 1071 and 462 using the Euclidean algorithm.\n\n"
                         "1071 = 2 × 462 + 147\n462 = 3 × 147 + 21\n147 = 7 × 21 + 0")
    assert b"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds" not in out  # signatures have no chat form
    completion, _ = sdk_completion(out)
    assert completion.choices[0].message.content == "The greatest common divisor of 1071 and 462 is **21**."


def test_anthropic_error_event_becomes_chat_error_chunk_without_done():
    prefix = ANTHROPIC_BASIC_STREAM.split(b"event: content_block_stop")[0]
    translator = anthropic_stream_to_chat("m", include_usage=True)
    out = translate(translator, prefix + ANTHROPIC_ERROR_EVENT, 6)
    frames = chat_frames(out)
    assert frames[-1]["error"]["message"] == "Overloaded"
    assert frames[-1]["error"]["code"] == "overloaded_error"
    assert "[DONE]" not in frames
    assert translator.error == {"type": "overloaded_error", "message": "Overloaded"}
    with pytest.raises(openai.APIError) as raised:
        sdk_completion(out)
    assert raised.value.message == "Overloaded"


def test_anthropic_stream_cut_before_message_stop_is_closed_by_finish():
    cut = ANTHROPIC_TOOL_STREAM.split(b"event: message_delta")[0]
    completion, _ = sdk_completion(translate(anthropic_stream_to_chat("m", include_usage=False), cut))
    assert completion.choices[0].finish_reason == "tool_calls"


# ----------------------------------------------------------------------------------- round trips

def test_claude_code_style_tool_round_trip_through_a_chat_provider():
    """Anthropic client -> chat upstream (stream, byte by byte) -> Anthropic client -> follow-up request."""
    request = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": True,
               "tools": [GET_WEATHER], "tool_choice": {"type": "any"},
               "messages": [{"role": "user", "content": "What's the weather like in Paris?"}]}
    notes: list[str] = []
    chat_request = anthropic_to_chat_request(request, "openai/gpt-4o", Flavour.OPENROUTER, notes)
    assert chat_request["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": GET_WEATHER["description"], "parameters": GET_WEATHER["input_schema"]}}]
    assert chat_request["tool_choice"] == "required"
    assert chat_request["stream_options"] == {"include_usage": True}

    translator = chat_stream_to_anthropic("openai/gpt-4o")
    out = translate(translator, OPENAI_TOOL_STREAM, 1)
    message = sdk_message(out)
    assert message.stop_reason == "tool_use"
    tool_use = message.content[0]

    follow_up = {**request, "messages": request["messages"] + [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id,
                                      "content": "15 degrees, cloudy"}]}]}
    chat_follow_up = anthropic_to_chat_request(follow_up, "openai/gpt-4o", Flavour.OPENROUTER, notes)
    assistant, tool = chat_follow_up["messages"][1:]
    assert assistant["tool_calls"] == [{"id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"location":"Paris, France"}'}}]
    assert tool == {"role": "tool", "tool_call_id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "content": "15 degrees, cloudy"}


def test_chat_client_tool_round_trip_through_an_anthropic_provider():
    """Chat client -> Anthropic upstream (stream) -> chat client -> follow-up tool message -> tool_result."""
    chat_tool = {"type": "function", "function": {"name": "get_weather", "description": GET_WEATHER["description"],
                                                  "parameters": GET_WEATHER["input_schema"]}}
    request = {"model": "anthropic/claude-sonnet-4.5", "stream": True, "stream_options": {"include_usage": True},
               "tools": [chat_tool], "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
               "messages": [{"role": "system", "content": "You are a weather bot."},
                            {"role": "user", "content": "What's the weather like in San Francisco?"}]}
    notes: list[str] = []
    anthropic_request = chat_to_anthropic_request(request, "claude-sonnet-4-5", notes)
    assert anthropic_request["tools"] == [GET_WEATHER]
    assert anthropic_request["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert anthropic_request["system"] == [{"type": "text", "text": "You are a weather bot."}]

    out = translate(anthropic_stream_to_chat("claude-sonnet-4-5", include_usage=True), ANTHROPIC_TOOL_STREAM, 1)
    completion, _ = sdk_completion(out)
    message = completion.choices[0].message

    follow_up = {**request, "messages": request["messages"] + [
        message.model_dump(exclude_none=True, exclude={"parsed"}),
        {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "58 degrees, sunny"}]}
    anthropic_follow_up = chat_to_anthropic_request(follow_up, "claude-sonnet-4-5", notes)
    assistant, user = anthropic_follow_up["messages"][1:]
    assert assistant["content"] == [
        {"type": "text", "text": "Okay, let's check the weather for San Francisco, CA:"},
        {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
         "input": {"location": "San Francisco, CA", "unit": "fahrenheit"}}]
    assert user == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                                                 "content": "58 degrees, sunny"}]}


def test_parallel_calls_all_numbered_zero_and_calls_without_index_stay_apart():
    stream = chat_chunks(
        {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                              "function": {"name": "read", "arguments": '{"path": "a"}'}}]},
        {"tool_calls": [{"index": 0, "id": "call_2", "type": "function",
                         "function": {"name": "read", "arguments": '{"path": "b"}'}}]},
        {"tool_calls": [{"id": "call_3", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]},
        finish="tool_calls")
    message = sdk_message(translate(chat_stream_to_anthropic("m"), stream, 10))
    assert [(b.id, b.name, b.input) for b in message.content] == [
        ("call_1", "read", {"path": "a"}), ("call_2", "read", {"path": "b"}), ("call_3", "ls", {})]


def test_tool_arguments_before_the_name_wait_for_it():
    stream = chat_chunks({"tool_calls": [{"index": 0, "function": {"arguments": '{"q": '}}]},
                         {"tool_calls": [{"index": 0, "id": "call_x",
                                          "function": {"name": "search", "arguments": '"x"}'}}]},
                         finish="tool_calls")
    message = sdk_message(translate(chat_stream_to_anthropic("m"), stream))
    assert [(b.id, b.name, b.input) for b in message.content] == [("call_x", "search", {"q": "x"})]


def test_tool_use_block_with_whole_input_at_start():
    stream = anthropic_events(
        {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [],
                                              "model": "m", "stop_reason": None, "stop_sequence": None,
                                              "usage": {"input_tokens": 5, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {"path": "/"}}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"output_tokens": 9}},
        {"type": "message_stop"})
    completion, _ = sdk_completion(translate(anthropic_stream_to_chat("m", include_usage=False), stream))
    assert json.loads(completion.choices[0].message.tool_calls[0].function.arguments) == {"path": "/"}
