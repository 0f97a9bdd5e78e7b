"""Tests of the stream watch past its commit point (addons/fallback/stream_watch.py, StreamWatch): routine events
are counted, not parsed, and nothing that matters is missed: an error event, the finish, the end marker,
a usage block, anywhere in a long stream and split anywhere across chunks; the usage estimate reads the
skipped events' text when the provider reported no counts."""

from __future__ import annotations

import pytest
from test_failures import sse

from addons.fallback import stream_watch
from addons.fallback.stream_watch import StreamWatch
from addons.wire.dialects import Dialect
from addons.wire.usage_blocks import StreamUsage

LONG = 500  # content events after the commit point


def chat(delta: dict | None = None, **extra) -> dict:
    choice = {"index": 0, "delta": delta if delta is not None else {}, "finish_reason": None}
    return {"id": "gen-1", "object": "chat.completion.chunk", "model": "vendor/model", "usage": None,
            "choices": [choice], **extra}


def chat_stream(*tail: dict | str, words: int = LONG) -> tuple[list[dict | str], bytes]:
    events: list[dict | str] = [chat({"role": "assistant", "content": ""})]
    events += [chat({"content": f"word{i} "}) for i in range(words)]
    events += list(tail)
    return events, sse(*events)


def fed(dialect: Dialect, raw: bytes, cuts: int | None = None, request: dict | None = None) -> StreamWatch:
    """The watch fed `raw` in pieces of `cuts` bytes (None: event by event)."""
    watch = StreamWatch(dialect, request)
    if cuts is None:
        for block in raw.split(b"\n\n")[:-1]:
            watch.feed(block + b"\n\n")
    else:
        for i in range(0, len(raw), cuts):
            watch.feed(raw[i:i + cuts])
    return watch


def reference_usage(dialect: Dialect, events: list[dict | str]) -> StreamUsage:
    """Every payload parsed and fed, as the watch did before the commit point changed anything."""
    usage = StreamUsage(dialect)
    for event in events:
        if isinstance(event, dict):
            usage.event(event.get("type"), event)
    return usage


@pytest.mark.parametrize("cuts", [None, 7, 4096])
def test_routine_events_after_the_commit_point_are_counted_not_parsed(cuts):
    usage = {"prompt_tokens": 12, "completion_tokens": 501, "total_tokens": 513}
    events, raw = chat_stream(chat(finish_reason="stop") | {"choices": [
        {"index": 0, "delta": {}, "finish_reason": "stop"}]}, chat(usage=usage) | {"choices": []}, "[DONE]")
    watch = fed(Dialect.OPENAI_CHAT, raw, cuts)
    assert watch.events == len(events) and watch.skimmed >= LONG - 2
    assert watch.complete and watch.finish() is None and watch.model == "vendor/model"
    found = watch.usage.result()
    assert (found.input_tokens, found.output_tokens) == (12, 501)


@pytest.mark.parametrize("cuts", [None, 1, 5, 333])
def test_an_error_event_after_the_commit_point_is_found_split_anywhere(cuts):
    error = {"error": {"code": 502, "message": "Upstream overloaded mid-stream"}}
    _, raw = chat_stream(error, chat({"content": "after"}))
    watch = fed(Dialect.OPENAI_CHAT, raw, cuts)
    assert watch.failure is not None and watch.failure.kind == "stream_error"
    assert "Upstream overloaded mid-stream" in watch.failure.message
    assert watch.skimmed >= LONG - 2


def test_an_error_event_split_across_two_chunks_at_its_key():
    _, raw = chat_stream({"error": {"code": 500, "message": "boom"}})
    cut = raw.rindex(b'"error"') + 3  # `"er` | `ror"`
    watch = StreamWatch(Dialect.OPENAI_CHAT, None)
    watch.feed(raw[:cut])
    assert watch.committable and watch.failure is None
    watch.feed(raw[cut:])
    assert watch.failure is not None and "boom" in watch.failure.message


