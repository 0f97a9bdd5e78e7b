"""What a request asks for, read in the agent's own dialect: images, web search, thinking, a tool
loop, a forced tool call, a background-sized answer, a subagent model tag.

Pure logic, no mitmproxy. Each reader looks at the shapes of the dialect the request is written in,
which is the point: claude-code-proxy converted Anthropic requests to OpenAI first and then looked
for Anthropic shapes (`type: image` blocks, a tool's own `name`) where the converted request had
`image_url` parts and `function.name`, so its image and web-search routes never fired.
"""

from __future__ import annotations

import re
from typing import Any

from addons.wire.dialects import Dialect
from addons.wire.header_values import has_control

WEB_SEARCH_TOOL_NAMES = frozenset({"web_search", "search_web", "websearch", "brave", "brave_search", "exa",
                                   "exa_search", "perplexity", "perplexity_search"})

# <CLUTCH-MODEL>provider:model</CLUTCH-MODEL>, and claude-code-router's
# <CCR-SUBAGENT-MODEL>provider,model</CCR-SUBAGENT-MODEL> that its users' agent files already carry.
_TAG = re.compile(r"<(CLUTCH-MODEL|CCR-SUBAGENT-MODEL)>\s*([^<]*?)\s*</\1>\s*")


def has_image(dialect: Dialect, body: dict[str, Any]) -> bool:
    """Any image block or image part, in any message (tool results included)."""
    if dialect is Dialect.ANTHROPIC:
        return _any_part(body.get("messages"), lambda p: p.get("type") == "image"
                         or (p.get("type") == "document" and _source_is_image(p)))
    if dialect is Dialect.OPENAI_CHAT:
        return _any_part(body.get("messages"), lambda p: p.get("type") in ("image_url", "input_image"))
    if dialect is Dialect.OPENAI_RESPONSES:
        return _any_part(body.get("input"), lambda p: p.get("type") == "input_image")
    return _any_part(body.get("contents"), lambda p: _gemini_image(p))


def wants_web_search(dialect: Dialect, body: dict[str, Any]) -> bool:
    """A server web-search tool (`web_search_20250305`, Responses' `web_search_preview`), or a
    function tool named like a search engine."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return False
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        kind = str(tool.get("type") or "")
        if kind.startswith("web_search") or "googleSearch" in tool or "google_search" in tool:
            return True
        if _tool_name(tool).lower() in WEB_SEARCH_TOOL_NAMES:
            return True
    return False


# Reasoning efforts from none to the most, as OpenAI, OpenRouter and Anthropic (`output_config.effort`) name
# them; Anthropic's "max" and OpenAI's "xhigh" are the top.
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
# The effort each agent asks for when its user asked for nothing, seen on the wire with the pinned CLIs:
# Claude Code 2.1.330 sends adaptive thinking with output_config.effort "medium" on every request, Codex
# 0.169.0 reasoning.effort "medium" (its model_reasoning_effort), OpenCode 1.18.33 "low" on its title calls.
# The `think` route fires only above this: more thinking than the agent's default, not its every request.
AGENT_DEFAULT_EFFORT = {"claude": "medium", "codex": "medium", "opencode": "low"}
DEFAULT_EFFORT = "minimal"  # other agents send no effort unless their user asks for one


def _effort_word(value: Any) -> str | None:
    word = str(value).strip().lower() if isinstance(value, str) else ""
    word = {"max": "xhigh", "maximum": "xhigh", "highest": "xhigh"}.get(word, word)
    return word if word in EFFORTS else None


def _effort_of_budget(budget: Any) -> str | None:
    """A thinking budget in tokens as an effort (the bands translation uses); -1 is Gemini's dynamic."""
    if not isinstance(budget, int) or isinstance(budget, bool):
        return None
    if budget == 0:
        return "none"
    if budget < 0:
        return "medium"
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def thinking_effort(dialect: Dialect, body: dict[str, Any]) -> str | None:
    """How much thinking a request asks for, as one of EFFORTS; None when it says nothing about it.
    Anthropic `thinking` (enabled with its budget, adaptive with `output_config.effort`, Anthropic's
    default "high" without one), OpenAI `reasoning_effort` / Responses and OpenRouter `reasoning`
    (effort, max_tokens, enabled), Gemini `thinkingConfig` (thinkingLevel, thinkingBudget)."""
    output_config = body.get("output_config")
    stated = _effort_word(output_config.get("effort")) if isinstance(output_config, dict) else None
    return (_anthropic_thinking(body.get("thinking"), stated) or _reasoning_effort(body.get("reasoning"))
            or _effort_word(body.get("reasoning_effort")) or stated
            or _gemini_thinking(body.get("generationConfig") or body.get("generation_config")))


