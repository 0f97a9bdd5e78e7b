"""OpenAI Chat Completions -> Anthropic Messages: a chat request body as an Anthropic request body for
an Anthropic provider (`chat_to_anthropic_request`), and a chat.completion as an Anthropic message for an
Anthropic client (`chat_to_anthropic_response`). The reverse direction is `anthropic_to_chat.py`, streams
are `stream.py`, the words both directions share `vocabulary.py`.

Pure logic, no mitmproxy. Every function takes and returns plain JSON values; what could not be carried
over is never silently lost: the request translator appends a short human note to `notes` (for the flow
comment), the answer translator keeps what the client's dialect can hold.

The shapes follow the providers' public references: Anthropic Messages
https://docs.anthropic.com/en/api/messages, tool use https://docs.anthropic.com/en/docs/build-with-claude/tool-use,
extended thinking https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking, errors
https://docs.anthropic.com/en/api/errors; OpenAI Chat Completions
https://platform.openai.com/docs/api-reference/chat/create, function calling
https://platform.openai.com/docs/guides/function-calling; OpenRouter's reasoning
https://openrouter.ai/docs/use-cases/reasoning-tokens.

Decisions where the two dialects cannot say the same thing:

* Anthropic needs alternating user and assistant turns, with tool results first in a user turn: chat
  messages of one role in a row are merged, system and developer messages (wherever they stand) form the
  system prompt, and a tool message becomes a `tool_result` block.
* Reasoning in a chat history is dropped (Anthropic needs signed thinking blocks). Reasoning in a chat
  answer becomes a thinking block with an empty signature: when Claude Code replays it, Clutch sends it
  to a chat provider again, which drops it, so no provider ever checks the signature.
* Anthropic requires max_tokens (8192 when the chat request sets none), and counts a thinking budget
  inside it; with thinking it allows temperature 1 only, top_p 0.95-1, no top_k and tool_choice auto or
  none: what does not fit is dropped or changed, with a note.
* A chat error answer (HTTP 200 errors exist) becomes an Anthropic error; a context-length error starts
  with "prompt is too long", the phrase Claude Code looks for before compacting (errors.py).
"""

from __future__ import annotations

import re
from typing import Any

from addons.translate.errors import anthropic_error, read_error
from addons.translate.vocabulary import (
    EFFORT_BUDGET,
    MIN_THINKING_BUDGET,
    anthropic_message_id,
    anthropic_stop_reason,
    anthropic_tool_id,
    anthropic_usage,
    note_once,
    parse_tool_arguments,
)
from addons.wire.jsontext import as_object

# ---------------------------------------------------------------------------- chat -> Anthropic request

_CHAT_HANDLED = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
                 "stream", "stream_options", "stop", "tools", "tool_choice", "parallel_tool_calls",
                 "reasoning_effort", "reasoning", "user", "thinking", "response_format", "n"}
DEFAULT_MAX_TOKENS = 8192

_DATA_URL = re.compile(r"^data:(?P<media_type>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)$", re.S)


