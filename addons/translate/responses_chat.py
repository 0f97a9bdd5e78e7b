"""A Chat Completions client routed to a provider that speaks only the Responses API: its request as a
Responses request, and the Responses event stream as chat chunks (`ResponsesToChatStream`, the protocol
of stream.py). A whole Response as a chat.completion is in responses_answers.py.

Pure logic, no mitmproxy. Shapes: https://platform.openai.com/docs/api-reference/chat/create,
https://platform.openai.com/docs/api-reference/chat-streaming,
https://platform.openai.com/docs/api-reference/responses/create,
https://platform.openai.com/docs/api-reference/responses/object and
https://platform.openai.com/docs/api-reference/responses-streaming.

Decisions:

* Leading system / developer messages become `instructions`; later ones stay input messages in place.
* `store` is false unless the client asked for it: a chat client never continues from a stored response,
  and the Responses API stores by default.
* The Responses API has no stop sequences, `n`, `seed`, penalties or logprobs on this path: dropped with a
  note. max_output_tokens has a minimum of 16 there; smaller limits are raised to it (with a note).
* An OpenRouter-style `reasoning` ({effort} or {max_tokens}) or `reasoning_effort` becomes
  `reasoning.effort`; reasoning summaries come back as OpenRouter's `message.reasoning` (streamed:
  `delta.reasoning`).
* A stream's items may come as deltas or whole in `output_item.done`; whatever did not come as deltas is
  sent from the finished item, so nothing is lost. A custom tool call is sent whole when it is done.
* `response.failed` or an `error` event ends the chat stream with the error chunk and no [DONE], as
  OpenRouter does, so a client never mistakes the truncated answer for a complete one.
"""

from __future__ import annotations

import time
from typing import Any

from addons.translate.errors import openai_error, read_error, status_of
from addons.translate.responses_answers import chat_usage_from_responses, finish_reason_of
from addons.translate.responses_tools import dicts
from addons.translate.vocabulary import chat_completion_id, note_once
from addons.wire.jsontext import as_object, get_typed, loads_object
from addons.wire.jsontext import dumps as _dumps
from addons.wire.sse import SSEParser

MIN_OUTPUT_TOKENS = 16  # the Responses API refuses a smaller max_output_tokens
_HANDLED = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stream",
            "stream_options", "tools", "tool_choice", "parallel_tool_calls", "reasoning_effort", "reasoning", "user",
            "response_format", "store", "metadata", "service_tier", "prompt_cache_key", "safety_identifier",
            "verbosity"}


def _effort(body: dict[str, Any]) -> str | None:
    reasoning = as_object(body.get("reasoning"))
    if reasoning.get("enabled") is False:
        return "none"
    effort = reasoning.get("effort") or body.get("reasoning_effort")
    if isinstance(effort, str):
        return effort
    budget = reasoning.get("max_tokens")
    if isinstance(budget, int):
        return "low" if budget < 4096 else "medium" if budget < 16384 else "high"
    return "medium" if reasoning.get("enabled") is True else None


def _input_parts(content: Any, notes: list[str]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in dicts(content):
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "input_text", "text": str(part.get("text") or "")})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str):
                entry: dict[str, Any] = {"type": "input_image", "image_url": url}
                if isinstance(image, dict) and image.get("detail"):
                    entry["detail"] = image["detail"]
                parts.append(entry)
        elif kind == "file" and isinstance(part.get("file"), dict):
            parts.append({"type": "input_file", **{k: v for k, v in part["file"].items()
                                                     if k in ("file_data", "file_id", "filename")}})
        elif kind is not None:
            note_once(notes, f"dropped {kind} content part (no Responses counterpart here)")
    return parts


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text") or p.get("refusal") or "") for p in dicts(content))


def _tools(tools: Any, notes: list[str]) -> list[dict[str, Any]]:
    out = []
    for tool in dicts(tools):
        if tool.get("type", "function") == "function" and isinstance(tool.get("function"), dict):
            function = tool["function"]
            entry = {"type": "function", "name": function.get("name", ""),
                     "parameters": function.get("parameters") or {"type": "object", "properties": {}}}
            for key in ("description", "strict"):
                if function.get(key) is not None:
                    entry[key] = function[key]
            out.append(entry)
        elif tool.get("type") == "custom" and isinstance(tool.get("custom"), dict):
            custom = tool["custom"]
            entry = {"type": "custom", "name": custom.get("name", "")}
            if custom.get("description"):
                entry["description"] = custom["description"]
            fmt = as_object(custom.get("format"))
            if fmt.get("type") == "grammar" and isinstance(fmt.get("grammar"), dict):
                entry["format"] = {"type": "grammar", **fmt["grammar"]}
            out.append(entry)
        else:
            notes.append(f"dropped {tool.get('type')} tool")
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if not isinstance(choice, dict):
        return None
    if choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        return {"type": "function", "name": choice["function"].get("name", "")}
    if choice.get("type") == "custom" and isinstance(choice.get("custom"), dict):
        return {"type": "custom", "name": choice["custom"].get("name", "")}
    if choice.get("type") == "allowed_tools" and isinstance(choice.get("allowed_tools"), dict):
        allowed = choice["allowed_tools"]
        tools = [{"type": t.get("type", "function"), "name": (t.get("function") or t.get("custom") or {}).get("name")}
                 for t in dicts(allowed.get("tools"))]
        return {"type": "allowed_tools", "mode": allowed.get("mode", "auto"), "tools": tools}
    return None