def _anthropic_thinking(thinking: Any, stated: str | None) -> str | None:
    """Anthropic's `thinking`: disabled, enabled with a budget, or adaptive (`stated`: output_config.effort)."""
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        return "none"
    if kind == "enabled":
        return stated or _effort_of_budget(thinking.get("budget_tokens")) or "medium"
    if kind == "adaptive":
        return stated or "high"
    return None


def _reasoning_effort(reasoning: Any) -> str | None:
    """OpenRouter's and Responses' `reasoning` object: effort, max_tokens, or just enabled."""
    if not isinstance(reasoning, dict):
        return None
    found = _effort_word(reasoning.get("effort")) or _effort_of_budget(reasoning.get("max_tokens"))
    if found:
        return found
    if reasoning.get("enabled") is not None:
        return "medium" if reasoning.get("enabled") is True else "none"
    return None


def _gemini_thinking(generation: Any) -> str | None:
    """Gemini's generationConfig.thinkingConfig (either spelling): a level, a budget, or thoughts included."""
    if not isinstance(generation, dict):
        return None
    config = generation.get("thinkingConfig") or generation.get("thinking_config")
    if not isinstance(config, dict):
        return None
    level = _effort_word(config.get("thinkingLevel") or config.get("thinking_level"))
    budget = _effort_of_budget(config.get("thinkingBudget", config.get("thinking_budget")))
    if level or budget:
        return level or budget
    if config.get("includeThoughts") or config.get("include_thoughts"):
        return "medium"
    return None


def default_effort(agent: str | None) -> str:
    """The effort `agent` asks for by default (AGENT_DEFAULT_EFFORT)."""
    return AGENT_DEFAULT_EFFORT.get(agent or "", DEFAULT_EFFORT)


def wants_thinking(dialect: Dialect, body: dict[str, Any], agent: str | None = None) -> bool:
    """More thinking than `agent` asks for by default (for an unknown agent: more than minimal)."""
    effort = thinking_effort(dialect, body)
    return effort is not None and EFFORTS.index(effort) > EFFORTS.index(default_effort(agent))


def continues_tool_loop(dialect: Dialect, body: dict[str, Any]) -> bool:
    """The newest message carries tool results: the agent is inside a tool loop."""
    if dialect is Dialect.ANTHROPIC:
        last = _last(body.get("messages"))
        return bool(last and last.get("role") == "user"
                    and _any_part([last], lambda p: p.get("type") == "tool_result"))
    if dialect is Dialect.OPENAI_CHAT:
        last = _last(body.get("messages"))
        return bool(last and last.get("role") in ("tool", "function"))
    if dialect is Dialect.OPENAI_RESPONSES:
        items = body.get("input")
        last = _last(items) if isinstance(items, list) else None
        return bool(last and last.get("type") in ("function_call_output", "custom_tool_call_output",
                                                  "local_shell_call_output"))
    last = _last(body.get("contents"))
    return bool(last and _any_part([last], lambda p: "functionResponse" in p or "function_response" in p))


