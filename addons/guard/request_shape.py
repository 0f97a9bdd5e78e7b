"""Is an agent's request shaped as its dialect says, where translation reads it?

Pure logic, no mitmproxy. Before a request is translated to another dialect, the fields the
translators read are checked: a body like `"content": 5` or `"messages": "x"` would otherwise make a
translator raise (a 500 that names a Python type) or, worse, be read as something else and sent (a
string of messages read as none, a tool call that is not an object skipped): the target would answer
a question the agent did not ask. Such a request gets a 400 that names the field, in the agent's own
dialect, as the provider it called would have answered. Unknown block *types* are not malformed
(providers add them): translation drops those with a note. A request that is not translated goes to
a provider that reads it itself, and is not checked here.
"""

from __future__ import annotations

from typing import Any

from addons.wire.dialects import Dialect


def problem(dialect: Dialect, body: dict[str, Any]) -> str | None:
    """The first malformed field of `body` as `field: what is wrong`, or None."""
    check = _CHECKS.get(dialect)
    return check(body) if check is not None else None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _must(value: Any, field: str, wanted: str, *types: type, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in types:
        return f"{field}: must be {wanted}, not {_kind(value)}"
    if not isinstance(value, types):
        return f"{field}: must be {wanted}, not {_kind(value)}"
    return None


def _blocks(content: Any, field: str) -> str | None:
    """A string, or an array of content blocks, each an object with a string `type`."""
    if isinstance(content, str):
        return None
    found = _must(content, field, "a string or an array of content blocks", list, optional=False)
    if found:
        return found
    for index, block in enumerate(content):
        where = f"{field}[{index}]"
        found = _must(block, where, "a content block (an object)", dict, optional=False) or \
            _must(block.get("type"), f"{where}.type", "a string", str, optional=False)
        if not found and block["type"] == "tool_result" and block.get("content") is not None:
            found = _blocks(block["content"], f"{where}.content")
        if found:
            return found
    return None


def _objects(value: Any, field: str, what: str, one: str) -> str | None:
    """Absent, or an array of objects: `what` they are, and `one` of them."""
    found = _must(value, field, f"an array of {what}", list)
    if found or value is None:
        return found
    for index, item in enumerate(value):
        found = _must(item, f"{field}[{index}]", f"{one} (an object)", dict, optional=False)
        if found:
            return found
    return None


def _anthropic(body: dict[str, Any]) -> str | None:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return _must(messages, "messages", "an array of messages", list, optional=False)
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        found = (_must(message, where, "a message (an object)", dict, optional=False)
                 or _must(message.get("role"), f"{where}.role", "a string", str, optional=False)
                 or _blocks(message.get("content"), f"{where}.content"))
        if found:
            return found
    system = body.get("system")
    if system is not None and (found := _blocks(system, "system")):
        return found
    found = _objects(body.get("tools"), "tools", "tools", "a tool")
    if found:
        return found
    for index, tool in enumerate(body.get("tools") or []):
        found = _must(tool.get("name"), f"tools[{index}].name", "a string", str)
        if found:
            return found
    return (_must(body.get("tool_choice"), "tool_choice", "an object", dict)
            or _must(body.get("thinking"), "thinking", "an object", dict)
            or _must(body.get("stop_sequences"), "stop_sequences", "an array of strings", list))


def _chat(body: dict[str, Any]) -> str | None:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return _must(messages, "messages", "an array of messages", list, optional=False)
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        found = (_must(message, where, "a message (an object)", dict, optional=False)
                 or _must(message.get("role"), f"{where}.role", "a string", str, optional=False))
        if found:
            return found
        content = message.get("content")
        if content is not None and (found := _blocks(content, f"{where}.content")):
            return found
        found = _objects(message.get("tool_calls"), f"{where}.tool_calls", "tool calls", "a tool call")
        if found:
            return found
        for number, call in enumerate(message.get("tool_calls") or []):
            found = _must(call.get("function"), f"{where}.tool_calls[{number}].function", "an object", dict)
            if found:
                return found
    return (_objects(body.get("tools"), "tools", "tools", "a tool")
            or _must(body.get("reasoning_effort"), "reasoning_effort", "a string", str)
            or _must(body.get("stop"), "stop", "a string or an array of strings", str, list))


def _responses(body: dict[str, Any]) -> str | None:
    items = body.get("input")
    if not isinstance(items, str):
        found = _objects(items, "input", "input items", "an input item")
        if found or items is None:
            return found
        for index, item in enumerate(items):
            content = item.get("content")
            if item.get("type") in (None, "message") and content is not None \
                    and (found := _blocks(content, f"input[{index}].content")):
                return found
    return (_must(body.get("instructions"), "instructions", "a string", str)
            or _objects(body.get("tools"), "tools", "tools", "a tool"))


_CHECKS = {Dialect.ANTHROPIC: _anthropic, Dialect.OPENAI_CHAT: _chat, Dialect.OPENAI_RESPONSES: _responses}
