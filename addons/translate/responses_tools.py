"""Responses tools as chat functions and back: the request's tools and tool_choice in chat form, and a
chat tool call as the Responses output item of the tool it stands for. Shared by the request, answer
and stream translators of the Responses <-> Chat pair (translate_responses*.py).

Pure logic, no mitmproxy. Shapes: https://platform.openai.com/docs/api-reference/responses/create
(tools, tool_choice), https://platform.openai.com/docs/guides/function-calling (custom tools: a
free-form or grammar-shaped string input), and Codex's `ResponseItem` (openai/codex,
codex-rs/protocol/src/models.rs: `custom_tool_call.input`, `local_shell_call.action`,
`tool_search_call.arguments`, `function_call.namespace`).

Decisions:

* A custom tool becomes a chat function with one string parameter, `input`; a call of it comes back as
  a `custom_tool_call` whose input is that string (a model that answers with other JSON, or none,
  has its arguments passed on as the raw input rather than lost).
* `local_shell` and a client-executed `tool_search` become functions of those names; functions inside
  a `namespace` tool are flattened to `<namespace>__<name>` (and come back with their namespace).
* Hosted tools (web_search, file_search, code_interpreter, image_generation, mcp, computer use, ...)
  have no chat counterpart: dropped with a note. A tool_choice that forces one is refused.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from addons.translate.vocabulary import note_once
from addons.wire.jsontext import as_object, get_typed

CUSTOM_INPUT = "input"  # the one parameter of the chat function that stands for a custom tool
LOCAL_SHELL = "local_shell"
TOOL_SEARCH = "tool_search"
MAX_FUNCTION_NAME = 64  # OpenAI's limit on chat function names (^[a-zA-Z0-9_-]{1,64}$)

LOCAL_SHELL_PARAMETERS = {
    "type": "object", "required": ["command"],
    "properties": {"command": {"type": "array", "items": {"type": "string"},
                               "description": "The program and its arguments, e.g. [\"bash\", \"-lc\", \"ls\"]"},
                   "workdir": {"type": "string", "description": "Working directory"},
                   "timeout_ms": {"type": "integer", "description": "Time limit in milliseconds"}}}
_UNSAFE_NAME = re.compile(r"[^a-zA-Z0-9_-]")


class Untranslatable(ValueError):
    """The request uses something the target dialect cannot express; the message says what."""


@dataclasses.dataclass(frozen=True)
class ToolRef:
    """The Responses tool a chat function stands for."""

    kind: str  # function | custom | local_shell | tool_search
    name: str
    namespace: str | None = None


@dataclasses.dataclass
class ResponsesContext:
    """What the way back needs from the agent's Responses request."""

    tools: dict[str, ToolRef]  # chat function name -> the tool it stands for
    echo: dict[str, Any]  # request fields every Response object repeats

    def ref(self, chat_name: Any) -> ToolRef:
        name = chat_name if isinstance(chat_name, str) else ""
        return self.tools.get(name) or ToolRef("function", name)


def dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON list; nothing for anything else (the agent's JSON is not trusted to be well-formed)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def chat_name(name: str, namespace: Any = None) -> str:
    """A tool's chat function name: namespaced ones flattened, unsafe characters replaced."""
    if isinstance(namespace, str) and namespace:
        name = f"{namespace}{'' if namespace.endswith('_') else '__'}{name}"
    return _UNSAFE_NAME.sub("_", name)[:MAX_FUNCTION_NAME] or "tool"


# ------------------------------------------------------------------------------------------- tools

class Tools:
    """The request's tools as chat functions, and which tool each function stands for."""

    def __init__(self, notes: list[str]) -> None:
        self.chat: list[dict[str, Any]] = []
        self.refs: dict[str, ToolRef] = {}
        self.notes = notes

    def _add(self, ref: ToolRef, description: Any, parameters: Any, strict: Any = None) -> None:
        name = chat_name(ref.name, ref.namespace)
        if name in self.refs:
            if self.refs[name] != ref:
                note_once(self.notes, f"dropped tool {ref.name}: its chat name {name} is taken")
            return
        function: dict[str, Any] = {"name": name, "parameters": parameters if isinstance(parameters, dict)
                                    else {"type": "object", "properties": {}}}
        if isinstance(description, str) and description:
            function["description"] = description
        if isinstance(strict, bool):
            function["strict"] = strict
        self.refs[name] = ref
        self.chat.append({"type": "function", "function": function})

    def add(self, tool: Any, namespace: str | None = None, *, deferred_later: bool = False) -> None:
        if not isinstance(tool, dict):
            return
        kind, name = tool.get("type"), tool.get("name")
        if kind == "function" and isinstance(name, str):
            if tool.get("defer_loading") is True and deferred_later:
                return  # tool_search loads it when the model asks (its output adds it)
            self._add(ToolRef("function", name, namespace), tool.get("description"), tool.get("parameters"),
                      tool.get("strict"))
        elif kind == "custom" and isinstance(name, str):
            self._add(ToolRef("custom", name, namespace), _custom_description(tool), _CUSTOM_PARAMETERS, None)
        elif kind == "namespace" and isinstance(name, str):
            for inner in dicts(tool.get("tools")):
                self.add(inner, name, deferred_later=deferred_later)
        elif kind == LOCAL_SHELL:
            self._add(ToolRef(LOCAL_SHELL, LOCAL_SHELL), "Runs a command on the user's machine and returns "
                      "its output.", LOCAL_SHELL_PARAMETERS)
        elif kind == TOOL_SEARCH and tool.get("execution") == "client":
            self._add(ToolRef(TOOL_SEARCH, TOOL_SEARCH), tool.get("description"), tool.get("parameters"))
        else:
            note_once(self.notes, f"dropped hosted tool {kind or '?'} (no chat counterpart)")

    def name_of(self, kind: str, name: Any, namespace: Any = None) -> str | None:
        wanted = ToolRef(kind, name if isinstance(name, str) else "", namespace if isinstance(namespace, str) else None)
        return next((chat for chat, ref in self.refs.items() if ref == wanted), None)


_CUSTOM_PARAMETERS = {"type": "object", "properties": {CUSTOM_INPUT: {"type": "string"}}, "required": [CUSTOM_INPUT],
                      "additionalProperties": False}


def _custom_description(tool: dict[str, Any]) -> str:
    fmt = as_object(tool.get("format"))
    description = get_typed(tool, "description", str, "")
    if fmt.get("type") == "grammar":
        shape = (f"It must follow this {fmt.get('syntax') or ''} grammar:\n{fmt.get('definition') or ''}")
    else:
        shape = "It is free-form text, not JSON."
    return f"{description}\n\nPut the tool's whole raw input in the `{CUSTOM_INPUT}` string. {shape}".strip()


def tool_choice(choice: Any, tools: Tools, out: dict[str, Any], notes: list[str]) -> None:
    """Sets out["tool_choice"] (and narrows out["tools"] for allowed_tools); refuses forced hosted tools."""
    if choice is None or choice == "auto":
        return
    if choice == "none":
        if tools.chat:
            out["tool_choice"] = "none"
        return
    if choice == "required":
        if not tools.chat:
            raise Untranslatable("tool_choice requires a tool call, and no tool of the request has a chat form")
        out["tool_choice"] = "required"
        return
    kind = get_typed(choice, "type", str, None) if isinstance(choice, dict) else None
    if kind in ("function", "custom"):
        name = tools.name_of(kind, choice.get("name"), choice.get("namespace"))
        if name is None:
            raise Untranslatable(f"tool_choice forces {kind} {choice.get('name')!r}, which is not among the tools")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif kind == "allowed_tools":
        allowed = {tools.name_of(get_typed(t, "type", str, ""), t.get("name"), t.get("namespace"))
                   for t in dicts(choice.get("tools"))} - {None}
        out["tools"] = [t for t in tools.chat if t["function"]["name"] in allowed]
        notes.append(f"allowed_tools: sent the {len(out['tools'])} allowed tools only")
        mode = "required" if choice.get("mode") == "required" else "auto"
        if mode == "required" and not out["tools"]:
            raise Untranslatable("tool_choice allowed_tools requires a call of tools that have no chat form")
        if out["tools"]:
            out["tool_choice"] = mode
        else:
            del out["tools"]
    else:
        raise Untranslatable(f"tool_choice forces the hosted tool {kind or choice}, which a chat provider does "
                             "not have")


# ------------------------------------------------------------------------------------------ way back

def custom_input(arguments: str) -> str:
    """The raw input of a custom tool from the arguments of its chat function."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(parsed, dict):
        value = parsed.get(CUSTOM_INPUT)
        if isinstance(value, str):
            return value
        strings = [v for v in parsed.values() if isinstance(v, str)]
        if len(parsed) == 1 and strings:
            return strings[0]
    return parsed if isinstance(parsed, str) else arguments


def _shell_action(arguments: str) -> dict[str, Any]:
    try:
        parsed = json.loads(arguments)
    except ValueError:
        parsed = None
    parsed = parsed if isinstance(parsed, dict) else {}
    command = parsed.get("command")
    if isinstance(command, str):
        command = ["bash", "-lc", command]
    action: dict[str, Any] = {"type": "exec", "command": [str(c) for c in command] if isinstance(command, list) else []}
    if isinstance(parsed.get("workdir"), str):
        action["working_directory"] = parsed["workdir"]
    if isinstance(parsed.get("timeout_ms"), int):
        action["timeout_ms"] = parsed["timeout_ms"]
    if isinstance(parsed.get("env"), dict):
        action["env"] = parsed["env"]
    return action


ITEM_PREFIX = {"function": "fc", "custom": "ctc", LOCAL_SHELL: "lsh", TOOL_SEARCH: "tsc"}


def call_item(ref: ToolRef, call_id: str, arguments: str, item_id: str, status: str = "completed"
              ) -> dict[str, Any]:
    """The Responses output item of a chat tool call of the function that stands for `ref`."""
    if ref.kind == "custom":
        item: dict[str, Any] = {"type": "custom_tool_call", "id": item_id, "status": status, "call_id": call_id,
                                "name": ref.name, "input": custom_input(arguments)}
    elif ref.kind == LOCAL_SHELL:
        item = {"type": "local_shell_call", "id": item_id, "status": status, "call_id": call_id,
                "action": _shell_action(arguments)}
    elif ref.kind == TOOL_SEARCH:
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            parsed = {"query": arguments}
        item = {"type": "tool_search_call", "id": item_id, "status": status, "call_id": call_id,
                "execution": "client", "arguments": parsed}
    else:
        item = {"type": "function_call", "id": item_id, "status": status, "call_id": call_id, "name": ref.name,
                "arguments": arguments}
    if ref.namespace:
        item["namespace"] = ref.namespace
    return item
