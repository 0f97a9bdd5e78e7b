"""Translation between the Anthropic Messages API and the OpenAI Chat Completions API: requests, whole
(non-streamed) responses and error bodies. Streams are in `addons/translate/stream.py`, which shares the
small mappings defined here (stop reasons, usage, ids, error kinds).

Pure logic, no mitmproxy. Every function takes and returns plain JSON values; what could not be carried
over is never silently lost: request translators append a short human note to `notes` (for the flow
comment), response translators keep what the client's dialect can hold.

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
  Anthropic's signatures and have no field for them). Reasoning from a chat provider becomes a thinking
  block with an empty signature: when Claude Code replays it, Clutch sends it to a chat provider again,
  which drops it, so no provider ever checks the signature.
* Tool ids become Anthropic-safe (`^[a-zA-Z0-9_-]+$`, e.g. Kimi's `functions.Bash:0` -> `functions_Bash_0`)
  wherever Clutch writes an Anthropic tool id; the same function is used for calls and results, so they
  stay paired.
* A chat answer that calls tools but reports finish_reason "stop" (several OpenAI-compatible servers do)
  is reported as stop_reason "tool_use", because Anthropic clients decide on it whether to run tools.
* A context-length error keeps its text but, towards Anthropic clients, starts with "prompt is too long"
  (the phrase Claude Code looks for before compacting); towards OpenAI clients it gets the code
  "context_length_exceeded".
"""

from __future__ import annotations

import enum
import json
import re
import time
import uuid
from typing import Any

from addons.translate.errors import ANTHROPIC_ERROR_STATUS, anthropic_error, openai_error, read_error
from addons.wire.jsontext import dumps as _dumps


class Flavour(enum.StrEnum):
    """Which provider family receives a translated chat request (they differ in their extensions)."""

    OPENROUTER = "openrouter"  # reasoning{max_tokens|effort}, cache_control on parts, top_k
    OPENAI = "openai"  # reasoning_effort, max_completion_tokens
    ANTHROPIC = "anthropic"  # Anthropic's OpenAI-compatible endpoint: takes `thinking` as an extra field
    GENERIC = "generic"  # vLLM, Ollama, llama.cpp, ...: reasoning_effort, max_tokens


# ---------------------------------------------------------------------------------------------- shared

CHAT_TO_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                          "function_call": "tool_use", "content_filter": "refusal"}
ANTHROPIC_TO_CHAT_FINISH = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                            "stop_sequence": "stop", "pause_turn": "stop", "refusal": "content_filter",
                            "model_context_window_exceeded": "length"}

# Anthropic requires tool ids to match ^[a-zA-Z0-9_-]+$ (tool use reference above).
_UNSAFE_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def anthropic_tool_id(chat_id: Any, fallback: str) -> str:
    if not isinstance(chat_id, str) or not chat_id:
        return fallback
    return _UNSAFE_ID_CHARS.sub("_", chat_id)


def anthropic_message_id(chat_id: Any) -> str:
    """chatcmpl-abc -> msg_abc (gen-... for OpenRouter); deterministic so logs can be matched up."""
    if not isinstance(chat_id, str) or not chat_id:
        return "msg_" + uuid.uuid4().hex[:24]
    return "msg_" + _UNSAFE_ID_CHARS.sub("_", chat_id.removeprefix("chatcmpl-"))


def chat_completion_id(message_id: Any) -> str:
    """msg_abc -> chatcmpl-abc."""
    if not isinstance(message_id, str) or not message_id:
        return "chatcmpl-" + uuid.uuid4().hex[:24]
    return "chatcmpl-" + message_id.removeprefix("msg_")


def anthropic_stop_reason(finish_reason: Any, called_tools: bool) -> str:
    stop = CHAT_TO_ANTHROPIC_STOP.get(finish_reason, "end_turn") if finish_reason else "end_turn"
    return "tool_use" if called_tools and stop == "end_turn" else stop


