"""Requests translated from the OpenAI Responses API (Codex, the `openai` SDK's `responses.create`) to
the OpenAI Chat Completions API, for providers that speak only Chat. The reverse request direction is
`addons/translate/responses_chat.py`, whole answers `addons/translate/responses_answers.py`, streams
`addons/translate/responses_stream.py`.

Pure logic, no mitmproxy. What cannot be carried over is named in `notes` (the flow comment); what a
chat provider cannot do at all raises `Untranslatable`, which the plan turns into a refusal in the
agent's dialect.

Shapes: https://platform.openai.com/docs/api-reference/responses/create (input items, tools,
tool_choice, text.format, reasoning), https://platform.openai.com/docs/guides/function-calling (custom
tools with a free-form or grammar input), https://platform.openai.com/docs/api-reference/chat/create;
and what Codex really sends (openai/codex, codex-rs/protocol/src/models.rs `ResponseItem`, read from a
real Codex 0.169.0 request): developer messages, `function_call` / `function_call_output` paired by
`call_id`, the free-form `apply_patch` custom tool, a client-executed `tool_search` tool, the hosted
`web_search` tool, reasoning items with `encrypted_content`, `include`, `prompt_cache_key`, `store: false`.

Decisions:

* Server-side state is refused: `previous_response_id`, `conversation`, `prompt` (a stored template),
  `background` and `item_reference` inputs name things stored at the agent's provider that a chat
  provider never saw. So is a `tool_choice` that forces a hosted tool.
* Tools: see responses_tools.py (custom tools as functions with one string parameter,
  hosted tools dropped with a note, a tool_choice forcing one refused). Calls of hosted tools in the
  history are dropped with a note too.
* Reasoning items cannot go back to a chat provider (chat takes no reasoning input, and
  `encrypted_content` only the agent's provider can read): dropped with a note, as thinking blocks are
  towards chat (anthropic_to_chat.py). A `compaction` item (the history as OpenAI compacted it, encrypted) is
  dropped the same way: the conversation continues from what follows it.
* Developer messages become system messages (many chat servers know no `developer` role).
"""

from __future__ import annotations

from typing import Any

from addons.translate.responses_tools import (
    CUSTOM_INPUT,
    LOCAL_SHELL,
    TOOL_SEARCH,
    ResponsesContext,
    Tools,
    Untranslatable,
    chat_name,
    dicts,
    tool_choice,
)
from addons.translate.vocabulary import EFFORT_BUDGET, Flavour, note_once
from addons.wire.jsontext import as_object
from addons.wire.jsontext import dumps as _dumps

# Request fields a Response object repeats (https://platform.openai.com/docs/api-reference/responses/object),
# with the API's defaults where the SDK's model needs a value.
ECHO_DEFAULTS: dict[str, Any] = {
    "instructions": None, "max_output_tokens": None, "metadata": {}, "parallel_tool_calls": True,
    "reasoning": None, "store": True, "temperature": None, "text": None, "tool_choice": "auto",
    "tools": [], "top_p": None, "truncation": "disabled", "user": None, "prompt_cache_key": None,
    "service_tier": None}
_REFUSED = {"previous_response_id": "previous_response_id names a response stored by the agent's provider",
            "conversation": "conversation names a conversation stored by the agent's provider",
            "prompt": "prompt names a prompt template stored by the agent's provider",
            "background": "background mode needs the provider to store and run the response"}
_HANDLED = {"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "reasoning",
            "max_output_tokens", "temperature", "top_p", "text", "stream", "user", "metadata", "store", "include",
            "service_tier", "prompt_cache_key", "safety_identifier", *_REFUSED}
# Hints that mean nothing to a chat provider and change nothing in the answer: dropped without a note.
_SILENT = {"stream_options", "client_metadata", "prompt_cache_retention", "truncation"}


# ------------------------------------------------------------------------------------------ history

def _text_of(parts: Any) -> str:
    if isinstance(parts, str):
        return parts
    return "".join(str(p.get("text") if p.get("type") != "refusal" else p.get("refusal") or "")
                   for p in dicts(parts) if p.get("type") in (
                       "input_text", "output_text", "text", "refusal", "summary_text"))


