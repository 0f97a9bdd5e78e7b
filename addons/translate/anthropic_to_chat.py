"""Anthropic Messages -> OpenAI Chat Completions: an Anthropic request body as a chat request body for a
chat provider (`anthropic_to_chat_request`), and an Anthropic answer as a chat.completion for a chat
client (`anthropic_to_chat_response`). The reverse direction is `chat_to_anthropic.py`, streams are
`stream.py`, the words both directions share `vocabulary.py`.

Pure logic, no mitmproxy. Every function takes and returns plain JSON values; what could not be carried
over is never silently lost: the request translator appends a short human note to `notes` (for the flow
comment), the answer translator keeps what the client's dialect can hold.

The shapes follow the providers' public references:

* Anthropic Messages: https://docs.anthropic.com/en/api/messages, tool use
  https://docs.anthropic.com/en/docs/build-with-claude/tool-use, extended thinking
  https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking, errors
  https://docs.anthropic.com/en/api/errors
* OpenAI Chat Completions: https://platform.openai.com/docs/api-reference/chat/create, function calling
  https://platform.openai.com/docs/guides/function-calling, errors https://platform.openai.com/docs/guides/error-codes
* OpenRouter's extensions of the chat dialect: reasoning https://openrouter.ai/docs/use-cases/reasoning-tokens,
  prompt caching (Anthropic-style `cache_control` on content parts) https://openrouter.ai/docs/features/prompt-caching,
  errors https://openrouter.ai/docs/api-reference/errors-and-debugging

Decisions where the two dialects cannot say the same thing:

* A `tool_result` with `is_error: true` becomes a tool message whose text starts with "Error: ": chat tool
  messages have no error flag, and the model should still know the call failed. The reverse cannot be
  recovered and is not guessed.
* Chat tool messages carry text only, so images inside a `tool_result` move into a user message right
  after the tool messages (with a note).
* Thinking blocks in an Anthropic history are dropped towards chat providers (they cannot verify
  Anthropic's signatures and have no field for them); an answer's thinking becomes OpenRouter's
  `message.reasoning`.
* An Anthropic error answer becomes an OpenAI error body; a context-length error gets the code
  "context_length_exceeded" (errors.py).
"""

from __future__ import annotations

import time
from typing import Any

from addons.translate.errors import ANTHROPIC_ERROR_STATUS, openai_error, read_error
from addons.translate.vocabulary import (
    Flavour,
    chat_completion_id,
    chat_finish_reason,
    chat_usage,
    note_once,
)
from addons.wire.jsontext import as_object
from addons.wire.jsontext import dumps as _dumps

# ---------------------------------------------------------------------------- Anthropic -> chat request

# Anthropic request fields that translate; every other field (context_management, container, mcp_servers,
# service_tier, ...) has no chat counterpart and is dropped with a note.
_ANTHROPIC_HANDLED = {"model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k", "stream",
                      "stop_sequences", "tools", "tool_choice", "thinking", "output_config", "metadata",
                      "output_format"}


def _image_to_chat(block: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    source = as_object(block.get("source"))
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        note_once(notes, f"dropped image with source type {source.get('type')!r}")
        return None
    return {"type": "image_url", "image_url": {"url": url}}


def _text_part(text: str, cache_control: Any, flavour: Flavour, notes: list[str]) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "text", "text": text}
    if cache_control:
        if flavour is Flavour.OPENROUTER:
            part["cache_control"] = cache_control
        else:
            note_once(notes, f"stripped cache_control ({flavour} takes none)")
    return part


