"""Token usage and cost from provider answers, read in the UPSTREAM's dialect.

Pure logic, no mitmproxy. The relay feeds whole JSON answers to `usage_of_answer`, parsed SSE payloads of a
stream to a `StreamUsage`, Gemini's JSON-array streams to `usage_of_gemini_array`; when an answer carries no
usage at all (an aborted stream, a provider that never reports), `estimated_usage` counts the visible output
with tiktoken and the caller supplies the request's token count, and the result says `estimated=True`.

One meaning per field, whatever the dialect (the providers disagree, so each is normalised here):

- `input_tokens`: ALL prompt tokens, cached ones included.
  * Anthropic reports `input_tokens` WITHOUT the cache: the prompt is input_tokens +
    cache_read_input_tokens + cache_creation_input_tokens ("Tracking cache performance",
    https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching), so they are added up.
  * OpenAI Chat `prompt_tokens` includes `prompt_tokens_details.cached_tokens`, Responses `input_tokens`
    includes `input_tokens_details.cached_tokens` (https://platform.openai.com/docs/api-reference/chat/object,
    https://platform.openai.com/docs/api-reference/responses/object, https://platform.openai.com/docs/guides/
    prompt-caching); OpenRouter's prompt_tokens likewise.
  * Gemini `promptTokenCount` includes `cachedContentTokenCount` ("When cached_content is set, this is still
    the total effective prompt size", https://ai.google.dev/api/generate-content#UsageMetadata);
    `toolUsePromptTokenCount` (tool results fed back to the model) is NOT in it and is added.
- `output_tokens`: everything generated, reasoning included. OpenAI's completion_tokens / output_tokens
  already include reasoning. Gemini's `candidatesTokenCount` does NOT include `thoughtsTokenCount`:
  totalTokenCount is "the sum of prompt_token_count, candidates_token_count, tool_use_prompt_token_count,
  and thoughts_token_count" (google-genai GenerateContentResponseUsageMetadata), so output = candidates +
  thoughts (tests/fake_upstream.py builds the same split).
- `cached_tokens`: prompt tokens read from a cache (Anthropic cache_read_input_tokens, OpenAI cached_tokens,
  Gemini cachedContentTokenCount). `cache_write_tokens`: Anthropic cache_creation_input_tokens, OpenRouter
  `prompt_tokens_details.cache_write_tokens` (https://openrouter.ai/docs/use-cases/usage-accounting).
- `reasoning_tokens`: completion_tokens_details.reasoning_tokens (Chat), output_tokens_details.reasoning_tokens
  (Responses), thoughtsTokenCount (Gemini). Anthropic reports no separate thinking count: None.
- `cost_usd`: OpenRouter's `usage.cost`, the amount charged, in credits (1 credit = 1 USD)
  (https://openrouter.ai/docs/use-cases/usage-accounting). Other providers report none: None, and the caller
  prices the tokens from the model catalog.

Streams (each event is one parsed SSE `data:` payload):
- Anthropic: `message_start.message.usage` gives the input side (its output_tokens is a placeholder),
  `message_delta.usage` the cumulative output_tokens and, on newer API versions, cumulative input/cache
  counts too (MessageDeltaUsage: "The cumulative number of ... tokens"); later values win. A stream cut
  before any message_delta has no output count: output_tokens is None and the caller estimates it.
- OpenAI Chat: the chunk whose `usage` is an object, i.e. the extra final chunk with `choices: []` that
  `stream_options.include_usage` asks for (other chunks carry `usage: null`); OpenRouter always sends it,
  with `cost` (https://platform.openai.com/docs/api-reference/chat-streaming).
- Responses: `response.completed` (or `.incomplete` / `.failed`) carries the final `response.usage`; Codex
  receives the same event as a WebSocket text message, see `usage_of_responses_event`.
- Gemini `alt=sse`: each chunk may carry `usageMetadata`; the last one wins.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from addons.wire import tokens
from addons.wire.dialects import Dialect
from addons.wire.jsontext import get_typed

# Output text kept for an estimate: enough for any real answer, bounded so a runaway stream cannot grow the
# gateway's memory. Beyond it only the length is counted and the estimate is scaled (see StreamUsage).
MAX_TEXT_CHARS = 1_000_000

_RESPONSES_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_RESPONSES_TEXT_DELTAS = frozenset({
    "response.output_text.delta", "response.refusal.delta", "response.function_call_arguments.delta",
    "response.custom_tool_call_input.delta", "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
})


@dataclasses.dataclass(frozen=True)
class TokenUsage:
    """The tokens and cost of one provider answer, each field with one meaning whatever the dialect
    (the module docstring says how each provider's numbers map to it)."""

    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    estimated: bool = False


_USAGE_FIELDS = tuple(f.name for f in dataclasses.fields(TokenUsage) if f.name != "estimated")  # the reported ones


def _reported(fields: dict[str, Any]) -> TokenUsage:
    """The counts a provider reported, as a TokenUsage (a count it did not report is None)."""
    return TokenUsage(input_tokens=fields.get("input_tokens"), output_tokens=fields.get("output_tokens"),
                      cached_tokens=fields.get("cached_tokens"), cache_write_tokens=fields.get("cache_write_tokens"),
                      reasoning_tokens=fields.get("reasoning_tokens"), cost_usd=fields.get("cost_usd"))


# ------------------------------------------------------------------------------------------ whole answers

def usage_of_answer(dialect: Dialect | str, answer: dict) -> TokenUsage | None:
    """Usage of a whole JSON answer (chat.completion, Anthropic message, Responses `response` object or a
    `response.*` event wrapping one, Gemini GenerateContentResponse); None when it reports none."""
    if not isinstance(answer, dict):
        return None
    dialect = Dialect(dialect)
    if dialect is Dialect.ANTHROPIC:
        return _anthropic(answer.get("usage"))
    if dialect is Dialect.OPENAI_CHAT:
        return _openai_chat(answer.get("usage"))
    if dialect is Dialect.OPENAI_RESPONSES:
        if isinstance(answer.get("response"), dict):  # an event such as response.completed
            return usage_of_responses_event(answer)
        return _responses(answer.get("usage"))
    return _gemini(answer.get("usageMetadata"))


def usage_of_responses_event(payload: dict) -> TokenUsage | None:
    """Usage of a Responses stream event as Codex receives it over WebSocket (or SSE):
    `{"type": "response.completed", "response": {..., "usage": {...}}}`; None for other events."""
    if not isinstance(payload, dict) or payload.get("type") not in _RESPONSES_FINAL:
        return None
    response = payload.get("response")
    return _responses(response.get("usage")) if isinstance(response, dict) else None


def gemini_array_items(raw: bytes) -> list[dict]:
    """The GenerateContentResponse objects of a Gemini streamGenerateContent answer without alt=sse (one JSON
    array, `[{...},\\r\\n{...}]`). Tolerant of a cut stream: the complete elements before the cut are kept."""
    text = raw.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    items: list[dict] = []
    pos = text.find("[")
    if pos < 0:
        return items
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return items
        try:
            item, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return items  # a truncated last element
        if isinstance(item, dict):
            items.append(item)


def usage_of_gemini_array(raw: bytes) -> TokenUsage | None:
    """Usage of a Gemini JSON-array stream: the last element's usageMetadata."""
    found = None
    for item in gemini_array_items(raw):
        found = _gemini(item.get("usageMetadata")) or found
    return found


def answer_text(dialect: Dialect | str, answer: dict) -> str:
    """The visible output of a whole answer (text, tool-call arguments, reasoning), for `estimated_usage` when the
    answer reports no usage."""
    if not isinstance(answer, dict):
        return ""
    dialect = Dialect(dialect)
    parts: list[str] = []
    if dialect is Dialect.ANTHROPIC:
        for block in _dicts(answer.get("content")):
            for key in ("text", "thinking"):
                _add_str(parts, block.get(key))
            if block.get("type") in ("tool_use", "server_tool_use") and "input" in block:
                parts.append(json.dumps(block["input"], ensure_ascii=False))
    elif dialect is Dialect.OPENAI_CHAT:
        for choice in _dicts(answer.get("choices")):
            message = choice.get("message")
            if isinstance(message, dict):
                _chat_delta_text(parts, message)
    elif dialect is Dialect.OPENAI_RESPONSES:
        response = get_typed(answer, "response", dict, answer)
        for item in _dicts(response.get("output")):
            _add_str(parts, item.get("arguments"))
            _add_str(parts, item.get("input"))
            for key in ("content", "summary"):
                for part in _dicts(item.get(key)):
                    _add_str(parts, part.get("text"))
                    _add_str(parts, part.get("refusal"))
    else:
        _gemini_text(parts, answer)
    return "".join(parts)


def estimated_usage(input_tokens: int | None, output_text: str) -> TokenUsage:
    """Usage the provider did not report: output counted with tiktoken (o200k, addons/wire/tokens.py), input as the
    caller counted it for the request. Flagged estimated; no cost (the caller prices it from the catalog)."""
    return TokenUsage(input_tokens=input_tokens, output_tokens=tokens.count_text(output_text or ""), cached_tokens=None,
                 cache_write_tokens=None, reasoning_tokens=None, cost_usd=None, estimated=True)


# ------------------------------------------------------------------------------------------ streams

class StreamUsage:
    """Usage of one streamed answer, fed every parsed SSE data payload in order.

    Also keeps the visible output (text, tool-call argument and reasoning deltas; at most MAX_TEXT_CHARS) so
    that `usage_or_estimate` can count it when the provider reported nothing. A caller may feed an event's
    numbers and its text separately (`numbers=` / `text=`), as long as each kind arrives in stream order:
    the stream watch reads the text of a committed stream's events only when the estimate needs it.
    """

    def __init__(self, dialect: Dialect | str) -> None:
        self.dialect = Dialect(dialect)
        self._fields: dict[str, Any] = {}  # the reported numbers so far, by TokenUsage field name
        self._anthropic_output_final = False  # a message_delta gave the real output count
        self._parts: list[str] = []
        self._kept = 0  # characters in _parts
        self.output_chars = 0  # characters of visible output seen, kept or not
        self._numbers_on = self._text_on = True  # what `event` takes from the payload at hand

    @property
    def output_text(self) -> str:
        """The visible output seen so far (its first MAX_TEXT_CHARS characters)."""
        return "".join(self._parts)

    def event(self, kind: str | None, payload: dict, *, numbers: bool = True, text: bool = True) -> None:
        """One payload; `kind` is the SSE event name (or payload["type"]); "message" and None mean unnamed.
        `numbers` / `text`: take its reported counts / its visible output (both unless told)."""
        if not isinstance(payload, dict):
            return
        self._numbers_on, self._text_on = numbers, text
        try:
            self._dispatch(payload.get("type") if isinstance(payload.get("type"), str) else kind, payload)
        finally:
            self._numbers_on = self._text_on = True

    def _dispatch(self, etype: str | None, payload: dict) -> None:
        if self.dialect is Dialect.ANTHROPIC:
            self._anthropic_event(etype, payload)
        elif self.dialect is Dialect.OPENAI_CHAT:
            self._chat_event(payload)
        elif self.dialect is Dialect.OPENAI_RESPONSES:
            self._responses_event(etype, payload)
        else:
            self._gemini_event(payload)

    def result(self) -> TokenUsage | None:
        """What the provider reported (fields it did not report are None); None when it reported nothing."""
        if not self._fields:
            return None
        fields = dict(self._fields)
        if self.dialect is Dialect.ANTHROPIC:
            fields = _anthropic_fields(fields)
            if not self._anthropic_output_final:
                fields["output_tokens"] = None  # message_start's output_tokens is a placeholder, not a count
        if all(fields.get(name) is None for name in ("input_tokens", "output_tokens")):
            return None
        return _reported(fields)

    def usage_or_estimate(self, input_tokens: int | None) -> TokenUsage:
        """The reported usage, with what it lacks estimated: input from `input_tokens` (the caller's count of
        the request), output from the visible output seen. `estimated` is True when anything was filled in."""
        reported = self.result()
        if reported is not None and reported.input_tokens is not None and reported.output_tokens is not None:
            return reported
        guess = self._estimate_output()
        if reported is None:
            return TokenUsage(input_tokens, guess, None, None, None, None, estimated=True)
        return dataclasses.replace(
            reported, estimated=True,
            input_tokens=reported.input_tokens if reported.input_tokens is not None else input_tokens,
            output_tokens=reported.output_tokens if reported.output_tokens is not None else guess)

    # -------------------------------------------------------------- internals

    def _estimate_output(self) -> int:
        counted = tokens.count_text(self.output_text)
        if self.output_chars > self._kept and self._kept:  # text beyond the bound: scale by length
            return math.ceil(counted * self.output_chars / self._kept)
        return counted

    def _text(self, value: Any) -> None:
        if not self._text_on or not isinstance(value, str) or not value:
            return
        self.output_chars += len(value)
        room = MAX_TEXT_CHARS - self._kept
        if room > 0:
            piece = value[:room]
            self._parts.append(piece)
            self._kept += len(piece)

    def _replace(self, usage: TokenUsage | None) -> None:
        """A usage object that is the whole request's: the last one wins."""
        if self._numbers_on:
            self._fields = {}
            self._merge(usage)

    def _merge(self, usage: TokenUsage | None, raw_fields: dict[str, Any] | None = None) -> None:
        if not self._numbers_on:
            return
        if raw_fields is not None:
            self._fields.update({k: v for k, v in raw_fields.items() if v is not None})
        elif usage is not None:
            self._fields.update({name: getattr(usage, name) for name in _USAGE_FIELDS
                                 if getattr(usage, name) is not None})

    def _anthropic_event(self, etype: str | None, payload: dict) -> None:
        if etype == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                self._merge(None, _anthropic_raw(message.get("usage")))
        elif etype == "message_delta":
            raw = _anthropic_raw(payload.get("usage"))
            if raw:
                self._merge(None, raw)
                if raw.get("output_tokens") is not None and self._numbers_on:
                    self._anthropic_output_final = True
        elif etype == "content_block_start":
            block = payload.get("content_block")
            if isinstance(block, dict):
                self._text(block.get("text"))
                self._text(block.get("thinking"))
        elif etype == "content_block_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict):
                for key in ("text", "partial_json", "thinking"):
                    self._text(delta.get(key))

    def _chat_event(self, payload: dict) -> None:
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self._replace(_openai_chat(usage))
        for choice in _dicts(payload.get("choices")):
            delta = choice.get("delta")
            if isinstance(delta, dict):
                parts: list[str] = []
                _chat_delta_text(parts, delta)
                for part in parts:
                    self._text(part)

    def _responses_event(self, etype: str | None, payload: dict) -> None:
        if etype in _RESPONSES_FINAL:
            usage = usage_of_responses_event({**payload, "type": etype})
            if usage is not None:
                self._replace(usage)
        elif etype in _RESPONSES_TEXT_DELTAS:
            self._text(payload.get("delta"))

    def _gemini_event(self, payload: dict) -> None:
        usage = _gemini(payload.get("usageMetadata"))
        if usage is not None:  # each chunk's usageMetadata is cumulative: the last one wins
            self._replace(usage)
        parts: list[str] = []
        _gemini_text(parts, payload)
        for part in parts:
            self._text(part)



# ------------------------------------------------------------------------------------------ per dialect

def _int(value: Any) -> int | None:
    """A token count, or None for anything that is not a non-negative integer (bools, strings, floats with
    a fraction: a provider's nonsense must not poison the totals)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def _cost(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


def _sub(obj: Any, key: str) -> dict:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def _anthropic_raw(usage: Any) -> dict[str, Any]:
    """Anthropic's numbers as reported, under TokenUsage names (input not yet summed): message_start and
    message_delta each bring some of them."""
    if not isinstance(usage, dict):
        return {}
    raw = {
        "input_tokens": _int(usage.get("input_tokens")),
        "output_tokens": _int(usage.get("output_tokens")),
        "cached_tokens": _int(usage.get("cache_read_input_tokens")),
        "cache_write_tokens": _int(usage.get("cache_creation_input_tokens")),
        "cost_usd": _cost(usage.get("cost")),  # OpenRouter's Anthropic-compatible endpoint
    }
    return {k: v for k, v in raw.items() if v is not None}


def _anthropic_fields(raw: dict[str, Any]) -> dict[str, Any]:
    fields = dict(raw)
    if raw.get("input_tokens") is not None:
        fields["input_tokens"] = (raw["input_tokens"] + (raw.get("cached_tokens") or 0)
                                  + (raw.get("cache_write_tokens") or 0))
    fields["reasoning_tokens"] = None
    return fields


def _anthropic(usage: Any) -> TokenUsage | None:
    raw = _anthropic_raw(usage)
    if raw.get("input_tokens") is None and raw.get("output_tokens") is None:
        return None
    fields = _anthropic_fields(raw)
    return _reported(fields)


def _openai_chat(usage: Any) -> TokenUsage | None:
    return _openai(usage, "prompt_tokens", "completion_tokens")


def _responses(usage: Any) -> TokenUsage | None:
    return _openai(usage, "input_tokens", "output_tokens")


def _openai(usage: Any, input_key: str, output_key: str) -> TokenUsage | None:
    """Chat Completions and Responses name the same numbers differently: prompt_/completion_tokens
    and input_/output_tokens, each with a `<name>_details` object."""
    if not isinstance(usage, dict):
        return None
    inp, out = _int(usage.get(input_key)), _int(usage.get(output_key))
    if inp is None and out is None:
        return None
    details, out_details = _sub(usage, f"{input_key}_details"), _sub(usage, f"{output_key}_details")
    return TokenUsage(input_tokens=inp, output_tokens=out, cached_tokens=_int(details.get("cached_tokens")),
                 cache_write_tokens=_int(details.get("cache_write_tokens")),
                 reasoning_tokens=_int(out_details.get("reasoning_tokens")), cost_usd=_cost(usage.get("cost")))


def _gemini(meta: Any) -> TokenUsage | None:
    if not isinstance(meta, dict):
        return None
    prompt, candidates = _int(meta.get("promptTokenCount")), _int(meta.get("candidatesTokenCount"))
    thoughts, tool_prompt = _int(meta.get("thoughtsTokenCount")), _int(meta.get("toolUsePromptTokenCount"))
    if prompt is None and candidates is None and thoughts is None:
        return None
    inp = None if prompt is None and tool_prompt is None else (prompt or 0) + (tool_prompt or 0)
    out = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    return TokenUsage(input_tokens=inp, output_tokens=out, cached_tokens=_int(meta.get("cachedContentTokenCount")),
                 cache_write_tokens=None, reasoning_tokens=thoughts, cost_usd=None)


# ------------------------------------------------------------------------------------------ output text

def _dicts(value: Any) -> list[dict]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _add_str(parts: list[str], value: Any) -> None:
    if isinstance(value, str) and value:
        parts.append(value)


def _chat_delta_text(parts: list[str], delta: dict) -> None:
    """Text of a Chat message or delta: content, reasoning (OpenRouter `reasoning`, DeepSeek/vLLM
    `reasoning_content`), refusal, and tool-call arguments (incl. the legacy function_call)."""
    for key in ("content", "reasoning", "reasoning_content", "refusal"):
        _add_str(parts, delta.get(key))
    for call in _dicts(delta.get("tool_calls")):
        _add_str(parts, _sub(call, "function").get("arguments"))
    _add_str(parts, _sub(delta, "function_call").get("arguments"))


def _gemini_text(parts: list[str], response: dict) -> None:
    for candidate in _dicts(response.get("candidates")):
        for part in _dicts(_sub(candidate, "content").get("parts")):
            _add_str(parts, part.get("text"))  # thought parts are text with "thought": true
            call = part.get("functionCall")
            if isinstance(call, dict) and "args" in call:
                parts.append(json.dumps(call["args"], ensure_ascii=False))