def _image_part(part: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    url = part.get("image_url")
    if isinstance(url, dict):  # the chat shape, which some clients send here too
        url = url.get("url")
    if not isinstance(url, str) or not url:
        note_once(notes, "dropped input_image given by file_id (only the agent's provider has the file)")
        return None
    image: dict[str, Any] = {"url": url}
    if part.get("detail") in ("low", "high", "auto"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _chat_parts(content: Any, flavour: Flavour, notes: list[str]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    parts: list[dict[str, Any]] = []
    for part in dicts(content):
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text") or "")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal") or "")})
        elif kind == "input_image":
            if (image := _image_part(part, notes)) is not None:
                parts.append(image)
        elif kind == "input_file" and isinstance(part.get("file_data"), str) \
                and flavour in (Flavour.OPENAI, Flavour.OPENROUTER):
            parts.append({"type": "file", "file": {"filename": part.get("filename") or "file",
                                                   "file_data": part["file_data"]}})
        elif kind is not None:
            note_once(notes, f"dropped {kind} content part (no chat counterpart here)")
    return parts


def _flatten(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def _call_id(value: Any) -> str:
    return value if isinstance(value, str) else ""


class _History:
    """Input items -> chat messages: calls join the assistant message before them, outputs become tool
    messages right after, images from outputs a user message after those."""

    def __init__(self, tools: Tools, flavour: Flavour, notes: list[str]) -> None:
        self.tools, self.flavour, self.notes = tools, flavour, notes
        self.messages: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []  # tool output images waiting for the tool messages to end
        self.calls: set[str] = set()

    def _flush_images(self) -> None:
        if self.images:
            self.messages.append({"role": "user", "content": self.images})
            self.images = []

    def message(self, item: dict[str, Any]) -> None:
        self._flush_images()
        role = item.get("role")
        if role in ("system", "developer"):
            if text := _text_of(item.get("content")):
                self.messages.append({"role": "system", "content": text})
        elif role == "assistant":
            self.messages.append({"role": "assistant", "content": _text_of(item.get("content"))})
        elif role == "user":
            parts = _chat_parts(item.get("content"), self.flavour, self.notes)
            if parts:
                self.messages.append({"role": "user", "content": _flatten(parts)})
        else:
            note_once(self.notes, f"dropped a message with role {role!r}")

    def call(self, call_id: Any, name: str, arguments: str) -> None:
        self._flush_images()
        call_id = _call_id(call_id) or f"call_{len(self.calls)}"
        self.calls.add(call_id)
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "assistant":
            last = {"role": "assistant", "content": None}
            self.messages.append(last)
        last.setdefault("tool_calls", []).append({"id": call_id, "type": "function",
                                                  "function": {"name": name, "arguments": arguments}})
        if last.get("content") == "":
            last["content"] = None  # OpenAI: content null when the message only calls tools

    def output(self, call_id: Any, output: Any) -> None:
        call_id = _call_id(call_id)
        if isinstance(output, str):
            text, images = output, []
        else:
            parts = _chat_parts(output, self.flavour, self.notes)
            text = "".join(p["text"] for p in parts if p["type"] == "text")
            images = [p for p in parts if p["type"] != "text"]
        if call_id not in self.calls:  # its call is not in this history (dropped, or compacted away)
            note_once(self.notes, "sent a tool output without its call as a user message")
            self._flush_images()
            self.messages.append({"role": "user", "content": f"Output of tool call {call_id}:\n{text}"})
            return
        # chat wants a call's output among the tool messages right after the assistant message that made it
        messages = self.messages
        at = next(n for n in range(len(messages) - 1, -1, -1) if messages[n]["role"] == "assistant"
                  and any(c["id"] == call_id for c in messages[n].get("tool_calls") or []))
        at += 1
        while at < len(messages) and messages[at]["role"] == "tool":
            at += 1
        if at < len(messages):
            note_once(self.notes, "moved a tool output next to its call")
        messages.insert(at, {"role": "tool", "tool_call_id": call_id, "content": text})
        if images:
            note_once(self.notes, "moved tool output images into a user message (chat tool messages are text)")
            self.images += [{"type": "text", "text": f"(images returned by tool call {call_id})"}, *images]

    def add(self, item: Any) -> None:
        if not isinstance(item, dict):
            return
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            self.message(item)
        elif kind == "function_call":
            self.call(item.get("call_id"), self._chat_name("function", item), str(item.get("arguments") or "{}"))
        elif kind == "custom_tool_call":
            self.call(item.get("call_id"), self._chat_name("custom", item),
                      _dumps({CUSTOM_INPUT: str(item.get("input") or "")}))
        elif kind == "local_shell_call":
            self._local_shell_call(item)
        elif kind == "tool_search_call":
            self.call(item.get("call_id"), chat_name(TOOL_SEARCH), _dumps(item.get("arguments") or {}))
        elif kind in ("function_call_output", "custom_tool_call_output", "local_shell_call_output"):
            self.output(item.get("call_id"), item.get("output"))
        elif kind in ("tool_search_output", "additional_tools"):
            self._loaded_tools(item, kind)
        elif kind == "reasoning":
            note_once(self.notes, "dropped reasoning from the history (chat providers take none back)")
            if item.get("encrypted_content"):
                note_once(self.notes, "dropped encrypted reasoning (only the agent's provider can read it)")
        elif kind in ("compaction", "compaction_summary", "context_compaction"):
            note_once(self.notes, "dropped the provider's encrypted compaction of earlier turns")
        elif kind == "item_reference":
            raise Untranslatable("an input item_reference names an item stored by the agent's provider")
        else:
            note_once(self.notes, f"dropped {kind} from the history (no chat counterpart)")

    def _chat_name(self, kind: str, item: dict[str, Any]) -> str:
        """The chat name of a called tool: its declared tool's, else one made from its name."""
        return self.tools.name_of(kind, item.get("name"), item.get("namespace")) \
            or chat_name(str(item.get("name") or ""), item.get("namespace"))

    def _local_shell_call(self, item: dict[str, Any]) -> None:
        action = as_object(item.get("action"))
        arguments = {k: action[k] for k in ("command", "workdir", "timeout_ms", "env") if k in action}
        if "working_directory" in action:
            arguments["workdir"] = action["working_directory"]
        self.call(item.get("call_id") or item.get("id"), chat_name(LOCAL_SHELL), _dumps(arguments))

    def _loaded_tools(self, item: dict[str, Any], kind: str) -> None:
        """Tools a tool search (or the client) added: declared from here on; a search's own output
        answers its call."""
        loaded = dicts(item.get("tools"))
        for tool in loaded:
            self.tools.add(tool)
        if kind == "tool_search_output" and _call_id(item.get("call_id")) in self.calls:
            names = ", ".join(str(t.get("name") or t.get("type")) for t in loaded) or "none"
            self.output(item["call_id"], f"Tools loaded for the next calls: {names}")

    def finish(self) -> list[dict[str, Any]]:
        self._flush_images()
        empty = [m for m in self.messages if m["role"] == "assistant" and not m["content"] and not m.get("tool_calls")]
        if empty:  # many chat servers refuse an assistant message without content
            note_once(self.notes, "dropped empty assistant messages")
        return [m for m in self.messages if not any(m is e for e in empty)]


# ------------------------------------------------------------------------------------------ request

def _reasoning(body: dict[str, Any], flavour: Flavour, out: dict[str, Any], notes: list[str]) -> None:
    reasoning = as_object(body.get("reasoning"))
    effort = reasoning.get("effort")
    if not isinstance(effort, str):
        return
    if flavour is Flavour.OPENROUTER:
        out["reasoning"] = {"effort": effort}
        notes.append(f"reasoning.effort {effort} -> reasoning.effort")
    elif flavour is Flavour.ANTHROPIC:
        if effort in EFFORT_BUDGET:  # Anthropic's OpenAI-compatible endpoint reads `thinking`
            out["thinking"] = {"type": "enabled", "budget_tokens": EFFORT_BUDGET[effort]}
            notes.append(f"reasoning.effort {effort} -> thinking.budget_tokens={EFFORT_BUDGET[effort]}")
    elif effort != "none" or flavour is Flavour.OPENAI:  # other servers know no "none": reasoning stays off
        out["reasoning_effort"] = effort
        notes.append(f"reasoning.effort {effort} -> reasoning_effort")


def _text_format(body: dict[str, Any], flavour: Flavour, out: dict[str, Any], notes: list[str]) -> None:
    text = as_object(body.get("text"))
    fmt = as_object(text.get("format"))
    if fmt.get("type") == "json_schema":
        schema = {"name": fmt.get("name") or "output", "schema": fmt.get("schema") or {}}
        for key in ("description", "strict"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif fmt.get("type") == "json_object":
        out["response_format"] = {"type": "json_object"}
    if isinstance(text.get("verbosity"), str):
        if flavour is Flavour.OPENAI:
            out["verbosity"] = text["verbosity"]
        else:
            note_once(notes, "dropped text.verbosity")


def _tools(body: dict[str, Any], notes: list[str]) -> Tools:
    """The declared tools as chat functions (a client-executed tool_search defers the others)."""
    tools = Tools(notes)
    declared = dicts(body.get("tools"))
    searchable = any(t.get("type") == TOOL_SEARCH and t.get("execution") == "client" for t in declared)
    for tool in declared:
        tools.add(tool, deferred_later=searchable)
    return tools


def _messages(body: dict[str, Any], tools: Tools, flavour: Flavour, notes: list[str]) -> list[dict[str, Any]]:
    """The instructions and the input items as chat messages; Untranslatable when there is no input."""
    history = _History(tools, flavour, notes)
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        history.messages.append({"role": "system", "content": instructions})
    elif isinstance(instructions, list):
        for item in instructions:
            history.add(item)
    items = body.get("input")
    if isinstance(items, str):
        history.messages.append({"role": "user", "content": items})
    elif isinstance(items, list):
        for item in items:
            history.add(item)
    elif items is not None:
        raise Untranslatable("input is neither a string nor a list of items")
    messages = history.finish()
    if not messages:
        raise Untranslatable("the request has no input")
    return messages


def _sampling(body: dict[str, Any], flavour: Flavour, out: dict[str, Any]) -> None:
    """max_output_tokens, temperature, top_p and streaming (with usage, so it can be reported back)."""
    if isinstance(body.get("max_output_tokens"), int) and not isinstance(body["max_output_tokens"], bool):
        out["max_completion_tokens" if flavour is Flavour.OPENAI else "max_tokens"] = body["max_output_tokens"]
    for field in ("temperature", "top_p"):
        if body.get(field) is not None:
            out[field] = body[field]
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # so usage can be reported back


def _identifiers(body: dict[str, Any], flavour: Flavour, out: dict[str, Any], notes: list[str]) -> None:
    """user for every provider; safety_identifier, prompt_cache_key and service_tier for OpenAI only."""
    for field in ("user", "safety_identifier", "prompt_cache_key", "service_tier"):
        if isinstance(body.get(field), str):
            if flavour is Flavour.OPENAI or field == "user":
                out[field] = body[field]
            elif field == "service_tier":
                notes.append("dropped service_tier")


def _note_dropped(body: dict[str, Any], notes: list[str]) -> None:
    """What only the agent's provider can do (metadata, stored responses, include), and unknown fields."""
    if body.get("metadata"):
        notes.append("dropped metadata")
    if body.get("store") is True:
        notes.append("store: the chat provider keeps no response to continue from")
    include = body.get("include")
    wanted = [str(i) for i in include] if isinstance(include, list) else []
    if wanted:
        notes.append(f"include {', '.join(wanted)}: not available from a chat provider")
    for field in body:
        if field not in _HANDLED and field not in _SILENT:
            notes.append(f"dropped {field}")


def responses_to_chat_request(body: dict[str, Any], model: str, flavour: Flavour, notes: list[str]
                              ) -> tuple[dict[str, Any], ResponsesContext]:
    """A Responses request body as a Chat Completions body for `flavour`, and the context of the way back.
    Raises Untranslatable for what a chat provider cannot do."""
    flavour = Flavour(flavour)
    for field, why in _REFUSED.items():
        if body.get(field) not in (None, False, "", {}):
            raise Untranslatable(why)
    tools = _tools(body, notes)
    out: dict[str, Any] = {"model": model, "messages": _messages(body, tools, flavour, notes)}
    _sampling(body, flavour, out)
    if tools.chat:
        out["tools"] = tools.chat
    tool_choice(body.get("tool_choice"), tools, out, notes)
    if "tools" in out and isinstance(body.get("parallel_tool_calls"), bool):
        out["parallel_tool_calls"] = body["parallel_tool_calls"]
    _reasoning(body, flavour, out, notes)
    _text_format(body, flavour, out, notes)
    _identifiers(body, flavour, out, notes)
    _note_dropped(body, notes)
    echo = {field: body.get(field, default) for field, default in ECHO_DEFAULTS.items()}
    return out, ResponsesContext(tools.refs, echo)