def _history(messages: Any, notes: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for message in dicts(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            if not items:
                instructions.append(_text(message.get("content")))
            else:
                items.append({"role": role, "content": _text(message.get("content"))})
        elif role == "user":
            items.append({"role": "user", "content": _input_parts(message.get("content"), notes)})
        elif role == "assistant":
            if message.get("reasoning") or message.get("reasoning_content"):
                note_once(notes, "dropped reasoning from the history (the Responses API takes only its own items)")
            if text := _text(message.get("content")) or (message.get("refusal") or ""):
                items.append({"role": "assistant", "content": text})
            for call in dicts(message.get("tool_calls")):
                if call.get("type") == "custom" and isinstance(call.get("custom"), dict):
                    items.append({"type": "custom_tool_call", "call_id": _str(call.get("id")),
                                  "name": call["custom"].get("name", ""), "input": call["custom"].get("input", "")})
                    continue
                function = as_object(call.get("function"))
                items.append({"type": "function_call", "call_id": _str(call.get("id")),
                              "name": function.get("name", ""), "arguments": function.get("arguments") or "{}"})
        elif role == "tool":
            items.append({"type": "function_call_output", "call_id": _str(message.get("tool_call_id")),
                          "output": _text(message.get("content"))})
        else:
            note_once(notes, f"dropped {role} message")
    return instructions, items


def _pair_custom_outputs(items: list[dict[str, Any]]) -> None:
    """A tool message answering a custom tool call is a custom_tool_call_output."""
    custom = {item["call_id"] for item in items if item.get("type") == "custom_tool_call"}
    for item in items:
        if item.get("type") == "function_call_output" and item["call_id"] in custom:
            item["type"] = "custom_tool_call_output"


def chat_to_responses_request(body: dict[str, Any], model: str, notes: list[str]) -> dict[str, Any]:
    """A Chat Completions request body as a Responses request body."""
    instructions, items = _history(body.get("messages"), notes)
    _pair_custom_outputs(items)
    out: dict[str, Any] = {"model": model}
    if joined := "\n\n".join(text for text in instructions if text):
        out["instructions"] = joined
    out["input"] = items
    out["store"] = body.get("store") is True
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int):
        if limit < MIN_OUTPUT_TOKENS:
            notes.append(f"max tokens {limit} -> {MIN_OUTPUT_TOKENS} (the Responses API's minimum)")
        out["max_output_tokens"] = max(limit, MIN_OUTPUT_TOKENS)
    for field in ("temperature", "top_p", "user", "metadata", "service_tier", "prompt_cache_key",
                  "safety_identifier", "parallel_tool_calls"):
        if body.get(field) is not None:
            out[field] = body[field]
    if body.get("stream") is True:
        out["stream"] = True
    if tools := _tools(body.get("tools"), notes):
        out["tools"] = tools
        if (choice := _tool_choice(body.get("tool_choice"))) is not None:
            out["tool_choice"] = choice
    else:
        out.pop("parallel_tool_calls", None)
    if (effort := _effort(body)) is not None:
        out["reasoning"] = {"effort": effort}
    if text := _text_options(body):
        out["text"] = text
    for field in body:
        if field not in _HANDLED:
            notes.append(f"dropped {field}")
    return out


def _text_options(body: dict[str, Any]) -> dict[str, Any]:
    """Chat's response_format and verbosity as the Responses API's `text` options."""
    text: dict[str, Any] = {}
    fmt = as_object(body.get("response_format"))
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        text["format"] = {"type": "json_schema", **fmt["json_schema"]}
    elif fmt.get("type") == "json_object":
        text["format"] = {"type": "json_object"}
    if isinstance(body.get("verbosity"), str):
        text["verbosity"] = body["verbosity"]
    return text


# ------------------------------------------------------------------------------------------ stream

class ResponsesToChatStream:
    """Upstream Responses events -> chat chunks and `data: [DONE]`."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.first_content = False
        self.error: dict[str, Any] | None = None
        self._parser = SSEParser()
        self._model, self._include_usage = model, include_usage
        self._id, self._created = "", 0
        self._started = self._ended = False
        self._calls: dict[int, int] = {}  # output index -> chat tool call index
        self._streamed: set[int] = set()  # output indexes whose text or arguments came as deltas

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        for event in self._parser.feed(chunk):
            if self._ended:
                break
            if (payload := loads_object(event.data)) is not None:
                out += self._event(str(payload.get("type") or event.event), payload)
        return bytes(out)

    def finish(self) -> bytes:
        return self._end({"status": "completed"})

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk: dict[str, Any] = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                                 "model": self._model,
                                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if self._include_usage:
            chunk["usage"] = None  # as OpenAI does on every chunk but the last under include_usage
        return f"data: {_dumps(chunk)}\n\n".encode()

    def _start(self, response: Any) -> bytes:
        if self._started:
            return b""
        response = response if isinstance(response, dict) else {}
        self._started = True
        self._id = chat_completion_id(str(response.get("id") or "").removeprefix("resp_"))
        self._created = response.get("created_at") if isinstance(response.get("created_at"), int) else int(time.time())
        self._model = response.get("model") if isinstance(response.get("model"), str) else self._model
        return self._chunk({"role": "assistant", "content": ""})

    def _content(self, key: str, text: Any, index: Any) -> bytes:
        if not isinstance(text, str) or not text:
            return b""
        self.first_content = True
        if isinstance(index, int):
            self._streamed.add(index)
        return self._chunk({key: text})

    def _call(self, index: Any, entry: dict[str, Any]) -> bytes:
        self.first_content = True
        return self._chunk({"tool_calls": [{"index": self._calls[index], **entry}]})

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        if kind in ("error", "response.failed"):
            return self._fail(payload)
        out = self._start(payload.get("response"))
        index, item = payload.get("output_index"), payload.get("item")
        index = index if isinstance(index, int) else -1  # an index is a dict key here: never trust its type
        item = item if isinstance(item, dict) else {}
        if kind == "response.output_text.delta":
            out += self._content("content", payload.get("delta"), index)
        elif kind == "response.refusal.delta":
            out += self._content("refusal", payload.get("delta"), index)
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            out += self._content("reasoning", payload.get("delta"), index)
        elif kind == "response.output_item.added" and item.get("type") == "function_call" and index not in self._calls:
            self._calls[index] = len(self._calls)
            arguments = item.get("arguments") if isinstance(item.get("arguments"), str) else ""
            if arguments:
                self._streamed.add(index)
            out += self._call(index, {"id": item.get("call_id", ""), "type": "function",
                                      "function": {"name": item.get("name", ""), "arguments": arguments}})
        elif kind == "response.function_call_arguments.delta" and index in self._calls:
            self._streamed.add(index)
            out += self._call(index, {"function": {"arguments": str(payload.get("delta") or "")}})
        elif kind == "response.output_item.done":
            out += self._item_done(index, item)
        elif kind in ("response.completed", "response.incomplete"):
            out += self._end(as_object(payload.get("response")))
        return out

    def _item_done(self, index: Any, item: dict[str, Any]) -> bytes:
        """What an item brought whole, without deltas."""
        kind = item.get("type")
        if kind == "function_call" and index in self._calls and index not in self._streamed:
            return self._call(index, {"function": {"arguments": str(item.get("arguments") or "")}})
        if kind == "custom_tool_call" and index not in self._calls:
            self._calls[index] = len(self._calls)
            return self._call(index, {"id": item.get("call_id", ""), "type": "custom",
                                      "custom": {"name": item.get("name", ""), "input": item.get("input") or ""}})
        if index in self._streamed:
            return b""
        if kind == "message":
            return self._content("content", "".join(str(p.get("text") or "") for p in dicts(item.get("content"))
                                                    if p.get("type") == "output_text"), index)
        if kind == "reasoning":
            return self._content("reasoning", "".join(str(p.get("text") or "")
                                                      for p in dicts(item.get("summary"))), index)
        return b""

    def _end(self, response: dict[str, Any]) -> bytes:
        if self._ended:
            return b""
        out = self._start(response)
        self._ended = True
        out += self._chunk({}, finish_reason_of(response, bool(self._calls)))
        if self._include_usage:
            last = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                    "choices": [], "usage": chat_usage_from_responses(response.get("usage"))}
            out += f"data: {_dumps(last)}\n\n".encode()
        return out + b"data: [DONE]\n\n"

    def _fail(self, payload: dict[str, Any]) -> bytes:
        response = as_object(payload.get("response"))
        body = get_typed(response, "error", dict, payload)
        error = read_error({"error": body} if "message" in body else body)
        self.error = body
        self._ended = True
        return f"data: {_dumps(openai_error(error, status_of(error)))}\n\n".encode()
