"""Whether a 2xx answer is an answer: an error inside it, an empty answer, a missing forced tool call,
a token limit reached before any content; and, for an SSE stream, where its commit point is.

Pure logic, no mitmproxy. `from_answer` judges a complete non-streamed answer, `StreamWatch` a stream
event by event: the commit point is the first text, tool call or reasoning delta. Before it the cascade
may still move on; after it nothing is restarted (OpenRouter reports an error that comes after
generation began as an SSE error event inside a 200, so only the events tell).

Decisions:

* Soft failures (empty, no_tool_call, length_no_content) are retryable and count half. An answer with
  reasoning (text, blocks, items, or reasoning tokens in its usage) is not empty and not a length failure
  (claude-code-proxy's reasoning exemption), but it still misses a forced tool call. Whitespace is no content:
  a stream that opens with "\\n\\n" is not committed until something visible follows.
* An error inside the answer or stream is judged like an error status (policy.py, `in_band`).

References: https://docs.anthropic.com/en/docs/build-with-claude/streaming,
https://platform.openai.com/docs/api-reference/chat-streaming, https://openrouter.ai/docs/api-reference/streaming,
https://platform.openai.com/docs/api-reference/responses-streaming,
https://ai.google.dev/api/generate-content#method:-models.streamgeneratecontent
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from addons.fallback.policy import Failure, in_band
from addons.wire.dialects import Dialect
from addons.wire.jsontext import as_object
from addons.wire.sse import SSEEvent, SSEParser, parse_block
from addons.wire.usage_blocks import StreamUsage

_LENGTH = {"length", "max_tokens", "max_output_tokens", "model_context_window_exceeded"}
_ANTHROPIC_TOOL_BLOCKS = {"tool_use", "server_tool_use", "mcp_tool_use"}


def _visible(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


@dataclasses.dataclass
class _Output:
    """What an answer (or the stream so far) holds."""

    text: bool = False
    tool_call: bool = False
    reasoning: bool = False  # reasoning text, blocks or items
    hidden_reasoning: bool = False  # reasoning tokens in the usage without reasoning text (OpenAI o-series)
    stop: str | None = None  # finish_reason / stop_reason / incomplete reason / finishReason as sent
    blocked: str | None = None  # Gemini promptFeedback.blockReason

    @property
    def anything(self) -> bool:
        return self.text or self.tool_call or self.reasoning

    def verdict(self, dialect: Dialect, request: dict | None) -> Failure | None:
        truncated = (self.stop or "").lower() in _LENGTH
        if not (self.anything or self.hidden_reasoning):
            if truncated:
                return _soft("length_no_content",
                             f"the answer reached its token limit ({self.stop}) before any content")
            why = f" (blocked: {self.blocked})" if self.blocked else f" (stop: {self.stop})" if self.stop else ""
            return _soft("empty", f"empty answer: no text, tool call or reasoning{why}")
        if not self.tool_call and tool_required(dialect, request):
            return _soft("no_tool_call", "the request forced a tool call (tool_choice) and the answer has none")
        return None

    def reasoning_tokens(self, usage: Any, *paths: tuple[str, str]) -> None:
        if not isinstance(usage, dict):
            return
        for outer, inner in paths:
            value = usage.get(outer)
            value = value.get(inner) if isinstance(value, dict) and inner else value
            if isinstance(value, (int, float)) and value > 0:
                self.hidden_reasoning = True


def _soft(kind: str, message: str) -> Failure:
    return Failure(kind, 200, True, True, message)


def tool_required(dialect: Dialect, request: dict | None) -> bool:
    """Does the request force a tool call? Anthropic tool_choice any/tool, OpenAI "required" or a named
    function (and the legacy function_call), Responses "required" / a named or hosted tool / allowed_tools
    in required mode, Gemini functionCallingConfig.mode ANY."""
    if not isinstance(request, dict):
        return False
    dialect = Dialect(dialect)
    if dialect is Dialect.GEMINI:
        config = request.get("toolConfig") or request.get("tool_config")
        if not isinstance(config, dict):
            return False
        calling = config.get("functionCallingConfig") or config.get("function_calling_config")
        return isinstance(calling, dict) and str(calling.get("mode", "")).upper() == "ANY"
    choice = request.get("tool_choice")
    if dialect is Dialect.ANTHROPIC:
        return isinstance(choice, dict) and choice.get("type") in ("any", "tool")
    if choice == "required":
        return True
    if dialect is Dialect.OPENAI_CHAT:
        legacy = request.get("function_call")
        return (isinstance(choice, dict) and choice.get("type") == "function") or \
            (isinstance(legacy, dict) and bool(legacy.get("name")))
    if isinstance(choice, dict):
        if choice.get("type") == "allowed_tools":
            return choice.get("mode") == "required"
        return choice.get("type") not in (None, "auto", "none")
    return False


def _anthropic_block(block: Any, out: _Output) -> None:
    if not isinstance(block, dict):
        return
    kind = block.get("type")
    if kind == "text":
        out.text |= _visible(block.get("text"))
    elif kind in _ANTHROPIC_TOOL_BLOCKS:
        out.tool_call = True
    elif kind == "thinking":
        out.reasoning |= _visible(block.get("thinking"))
    elif kind == "redacted_thinking":
        out.reasoning = True
    elif kind:  # server tool results, documents, ...: content all the same
        out.text = True


def _chat_message(message: Any, out: _Output) -> None:
    """A chat completion's message, or one streamed delta: the same fields."""
    if not isinstance(message, dict):
        return
    content = message.get("content")
    if isinstance(content, list):  # content parts
        out.text |= any(isinstance(p, dict) and _visible(p.get("text")) for p in content)
    else:
        out.text |= _visible(content)
    out.text |= _visible(message.get("refusal"))
    out.tool_call |= bool(message.get("tool_calls")) or bool(message.get("function_call"))
    out.reasoning |= _visible(message.get("reasoning")) or _visible(message.get("reasoning_content")) \
        or bool(message.get("reasoning_details"))