def chat_finish_reason(stop_reason: Any) -> str:
    return ANTHROPIC_TO_CHAT_FINISH.get(stop_reason, "stop") if stop_reason else "stop"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def anthropic_usage(chat_usage: Any) -> dict[str, int]:
    """Chat usage counts cached prompt tokens inside prompt_tokens; Anthropic counts them apart."""
    usage = chat_usage if isinstance(chat_usage, dict) else {}
    details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
    cached = _int(details.get("cached_tokens")) or _int(usage.get("prompt_cache_hit_tokens"))  # DeepSeek
    written = _int(details.get("cache_write_tokens"))  # OpenRouter, when the provider reports it
    prompt = _int(usage.get("prompt_tokens"))
    return {"input_tokens": max(prompt - cached - written, 0), "output_tokens": _int(usage.get("completion_tokens")),
            "cache_read_input_tokens": cached, "cache_creation_input_tokens": written}


def chat_usage(anthropic: Any) -> dict[str, Any]:
    usage = anthropic if isinstance(anthropic, dict) else {}
    cached = _int(usage.get("cache_read_input_tokens"))
    prompt = _int(usage.get("input_tokens")) + cached + _int(usage.get("cache_creation_input_tokens"))
    completion = _int(usage.get("output_tokens"))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def parse_tool_arguments(arguments: Any, notes: list[str] | None = None, name: str = "") -> dict[str, Any]:
    """Chat tool arguments are a JSON string; Anthropic's input must be an object. Never raises."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        parsed = json.loads(arguments)
    except (TypeError, ValueError):
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    if notes is not None:
        notes.append(f"tool call {name or '?'}: arguments are not a JSON object, kept as _raw")
    return {"_raw": arguments if isinstance(arguments, str) else json.dumps(arguments)}


def _note_once(notes: list[str], note: str) -> None:
    if note not in notes:
        notes.append(note)


# ---------------------------------------------------------------------------------------------- images

_DATA_URL = re.compile(r"^data:(?P<media_type>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)$", re.S)


def _image_to_chat(block: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        _note_once(notes, f"dropped image with source type {source.get('type')!r}")
        return None
    return {"type": "image_url", "image_url": {"url": url}}


def _image_to_anthropic(part: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        _note_once(notes, "dropped image_url part without a URL")
        return None
    if match := _DATA_URL.match(url):
        return {"type": "image", "source": {"type": "base64", "media_type": match["media_type"],
                                             "data": match["data"]}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    _note_once(notes, "dropped image whose URL is neither https nor a base64 data URL")
    return None


# ---------------------------------------------------------------------------- Anthropic -> chat request

# Anthropic request fields that translate; every other field (context_management, container, mcp_servers,
# service_tier, ...) has no chat counterpart and is dropped with a note.
_ANTHROPIC_HANDLED = {"model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k", "stream",
                      "stop_sequences", "tools", "tool_choice", "thinking", "output_config", "metadata",
                      "output_format"}


def _text_part(text: str, cache_control: Any, flavour: Flavour, notes: list[str]) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "text", "text": text}
    if cache_control:
        if flavour is Flavour.OPENROUTER:
            part["cache_control"] = cache_control
        else:
            _note_once(notes, f"stripped cache_control ({flavour} takes none)")
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
        _note_once(notes, "dropped document block (no chat counterpart)")
        return None
    _note_once(notes, f"dropped {kind} block")
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
            _note_once(notes, f"dropped {part.get('type')} block inside a tool_result")
    text = "\n\n".join(texts)
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    content: str | list[dict[str, Any]] = text
    if cache_control and flavour is Flavour.OPENROUTER:
        content = [_text_part(text, cache_control, flavour, notes)]
    elif cache_control:
        _note_once(notes, f"stripped cache_control ({flavour} takes none)")
    if images:
        _note_once(notes, "moved tool_result images into a user message (chat tool messages are text only)")
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
                _note_once(notes, "stripped cache_control from tool calls (chat has no place for it)")
            tool_calls.append({"id": block.get("id", ""), "type": "function",
                               "function": {"name": block.get("name", ""),
                                            "arguments": _dumps(block.get("input") or {})}})
        elif kind in ("thinking", "redacted_thinking"):
            _note_once(notes, "dropped thinking blocks from the history (chat providers cannot verify them)")
        else:
            _note_once(notes, f"dropped assistant {kind} block")
    # Many servers take only a string as assistant content: parts only where a cache breakpoint needs them.
    content: str | list[dict[str, Any]] | None
    if any("cache_control" in part for part in texts):
        content = texts
    elif texts:
        content = "\n\n".join(part["text"] for part in texts)
    else:
        content = None if tool_calls else ""  # OpenAI: content null when the message only calls tools
    message: dict[str, Any] = {"role": "assistant", "content": content}
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
        _note_once(notes, "dropped Claude Code's x-anthropic-billing-header system line")
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
            _note_once(notes, "stripped cache_control from tools (chat has no place for it)")
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
    thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else {}
    output_config = body.get("output_config") if isinstance(body.get("output_config"), dict) else {}
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
    output_config = body.get("output_config") if isinstance(body.get("output_config"), dict) else {}
    fmt = body.get("output_format") or output_config.get("format")
    if not isinstance(fmt, dict):
        return
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        out["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True}}
        notes.append("output_format json_schema -> response_format")
    else:
        notes.append(f"dropped output format {fmt.get('type')!r}")


def anthropic_to_chat_request(body: dict[str, Any], model: str, flavour: Flavour, notes: list[str]) -> dict[str, Any]:
    """An Anthropic Messages request body as a Chat Completions request body for `flavour`."""
    flavour = Flavour(flavour)
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

    out: dict[str, Any] = {"model": model, "messages": messages}
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
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # so usage can be reported back

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

    _reasoning_to_chat(body, flavour, out, notes)
    _output_format_to_chat(body, out, notes)
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    if isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    for field in body:
        if field not in _ANTHROPIC_HANDLED:
            notes.append(f"dropped {field}")
    return out


# ---------------------------------------------------------------------------- chat -> Anthropic request

_CHAT_HANDLED = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
                 "stream", "stream_options", "stop", "tools", "tool_choice", "parallel_tool_calls",
                 "reasoning_effort", "reasoning", "user", "thinking", "response_format", "n"}
DEFAULT_MAX_TOKENS = 8192
# Budgets for an effort level; Anthropic's minimum budget is 1024.
EFFORT_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768}
MIN_THINKING_BUDGET = 1024


def _chat_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [part for part in content or [] if isinstance(part, dict)]


def _chat_part_to_anthropic(part: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind in ("text", "refusal"):
        text = part.get("text") if kind == "text" else part.get("refusal")
        if not isinstance(text, str) or not text.strip():
            return None  # Anthropic rejects empty and whitespace-only text blocks
        block: dict[str, Any] = {"type": "text", "text": text}
        if part.get("cache_control"):
            block["cache_control"] = part["cache_control"]
        return block
    if kind == "image_url":
        return _image_to_anthropic(part, notes)
    _note_once(notes, f"dropped {kind} content part")
    return None


def _chat_content_to_blocks(content: Any, notes: list[str]) -> list[dict[str, Any]]:
    return [block for part in _chat_parts(content)
            if (block := _chat_part_to_anthropic(part, notes)) is not None]


def _system_blocks(texts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One text block for all system messages, unless some part asks for caching (then keep the parts)."""
    if any("cache_control" in block for block in texts):
        return texts
    return [{"type": "text", "text": "\n\n".join(block["text"] for block in texts)}] if texts else []