def forces_tool_call(dialect: Dialect, body: dict[str, Any]) -> bool:
    """tool_choice requires some tool (Anthropic any/tool, OpenAI required/named, Gemini mode ANY)."""
    choice = body.get("tool_choice")
    if dialect is Dialect.ANTHROPIC:
        return isinstance(choice, dict) and choice.get("type") in ("any", "tool")
    if dialect in (Dialect.OPENAI_CHAT, Dialect.OPENAI_RESPONSES):
        return choice == "required" or (isinstance(choice, dict) and choice.get("type") not in (None, "auto", "none"))
    config = body.get("toolConfig") or body.get("tool_config") or {}
    calling = config.get("functionCallingConfig") or config.get("function_calling_config") or {}
    return isinstance(calling, dict) and str(calling.get("mode", "")).upper() == "ANY"


def max_output_tokens(dialect: Dialect, body: dict[str, Any]) -> int | None:
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    generation = body.get("generationConfig") or {}
    value = generation.get("maxOutputTokens") if isinstance(generation, dict) else None
    return value if isinstance(value, int) else None


def family(model: str | None) -> str | None:
    """The Claude family a model name belongs to, whatever its version: opus, sonnet or haiku."""
    name = (model or "").lower()
    for known in ("opus", "sonnet", "haiku"):
        if known in name:
            return known
    return None


def find_subagent_tag(dialect: Dialect, body: dict[str, Any]) -> str | None:
    """The target named by a subagent tag in the system prompt, as written (`p:m` or `p,m`)."""
    for holder, key in _system_slots(dialect, body):
        match = _TAG.search(holder[key])
        if match:
            return match.group(2) if not has_control(match.group(2)) else None  # never a header's line break
    return None


def strip_subagent_tags(dialect: Dialect, body: dict[str, Any]) -> int:
    """Remove every subagent tag from the system prompt, in place; returns how many were removed."""
    removed = 0
    for holder, key in list(_system_slots(dialect, body)):
        holder[key], count = _TAG.subn("", holder[key])
        removed += count
    return removed


# ---------------------------------------------------------------- helpers


def _system_slots(dialect: Dialect, body: dict[str, Any]):
    """(holder, key) of every system-prompt string, so callers can read or replace it in place."""
    if dialect is Dialect.ANTHROPIC:
        yield from _text_slots(body, "system")
    elif dialect in (Dialect.OPENAI_CHAT, Dialect.OPENAI_RESPONSES):
        if dialect is Dialect.OPENAI_RESPONSES and isinstance(body.get("instructions"), str):
            yield body, "instructions"
        items = body.get("messages" if dialect is Dialect.OPENAI_CHAT else "input")
        for message in items if isinstance(items, list) else []:
            if isinstance(message, dict) and message.get("role") in ("system", "developer"):
                yield from _text_slots(message, "content")
    else:
        system = body.get("systemInstruction") or body.get("system_instruction")
        if isinstance(system, dict):
            yield from _text_slots(system, "parts")


def _text_slots(holder: dict, key: str):
    """A string field, or the `text` of each part in a list field."""
    value = holder.get(key)
    if isinstance(value, str):
        yield holder, key
    elif isinstance(value, list):
        yield from ((part, "text") for part in value if isinstance(part, dict) and isinstance(part.get("text"), str))


def _last(items: Any) -> dict | None:
    if isinstance(items, list) and items and isinstance(items[-1], dict):
        return items[-1]
    return None


def _any_part(messages: Any, test) -> bool:
    """True when `test` holds for any content part of any message, nested tool results included."""
    if not isinstance(messages, list):
        return False
    stack = list(messages)
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if test(node):
                return True
            for key in ("content", "parts", "output"):
                child = node.get(key)
                if isinstance(child, (list, dict)):
                    stack.append(child)
    return False


def _source_is_image(part: dict) -> bool:
    source = part.get("source")
    return isinstance(source, dict) and str(source.get("media_type", "")).startswith("image/")


def _gemini_image(part: dict) -> bool:
    blob = part.get("inlineData") or part.get("inline_data") or part.get("fileData") or part.get("file_data")
    return isinstance(blob, dict) and str(blob.get("mimeType") or blob.get("mime_type") or "").startswith("image/")


def _tool_name(tool: dict) -> str:
    if isinstance(tool.get("function"), dict):
        return str(tool["function"].get("name") or "")
    return str(tool.get("name") or "")