def _responses_item(item: Any, out: _Output) -> None:
    if not isinstance(item, dict):
        return
    kind = str(item.get("type") or "")
    if kind == "message":
        for part in item.get("content") or []:
            if isinstance(part, dict):
                out.text |= _visible(part.get("text")) or _visible(part.get("refusal"))
    elif kind.endswith("_call"):  # function_call, custom_tool_call, web_search_call, local_shell_call, ...
        out.tool_call = True
    elif kind == "reasoning":
        parts = [*(item.get("summary") or []), *(item.get("content") or [])]
        out.reasoning |= any(isinstance(p, dict) and _visible(p.get("text")) for p in parts) \
            or bool(item.get("encrypted_content"))


def _gemini_chunk(answer: dict[str, Any], out: _Output) -> bool:
    """A GenerateContentResponse (whole or one streamed piece); True when it carries a finishReason."""
    finished = False
    for candidate in answer.get("candidates") or []:
        if not isinstance(candidate, dict):
            continue
        content = as_object(candidate.get("content"))
        for part in content.get("parts") or []:
            if not isinstance(part, dict):
                continue
            if "functionCall" in part or "function_call" in part:
                out.tool_call = True
            elif "text" in part:
                if part.get("thought"):
                    out.reasoning |= _visible(part["text"])
                else:
                    out.text |= _visible(part["text"])
            elif any(k in part for k in ("executableCode", "codeExecutionResult", "inlineData", "fileData")):
                out.text = True
        if candidate.get("finishReason"):
            out.stop, finished = candidate["finishReason"], True
    feedback = answer.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        out.blocked, finished = str(feedback["blockReason"]), True
    out.reasoning_tokens(answer.get("usageMetadata"), ("thoughtsTokenCount", ""))
    return finished


def _responses_object(response: Any, out: _Output) -> None:
    if not isinstance(response, dict):
        return
    for item in response.get("output") or []:
        _responses_item(item, out)
    details = response.get("incomplete_details")
    if response.get("status") == "incomplete" and isinstance(details, dict):
        out.stop = details.get("reason") or "incomplete"
    out.reasoning_tokens(response.get("usage"), ("output_tokens_details", "reasoning_tokens"))