def test_openrouter_finish_reason_error_and_spaced_keys_after_the_commit_point():
    ended = {"id": "gen-1", "model": "vendor/model", "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}]}
    _, raw = chat_stream(ended)
    assert fed(Dialect.OPENAI_CHAT, raw, 64).failure.kind == "stream_error"
    # `"finish_reason": "length"` with a space, and no [DONE]: the stream still ends as complete
    spaced = sse(*[chat({"content": "hi"})] * 30) + \
        b'data: {"model": "vendor/model", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}\n\n'
    watch = fed(Dialect.OPENAI_CHAT, spaced, 50)
    assert watch.complete and watch.skimmed > 0


@pytest.mark.parametrize("cuts", [None, 3, 1000])
def test_a_usage_block_inside_a_long_stream_is_read(cuts):
    """A provider that reports cumulative usage mid-stream (then more text, then the last usage): the last
    counts win, as when every event was parsed."""
    first = chat(usage={"prompt_tokens": 40, "completion_tokens": 250}) | {"choices": []}
    last = chat(usage={"prompt_tokens": 40, "completion_tokens": 500, "cost": 0.25}) | {"choices": []}
    events = [chat({"role": "assistant", "content": ""})] + [chat({"content": f"w{i} "}) for i in range(250)]
    events += [first] + [chat({"content": f"x{i} "}) for i in range(250)] + [last, "[DONE]"]
    watch = fed(Dialect.OPENAI_CHAT, sse(*events), cuts)
    assert watch.skimmed >= 490
    assert watch.usage.result() == reference_usage(Dialect.OPENAI_CHAT, events).result()
    assert watch.usage.result().output_tokens == 500 and watch.usage.result().cost_usd == 0.25
    assert watch.usage.usage_or_estimate(None).estimated is False


@pytest.mark.parametrize("cuts", [None, 9])
def test_without_reported_usage_the_estimate_reads_every_skipped_event(cuts):
    events, raw = chat_stream(chat({"content": "[DONE] is not the end"}), chat({"content": " error-free"}),
                              chat({"content": " tail"}), "[DONE]")
    watch = fed(Dialect.OPENAI_CHAT, raw, cuts)
    reference = reference_usage(Dialect.OPENAI_CHAT, events)
    assert watch.usage.result() is None and watch.skimmed > 0
    assert watch.usage.output_text == reference.output_text and watch.usage.output_chars == reference.output_chars
    assert watch.usage.usage_or_estimate(7) == reference.usage_or_estimate(7)


def test_skipped_events_past_the_bound_are_read_on_the_spot(monkeypatch):
    monkeypatch.setattr(stream_watch, "MAX_DEFERRED", 2000)
    events, raw = chat_stream("[DONE]")
    watch = fed(Dialect.OPENAI_CHAT, raw)
    assert watch._deferred_bytes <= 2000 + 200  # never more than the bound and one event
    assert watch.usage.output_text == reference_usage(Dialect.OPENAI_CHAT, events).output_text


def anthropic_stream(*tail: dict) -> tuple[list[dict], bytes]:
    events = [{"type": "message_start", "message": {"model": "claude-x", "content": [],
                                                    "usage": {"input_tokens": 30, "output_tokens": 1}}},
              {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}]
    events += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"t{i} "}}
               for i in range(LONG)]
    events += list(tail)
    return events, sse(*events, named=True)


@pytest.mark.parametrize("cuts", [None, 11])
def test_anthropic_usage_and_end_after_the_commit_point(cuts):
    events, raw = anthropic_stream({"type": "content_block_stop", "index": 0},
                                   {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                    "usage": {"output_tokens": 501}},
                                   {"type": "message_stop"})
    watch = fed(Dialect.ANTHROPIC, raw, cuts)
    assert watch.skimmed >= LONG - 2 and watch.end_seen and watch.finish() is None
    found = watch.usage.result()
    assert (found.input_tokens, found.output_tokens) == (30, 501)
    assert found == reference_usage(Dialect.ANTHROPIC, events).result()


def test_anthropic_error_event_named_only_by_its_event_line():
    """`event: error` with a payload that has no type: the event line alone names it."""
    _, raw = anthropic_stream()
    raw += b'event: error\ndata: {"error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    watch = fed(Dialect.ANTHROPIC, raw, 13)
    assert watch.failure is not None and "Overloaded" in watch.failure.message


@pytest.mark.parametrize("last", ["response.completed", "response.failed"])
def test_responses_final_event_after_the_commit_point(last):
    response = {"model": "gpt-x", "status": "completed", "output": [],
                "usage": {"input_tokens": 9, "output_tokens": LONG}}
    if last == "response.failed":
        response |= {"status": "failed", "error": {"code": "server_error", "message": "crashed"}}
    events = [{"type": "response.created", "response": {"model": "gpt-x", "status": "in_progress"}}]
    events += [{"type": "response.output_text.delta", "delta": f"d{i} "} for i in range(LONG)]
    events += [{"type": last, "response": response}]
    watch = fed(Dialect.OPENAI_RESPONSES, sse(*events, named=True), 17)
    assert watch.skimmed >= LONG - 2
    if last == "response.completed":
        assert watch.end_seen and watch.finish() is None and watch.usage.result().output_tokens == LONG
    else:
        assert watch.failure is not None and "crashed" in watch.failure.message


def test_before_the_commit_point_every_event_is_parsed():
    """A forced tool call holds the commit point: text events are judged in full until the call begins."""
    request = {"tool_choice": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}
    _, raw = chat_stream(words=50)
    watch = fed(Dialect.OPENAI_CHAT, raw, 100, request=request)
    assert not watch.committable and watch.skimmed == 0
    assert watch.finish().kind == "no_tool_call"


def test_gemini_finish_and_usage_after_the_commit_point():
    def piece(text: str, **extra) -> dict:
        return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, **extra}],
                "modelVersion": "gemini-x"}
    events = [piece(f"g{i} ") for i in range(50)]
    finished = fed(Dialect.GEMINI, sse(*events + [piece("", finishReason="STOP")]), 21)
    assert finished.skimmed >= 45 and finished.end_seen and finished.finish() is None
    events += [piece("") | {"usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 50}}]
    assert fed(Dialect.GEMINI, sse(*events), 21).usage.result().output_tokens == 50
    error = fed(Dialect.GEMINI, sse(*events[:50] + [{"error": {"code": 503, "message": "unavailable"}}]), 21)
    assert error.failure is not None and "unavailable" in error.failure.message
