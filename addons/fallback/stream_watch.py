"""Whether an SSE stream is an answer, event by event: its commit point, an error event inside a 200,
how it ended, and the provider's usage block, read on the way past (`StreamWatch`).

Pure logic, no mitmproxy. A complete answer is judged by `checks.from_answer`; this module reads the
same parts of an answer (checks.py's per-dialect readers) from a stream's deltas, and judges the ended
stream the same way. Decisions and references: checks.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

from addons.fallback.checks import (
    Output,
    answer_model,
    anthropic_block,
    chat_message,
    gemini_chunk,
    responses_item,
    responses_object,
    tool_required,
    visible,
)
from addons.fallback.policy import Failure, in_band
from addons.wire.dialects import Dialect
from addons.wire.jsontext import as_object
from addons.wire.sse import SSEEvent, SSEParser, parse_block
from addons.wire.usage_blocks import StreamUsage

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
        self._out = Output()
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
            self.end_seen |= gemini_chunk(payload, self._out)

    def _fail(self, error_body: dict[str, Any]) -> None:
        self.failure = in_band("stream_error", error_body, key_from_rules=self.key_from_rules)

    def _chat(self, payload: dict[str, Any]) -> None:
        for choice in payload.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            chat_message(choice.get("delta"), self._out)
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
            anthropic_block(payload.get("content_block"), self._out)
        elif kind == "content_block_delta":
            delta = as_object(payload.get("delta"))
            if delta.get("type") == "text_delta":
                self._out.text |= visible(delta.get("text"))
            elif delta.get("type") == "thinking_delta":
                self._out.reasoning |= visible(delta.get("thinking"))
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
            self._out.text |= visible(payload.get("delta"))
        elif kind.startswith("response.reasoning") and kind.endswith(".delta"):
            self._out.reasoning |= visible(payload.get("delta"))
        elif kind in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta"):
            self._out.tool_call = True
        elif kind in ("response.output_item.added", "response.output_item.done"):
            responses_item(payload.get("item"), self._out)
        elif kind in ("response.completed", "response.incomplete"):
            responses_object(payload.get("response"), self._out)
            self.end_seen = True