def _answer_error(dialect: Dialect, answer: dict[str, Any]) -> dict[str, Any] | None:
    """The error a 2xx answer carries instead of an answer, as an error body of its dialect."""
    if answer.get("type") == "error":  # Anthropic
        return answer
    error = answer.get("error")
    if isinstance(error, dict) or _visible(error):
        return {"error": error}
    if dialect is Dialect.OPENAI_RESPONSES and answer.get("status") == "failed":
        return {"error": {"message": "the response failed", "code": "server_error"}}
    for choice in answer.get("choices") or []:  # OpenRouter: an error as the choice's finish_reason
        if not isinstance(choice, dict):
            continue
        inner = as_object(choice.get("error"))
        if inner or choice.get("finish_reason") == "error":
            return {"error": {"message": "the provider ended the answer with an error", "code": "server_error",
                              **inner}}
    return None


def from_answer(dialect: Dialect, answer: dict, request: dict | None, *,
                key_from_rules: bool = False) -> Failure | None:
    """A complete non-streamed 2xx JSON answer: an error inside it, an empty answer, a missing forced tool
    call, or a token limit reached before any content; None when it is a usable answer."""
    dialect = Dialect(dialect)
    if (error := _answer_error(dialect, answer)) is not None:
        return in_band("error_in_200", error, key_from_rules=key_from_rules)
    out = _Output()
    if dialect is Dialect.ANTHROPIC:
        for block in answer.get("content") or []:
            _anthropic_block(block, out)
        out.stop = answer.get("stop_reason")
    elif dialect is Dialect.OPENAI_CHAT:
        for choice in answer.get("choices") or []:
            if isinstance(choice, dict):
                _chat_message(choice.get("message"), out)
                out.stop = choice.get("finish_reason") or out.stop
        out.reasoning_tokens(answer.get("usage"), ("completion_tokens_details", "reasoning_tokens"))
    elif dialect is Dialect.OPENAI_RESPONSES:
        _responses_object(answer, out)
    else:
        _gemini_chunk(answer, out)
    return out.verdict(dialect, request)


def answer_model(dialect: Dialect, payload: dict[str, Any]) -> str | None:
    """The model an answer (or one streamed event) says it came from: `model` of a chat completion, its
    chunks and an Anthropic message, Anthropic's `message_start`, a Responses object or its
    `response.*` events, Gemini's `modelVersion`."""
    if dialect is Dialect.GEMINI:
        found = payload.get("modelVersion")
    elif isinstance(payload.get("message"), dict):  # Anthropic message_start
        found = payload["message"].get("model")
    elif isinstance(payload.get("response"), dict):  # Responses response.created / .completed
        found = payload["response"].get("model")
    else:
        found = payload.get("model")
    return found if isinstance(found, str) and found else None


# ---------------------------------------------------------------- streams

# Past the commit point only errors, the finish, the end marker and usage blocks change what the watch
# knows; an event whose bytes hint at none of them (in its dialect) is routine. A key's quotes are bare only
# outside JSON strings (inside one they are escaped), so `usage":` and `_reason":` match real keys; their
# null values (OpenAI sends `"usage":null`, `"finish_reason":null` in every chunk) are routine. A word that
# merely appears in text (an answer that says "error") costs one parse, never a miss. One short pattern per
# dialect: a block is searched once, in about a microsecond.
_NOTABLE = {
    Dialect.OPENAI_CHAT: re.compile(rb'error|\[DONE\]|_reason"\s*:\s*[^\sn]|usage"\s*:\s*[^\sn]'),
    Dialect.ANTHROPIC: re.compile(rb'error|\[DONE\]|message_(?:delta|stop)'),  # stop_reason, usage: message_delta
    Dialect.OPENAI_RESPONSES: re.compile(rb'error|\[DONE\]|response\.(?:completed|incomplete|failed)'),
    Dialect.GEMINI: re.compile(rb'error|\[DONE\]|usageMetadata|finishReason|promptFeedback'),
}
MAX_DEFERRED = 256 << 10  # a settled stream's routine events kept unread (about 1,000): past this, read


