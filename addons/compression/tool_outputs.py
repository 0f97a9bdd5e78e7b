"""The tool outputs of an LLM request, in each dialect: where each sits, which call made it, and
whether it is a file read.

Pure logic, no mitmproxy. A tool output is an Anthropic `tool_result` block, an OpenAI `role: tool`
message, a Responses `function_call_output` item, the text of a Gemini `functionResponse`, or the
observation of an agent that acts through text (mini-SWE-agent, SWE-agent): a user message after an
assistant message that ran a fenced shell command, in the shape those agents write.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from typing import Any

from addons.compression import shell
from addons.wire.dialects import Dialect

READ_TOOLS = frozenset({"read", "view", "read_file", "readfile", "read_many_files", "cat", "open"})
PATH_KEYS = ("file_path", "path", "filePath", "absolute_path", "notebook_path", "filename")
_SHELL_TOOLS = frozenset({"", "bash", "shell", "exec_command", "run_shell_command", "local_shell", "execute",
                          "terminal"})
_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.S)
_FENCE_LANGUAGE = re.compile(r"```([^\n`]*)\n.*?```", re.S)
_SHELL_FENCES = frozenset({"", "bash", "sh", "shell", "console", "zsh"})
# What text-action agents' observations look like: mini-SWE-agent opens with the return code,
# SWE-agent closes with its state footer and prompt.
_OBSERVATION_SHAPE = re.compile(r"\A\s*<returncode>|\(Current directory: [^)\n]*\)\s*(?:bash-\$)?\s*\Z|bash-\$\s*\Z")


@dataclasses.dataclass
class ToolOutput:
    id: str
    index: int  # message (or input item) index
    tool: str  # the tool's name in lower case ("" for text-action observations)
    call: dict[str, Any]  # the tool call's input
    command: str  # the shell command, for shell tools and observations
    text: str
    path: tuple  # keys from the body's root to the text, for writing it back
    read_of: str | None = None  # the file this output shows, when it is a file read
    read_key: str = ""  # what was read (offset, limit, command): a re-read of the same key supersedes it
    snippet_of: str | None = None  # the file an edit result shows a snippet of


def path_in(call: dict[str, Any]) -> str | None:
    for key in PATH_KEYS:
        value = call.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def command_of(call: dict[str, Any]) -> str:
    command = call.get("command", call.get("cmd", ""))
    if isinstance(command, list):  # Codex: ["bash", "-lc", "cat x"]
        command = command[-1] if command and command[0] in ("bash", "sh", "zsh") else shlex.join(map(str, command))
    return command if isinstance(command, str) else ""


def _text_of(content: Any) -> tuple[str, tuple | None]:
    """A tool output's text and where it sits inside `content`: the string itself, or a list holding
    one text part (outputs with several parts, images among them, are left alone)."""
    if isinstance(content, str):
        return content, ()
    if isinstance(content, list) and len(content) == 1 and isinstance(content[0], dict):
        part = content[0]
        if part.get("type") in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
            return part["text"], (0, "text")
    return "", None


def _paired(output_id: str, index: int, content: Any, at: tuple, calls: dict[str, tuple[str, dict]],
            call_id: str) -> ToolOutput | None:
    """The output whose text is `content` (at the path `at`), with the tool call `call_id` made it;
    None when it holds no text Clutch may change."""
    text, where = _text_of(content)
    if where is None or not text:
        return None
    tool, call = calls.get(call_id, ("", {}))
    return ToolOutput(output_id, index, tool, call, command_of(call), text, (*at, *where))


def _anthropic_outputs(messages: list[Any]) -> list[ToolOutput]:
    calls: dict[str, tuple[str, dict]] = {}
    found: list[ToolOutput | None] = []
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for b, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use" and isinstance(block.get("input"), dict):
                calls[str(block.get("id"))] = (str(block.get("name", "")).lower(), block["input"])
            elif block.get("type") == "tool_result" and message.get("role") == "user":
                call_id = str(block.get("tool_use_id"))
                found.append(_paired(call_id, i, block.get("content"), ("messages", i, "content", b, "content"),
                                     calls, call_id))
    return [output for output in found if output is not None]


def _chat_outputs(messages: list[Any]) -> list[ToolOutput]:
    calls: dict[str, tuple[str, dict]] = {}
    found: list[ToolOutput | None] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role == "assistant":
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {} if isinstance(call, dict) else {}
                try:
                    arguments = json.loads(function.get("arguments") or "{}")
                except (TypeError, ValueError):
                    arguments = {}
                calls[str(call.get("id"))] = (str(function.get("name", "")).lower(),
                                              arguments if isinstance(arguments, dict) else {})
        elif role == "tool":
            call_id = str(message.get("tool_call_id"))
            found.append(_paired(call_id, i, message.get("content"), ("messages", i, "content"), calls, call_id))
        elif role == "user" and i > 0 and _is_observation(messages[i - 1], message):
            observation = _paired(f"obs@{i}", i, message.get("content"), ("messages", i, "content"), {}, "")
            if observation is not None:
                commands = _FENCE.findall(_plain(messages[i - 1].get("content")))
                observation.command = commands[-1].strip() if commands else ""
            found.append(observation)
    return [output for output in found if output is not None]


def _is_observation(previous: Any, message: dict) -> bool:
    """A text-action agent's turn: the assistant ran a fenced shell command, and the next user message
    is its output in a shape such agents write (mini-SWE-agent's `<returncode>`, SWE-agent's prompt
    footer). A person's reply after an assistant that merely showed code stays the person's own."""
    if not (isinstance(previous, dict) and previous.get("role") == "assistant" and not previous.get("tool_calls")):
        return False
    if not any(language.strip().lower() in _SHELL_FENCES for language in _FENCE_LANGUAGE.findall(
            _plain(previous.get("content")))):
        return False
    return bool(_OBSERVATION_SHAPE.search(_plain(message.get("content"))))


def _plain(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _responses_outputs(items: list[Any]) -> list[ToolOutput]:
    calls: dict[str, tuple[str, dict]] = {}
    found: list[ToolOutput | None] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind in ("function_call", "custom_tool_call", "local_shell_call"):
            raw = item.get("arguments", item.get("input", item.get("action")))
            if isinstance(raw, str) and kind == "function_call":
                try:
                    raw = json.loads(raw)
                except ValueError:
                    raw = {}
            call = raw if isinstance(raw, dict) else {"input": raw} if isinstance(raw, str) else {}
            calls[str(item.get("call_id"))] = (str(item.get("name", "shell")).lower(), call)
        elif kind in ("function_call_output", "custom_tool_call_output", "local_shell_call_output"):
            call_id = str(item.get("call_id"))
            found.append(_paired(call_id, i, item.get("output"), ("input", i, "output"), calls, call_id))
    return [output for output in found if output is not None]


_GEMINI_TEXT_KEYS = ("output", "content", "result", "stdout")  # where Gemini agents put a tool's text


def _gemini_outputs(contents: list[Any]) -> list[ToolOutput]:
    """Gemini pairs a functionResponse with its functionCall by `id` when there is one, else by name."""
    calls: dict[str, tuple[str, dict]] = {}
    found: list[ToolOutput | None] = []
    for i, content in enumerate(contents):
        parts = content.get("parts") if isinstance(content, dict) else None
        for j, part in enumerate(parts if isinstance(parts, list) else []):
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("functionCall"), dict):
                call = part["functionCall"]
                name = str(call.get("name", ""))
                args = call.get("args") if isinstance(call.get("args"), dict) else {}
                calls[str(call.get("id") or name)] = (name.lower(), args)
            elif isinstance(part.get("functionResponse"), dict) and isinstance(part["functionResponse"].get("response"),
                                                                              dict):
                reply = part["functionResponse"]
                key = next((k for k in _GEMINI_TEXT_KEYS if isinstance(reply["response"].get(k), str)), None)
                if key is not None:
                    found.append(_paired(f"fn@{i}.{j}", i, reply["response"][key],
                                         ("contents", i, "parts", j, "functionResponse", "response", key), calls,
                                         str(reply.get("id") or reply.get("name", ""))))
    return [output for output in found if output is not None]


def find_outputs(dialect: Dialect, body: dict[str, Any]) -> list[ToolOutput] | None:
    """The request's tool outputs in order, or None for a shape Clutch does not read."""
    if dialect is Dialect.ANTHROPIC and isinstance(body.get("messages"), list):
        outputs = _anthropic_outputs(body["messages"])
    elif dialect is Dialect.OPENAI_CHAT and isinstance(body.get("messages"), list):
        outputs = _chat_outputs(body["messages"])
    elif dialect is Dialect.OPENAI_RESPONSES and isinstance(body.get("input"), list):
        outputs = _responses_outputs(body["input"])
    elif dialect is Dialect.GEMINI and isinstance(body.get("contents"), list):
        outputs = _gemini_outputs(body["contents"])
    else:
        return None  # unknown shapes: passed unchanged
    for output in outputs:
        if output.tool in READ_TOOLS:
            output.read_of = path_in(output.call)
            output.read_key = json.dumps({k: v for k, v in output.call.items() if k not in PATH_KEYS},
                                         sort_keys=True)
        elif output.tool in ("edit", "multiedit") and "Here's the result of running `cat -n`" in output.text:
            output.snippet_of = path_in(output.call)
        elif output.command and output.tool in _SHELL_TOOLS:
            output.read_of = shell.read_path(output.command)
            output.read_key = output.command
    return outputs
