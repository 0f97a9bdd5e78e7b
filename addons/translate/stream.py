"""Streamed answers translated on the fly: OpenAI chat chunks <-> Anthropic Messages events.

Pure logic, no mitmproxy. A translator is fed the upstream's raw SSE bytes with whatever chunk boundaries
the network produced (`addons.wire.sse.SSEParser` reassembles the events) and returns the client's SSE bytes at
once, so nothing is buffered beyond the event being read. Requests and whole answers are translated in
`anthropic_to_chat.py` and `chat_to_anthropic.py`, errors in `errors.py`; the mappings shared with them
(stop reasons, ids, usage) are in `vocabulary.py`.

Event sequences follow the public references:

* Anthropic: https://docs.anthropic.com/en/docs/build-with-claude/streaming (message_start, per content
  block content_block_start / content_block_delta / content_block_stop, message_delta, message_stop;
  `event: error` for errors after the response started).
* OpenAI: https://platform.openai.com/docs/api-reference/chat-streaming (chat.completion.chunk, the usage
  chunk with empty choices under stream_options.include_usage, `data: [DONE]`) and
  https://platform.openai.com/docs/guides/function-calling (tool call deltas keyed by `index`, the first
  fragment carrying id and name).
* OpenRouter: https://openrouter.ai/docs/api-reference/streaming (`: OPENROUTER PROCESSING` comments,
  errors inside a 200 stream as a chunk with an `error` object and finish_reason "error"),
  https://openrouter.ai/docs/use-cases/reasoning-tokens (`delta.reasoning`).

Decisions:

* chat -> Anthropic: blocks are opened one at a time in the order the deltas arrive (reasoning -> text ->
  each tool call); a change of kind closes the open block. message_delta waits for `[DONE]` (or the end of
  the stream) because usage arrives after the finish_reason chunk. It carries input and cache tokens too,
  since a chat stream reports them only at the end (Anthropic's message_delta usage is cumulative).
* Anthropic -> chat: thinking becomes OpenRouter's `delta.reasoning`; server tool blocks
  (server_tool_use, web_search_tool_result, ...) and signatures have no chat form and are skipped.
* An upstream error inside the stream ends the translated stream with the client dialect's error event
  and nothing after it: Anthropic `event: error`, or an OpenAI `data: {"error": {...}}` without `[DONE]`,
  as OpenRouter does, so a client never mistakes the truncated answer for a complete one.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from addons.translate.errors import anthropic_error, openai_error, read_error, status_of
from addons.translate.vocabulary import (
    anthropic_message_id,
    anthropic_stop_reason,
    anthropic_tool_id,
    anthropic_usage,
    chat_completion_id,
    chat_finish_reason,
    chat_usage,
)
from addons.wire.jsontext import as_object, get_typed, loads_object
from addons.wire.jsontext import dumps as _dumps
from addons.wire.sse import SSEParser


class StreamTranslator(Protocol):
    @property
    def first_content(self) -> bool:
        """True once a text, tool call or reasoning delta was emitted."""

    @property
    def error(self) -> dict[str, Any] | None:
        """The upstream's in-stream error object, if it sent one."""

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