def _routine(block: bytes, notable: re.Pattern[bytes]) -> bool:
    """One event whose JSON is on its one `data:` line (so its bytes are its data) and hints at nothing
    `notable` looks for."""
    if block.startswith(b"data"):
        single = block.startswith(b"data:") and b"\ndata" not in block
    else:
        single = block.count(b"\ndata") == 1 and b"\ndata:" in block
    return single and notable.search(block) is None



class StreamWatch:
    """Watches an upstream SSE stream (in the upstream's dialect) for the commit point and for failures.

    `meaningful` turns True at the first text, tool call or reasoning delta (an Anthropic message_start,
    ping or empty text block start, an OpenAI role-only delta, OpenRouter's ": OPENROUTER PROCESSING"
    comments are not). `committable` is the commit point: meaningful, and when the request forces a tool
    call (tool_choice), a tool call has begun, so an answer that opens with text is held until its call
    arrives (or judged `no_tool_call` when it ends without one). `failure` is set by the first error
    event. `finish()` judges the ended stream like `from_answer`; `complete` says whether it ended with
    its dialect's end marker (a stream without one was cut). `model` is the model the stream says
    answered (OpenRouter names the entry of its `models` list that served). Gemini is watched in its
    alt=sse form; its JSON-array stream is not SSE.

    Settled (committable, its model known, no failure), only a few events can change any of this: the
    routine rest (text, tool-call and reasoning deltas: about one per token) is counted, not parsed, and
    kept for the usage estimate, which `usage` reads only when the provider's own counts are incomplete
    (past MAX_DEFERRED bytes they are read on the spot, so the memory stays bounded).
    """

    def __init__(self, dialect: Dialect, request: dict | None, *, key_from_rules: bool = False) -> None:
        self.dialect = Dialect(dialect)
        self.request = request
        self.key_from_rules = key_from_rules
        self.meaningful = False
        self.failure: Failure | None = None
        self.events = 0  # complete SSE events (comments are not events)
        self.end_seen = False  # the dialect's end marker arrived ([DONE], message_stop, response.completed, ...)
        self.model: str | None = None  # the first model name the stream gives
        self.tool_forced = tool_required(self.dialect, request)
        self._out = _Output()
        self._parser = SSEParser()
        self._usage = StreamUsage(self.dialect)  # the provider's token counts, read on the way past
        self.overflowed = False  # an event grew past sse.MAX_EVENT_BYTES: the stream is given up
        self._settled = False
        self._notable = _NOTABLE[self.dialect]
        self.skimmed = 0  # events of the settled stream counted without being parsed (routine ones)
        self._deferred: list[bytes] = []  # routine events of the settled stream, for their text
        self._deferred_bytes = 0

    @property
    def usage(self) -> StreamUsage:
        """The usage seen so far; the deferred events' text is read only when an estimate may need it."""
        if self._deferred:
            found = self._usage.result()
            if found is None or found.input_tokens is None or found.output_tokens is None:
                self._read_deferred()
        return self._usage

    def feed(self, chunk: bytes) -> None:
        for block in self._parser.blocks(chunk):
            if self._settled and _routine(block, self._notable):
                self.events += 1
                self.skimmed += 1
                self._defer(block)
                continue
            if (event := parse_block(block)) is None:
                continue
            self.events += 1
            if self.failure is None:
                self._event(event, block)
                self.meaningful = self.meaningful or self._out.anything
                self._settled = self.failure is None and self.model is not None and self.committable
        if self._parser.overflowed and not self.overflowed:
            self.overflowed = True  # a bad answer like one that is not JSON: another model may do better
            self.failure = self.failure or Failure(
                "error_in_200", 200, True, False,
                f"the provider's stream sent over {self._parser.max_event >> 20} MB without ending an event")

    @property
    def committable(self) -> bool:
        return self.meaningful and (self._out.tool_call or not self.tool_forced)

    @property
    def complete(self) -> bool:
        """The stream ended as its dialect ends one (a chat stream's finish_reason counts: some servers
        that speak Chat Completions never send `[DONE]`)."""
        return self.end_seen or (self.dialect is Dialect.OPENAI_CHAT and self._out.stop is not None)

    def finish(self) -> Failure | None:
        if self.failure is not None:
            return self.failure
        return self._out.verdict(self.dialect, self.request)

    # -- the settled stream's routine events

    def _defer(self, block: bytes) -> None:
        self._deferred.append(block)
        self._deferred_bytes += len(block)
        if self._deferred_bytes > MAX_DEFERRED:
            self._read_deferred()

    def _read_deferred(self) -> None:
        """The deferred events' text, in stream order (their numbers were taken when they arrived)."""
        for block in self._deferred:
            event = parse_block(block)
            try:
                payload = json.loads(event.data) if event is not None else None
            except ValueError:
                continue
            if event is not None and isinstance(payload, dict):
                self._usage.event(event.event, payload, numbers=False)
        self._deferred.clear()
        self._deferred_bytes = 0

    # -- one event

    def _event(self, event: SSEEvent, block: bytes) -> None:
        if event.data.strip() == "[DONE]":
            self.end_seen = True
            return
        try:
            payload = json.loads(event.data)
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        if self._settled:  # its text joins the deferred, in order
            self._usage.event(event.event, payload, text=False)
            self._defer(block)
        else:
            self._usage.event(event.event, payload)
        if self.model is None:
            self.model = answer_model(self.dialect, payload)
        if self.dialect is Dialect.ANTHROPIC:
            self._anthropic(payload.get("type") or event.event, payload)
        elif self.dialect is Dialect.OPENAI_RESPONSES:
            self._responses(payload.get("type") or event.event, payload)
        elif payload.get("error") is not None:  # OpenAI / OpenRouter / Gemini: an error object in a data event
            self._fail({"error": payload["error"]})
        elif self.dialect is Dialect.OPENAI_CHAT:
            self._chat(payload)
        else:
            self.end_seen |= _gemini_chunk(payload, self._out)

    def _fail(self, error_body: dict[str, Any]) -> None:
        self.failure = in_band("stream_error", error_body, key_from_rules=self.key_from_rules)

    def _chat(self, payload: dict[str, Any]) -> None:
        for choice in payload.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            _chat_message(choice.get("delta"), self._out)
            if choice.get("finish_reason") == "error":  # OpenRouter without an error object
                self._fail({"error": {"message": "the provider ended the stream with an error",
                                      "code": "server_error"}})
            elif choice.get("finish_reason"):
                self._out.stop = choice["finish_reason"]
        self._out.reasoning_tokens(payload.get("usage"), ("completion_tokens_details", "reasoning_tokens"))

    def _anthropic(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "error":
            self._fail(payload if isinstance(payload.get("error"), dict) else
                       {"type": "error", "error": {"type": "api_error", "message": str(payload.get("error"))}})
        elif kind == "content_block_start":
            _anthropic_block(payload.get("content_block"), self._out)
        elif kind == "content_block_delta":
            delta = as_object(payload.get("delta"))
            if delta.get("type") == "text_delta":
                self._out.text |= _visible(delta.get("text"))
            elif delta.get("type") == "thinking_delta":
                self._out.reasoning |= _visible(delta.get("thinking"))
            elif delta.get("type") == "input_json_delta":
                self._out.tool_call = True
        elif kind == "message_delta":
            delta = as_object(payload.get("delta"))
            self._out.stop = delta.get("stop_reason") or self._out.stop
        elif kind == "message_stop":
            self.end_seen = True

    def _responses(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "error":
            error = payload.get("error") if isinstance(payload.get("error"), dict) else \
                {k: payload[k] for k in ("code", "message", "param") if k in payload}
            self._fail({"error": error or {"message": "error event without details"}})
        elif kind == "response.failed":
            response = as_object(payload.get("response"))
            error = response.get("error") if isinstance(response.get("error"), dict) else None
            self._fail({"error": error or {"message": "the response failed", "code": "server_error"}})
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            self._out.text |= _visible(payload.get("delta"))
        elif kind.startswith("response.reasoning") and kind.endswith(".delta"):
            self._out.reasoning |= _visible(payload.get("delta"))
        elif kind in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta"):
            self._out.tool_call = True
        elif kind in ("response.output_item.added", "response.output_item.done"):
            _responses_item(payload.get("item"), self._out)
        elif kind in ("response.completed", "response.incomplete"):
            _responses_object(payload.get("response"), self._out)
            self.end_seen = True
