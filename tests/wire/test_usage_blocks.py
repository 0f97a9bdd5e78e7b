"""addons/wire/usage_blocks.py: usage read from the fake upstream's real answers (every dialect, stream and not),
plus literal shapes from the providers' public docs for the edge cases.

The fake's numbers are deterministic (tests/fake_upstream.py docstring): prompt = 10 + body_len // 16,
cached = prompt // 2, reasoning = 2 (0 for `empty`), completion = content pieces + reasoning; Anthropic
reports input_tokens = prompt - cached, cache_read = cached, cache_creation = 2; OpenRouter
cost = prompt * 1e-6 + completion * 2e-6. Gemini's candidatesTokenCount excludes the thoughts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fake_upstream import FakeUpstream, split_answer  # noqa: E402

from addons.wire import tokens

from addons.wire import usage_blocks  # noqa: E402
from addons.wire.dialects import Dialect  # noqa: E402
from addons.wire.sse import SSEParser  # noqa: E402
from addons.wire.usage_blocks import StreamUsage, TokenUsage  # noqa: E402

N_CHUNKS = 4  # FakeUpstream's default number of content pieces
TOOL_ARGS = {"command": "echo hi"}
TOOL_PROMPT = 'please use-tool:Bash:{"command":"echo hi"}'
OPENAI_TOOLS = [{"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}}]


@pytest_asyncio.fixture
async def upstream():
    fake = FakeUpstream()
    await fake.start()  # plain HTTP on a loopback port: TLS is not what these tests are about
    yield fake
    await fake.stop()


def numbers(body: bytes, pieces: int = N_CHUNKS, reasoning: int = 2) -> dict:
    """The fake's formula for a request body of these bytes."""
    prompt = 10 + len(body) // 16
    return {"prompt": prompt, "cached": prompt // 2, "reasoning": reasoning, "completion": pieces + reasoning}


async def post(fake: FakeUpstream, path: str, body: dict) -> tuple[bytes, httpx.Response]:
    raw = json.dumps(body).encode()
    async with httpx.AsyncClient(base_url=fake.url, timeout=10) as client:
        response = await client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    return raw, response


def stream_of(dialect: Dialect, data: bytes, split: int = 7) -> StreamUsage:
    """Feed an SSE body through the real parser in small chunks, as the relay sees it."""
    parser, usage = SSEParser(), StreamUsage(dialect)
    for start in range(0, len(data), split):
        for event in parser.feed(data[start:start + split]):
            if event.data.strip() == "[DONE]":
                continue
            usage.event(event.event, json.loads(event.data))
    return usage


# ------------------------------------------------------------------------------------------ OpenAI chat

async def test_openai_chat_answer(upstream):
    raw, response = await post(upstream, "/v1/chat/completions",
                               {"model": "fake/good", "messages": [{"role": "user", "content": "ping"}]})
    n = numbers(raw)
    assert usage_blocks.usage_of_answer(Dialect.OPENAI_CHAT, response.json()) == TokenUsage(
        input_tokens=n["prompt"], output_tokens=n["completion"], cached_tokens=n["cached"], cache_write_tokens=None,
        reasoning_tokens=2, cost_usd=None)
    assert usage_blocks.answer_text("openai_chat", response.json()) == upstream.expected_answer("fake/good")


async def test_openai_chat_stream_with_include_usage(upstream):
    raw, response = await post(upstream, "/v1/chat/completions", {
        "model": "fake/good", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "ping"}]})
    n = numbers(raw)
    usage = stream_of(Dialect.OPENAI_CHAT, response.content)
    assert usage.result() == TokenUsage(n["prompt"], n["completion"], n["cached"], None, 2, None)
    assert usage.output_text == upstream.expected_answer("fake/good")
    assert usage.usage_or_estimate(999) == usage.result()  # reported: nothing estimated


async def test_openai_chat_stream_without_usage_is_estimated(upstream):
    _, response = await post(upstream, "/v1/chat/completions", {
        "model": "fake/good", "stream": True, "messages": [{"role": "user", "content": "ping"}]})
    usage = stream_of(Dialect.OPENAI_CHAT, response.content)
    assert usage.result() is None
    answer = upstream.expected_answer("fake/good")
    assert usage.usage_or_estimate(42) == TokenUsage(42, tokens.count_text(answer), None, None, None, None,
                                                     estimated=True)