def _image_to_anthropic(part: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        note_once(notes, "dropped image_url part without a URL")
        return None
    if match := _DATA_URL.match(url):
        return {"type": "image", "source": {"type": "base64", "media_type": match["media_type"],
                                             "data": match["data"]}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    note_once(notes, "dropped image whose URL is neither https nor a base64 data URL")
    return None


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
    note_once(notes, f"dropped {kind} content part")
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
        note_once(notes, "dropped reasoning from the history (Anthropic needs signed thinking blocks)")
    blocks = _chat_content_to_blocks(message.get("content"), notes)
    if isinstance(message.get("refusal"), str) and message["refusal"] and not blocks:
        blocks.append({"type": "text", "text": message["refusal"]})
    for n, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        name = function.get("name", "")
        blocks.append({"type": "tool_use", "id": anthropic_tool_id(call.get("id"), f"toolu_{position}_{n}"),
                       "name": name, "input": parse_tool_arguments(function.get("arguments"), notes, name)})
    if message.get("function_call"):
        note_once(notes, "dropped legacy function_call (use tool_calls)")
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
    reasoning = as_object(body.get("reasoning"))
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


def _turn(message: dict[str, Any], position: int, notes: list[str]) -> dict[str, Any] | None:
    """One tool, assistant or user message as an Anthropic turn; None (with a note) when nothing is left."""
    role = message.get("role")
    if role == "tool":
        return {"role": "user", "content": [_tool_message_to_block(message, notes)]}
    if role == "assistant":
        if blocks := _assistant_to_blocks(message, notes, position):
            return {"role": "assistant", "content": blocks}
        note_once(notes, "dropped empty assistant message")
    elif role == "user":
        if blocks := _chat_content_to_blocks(message.get("content"), notes):
            return {"role": "user", "content": blocks}
        note_once(notes, "dropped empty user message")
    else:
        note_once(notes, f"dropped {role} message")
    return None


def _system_and_turns(body: dict[str, Any], notes: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The system prompt's blocks (every system and developer message, wherever it stands) and the turns."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for position, message in enumerate(body.get("messages") or []):
        if not isinstance(message, dict):
            continue
        if message.get("role") in ("system", "developer"):
            if turns:
                note_once(notes, "moved a later system message into the system prompt")
            system.extend(_chat_content_to_blocks(message.get("content"), notes))
        elif (turn := _turn(message, position, notes)) is not None:
            turns.append(turn)
    return system, turns


def _max_tokens(body: dict[str, Any], notes: list[str]) -> int:
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(max_tokens, int):
        notes.append(f"max_tokens {DEFAULT_MAX_TOKENS} (Anthropic requires one)")
        return DEFAULT_MAX_TOKENS
    return max_tokens


def _thinking_to_anthropic(body: dict[str, Any], out: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    """The client's `thinking`, else one from its reasoning effort, set on `out` with max_tokens raised to
    hold the budget; None when the request does not ask for thinking."""
    thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else None
    if thinking is None and (budget := _thinking_budget(body)) is not None:
        thinking = {"type": "enabled", "budget_tokens": budget}
        notes.append(f"reasoning -> thinking.budget_tokens={budget}")
    if thinking is None:
        return None
    budget = thinking.get("budget_tokens")
    max_tokens = out["max_tokens"]
    if isinstance(budget, int) and budget >= max_tokens:
        # the budget is part of max_tokens: keep the client's room for the answer on top of it
        out["max_tokens"] = max_tokens = budget + max_tokens
        notes.append(f"max_tokens raised to {max_tokens} to fit the thinking budget")
    out["thinking"] = thinking
    return thinking


def _sampling_to_anthropic(body: dict[str, Any], thinking_on: bool, out: dict[str, Any], notes: list[str]) -> None:
    """temperature, top_p and top_k within what Anthropic allows (less with thinking)."""
    temperature, top_p = body.get("temperature"), body.get("top_p")
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


def _stop_to_anthropic(body: dict[str, Any], out: dict[str, Any], notes: list[str]) -> None:
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
    if any(not s.strip() for s in stop):
        notes.append("dropped whitespace-only stop sequences (Anthropic refuses them)")
    if stop := [s for s in stop if s.strip()]:
        out["stop_sequences"] = stop


def _tool_use_to_anthropic(body: dict[str, Any], thinking_on: bool, out: dict[str, Any], notes: list[str]) -> None:
    """The function tools, and tool_choice / parallel_tool_calls as far as thinking allows them."""
    tools = _tools_to_anthropic(body.get("tools"), notes)
    if not tools:
        if body.get("tool_choice") not in (None, "none", "auto"):
            notes.append("dropped tool_choice (no tools left)")
        return
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


def _note_dropped(body: dict[str, Any], notes: list[str]) -> None:
    """What the chat request asks that Anthropic cannot give: several answers, an output format, fields
    with no counterpart."""
    if isinstance(body.get("n"), int) and body["n"] > 1:
        notes.append(f"n={body['n']} -> 1 (Anthropic returns one answer)")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
        notes.append(f"dropped response_format {response_format.get('type')}")
    for field in body:
        if field not in _CHAT_HANDLED:
            notes.append(f"dropped {field}")


def chat_to_anthropic_request(body: dict[str, Any], model: str, notes: list[str]) -> dict[str, Any]:
    """A Chat Completions request body as an Anthropic Messages request body."""
    system, turns = _system_and_turns(body, notes)
    out: dict[str, Any] = {"model": model}
    if system:
        out["system"] = _system_blocks(system)
    out["messages"] = _merge_same_role(turns)
    out["max_tokens"] = _max_tokens(body, notes)
    thinking = _thinking_to_anthropic(body, out, notes)
    thinking_on = thinking is not None and thinking.get("type") in ("enabled", "adaptive")
    _sampling_to_anthropic(body, thinking_on, out, notes)
    _stop_to_anthropic(body, out, notes)
    if body.get("stream") is True:
        out["stream"] = True
    _tool_use_to_anthropic(body, thinking_on, out, notes)
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    _note_dropped(body, notes)
    return out


# ---------------------------------------------------------------------------------- whole answers

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
    message = as_object(choice.get("message"))
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