def _merge_same_role(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic wants user and assistant turns to alternate: consecutive turns of one role become one."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1]["content"].extend(message["content"])
        else:
            merged.append({"role": message["role"], "content": list(message["content"])})
    for message in merged:
        # tool_result blocks must open a user turn (tool use reference, "tool_result must come first")
        message["content"].sort(key=lambda block: block.get("type") != "tool_result")
    return merged


def _tool_message_to_block(message: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result",
                             "tool_use_id": anthropic_tool_id(message.get("tool_call_id"), "toolu_unknown")}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif blocks := _chat_content_to_blocks(content, notes):
        block["content"] = blocks
    return block


def _assistant_to_blocks(message: dict[str, Any], notes: list[str], position: int) -> list[dict[str, Any]]:
    if message.get("reasoning") or message.get("reasoning_content"):
        _note_once(notes, "dropped reasoning from the history (Anthropic needs signed thinking blocks)")
    blocks = _chat_content_to_blocks(message.get("content"), notes)
    if isinstance(message.get("refusal"), str) and message["refusal"] and not blocks:
        blocks.append({"type": "text", "text": message["refusal"]})
    for n, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        name = function.get("name", "")
        blocks.append({"type": "tool_use", "id": anthropic_tool_id(call.get("id"), f"toolu_{position}_{n}"),
                       "name": name, "input": parse_tool_arguments(function.get("arguments"), notes, name)})
    if message.get("function_call"):
        _note_once(notes, "dropped legacy function_call (use tool_calls)")
    return blocks


def _tools_to_anthropic(tools: Any, notes: list[str]) -> list[dict[str, Any]]:
    out = []
    for tool in tools or []:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            notes.append(f"dropped {tool.get('type')} tool (only function tools translate)")
            continue
        entry: dict[str, Any] = {"name": function.get("name", ""),
                                 "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
        if function.get("description"):
            entry["description"] = function["description"]
        out.append(entry)
    return out


def _tool_choice_to_anthropic(choice: Any) -> dict[str, Any] | None:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": choice["function"].get("name", "")}
    return None


def _thinking_budget(body: dict[str, Any]) -> int | None:
    """reasoning_effort (OpenAI) or reasoning{effort|max_tokens|enabled} (OpenRouter) as a thinking budget."""
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    if reasoning.get("enabled") is False or reasoning.get("effort") == "none" or body.get("reasoning_effort") == "none":
        return None
    if isinstance(reasoning.get("max_tokens"), int):
        return max(reasoning["max_tokens"], MIN_THINKING_BUDGET)
    effort = reasoning.get("effort") or body.get("reasoning_effort")
    if effort in EFFORT_BUDGET:
        return EFFORT_BUDGET[effort]
    if reasoning.get("enabled") is True or reasoning:
        return EFFORT_BUDGET["medium"]
    return None


def chat_to_anthropic_request(body: dict[str, Any], model: str, notes: list[str]) -> dict[str, Any]:
    """A Chat Completions request body as an Anthropic Messages request body."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for position, message in enumerate(body.get("messages") or []):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            if turns:
                _note_once(notes, "moved a later system message into the system prompt")
            system.extend(_chat_content_to_blocks(message.get("content"), notes))
        elif role == "tool":
            turns.append({"role": "user", "content": [_tool_message_to_block(message, notes)]})
        elif role == "assistant":
            if blocks := _assistant_to_blocks(message, notes, position):
                turns.append({"role": "assistant", "content": blocks})
            else:
                _note_once(notes, "dropped empty assistant message")
        elif role == "user":
            if blocks := _chat_content_to_blocks(message.get("content"), notes):
                turns.append({"role": "user", "content": blocks})
            else:
                _note_once(notes, "dropped empty user message")
        else:
            _note_once(notes, f"dropped {role} message")

    out: dict[str, Any] = {"model": model}
    if system:
        out["system"] = _system_blocks(system)
    out["messages"] = _merge_same_role(turns)

    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(max_tokens, int):
        max_tokens = DEFAULT_MAX_TOKENS
        notes.append(f"max_tokens {DEFAULT_MAX_TOKENS} (Anthropic requires one)")
    out["max_tokens"] = max_tokens

    thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else None
    if thinking is None and (budget := _thinking_budget(body)) is not None:
        thinking = {"type": "enabled", "budget_tokens": budget}
        notes.append(f"reasoning -> thinking.budget_tokens={budget}")
    budget = thinking.get("budget_tokens") if thinking is not None else None
    if isinstance(budget, int) and budget >= max_tokens:
        # the budget is part of max_tokens: keep the client's room for the answer on top of it
        out["max_tokens"] = max_tokens = budget + max_tokens
        notes.append(f"max_tokens raised to {max_tokens} to fit the thinking budget")
    if thinking is not None:
        out["thinking"] = thinking

    temperature, top_p = body.get("temperature"), body.get("top_p")
    thinking_on = thinking is not None and thinking.get("type") in ("enabled", "adaptive")
    if temperature is not None:
        if thinking_on and temperature != 1:
            notes.append("dropped temperature (Anthropic requires 1 with thinking)")
        elif temperature > 1:
            out["temperature"] = 1
            notes.append(f"temperature {temperature} -> 1 (Anthropic's maximum)")
        else:
            out["temperature"] = temperature
    if top_p is not None:
        if "temperature" in out:
            notes.append("dropped top_p (recent Claude models refuse temperature and top_p together)")
        elif thinking_on and top_p < 0.95:
            notes.append("dropped top_p (Anthropic allows 0.95-1 with thinking)")
        else:
            out["top_p"] = top_p
    if body.get("top_k") is not None:
        if thinking_on:
            notes.append("dropped top_k (not allowed with thinking)")
        else:
            out["top_k"] = body["top_k"]

    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
    if any(not s.strip() for s in stop):
        notes.append("dropped whitespace-only stop sequences (Anthropic refuses them)")
    if stop := [s for s in stop if s.strip()]:
        out["stop_sequences"] = stop
    if body.get("stream") is True:
        out["stream"] = True

    tools = _tools_to_anthropic(body.get("tools"), notes)
    if tools:
        out["tools"] = tools
        choice = _tool_choice_to_anthropic(body.get("tool_choice"))
        if choice and thinking_on and choice["type"] in ("any", "tool"):
            notes.append(f"tool_choice {choice['type']} -> auto (thinking allows only auto or none)")
            choice = {"type": "auto"}
        if body.get("parallel_tool_calls") is False:
            choice = choice or {"type": "auto"}
            if choice["type"] != "none":
                choice["disable_parallel_tool_use"] = True
        if choice:
            out["tool_choice"] = choice
    elif body.get("tool_choice") not in (None, "none", "auto"):
        notes.append("dropped tool_choice (no tools left)")

    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if isinstance(body.get("n"), int) and body["n"] > 1:
        notes.append(f"n={body['n']} -> 1 (Anthropic returns one answer)")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
        notes.append(f"dropped response_format {response_format.get('type')}")
    for field in body:
        if field not in _CHAT_HANDLED:
            notes.append(f"dropped {field}")
    return out


# ---------------------------------------------------------------------------------- whole responses

def _chat_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or []
                   if isinstance(part, dict) and part.get("type") == "text")


def chat_to_anthropic_response(body: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion as an Anthropic message; a chat error object (HTTP 200 errors exist) as an Anthropic error."""
    if isinstance(body.get("error"), (dict, str)):
        error = read_error(body)
        return anthropic_error(error, error.status or 500)
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    message_id = anthropic_message_id(body.get("id"))
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning") or message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if text := _chat_text(message.get("content")) or (message.get("refusal") or ""):
        content.append({"type": "text", "text": text})
    calls = list(message.get("tool_calls") or [])
    if isinstance(message.get("function_call"), dict):
        calls.append({"function": message["function_call"]})
    for n, call in enumerate(calls):
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": anthropic_tool_id(call.get("id"), f"toolu_{message_id[4:]}_{n}"),
                        "name": function.get("name", ""), "input": parse_tool_arguments(function.get("arguments"))})
    return {"id": message_id, "type": "message", "role": "assistant", "model": body.get("model") or "",
            "content": content, "stop_reason": anthropic_stop_reason(choice.get("finish_reason"), bool(calls)),
            "stop_sequence": None, "usage": anthropic_usage(body.get("usage"))}


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
