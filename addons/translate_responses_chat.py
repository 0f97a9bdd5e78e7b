"""A Chat Completions client routed to a provider that speaks only the Responses API: its request as a
Responses request, and a whole Response object as a chat.completion. The stream is
`ResponsesToChatStream` in translate_responses_stream.py.

Pure logic, no mitmproxy. Shapes: https://platform.openai.com/docs/api-reference/chat/create,
https://platform.openai.com/docs/api-reference/responses/create and
https://platform.openai.com/docs/api-reference/responses/object.

Decisions:

* Leading system / developer messages become `instructions`; later ones stay input messages in place.
* `store` is false unless the client asked for it: a chat client never continues from a stored response,
  and the Responses API stores by default.
* The Responses API has no stop sequences, `n`, `seed`, penalties or logprobs on this path: dropped with a
  note. max_output_tokens has a minimum of 16 there; smaller limits are raised to it (with a note).
* An OpenRouter-style `reasoning` ({effort} or {max_tokens}) or `reasoning_effort` becomes
  `reasoning.effort`; reasoning summaries come back as OpenRouter's `message.reasoning`.
"""

from __future__ import annotations

import time
from typing import Any

from addons.translate import chat_completion_id
from addons.translate_responses_tools import dicts, note_once

MIN_OUTPUT_TOKENS = 16  # the Responses API refuses a smaller max_output_tokens
_HANDLED = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stream",
            "stream_options", "tools", "tool_choice", "parallel_tool_calls", "reasoning_effort", "reasoning", "user",
            "response_format", "store", "metadata", "service_tier", "prompt_cache_key", "safety_identifier",
            "verbosity"}
_FINISH = {"max_output_tokens": "length", "content_filter": "content_filter"}


def _effort(body: dict[str, Any]) -> str | None:
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
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
            fmt = custom.get("format") if isinstance(custom.get("format"), dict) else {}
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
                function = call.get("function") if isinstance(call.get("function"), dict) else {}
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
    if instructions := "\n\n".join(text for text in instructions if text):
        out["instructions"] = instructions
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
    text: dict[str, Any] = {}
    fmt = body.get("response_format") if isinstance(body.get("response_format"), dict) else {}
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        text["format"] = {"type": "json_schema", **fmt["json_schema"]}
    elif fmt.get("type") == "json_object":
        text["format"] = {"type": "json_object"}
    if isinstance(body.get("verbosity"), str):
        text["verbosity"] = body["verbosity"]
    if text:
        out["text"] = text
    for field in body:
        if field not in _HANDLED:
            notes.append(f"dropped {field}")
    return out


def responses_to_chat_response(body: dict[str, Any]) -> dict[str, Any]:
    """A Response object as a chat.completion (reasoning as OpenRouter's message.reasoning)."""
    texts: list[str] = []
    refusals: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in dicts(body.get("output")):
        kind = item.get("type")
        if kind == "message":
            for part in dicts(item.get("content")):
                if part.get("type") == "output_text":
                    texts.append(str(part.get("text") or ""))
                elif part.get("type") == "refusal":
                    refusals.append(str(part.get("refusal") or ""))
        elif kind == "reasoning":
            thoughts += [str(p.get("text") or "") for p in [*dicts(item.get("summary")), *dicts(item.get("content"))]]
        elif kind == "function_call":
            calls.append({"id": item.get("call_id", ""), "type": "function",
                          "function": {"name": item.get("name", ""), "arguments": item.get("arguments") or "{}"}})
        elif kind == "custom_tool_call":
            calls.append({"id": item.get("call_id", ""), "type": "custom",
                          "custom": {"name": item.get("name", ""), "input": item.get("input") or ""}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None,
                               "refusal": "".join(refusals) or None}
    if thoughts:
        message["reasoning"] = "\n\n".join(t for t in thoughts if t)
    if calls:
        message["tool_calls"] = calls
    return {"id": chat_completion_id(str(body.get("id") or "").removeprefix("resp_")), "object": "chat.completion",
            "created": body.get("created_at") if isinstance(body.get("created_at"), int) else int(time.time()),
            "model": body.get("model") or "",
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish_reason(body, bool(calls))}],
            "usage": chat_usage_of(body.get("usage"))}


def finish_reason(response: dict[str, Any], called_tools: bool) -> str:
    if called_tools:
        return "tool_calls"
    details = response.get("incomplete_details") if isinstance(response.get("incomplete_details"), dict) else {}
    reason = details.get("reason") if isinstance(details.get("reason"), str) else ""
    return _FINISH.get(reason, "stop") if response.get("status") == "incomplete" else "stop"


def chat_usage_of(usage: Any) -> dict[str, Any]:
    """Responses usage as chat usage."""
    usage = usage if isinstance(usage, dict) else {}
    inputs = usage.get("input_tokens_details") if isinstance(usage.get("input_tokens_details"), dict) else {}
    outputs = usage.get("output_tokens_details") if isinstance(usage.get("output_tokens_details"), dict) else {}
    prompt = usage.get("input_tokens") if isinstance(usage.get("input_tokens"), int) else 0
    completion = usage.get("output_tokens") if isinstance(usage.get("output_tokens"), int) else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": inputs.get("cached_tokens") or 0},
            "completion_tokens_details": {"reasoning_tokens": outputs.get("reasoning_tokens") or 0}}