def _anthropic_event(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: {_dumps(payload)}\n\n".encode()


def _chat_event(payload: dict[str, Any] | str) -> bytes:
    return f"data: {payload if isinstance(payload, str) else _dumps(payload)}\n\n".encode()


class ChatToAnthropicStream:
    """Upstream OpenAI chat chunks -> Anthropic Messages events."""

    def __init__(self, model: str) -> None:
        self.first_content = False
        self.error: dict[str, Any] | None = None
        self._parser = SSEParser()
        self._model = model
        self._started = False
        self._ended = False
        self._next_index = 0
        self._open: tuple[str, int] | None = None  # (kind, chat tool index or -1) of the open block
        self._open_index = 0
        self._tools: dict[int, dict[str, Any]] = {}  # call number -> id, name, block index, pending args
        self._call_of_index: dict[int, int] = {}  # chat tool_calls[].index -> call number
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None
        self._message_id = ""

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        for event in self._parser.feed(chunk):
            if self._ended:
                break
            if event.data.strip() == "[DONE]":
                out += self._end()
                continue
            if (payload := loads_object(event.data)) is not None:
                out += self._chunk(payload)
        return bytes(out)

    def finish(self) -> bytes:
        return self._end()

    # -- events

    def _start(self, payload: dict[str, Any]) -> bytes:
        if self._started:
            return b""
        self._started = True
        self._message_id = anthropic_message_id(payload.get("id"))
        self._model = payload.get("model") or self._model
        usage = anthropic_usage(payload.get("usage")) if isinstance(payload.get("usage"), dict) else {}
        return _anthropic_event({"type": "message_start", "message": {
            "id": self._message_id, "type": "message", "role": "assistant", "model": self._model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": usage.get("input_tokens", 0), "output_tokens": 0,
                      "cache_read_input_tokens": usage.get("cache_read_input_tokens", 0),
                      "cache_creation_input_tokens": usage.get("cache_creation_input_tokens", 0)}}})

    def _chunk(self, payload: dict[str, Any]) -> bytes:
        if payload.get("error") is not None:  # OpenAI {"error": ...}; OpenRouter adds it to a chunk
            return self._fail(payload)
        out = self._start(payload)
        if isinstance(payload.get("usage"), dict):
            self._usage = payload["usage"]
        choices = payload.get("choices") or []
        choice = next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), None)
        if choice is None:
            return out
        delta = as_object(choice.get("delta"))
        reasoning = delta.get("reasoning") or delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            out += self._delta(("thinking", -1), {"type": "thinking_delta", "thinking": reasoning})
        for text in (delta.get("content"), delta.get("refusal")):
            if isinstance(text, str) and text:
                out += self._delta(("text", -1), {"type": "text_delta", "text": text})
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                out += self._tool_delta(call)
        if choice.get("finish_reason"):
            self._finish_reason = choice["finish_reason"]
            out += self._close()
        return out

    def _delta(self, kind: tuple[str, int], delta: dict[str, Any]) -> bytes:
        out = b""
        if self._open != kind:
            out += self._close()
            block = {"type": "thinking", "thinking": "", "signature": ""} if kind[0] == "thinking" \
                else {"type": "text", "text": ""}
            out += self._open_block(kind, block)
        self.first_content = True
        return out + _anthropic_event({"type": "content_block_delta", "index": self._open_index, "delta": delta})

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        # `index` identifies the call; a new id under a known index is a new call too (some servers number
        # every call 0), and a fragment without an index is a whole call (Gemini's OpenAI compatibility).
        chat_index = get_typed(call, "index", int, None)
        index = self._call_of_index.get(chat_index) if chat_index is not None else None
        if index is None or (call.get("id") and self._tools[index]["id"] not in (None, call["id"])):
            index = len(self._tools)
            self._tools[index] = {"id": None, "name": None, "block": None, "pending": ""}
            if chat_index is not None:
                self._call_of_index[chat_index] = index
        tool = self._tools[index]
        function = as_object(call.get("function"))
        tool["id"] = tool["id"] or call.get("id")
        tool["name"] = tool["name"] or function.get("name")
        arguments = get_typed(function, "arguments", str, "")
        out = b""
        if tool["block"] is None:
            tool["pending"] += arguments
            if not tool["name"]:
                return b""  # the name opens the block; some servers send it after the first fragment
            out += self._open_tool(index)
            arguments, tool["pending"] = tool["pending"], ""
        if arguments:
            # A fragment for a call whose block was already closed (interleaved parallel calls) still goes to
            # that call's block index, where Anthropic clients accumulate input by index.
            out += _anthropic_event({"type": "content_block_delta", "index": tool["block"],
                                     "delta": {"type": "input_json_delta", "partial_json": arguments}})
        return out

    def _open_tool(self, index: int) -> bytes:
        tool = self._tools[index]
        tool_id = anthropic_tool_id(tool["id"], f"toolu_{self._message_id.removeprefix('msg_')}_{index}")
        out = self._close() + self._open_block(("tool", index), {"type": "tool_use", "id": tool_id,
                                                                  "name": tool["name"] or "", "input": {}})
        tool["block"] = self._open_index
        self.first_content = True
        return out

    def _open_block(self, kind: tuple[str, int], block: dict[str, Any]) -> bytes:
        self._open, self._open_index = kind, self._next_index
        self._next_index += 1
        return _anthropic_event({"type": "content_block_start", "index": self._open_index, "content_block": block})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _anthropic_event({"type": "content_block_stop", "index": self._open_index})

    def _end(self) -> bytes:
        if self._ended:
            return b""
        out = self._start({})
        for index, tool in self._tools.items():
            if tool["block"] is None:  # a call whose name never came: still deliver what it had
                out += self._open_tool(index)
                if tool["pending"]:
                    out += _anthropic_event({"type": "content_block_delta", "index": tool["block"], "delta": {
                        "type": "input_json_delta", "partial_json": tool["pending"]}})
        out += self._close()
        self._ended = True
        usage = anthropic_usage(self._usage)
        return out + _anthropic_event({
            "type": "message_delta",
            "delta": {"stop_reason": anthropic_stop_reason(self._finish_reason, bool(self._tools)),
                      "stop_sequence": None},
            "usage": usage}) + _anthropic_event({"type": "message_stop"})

    def _fail(self, payload: dict[str, Any]) -> bytes:
        error = read_error(payload)
        self.error = payload["error"] if isinstance(payload["error"], dict) else {"message": str(payload["error"])}
        self._ended = True
        return _anthropic_event(anthropic_error(error, error.status or status_of(error)))


