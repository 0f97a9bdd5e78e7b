"""A chat provider's streamed answer translated on the fly into the Responses event sequence, for Codex
and other Responses agents whose request went to Chat Completions (responses.py). Same
protocol as stream.py: `feed(bytes) -> bytes`, `finish() -> bytes`, `first_content`, `error`.
The other way (a Responses provider's events as chat chunks) is `ResponsesToChatStream` in
responses_chat.py.

Pure logic, no mitmproxy. Event sequences follow
https://platform.openai.com/docs/api-reference/responses-streaming (response.created, response.in_progress,
per output item output_item.added ... output_item.done, content_part.added/.done, output_text.delta/.done,
function_call_arguments.delta/.done, custom_tool_call_input.delta/.done, reasoning_summary_part.added/.done
and reasoning_summary_text.delta/.done, then response.completed, or response.incomplete / response.failed;
every event with its `sequence_number`) and what the clients check: the `openai` SDK's stream
accumulator (lifecycle ids, output indexes, items finished before completion) and Codex, which takes each
item from `output_item.done` and the usage from `response.completed` (openai/codex,
codex-api/src/sse/responses.rs). Chat chunks as in stream.py.

Decisions:

* chat -> Responses: reasoning, text and each tool call are output items in the order their deltas
  arrive; a change of kind finishes the open text or reasoning item, tool calls are finished at the end
  (their arguments may interleave). Function arguments stream as they come; a custom tool's input is
  the string inside its function's JSON arguments, so it is sent whole when the call ends.
* The Responses events repeat the whole text in their .done events and in response.completed, so the
  translator holds the answer: up to MAX_HELD bytes, past which the stream fails (response.failed)
  rather than grow without bound.
* An upstream error inside the stream ends the translated stream with `response.failed` carrying the
  error (code as translate_errors.responses_error).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from addons.translate.errors import read_error, responses_error, status_of
from addons.translate.responses_answers import (
    INCOMPLETE,
    id_stem,
    item_id,
    message_item,
    reasoning_item,
    response_object,
    responses_usage,
    text_part,
)
from addons.translate.responses_tools import ResponsesContext, call_item, custom_input, dicts
from addons.wire.jsontext import as_object, get_typed, loads_object
from addons.wire.jsontext import dumps as _dumps
from addons.wire.sse import SSEParser

MAX_HELD = 32 << 20  # bytes of answer text a chat -> Responses translator holds for the .done events


@dataclasses.dataclass
class _Open:
    """The text or reasoning item being streamed."""

    kind: str  # message | reasoning
    index: int
    ident: str
    parts: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Call:
    call_id: str | None = None
    name: str | None = None
    arguments: list[str] = dataclasses.field(default_factory=list)
    index: int | None = None  # output index, once its item was added
    ident: str = ""


class ChatToResponsesStream:
    """Upstream chat chunks -> Responses events."""

    def __init__(self, model: str, context: ResponsesContext) -> None:
        self.first_content = False
        self.error: dict[str, Any] | None = None
        self._parser = SSEParser()
        self._context, self._model = context, model
        self._seq = 0
        self._started = self._ended = False
        self._stem, self._created = "", 0
        self._items: list[dict[str, Any] | None] = []  # finished items by output index (None while open)
        self._open: _Open | None = None
        self._calls: dict[int, _Call] = {}  # call number -> call
        self._call_of_index: dict[int, int] = {}  # chat tool_calls[].index -> call number
        self._finish: str | None = None
        self._usage: Any = None
        self._held = 0

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        for event in self._parser.feed(chunk):
            if self._ended:
                break
            if event.data.strip() == "[DONE]":
                out += self._end()
            elif (payload := loads_object(event.data)) is not None:
                out += self._chunk(payload)
        return bytes(out)

    def finish(self) -> bytes:
        return self._end()

    # -- events

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        return f"event: {kind}\ndata: {_dumps(payload)}\n\n".encode()

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        output = [item for item in self._items if item is not None] if status != "in_progress" else []
        return response_object(self._context, self._stem, self._created, self._model, status, output,
                               responses_usage(self._usage) if status != "in_progress" else None, **extra)

    def _start(self, payload: dict[str, Any]) -> bytes:
        if self._started:
            return b""
        self._started = True
        self._stem = id_stem(payload.get("id"))
        self._created = get_typed(payload, "created", int, int(time.time()))
        self._model = get_typed(payload, "model", str, self._model)
        response = self._response("in_progress")
        return self._event("response.created", response=response) + \
            self._event("response.in_progress", response=response)

    def _chunk(self, payload: dict[str, Any]) -> bytes:
        if payload.get("error") is not None:  # OpenAI {"error": ...}; OpenRouter adds it to a chunk
            return self._fail(payload)
        out = self._start(payload)
        if isinstance(payload.get("usage"), dict):
            self._usage = payload["usage"]
        choice = next((c for c in dicts(payload.get("choices")) if c.get("index", 0) == 0), None)
        if choice is None:
            return out
        delta = as_object(choice.get("delta"))
        reasoning = delta.get("reasoning") or delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            out += self._delta("reasoning", reasoning)
        for text in (delta.get("content"), delta.get("refusal")):
            if isinstance(text, str) and text:
                out += self._delta("message", text)
        for call in dicts(delta.get("tool_calls")):
            out += self._tool_delta(call)
        if isinstance(choice.get("finish_reason"), str):
            self._finish = choice["finish_reason"]
        if self._held > MAX_HELD:
            return out + self._fail({"error": {"code": "server_error", "message": (
                f"Clutch: the answer grew past {MAX_HELD >> 20} MiB, more than it holds to translate it")}})
        return out

    def _delta(self, kind: str, text: str) -> bytes:
        out = b""
        if self._open is None or self._open.kind != kind:
            out += self._close()
            index = len(self._items)
            self._items.append(None)
            self._open = _Open(kind, index, item_id(self._context, kind, self._stem, index))
            if kind == "reasoning":
                out += self._event("response.output_item.added", output_index=index,
                                   item=reasoning_item(self._open.ident, ""))
                out += self._event("response.reasoning_summary_part.added", item_id=self._open.ident,
                                   output_index=index, summary_index=0, part={"type": "summary_text", "text": ""})
            else:
                out += self._event("response.output_item.added", output_index=index,
                                   item=message_item(self._open.ident, "", "in_progress"))
                out += self._event("response.content_part.added", item_id=self._open.ident, output_index=index,
                                   content_index=0, part=text_part(""))
        self._open.parts.append(text)
        self._held += len(text)
        self.first_content = True
        if kind == "reasoning":
            return out + self._event("response.reasoning_summary_text.delta", item_id=self._open.ident,
                                     output_index=self._open.index, summary_index=0, delta=text)
        return out + self._event("response.output_text.delta", item_id=self._open.ident,
                                 output_index=self._open.index, content_index=0, delta=text, logprobs=[])

    def _close(self) -> bytes:
        """Finish the open text or reasoning item."""
        open_, self._open = self._open, None
        if open_ is None:
            return b""
        text, index, ident = "".join(open_.parts), open_.index, open_.ident
        if open_.kind == "reasoning":
            item = reasoning_item(ident, text)
            out = self._event("response.reasoning_summary_text.done", item_id=ident, output_index=index,
                              summary_index=0, text=text)
            out += self._event("response.reasoning_summary_part.done", item_id=ident, output_index=index,
                               summary_index=0, part={"type": "summary_text", "text": text})
        else:
            item = message_item(ident, text)
            out = self._event("response.output_text.done", item_id=ident, output_index=index, content_index=0,
                              text=text, logprobs=[])
            out += self._event("response.content_part.done", item_id=ident, output_index=index, content_index=0,
                               part=text_part(text))
        self._items[index] = item
        return out + self._event("response.output_item.done", output_index=index, item=item)

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        # `index` identifies the call; a new id under a known index is a new call too (some servers number
        # every call 0), and a fragment without an index is a whole call (as in stream.py).
        chat_index = get_typed(call, "index", int, None)
        number = self._call_of_index.get(chat_index) if chat_index is not None else None
        if number is None or (call.get("id") and self._calls[number].call_id not in (None, call["id"])):
            number = len(self._calls)
            self._calls[number] = _Call()
            if chat_index is not None:
                self._call_of_index[chat_index] = number
        state = self._calls[number]
        function = as_object(call.get("function"))
        state.call_id = state.call_id or get_typed(call, "id", str, None)
        state.name = state.name or get_typed(function, "name", str, None)
        arguments = get_typed(function, "arguments", str, "")
        state.arguments.append(arguments)
        self._held += len(arguments)
        out = b""
        if state.index is None:
            if not state.name:
                return b""  # the name opens the item; some servers send it after the first fragment
            out += self._add_call(number)
            arguments = "".join(state.arguments)
        if arguments and self._context.ref(state.name).kind == "function":
            out += self._event("response.function_call_arguments.delta", item_id=state.ident,
                               output_index=state.index, delta=arguments)
        return out

    def _add_call(self, number: int) -> bytes:
        state = self._calls[number]
        out = self._close()
        state.index = len(self._items)
        self._items.append(None)
        state.call_id = state.call_id or f"call_{self._stem}_{number}"
        state.ident = item_id(self._context, "call", self._stem, state.index, state.name)
        self.first_content = True
        item = call_item(self._context.ref(state.name), state.call_id, "", state.ident, "in_progress")
        return out + self._event("response.output_item.added", output_index=state.index, item=item)

    def _finish_call(self, state: _Call) -> bytes:
        assert state.index is not None, "_end adds the item of every call before finishing it"
        ref, arguments = self._context.ref(state.name), "".join(state.arguments)
        out = b""
        if ref.kind == "function":
            out += self._event("response.function_call_arguments.done", item_id=state.ident,
                               output_index=state.index, name=state.name or "", arguments=arguments)
        elif ref.kind == "custom":
            raw = custom_input(arguments)
            out += self._event("response.custom_tool_call_input.delta", item_id=state.ident,
                               output_index=state.index, delta=raw)
            out += self._event("response.custom_tool_call_input.done", item_id=state.ident,
                               output_index=state.index, input=raw)
        item = call_item(ref, state.call_id or "", arguments, state.ident)
        self._items[state.index] = item
        return out + self._event("response.output_item.done", output_index=state.index, item=item)

    def _end(self) -> bytes:
        if self._ended:
            return b""
        out = self._start({}) + self._close()
        for number, state in self._calls.items():
            if state.index is None:  # a call whose name never came: still deliver what it had
                out += self._add_call(number)
        for state in sorted(self._calls.values(), key=lambda c: c.index or 0):
            out += self._finish_call(state)
        self._ended = True
        reason = INCOMPLETE.get(self._finish) if self._finish is not None and not self._calls else None
        if reason:
            return out + self._event("response.incomplete", response=self._response("incomplete", incomplete=reason))
        return out + self._event("response.completed", response=self._response("completed"))

    def _fail(self, payload: dict[str, Any]) -> bytes:
        error = read_error(payload)
        self.error = payload["error"] if isinstance(payload["error"], dict) else {"message": str(payload["error"])}
        out = self._start({}) + self._close()
        self._ended = True
        failed = self._response("failed", error=responses_error(error, error.status or status_of(error)))
        return out + self._event("response.failed", response=failed)
