"""The words Anthropic Messages and OpenAI Chat Completions share, kept in one place so that every
translator says them the same way: the request and whole-answer translators of each direction
(`anthropic_to_chat.py`, `chat_to_anthropic.py`), the stream translators (`stream.py`) and the
Responses translators (`responses*.py`). Stop reasons, message and tool ids, usage blocks, tool
arguments, the chat provider families (`Flavour`) and the thinking budget of an effort level.

Pure logic, no mitmproxy; plain JSON values in and out.

Decisions where the two dialects cannot say the same thing:

* Tool ids become Anthropic-safe (`^[a-zA-Z0-9_-]+$`, e.g. Kimi's `functions.Bash:0` -> `functions_Bash_0`)
  wherever Clutch writes an Anthropic tool id; the same function is used for calls and results, so they
  stay paired.
* A chat answer that calls tools but reports finish_reason "stop" (several OpenAI-compatible servers do)
  is reported as stop_reason "tool_use", because Anthropic clients decide on it whether to run tools.

References: https://docs.anthropic.com/en/api/messages, tool use
https://docs.anthropic.com/en/docs/build-with-claude/tool-use, extended thinking
https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking,
https://platform.openai.com/docs/api-reference/chat/create, OpenRouter's reasoning
https://openrouter.ai/docs/use-cases/reasoning-tokens.
"""

from __future__ import annotations

import enum
import json
import re
import uuid
from typing import Any

from addons.wire.jsontext import as_object


class Flavour(enum.StrEnum):
    """Which provider family receives a translated chat request (they differ in their extensions)."""

    OPENROUTER = "openrouter"  # reasoning{max_tokens|effort}, cache_control on parts, top_k
    OPENAI = "openai"  # reasoning_effort, max_completion_tokens
    ANTHROPIC = "anthropic"  # Anthropic's OpenAI-compatible endpoint: takes `thinking` as an extra field
    GENERIC = "generic"  # vLLM, Ollama, llama.cpp, ...: reasoning_effort, max_tokens


CHAT_TO_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                          "function_call": "tool_use", "content_filter": "refusal"}
ANTHROPIC_TO_CHAT_FINISH = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                            "stop_sequence": "stop", "pause_turn": "stop", "refusal": "content_filter",
                            "model_context_window_exceeded": "length"}

# Budgets for an effort level; Anthropic's minimum budget is 1024.
EFFORT_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768}
MIN_THINKING_BUDGET = 1024

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
    usage = as_object(chat_usage)
    details = as_object(usage.get("prompt_tokens_details"))
    cached = _int(details.get("cached_tokens")) or _int(usage.get("prompt_cache_hit_tokens"))  # DeepSeek
    written = _int(details.get("cache_write_tokens"))  # OpenRouter, when the provider reports it
    prompt = _int(usage.get("prompt_tokens"))
    return {"input_tokens": max(prompt - cached - written, 0), "output_tokens": _int(usage.get("completion_tokens")),
            "cache_read_input_tokens": cached, "cache_creation_input_tokens": written}


def chat_usage(anthropic: Any) -> dict[str, Any]:
    usage = as_object(anthropic)
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


def note_once(notes: list[str], note: str) -> None:
    """A note for the flow comment, said once however many blocks it applies to."""
    if note not in notes:
        notes.append(note)