class AnthropicToChatStream:
    """Upstream Anthropic Messages events -> OpenAI chat chunks and `data: [DONE]`."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.first_content = False
        self.error: dict[str, Any] | None = None
        self._parser = SSEParser()
        self._model = model
        self._include_usage = include_usage
        self._id = ""
        self._created = 0
        self._started = False
        self._ended = False
        self._usage: dict[str, Any] = {}
        self._finish_reason: str | None = None
        # Anthropic block index -> chat tool call index; an index that is not a number is read as none (a
        # list there made the whole stream raise)
        self._tool_index: dict[int | None, int] = {}

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        for event in self._parser.feed(chunk):
            if self._ended:
                break
            if (payload := loads_object(event.data)) is not None:
                out += self._event(payload.get("type") or event.event, payload)
        return bytes(out)

    def finish(self) -> bytes:
        return self._end()

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk: dict[str, Any] = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                                 "model": self._model,
                                 "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                              "finish_reason": finish_reason}]}
        if self._include_usage:
            chunk["usage"] = None  # as OpenAI does on every chunk but the last under include_usage
        return _chat_event(chunk)

    def _start(self, message: dict[str, Any]) -> bytes:
        if self._started:
            return b""
        self._started = True
        self._id = chat_completion_id(message.get("id"))
        self._created = int(time.time())
        self._model = message.get("model") or self._model
        if isinstance(message.get("usage"), dict):
            self._usage.update(message["usage"])
        return self._chunk({"role": "assistant", "content": ""})

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        if kind == "message_start":
            return self._start(as_object(payload.get("message")))
        if kind == "error":
            return self._fail(payload)
        out = self._start({})
        index = get_typed(payload, "index", int, None)
        if kind == "content_block_start":
            out += self._block_start(index, as_object(payload.get("content_block")))
        elif kind == "content_block_delta":
            out += self._block_delta(index, as_object(payload.get("delta")))
        elif kind == "message_delta":
            out += self._message_delta(payload)
        elif kind == "message_stop":
            out += self._end()
        return out

    def _block_start(self, index: int | None, block: dict[str, Any]) -> bytes:
        """A tool_use block opens a chat tool call; text and thinking blocks may come with content."""
        if block.get("type") == "tool_use":
            self._tool_index[index] = len(self._tool_index)
            self.first_content = True
            # input is {} when streamed as input_json_delta; an upstream may also send it whole here
            arguments = _dumps(block["input"]) if isinstance(block.get("input"), dict) and block["input"] else ""
            return self._chunk({"tool_calls": [{"index": self._tool_index[index], "id": block.get("id", ""),
                                                "type": "function", "function": {"name": block.get("name", ""),
                                                                                 "arguments": arguments}}]})
        if block.get("type") == "text" and block.get("text"):
            return self._text(block["text"])
        if block.get("type") == "thinking" and block.get("thinking"):
            return self._reasoning(block["thinking"])
        return b""

    def _block_delta(self, index: int | None, delta: dict[str, Any]) -> bytes:
        if delta.get("type") == "text_delta" and delta.get("text"):
            return self._text(delta["text"])
        if delta.get("type") == "thinking_delta" and delta.get("thinking"):
            return self._reasoning(delta["thinking"])
        if delta.get("type") == "input_json_delta" and delta.get("partial_json") and index in self._tool_index:
            return self._chunk({"tool_calls": [{"index": self._tool_index[index],
                                                "function": {"arguments": delta["partial_json"]}}]})
        return b""

    def _message_delta(self, payload: dict[str, Any]) -> bytes:
        """Usage so far, and the stop reason: the chat chunk that carries finish_reason."""
        delta = as_object(payload.get("delta"))
        if isinstance(payload.get("usage"), dict):  # cumulative: later counts replace earlier ones
            self._usage.update({k: v for k, v in payload["usage"].items() if v is not None})
        if delta.get("stop_reason") and self._finish_reason is None:
            self._finish_reason = chat_finish_reason(delta["stop_reason"])
            return self._chunk({}, self._finish_reason)
        return b""

    def _text(self, text: str) -> bytes:
        self.first_content = True
        return self._chunk({"content": text})

    def _reasoning(self, text: str) -> bytes:
        self.first_content = True
        return self._chunk({"reasoning": text})

    def _end(self) -> bytes:
        if self._ended:
            return b""
        out = self._start({})
        self._ended = True
        if self._finish_reason is None:  # the upstream ended without a message_delta
            self._finish_reason = "tool_calls" if self._tool_index else "stop"
            out += self._chunk({}, self._finish_reason)
        if self._include_usage:
            out += _chat_event({"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                                "model": self._model, "choices": [], "usage": chat_usage(self._usage)})
        return out + _chat_event("[DONE]")

    def _fail(self, payload: dict[str, Any]) -> bytes:
        error = read_error(payload)
        self.error = payload["error"] if isinstance(payload.get("error"), dict) else {"message": error.message}
        self._ended = True
        return _chat_event(openai_error(error, status_of(error)))


def chat_stream_to_anthropic(model: str) -> StreamTranslator:
    return ChatToAnthropicStream(model)


def anthropic_stream_to_chat(model: str, include_usage: bool) -> StreamTranslator:
    return AnthropicToChatStream(model, include_usage)