async def test_openrouter_stream_reports_cost(upstream):
    raw, response = await post(upstream, "/api/v1/chat/completions", {
        "model": "openrouter/free", "stream": True, "messages": [{"role": "user", "content": "ping"}]})
    n = numbers(raw)
    result = stream_of(Dialect.OPENAI_CHAT, response.content).result()
    assert (result.input_tokens, result.output_tokens, result.cached_tokens) == (n["prompt"], n["completion"],
                                                                                 n["cached"])
    assert result.cost_usd == pytest.approx(n["prompt"] * 1e-6 + n["completion"] * 2e-6)
    assert not result.estimated


async def test_openrouter_answer_reports_cost(upstream):
    raw, response = await post(upstream, "/api/v1/chat/completions",
                               {"model": "openrouter/free", "messages": [{"role": "user", "content": "ping"}]})
    n = numbers(raw)
    result = usage_blocks.usage_of_answer("openai_chat", response.json())
    assert result.cost_usd == pytest.approx(n["prompt"] * 1e-6 + n["completion"] * 2e-6)


async def test_openai_chat_tool_call_stream_text_is_the_arguments(upstream):
    raw, response = await post(upstream, "/v1/chat/completions", {
        "model": "fake/good", "stream": True, "stream_options": {"include_usage": True}, "tools": OPENAI_TOOLS,
        "messages": [{"role": "user", "content": TOOL_PROMPT}]})
    n = numbers(raw, pieces=2)
    usage = stream_of(Dialect.OPENAI_CHAT, response.content)
    assert usage.result().output_tokens == n["completion"]
    assert json.loads(usage.output_text) == TOOL_ARGS


async def test_openai_chat_empty_answer(upstream):
    raw, response = await post(upstream, "/v1/chat/completions",
                               {"model": "fake/empty", "messages": [{"role": "user", "content": "ping"}]})
    n = numbers(raw, pieces=0, reasoning=0)
    result = usage_blocks.usage_of_answer("openai_chat", response.json())
    assert (result.output_tokens, result.reasoning_tokens, result.input_tokens) == (0, 0, n["prompt"])


# ------------------------------------------------------------------------------------------ Anthropic

ANTHROPIC_BODY = {"model": "fake/good", "max_tokens": 64, "messages": [{"role": "user", "content": "ping"}]}


async def test_anthropic_answer_adds_cache_to_input(upstream):
    raw, response = await post(upstream, "/v1/messages", ANTHROPIC_BODY)
    n = numbers(raw)
    # (prompt - cached) + cache_read (cached) + cache_creation (2)
    assert usage_blocks.usage_of_answer(Dialect.ANTHROPIC, response.json()) == TokenUsage(
        input_tokens=n["prompt"] + 2, output_tokens=n["completion"], cached_tokens=n["cached"], cache_write_tokens=2,
        reasoning_tokens=None, cost_usd=None)
    assert usage_blocks.answer_text("anthropic", response.json()) == upstream.expected_answer("fake/good")


async def test_anthropic_stream(upstream):
    raw, response = await post(upstream, "/v1/messages", {**ANTHROPIC_BODY, "stream": True})
    n = numbers(raw)
    usage = stream_of(Dialect.ANTHROPIC, response.content)
    # message_start says output_tokens 1; message_delta's cumulative count replaces it
    assert usage.result() == TokenUsage(n["prompt"] + 2, n["completion"], n["cached"], 2, None, None)
    assert usage.output_text == upstream.expected_answer("fake/good")


async def test_anthropic_stream_cut_before_message_delta_estimates_output_only(upstream):
    raw, response = await post(upstream, "/v1/messages", {**ANTHROPIC_BODY, "model": "fake/midstream-error",
                                                          "stream": True})
    n = numbers(raw)
    usage = stream_of(Dialect.ANTHROPIC, response.content)
    reported = usage.result()
    assert (reported.input_tokens, reported.output_tokens) == (n["prompt"] + 2, None)
    assert usage.output_text == "".join(split_answer(upstream.answer, N_CHUNKS)[:2])  # the fake sends 2 pieces
    filled = usage.usage_or_estimate(7)
    assert filled.estimated
    assert filled.input_tokens == n["prompt"] + 2  # the provider's input count is kept, not the caller's
    assert filled.output_tokens == tokens.count_text(usage.output_text)


