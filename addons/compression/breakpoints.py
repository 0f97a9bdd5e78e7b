"""Prompt-cache breakpoints that agents leave out: added where the target needs them.

Some providers cache a prompt's prefix only where the request marks it: Anthropic's `cache_control`
breakpoints (at most 4 per request, https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching),
and on OpenRouter the same `cache_control` on content parts for Anthropic, Gemini and Alibaba (Qwen)
models ("Most providers automatically enable prompt caching, but note that some (see Alibaba and
Anthropic below) require you to enable it on a per-message basis"; Gemini takes the same breakpoints:
https://openrouter.ai/docs/guides/best-practices/prompt-caching). OpenAI, DeepSeek, Moonshot (Kimi)
and xAI cache every prefix on their own ("implicit caching (e.g. OpenAI, DeepSeek, Gemini 2.5)", the
same page): nothing to add there.

A breakpoint changes only billing, never the answer: the model reads the same tokens. So this is on
by default, and it respects the agent: a request carrying any `cache_control` of its own is left
exactly as it came (its breakpoints are neither moved nor added to).

The breakpoints are a pure function of the body (the same body gives the same bytes), on the last
tool, the system prompt's last block, and the last block of the last two turns' newest messages: the
request's last message (the next turn repeats it unchanged, behind the answer and a new message), and
the last message before the newest assistant turn, which the previous request ended with, so the
previous request's cache entry is read even when the newest message later changes. The provider's
cache key is the prompt's content, not where the markers stand: a turn whose breakpoint moved on still
reads what the previous turn wrote.

Called from routing/plan.py after the target is known and before translation, in the agent's dialect
(Anthropic Messages or OpenAI Chat); translation carries `cache_control` where the target takes it.
"""

from __future__ import annotations

import copy
from typing import Any

from addons.config.rules import Rules
from addons.wire.dialects import Dialect

LIMIT = 4  # Anthropic's maximum per request; OpenRouter passes the markers to it as they are
MARK: dict[str, str] = {"type": "ephemeral"}
# OpenRouter model families whose providers cache only where a breakpoint is (see the docstring)
_EXPLICIT_FAMILIES = ("anthropic/", "google/gemini", "qwen/")
# The blocks a breakpoint goes on: Anthropic refuses one on thinking blocks and on empty text, and the
# translators carry it on text and tool results only (an image's marker would be lost on the way)
_MARKABLE = frozenset({"text", "tool_result"})


def wanted(rules: Rules, profiles: tuple[str, ...]) -> bool:
    """The rules' `compression.breakpoints`, replaced by each profile (agent, then launch profile) in
    `profiles` that sets its own, as compression.mode is."""
    setting = rules.compression.breakpoints
    for name in profiles:
        profile = rules.profiles.get(name)
        if profile is not None and profile.breakpoints is not None:
            setting = profile.breakpoints
    return setting == "auto"


def needed(upstream: Dialect, openrouter: bool, model: str | None) -> bool:
    """Whether the target caches only at explicit breakpoints: any Anthropic Messages endpoint, and on
    OpenRouter the Anthropic, Gemini and Qwen models."""
    if upstream is Dialect.ANTHROPIC:
        return True
    return openrouter and upstream is Dialect.OPENAI_CHAT and (model or "").lower().startswith(_EXPLICIT_FAMILIES)


def has_breakpoints(body: Any) -> bool:
    """Any `cache_control` anywhere in the body (a top-level one is Anthropic's automatic caching)."""
    if isinstance(body, dict):
        return "cache_control" in body or any(has_breakpoints(v) for v in body.values())
    if isinstance(body, list):
        return any(has_breakpoints(v) for v in body)
    return False


def with_breakpoints(dialect: Dialect, body: dict[str, Any], upstream: Dialect | None = None
                     ) -> tuple[dict[str, Any], int]:
    """The body with breakpoints added (a copy; the agent's body is not touched) and how many; the body
    itself and 0 when it has its own, or nothing to mark, or a dialect without breakpoints.

    `upstream`: the dialect the body is translated to (None: the same). Only places that translation
    carries are marked: a Chat request has no place for one on a tool schema, and the translators
    carry markers on text and tool results, not on images."""
    if dialect not in (Dialect.ANTHROPIC, Dialect.OPENAI_CHAT) or has_breakpoints(body):
        return body, 0
    out = copy.deepcopy(body)
    added = 0
    if dialect is Dialect.ANTHROPIC:
        if upstream in (None, Dialect.ANTHROPIC):
            added += _mark_last_tool(out)
        added += _mark_system(out)
    messages = out.get("messages")
    if isinstance(messages, list):
        places = _message_places(messages, LIMIT - added)
        if dialect is Dialect.OPENAI_CHAT and messages and isinstance(messages[0], dict) \
                and messages[0].get("role") == "system" and 0 not in places:
            places = [0, *places[:LIMIT - 1]]  # a chat request's system prompt is its first message
        for index in places:
            added += _mark_message(messages[index], dialect)
    return (out, added) if added else (body, 0)


def _mark_last_tool(body: dict[str, Any]) -> int:
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[-1], dict):
        tools[-1]["cache_control"] = dict(MARK)
        return 1
    return 0


def _mark_system(body: dict[str, Any]) -> int:
    system = body.get("system")
    if isinstance(system, str) and system:
        body["system"] = [{"type": "text", "text": system, "cache_control": dict(MARK)}]
        return 1
    if isinstance(system, list):
        return _mark_blocks(system)
    return 0


def _message_places(messages: list[Any], room: int) -> list[int]:
    """The last message and the last one before the newest assistant message (see the docstring),
    newest first, at most `room` of them."""
    if not messages or room <= 0:
        return []
    places = [len(messages) - 1]
    last_assistant = next((i for i in range(len(messages) - 1, -1, -1)
                           if isinstance(messages[i], dict) and messages[i].get("role") == "assistant"), None)
    if last_assistant is not None and last_assistant > 0 and last_assistant - 1 not in places:
        places.append(last_assistant - 1)
    return places[:room]


def _mark_message(message: Any, dialect: Dialect) -> int:
    if not isinstance(message, dict):
        return 0
    if dialect is Dialect.OPENAI_CHAT and message.get("role") not in ("system", "user", "tool"):
        return 0  # OpenRouter takes breakpoints on content parts; an assistant's tool calls have none
    content = message.get("content")
    if isinstance(content, str):
        if not content.strip():
            return 0
        message["content"] = [{"type": "text", "text": content, "cache_control": dict(MARK)}]
        return 1
    if isinstance(content, list):
        return _mark_blocks(content)
    return 0


def _mark_blocks(blocks: list[Any]) -> int:
    """A breakpoint on the last block that may carry one: text with more than blanks, or a tool result."""
    for block in reversed(blocks):
        if not isinstance(block, dict) or block.get("type") not in _MARKABLE:
            continue
        if block.get("type") == "text" and not (isinstance(block.get("text"), str) and block["text"].strip()):
            continue
        block["cache_control"] = dict(MARK)
        return 1
    return 0