def _flatten(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """One plain text part is sent as a string, which every OpenAI-compatible server accepts."""
    if len(parts) == 1 and parts[0]["type"] == "text" and "cache_control" not in parts[0]:
        return parts[0]["text"]
    return parts


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [block for block in content or [] if isinstance(block, dict)]


def _user_part_to_chat(block: dict[str, Any], flavour: Flavour, notes: list[str]) -> dict[str, Any] | None:
    kind = block.get("type")
    if kind == "text":
        return _text_part(str(block.get("text", "")), block.get("cache_control"), flavour, notes)
    if kind == "image":
        return _image_to_chat(block, notes)
    if kind == "document":
        note_once(notes, "dropped document block (no chat counterpart)")
        return None
    note_once(notes, f"dropped {kind} block")
    return None


def _tool_result_to_chat(block: dict[str, Any], flavour: Flavour, notes: list[str]
                         ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A tool message, plus the images it held (they must travel in a user message)."""
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    cache_control = block.get("cache_control")
    for part in _blocks(block.get("content")):
        if part.get("type") == "text":
            texts.append(str(part.get("text", "")))
            cache_control = cache_control or part.get("cache_control")
        elif part.get("type") == "image":
            if (image := _image_to_chat(part, notes)) is not None:
                images.append(image)
        else:
            note_once(notes, f"dropped {part.get('type')} block inside a tool_result")
    text = "\n\n".join(texts)
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    content: str | list[dict[str, Any]] = text
    if cache_control and flavour is Flavour.OPENROUTER:
        content = [_text_part(text, cache_control, flavour, notes)]
    elif cache_control:
        note_once(notes, f"stripped cache_control ({flavour} takes none)")
    if images:
        note_once(notes, "moved tool_result images into a user message (chat tool messages are text only)")
    return {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": content}, images


def _user_to_chat(content: Any, flavour: Flavour, notes: list[str]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in _blocks(content):
        if block.get("type") == "tool_result":
            message, images = _tool_result_to_chat(block, flavour, notes)
            tool_messages.append(message)
            if images:
                parts.append({"type": "text", "text": f"(images returned by tool call {message['tool_call_id']})"})
                parts.extend(images)
        elif (part := _user_part_to_chat(block, flavour, notes)) is not None:
            parts.append(part)
    # Chat wants the tool messages right after the assistant message that made the calls.
    return tool_messages + ([{"role": "user", "content": _flatten(parts)}] if parts else [])


def _assistant_to_chat(content: Any, flavour: Flavour, notes: list[str]) -> dict[str, Any]:
    texts: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    for block in _blocks(content):
        kind = block.get("type")
        if kind == "text":
            texts.append(_text_part(str(block.get("text", "")), block.get("cache_control"), flavour, notes))
        elif kind == "tool_use":
            if block.get("cache_control"):
                note_once(notes, "stripped cache_control from tool calls (chat has no place for it)")
            tool_calls.append({"id": block.get("id", ""), "type": "function",
                               "function": {"name": block.get("name", ""),
                                            "arguments": _dumps(block.get("input") or {})}})
        elif kind in ("thinking", "redacted_thinking"):
            note_once(notes, "dropped thinking blocks from the history (chat providers cannot verify them)")
        else:
            note_once(notes, f"dropped assistant {kind} block")
    # Many servers take only a string as assistant content: parts only where a cache breakpoint needs them.
    joined: str | list[dict[str, Any]] | None
    if any("cache_control" in part for part in texts):
        joined = texts
    elif texts:
        joined = "\n\n".join(part["text"] for part in texts)
    else:
        joined = None if tool_calls else ""  # OpenAI: content null when the message only calls tools
    message: dict[str, Any] = {"role": "assistant", "content": joined}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


_BILLING_HEADER = "x-anthropic-billing-header:"


def _system_to_chat(system: Any, flavour: Flavour, notes: list[str]) -> dict[str, Any] | None:
    if isinstance(system, str):
        return {"role": "system", "content": system} if system else None
    blocks = [block for block in _blocks(system) if block.get("type") == "text"]
    kept = [block for block in blocks if not str(block.get("text", "")).startswith(_BILLING_HEADER)]
    if len(kept) < len(blocks):
        # Claude Code's per-request billing line (it carries a fresh prompt id every time) means
        # nothing to another provider and, first in the prompt, would defeat its prompt cache
        note_once(notes, "dropped Claude Code's x-anthropic-billing-header system line")
    parts = [_text_part(str(block.get("text", "")), block.get("cache_control"), flavour, notes) for block in kept]
    if not parts:
        return None
    if any("cache_control" in part for part in parts):
        return {"role": "system", "content": parts}
    return {"role": "system", "content": "\n\n".join(part["text"] for part in parts)}


def _is_server_tool(tool: dict[str, Any]) -> bool:
    """Anthropic server/built-in tools (web_search_20250305, bash_20250124, ...) carry a versioned type."""
    return tool.get("type") not in (None, "custom") or "input_schema" not in tool


def _tools_to_chat(tools: Any, notes: list[str]) -> list[dict[str, Any]]:
    out = []
    for tool in tools or []:
        if not isinstance(tool, dict):
            continue
        if _is_server_tool(tool):
            notes.append(f"dropped server tool {tool.get('type') or tool.get('name')}")
            continue
        if tool.get("cache_control"):
            note_once(notes, "stripped cache_control from tools (chat has no place for it)")
        function: dict[str, Any] = {"name": tool.get("name", ""), "parameters": tool["input_schema"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice_to_chat(choice: Any, tool_names: set[str], notes: list[str]) -> Any:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool":
        if choice.get("name") in tool_names:
            return {"type": "function", "function": {"name": choice["name"]}}
        notes.append(f"dropped tool_choice for tool {choice.get('name')!r}, which was not sent")
    return None


def _effort_from_budget(budget: int) -> str:
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def _reasoning_to_chat(body: dict[str, Any], flavour: Flavour, out: dict[str, Any], notes: list[str]) -> None:
    thinking = as_object(body.get("thinking"))
    output_config = as_object(body.get("output_config"))
    effort = output_config.get("effort")
    if effort == "max":
        notes.append("effort max -> high")
        effort = "high"
    kind = thinking.get("type")
    budget = thinking.get("budget_tokens") if kind == "enabled" else None
    if kind not in ("enabled", "adaptive") and not effort:
        return
    if flavour is Flavour.ANTHROPIC:
        # Anthropic's OpenAI-compatible endpoint reads `thinking` as an extra body field.
        if thinking:
            out["thinking"] = thinking
        return
    if flavour is Flavour.OPENROUTER:
        if isinstance(budget, int):
            out["reasoning"] = {"max_tokens": budget}
            notes.append(f"thinking -> reasoning.max_tokens={budget}")
        else:
            out["reasoning"] = {"effort": effort or "medium"}
            notes.append(f"thinking -> reasoning.effort={effort or 'medium'}")
        return
    level = effort or (_effort_from_budget(budget) if isinstance(budget, int) else "medium")
    out["reasoning_effort"] = level
    notes.append(f"thinking -> reasoning_effort={level}")


def _output_format_to_chat(body: dict[str, Any], out: dict[str, Any], notes: list[str]) -> None:
    output_config = as_object(body.get("output_config"))
    fmt = body.get("output_format") or output_config.get("format")
    if not isinstance(fmt, dict):
        return
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        out["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True}}
        notes.append("output_format json_schema -> response_format")
    else:
        notes.append(f"dropped output format {fmt.get('type')!r}")


def _messages_to_chat(body: dict[str, Any], flavour: Flavour, notes: list[str]) -> list[dict[str, Any]]:
    """The system prompt and the turns, as chat messages in the same order."""
    messages: list[dict[str, Any]] = []
    if (system := _system_to_chat(body.get("system"), flavour, notes)) is not None:
        messages.append(system)
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        if message.get("role") == "assistant":
            messages.append(_assistant_to_chat(message.get("content"), flavour, notes))
        elif message.get("role") == "system":
            # Claude Code (2.1.3xx) sends its environment as a system message after the prompt;
            # chat keeps system messages in place
            if (inline := _system_to_chat(message.get("content"), flavour, notes)) is not None:
                messages.append(inline)
        else:
            messages.extend(_user_to_chat(message.get("content"), flavour, notes))
    return messages


def _sampling_to_chat(body: dict[str, Any], flavour: Flavour, out: dict[str, Any], notes: list[str]) -> None:
    """max_tokens, temperature, top_p, top_k and stop sequences, as far as `flavour` takes them."""
    if isinstance(body.get("max_tokens"), int):
        out["max_completion_tokens" if flavour is Flavour.OPENAI else "max_tokens"] = body["max_tokens"]
    for field in ("temperature", "top_p"):
        if body.get(field) is not None:
            out[field] = body[field]
    if body.get("top_k") is not None:
        if flavour is Flavour.OPENROUTER:
            out["top_k"] = body["top_k"]
        else:
            notes.append(f"dropped top_k ({flavour} takes none)")
    if stop := body.get("stop_sequences"):
        stop = [stop] if isinstance(stop, str) else list(stop)
        if flavour is Flavour.OPENAI and len(stop) > 4:
            notes.append(f"kept the first 4 of {len(stop)} stop sequences (OpenAI's limit)")
            stop = stop[:4]
        out["stop"] = stop


def _tool_use_to_chat(body: dict[str, Any], out: dict[str, Any], notes: list[str]) -> None:
    """The tools chat can call, and tool_choice / disable_parallel_tool_use when tools are left."""
    tools = _tools_to_chat(body.get("tools"), notes)
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        if (chat_choice := _tool_choice_to_chat(choice, {t["function"]["name"] for t in tools}, notes)) is not None:
            out["tool_choice"] = chat_choice
        if isinstance(choice, dict) and choice.get("disable_parallel_tool_use") is True:
            out["parallel_tool_calls"] = False
    elif body.get("tool_choice"):
        notes.append("dropped tool_choice (no tools left)")


def anthropic_to_chat_request(body: dict[str, Any], model: str, flavour: Flavour, notes: list[str]) -> dict[str, Any]:
    """An Anthropic Messages request body as a Chat Completions request body for `flavour`."""
    flavour = Flavour(flavour)
    out: dict[str, Any] = {"model": model, "messages": _messages_to_chat(body, flavour, notes)}
    _sampling_to_chat(body, flavour, out, notes)
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # so usage can be reported back
    _tool_use_to_chat(body, out, notes)
    _reasoning_to_chat(body, flavour, out, notes)
    _output_format_to_chat(body, out, notes)
    metadata = as_object(body.get("metadata"))
    if isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    for field in body:
        if field not in _ANTHROPIC_HANDLED:
            notes.append(f"dropped {field}")
    return out


# ---------------------------------------------------------------------------------- whole answers

def anthropic_to_chat_response(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic message as a chat.completion (thinking as OpenRouter's message.reasoning)."""
    if body.get("type") == "error":
        error = read_error(body)
        return openai_error(error, ANTHROPIC_ERROR_STATUS.get(error.anthropic_type or "", 500))
    texts: list[str] = []
    thoughts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in body.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            thoughts.append(block.get("thinking", ""))
        elif kind == "tool_use":
            tool_calls.append({"id": block.get("id", ""), "type": "function",
                               "function": {"name": block.get("name", ""),
                                            "arguments": _dumps(block.get("input") or {})}})
        # server tool blocks and redacted thinking have no chat form
    message: dict[str, Any] = {"role": "assistant",
                               "content": "".join(texts) if texts or not tool_calls else None, "refusal": None}
    if thoughts:
        message["reasoning"] = "".join(thoughts)
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"id": chat_completion_id(body.get("id")), "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or "",
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": chat_finish_reason(body.get("stop_reason"))}],
            "usage": chat_usage(body.get("usage"))}