async def test_anthropic_tool_use_stream(upstream):
    raw, response = await post(upstream, "/v1/messages", {
        **ANTHROPIC_BODY, "stream": True, "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": TOOL_PROMPT}]})
    n = numbers(raw, pieces=2)
    usage = stream_of(Dialect.ANTHROPIC, response.content)
    assert usage.result().output_tokens == n["completion"]
    assert json.loads(usage.output_text) == TOOL_ARGS


def test_anthropic_docs_stream_without_cache_fields():
    # https://docs.anthropic.com/en/docs/build-with-claude/streaming (basic streaming request)
    usage = StreamUsage("anthropic")
    usage.event("message_start", {"type": "message_start", "message": {
        "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [],
        "model": "claude-opus-4-6", "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1}}})
    usage.event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": "Hello"}})
    usage.event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                                     "stop_sequence": None},
                                  "usage": {"output_tokens": 15}})
    assert usage.result() == TokenUsage(25, 15, None, None, None, None)


def test_anthropic_docs_message_delta_with_cache_fields():
    # MessageDeltaUsage: input_tokens, cache_creation_input_tokens, cache_read_input_tokens and output_tokens are
    # "the cumulative number" (anthropic SDK reference); they replace what message_start said.
    usage = StreamUsage("anthropic")
    usage.event("message_start", {"type": "message_start", "message": {"usage": {
        "input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}}})
    usage.event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {
        "input_tokens": 12, "cache_creation_input_tokens": 1800, "cache_read_input_tokens": 2048,
        "output_tokens": 503}})
    assert usage.result() == TokenUsage(12 + 1800 + 2048, 503, 2048, 1800, None, None)


def test_anthropic_thinking_deltas_count_as_output_text():
    usage = StreamUsage("anthropic")
    usage.event(None, {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking",
                                                                                    "thinking": ""}})
    usage.event(None, {"type": "content_block_delta", "index": 0,
                       "delta": {"type": "thinking_delta", "thinking": "Let me think. "}})
    usage.event(None, {"type": "content_block_delta", "index": 0,
                       "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}})
    usage.event(None, {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "42"}})
    assert usage.output_text == "Let me think. 42"  # the signature is not output
    assert usage.result() is None


# ------------------------------------------------------------------------------------------ Responses

RESPONSES_BODY = {"model": "fake/good", "input": "ping"}


async def test_responses_answer(upstream):
    raw, response = await post(upstream, "/v1/responses", RESPONSES_BODY)
    n = numbers(raw)
    assert usage_blocks.usage_of_answer(Dialect.OPENAI_RESPONSES, response.json()) == TokenUsage(
        n["prompt"], n["completion"], n["cached"], None, 2, None)
    assert usage_blocks.answer_text("openai_responses", response.json()) == upstream.expected_answer("fake/good")


async def test_responses_stream_and_websocket_event(upstream):
    raw, response = await post(upstream, "/v1/responses", {**RESPONSES_BODY, "stream": True})
    n = numbers(raw)
    expected = TokenUsage(n["prompt"], n["completion"], n["cached"], None, 2, None)
    usage = stream_of(Dialect.OPENAI_RESPONSES, response.content)
    assert usage.result() == expected
    assert usage.output_text == upstream.expected_answer("fake/good")
    # Codex gets the same response.completed as one WebSocket text message: the JSON of the SSE data
    completed = [e for e in SSEParser().feed(response.content) if e.event == "response.completed"]
    assert usage_blocks.usage_of_responses_event(json.loads(completed[0].data)) == expected
    assert usage_blocks.usage_of_answer("openai_responses", json.loads(completed[0].data)) == expected


async def test_responses_tool_call_stream(upstream):
    raw, response = await post(upstream, "/v1/responses", {
        **RESPONSES_BODY, "stream": True, "input": TOOL_PROMPT,
        "tools": [{"type": "function", "name": "Bash", "parameters": {"type": "object"}}]})
    n = numbers(raw, pieces=2)
    usage = stream_of(Dialect.OPENAI_RESPONSES, response.content)
    assert usage.result().output_tokens == n["completion"]
    assert json.loads(usage.output_text) == TOOL_ARGS


def test_responses_events_without_usage():
    assert usage_blocks.usage_of_responses_event({"type": "response.created", "response": {"usage": None}}) is None
    assert usage_blocks.usage_of_responses_event({"type": "response.output_text.delta", "delta": "x"}) is None
    assert usage_blocks.usage_of_responses_event({"type": "response.completed"}) is None
    # an answer cut by the provider still carries its usage
    assert usage_blocks.usage_of_responses_event({"type": "response.incomplete", "response": {"usage": {
        "input_tokens": 5, "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 4}}}}) == TokenUsage(
        5, 9, None, None, 4, None)


# ------------------------------------------------------------------------------------------ Gemini

GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "ping"}]}]}


async def test_gemini_answer_output_is_candidates_plus_thoughts(upstream):
    raw, response = await post(upstream, "/v1beta/models/fake-good:generateContent", GEMINI_BODY)
    n = numbers(raw)
    meta = response.json()["usageMetadata"]
    assert meta["candidatesTokenCount"] == n["completion"] - 2  # the fake leaves thoughts out, as Gemini does
    assert usage_blocks.usage_of_answer(Dialect.GEMINI, response.json()) == TokenUsage(
        n["prompt"], n["completion"], n["cached"], None, 2, None)
    assert usage_blocks.answer_text("gemini", response.json()) == upstream.expected_answer("fake-good")


async def test_gemini_sse_stream(upstream):
    raw, response = await post(upstream, "/v1beta/models/fake-good:streamGenerateContent?alt=sse", GEMINI_BODY)
    n = numbers(raw)
    usage = stream_of(Dialect.GEMINI, response.content)
    assert usage.result() == TokenUsage(n["prompt"], n["completion"], n["cached"], None, 2, None)
    assert usage.output_text == upstream.expected_answer("fake-good")


async def test_gemini_json_array_stream(upstream):
    raw, response = await post(upstream, "/v1beta/models/fake-good:streamGenerateContent", GEMINI_BODY)
    n = numbers(raw)
    assert response.content.startswith(b"[")
    assert usage_blocks.usage_of_gemini_array(response.content) == TokenUsage(n["prompt"], n["completion"], n["cached"],
                                                                     None, 2, None)
    items = usage_blocks.gemini_array_items(response.content)
    assert len(items) == N_CHUNKS
    # cut inside the last element (which carries the usage): the complete ones survive, no usage
    cut = response.content[:response.content.rindex(b"usageMetadata")]
    assert len(usage_blocks.gemini_array_items(cut)) == N_CHUNKS - 1
    assert usage_blocks.usage_of_gemini_array(cut) is None
    assert usage_blocks.usage_of_gemini_array(b"") is None


async def test_gemini_tool_call(upstream):
    raw, response = await post(upstream, "/v1beta/models/fake-good:generateContent", {
        "contents": [{"role": "user", "parts": [{"text": TOOL_PROMPT}]}],
        "tools": [{"functionDeclarations": [{"name": "Bash"}]}]})
    n = numbers(raw, pieces=1)  # the fake's Gemini tool call counts one piece
    assert usage_blocks.usage_of_answer("gemini", response.json()).output_tokens == n["completion"]
    assert json.loads(usage_blocks.answer_text("gemini", response.json())) == TOOL_ARGS


def test_gemini_docs_thoughts_and_tool_prompt():
    # UsageMetadata (https://ai.google.dev/api/generate-content#UsageMetadata): totalTokenCount is the sum of
    # prompt, candidates, toolUsePrompt and thoughts; promptTokenCount already holds the cached content
    meta = {"promptTokenCount": 1200, "cachedContentTokenCount": 1024, "candidatesTokenCount": 50,
            "thoughtsTokenCount": 960, "toolUsePromptTokenCount": 30, "totalTokenCount": 2240}
    usage = usage_blocks.usage_of_answer("gemini", {"candidates": [], "usageMetadata": meta})
    assert usage == TokenUsage(1230, 1010, 1024, None, 960, None)
    assert usage.input_tokens + usage.output_tokens == meta["totalTokenCount"]


def test_gemini_stream_last_usage_wins():
    usage = StreamUsage("gemini")
    usage.event(None, {"candidates": [{"content": {"parts": [{"text": "thinking...", "thought": True}]}}],
                       "usageMetadata": {"promptTokenCount": 8, "thoughtsTokenCount": 3}})
    usage.event(None, {"candidates": [{"content": {"parts": [{"text": "done"}]}}],
                       "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 2, "thoughtsTokenCount": 3}})
    assert usage.result() == TokenUsage(8, 5, None, None, 3, None)
    assert usage.output_text == "thinking...done"


# ------------------------------------------------------------------------------------------ docs edge cases

def test_openai_docs_include_usage_final_chunk_with_empty_choices():
    # https://platform.openai.com/docs/api-reference/chat-streaming: with stream_options.include_usage every chunk
    # has "usage": null and one more chunk before [DONE] has "choices": [] and the request's usage
    usage = StreamUsage("openai_chat")
    usage.event("message", {"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
                            "model": "gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb",
                            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"},
                                         "logprobs": None, "finish_reason": None}], "usage": None})
    assert usage.result() is None
    usage.event("message", {"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
                            "model": "gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices": [],
                            "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21,
                                      "prompt_tokens_details": {"cached_tokens": 0},
                                      "completion_tokens_details": {"reasoning_tokens": 0}}})
    assert usage.result() == TokenUsage(9, 12, 0, None, 0, None)
    assert usage.output_text == "Hi"


def test_openrouter_docs_usage_accounting_sample():
    # https://openrouter.ai/docs/use-cases/usage-accounting (response format)
    answer = {"object": "chat.completion.chunk", "usage": {
        "completion_tokens": 2, "completion_tokens_details": {"reasoning_tokens": 0}, "cost": 0.95,
        "cost_details": {"upstream_inference_cost": 19}, "prompt_tokens": 194,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 100, "audio_tokens": 0},
        "total_tokens": 196}}
    assert usage_blocks.usage_of_answer("openai_chat", answer) == TokenUsage(194, 2, 0, 100, 0, 0.95)


def test_openrouter_reasoning_and_tool_deltas_are_output_text():
    usage = StreamUsage("openai_chat")
    usage.event(None, {"choices": [{"delta": {"role": "assistant", "content": "", "reasoning": "hmm "}}]})
    usage.event(None, {"choices": [{"delta": {"reasoning_content": "so "}}]})
    usage.event(None, {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]})
    assert usage.output_text == "hmm so {}"


@pytest.mark.parametrize("dialect, answer", [
    ("openai_chat", {"id": "chatcmpl-1", "object": "chat.completion", "choices": []}),
    ("openai_chat", {"usage": None}),
    ("openai_chat", {"usage": {"total_tokens": 5}}),
    ("anthropic", {"type": "message", "content": [{"type": "text", "text": "hi"}]}),
    ("anthropic", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ("openai_responses", {"object": "response", "status": "in_progress", "usage": None}),
    ("gemini", {"candidates": [{"content": {"parts": [{"text": "hi"}]}}]}),
    ("gemini", {"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}),
])
def test_missing_usage_is_none(dialect, answer):
    assert usage_blocks.usage_of_answer(dialect, answer) is None


def test_nonsense_numbers_are_dropped():
    answer = {"usage": {"prompt_tokens": True, "completion_tokens": -3, "cost": "0.1",
                        "prompt_tokens_details": {"cached_tokens": "12"}}}
    assert usage_blocks.usage_of_answer("openai_chat", answer) is None
    answer = {"usage": {"prompt_tokens": 10.0, "completion_tokens": 4, "cost": float("nan")}}
    assert usage_blocks.usage_of_answer("openai_chat", answer) == TokenUsage(10, 4, None, None, None, None)


def test_unknown_dialect_raises():
    with pytest.raises(ValueError):
        usage_blocks.usage_of_answer("cohere", {})


# ------------------------------------------------------------------------------------------ estimates

def test_estimated_usage_counts_output_with_tiktoken():
    text = "def add(a, b):\n    return a + b\n"
    usage = usage_blocks.estimated_usage(120, text)
    assert usage == TokenUsage(120, len(tokens.encoding().encode_ordinary(text)), None, None, None, None,
                               estimated=True)
    assert usage_blocks.estimated_usage(None, "").output_tokens == 0


def test_output_text_is_bounded_and_the_estimate_scaled(monkeypatch):
    monkeypatch.setattr(usage_blocks, "MAX_TEXT_CHARS", 1000)
    usage = StreamUsage("openai_responses")
    piece = "lorem ipsum dolor sit amet " * 10  # 270 characters
    for _ in range(10):
        usage.event("response.output_text.delta", {"type": "response.output_text.delta", "delta": piece})
    assert len(usage.output_text) == 1000
    assert usage.output_chars == 2700
    kept = tokens.count_text(usage.output_text)
    estimate = usage.usage_or_estimate(None)
    assert estimate.estimated and estimate.output_tokens == -(-kept * 2700 // 1000)
    assert estimate.output_tokens > kept


def test_default_bound_is_about_a_megabyte():
    assert usage_blocks.MAX_TEXT_CHARS == 1_000_000
