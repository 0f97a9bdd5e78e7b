"""What later messages make replaceable in `max` mode, and which of those a session replaces.

A read of a file edited or read again later, an edit's snippet of such a file, and the output of a
command run again later are out of date: `history_verdicts` finds them, by the output's position
(agents reuse ids), and `history_marker` is what each becomes. Replacing an already-sent message
costs a cache miss from that message on, so a `RewriteGate` per session decides which are replaced
(the rules' `compression.rewrites`). Pure logic, no mitmproxy; policy.py applies the verdicts.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable
from typing import Any

from addons.compression import shell, transforms
from addons.compression.tool_outputs import ToolOutput, command_of, path_in
from addons.compression.transforms import MARKER_PREFIX
from addons.wire.dialects import Dialect
from addons.wire.jsontext import get_typed
from addons.wire.tokens import count_text

_EDIT_TOOLS = frozenset({"edit", "write", "multiedit", "notebookedit", "write_file", "edit_file", "create_file",
                         "replace", "str_replace_based_edit_tool", "str_replace_editor", "apply_patch", "patch"})
_PATCH_FILE = re.compile(r"^\*\*\* (?:Update|Add|Delete) File: (.+)$", re.M)


def _edited_paths(tool: str, call: dict[str, Any], command: str, open_file: str | None) -> set[str]:
    """Files a tool call changes (used only to judge reads stale in max mode)."""
    found: set[str] = set()
    if tool in _EDIT_TOOLS:
        path = path_in(call)
        viewing = tool in ("str_replace_editor", "str_replace_based_edit_tool") and call.get("command") == "view"
        if path and not viewing:
            found.add(path)
        patch = call.get("patch") or call.get("input")
        if isinstance(patch, str):
            found.update(p.strip() for p in _PATCH_FILE.findall(patch))
    if command:
        found.update(shell.written_paths(command, open_file))
        found.update(p.strip() for p in _PATCH_FILE.findall(command))  # apply_patch through the shell
    return found


def _same_file(a: str, b: str) -> bool:
    """Agents name one file both absolutely and relatively; a relative name matches the end of an absolute one."""
    if a == b:
        return True
    a, b = a.removeprefix("./"), b.removeprefix("./")
    return a == b or a.endswith("/" + b) or b.endswith("/" + a)


def _failed_calls(messages: list[Any]) -> set[tuple[int, str]]:
    """Tool calls whose result is an error, as (message index of the call, id): a failed Edit
    ("String to replace not found") changed nothing, and the read before it is exactly what the agent
    needs to try again. By position, since agents reuse ids: a result answers the call just before it."""
    return {(i - 1, str(block.get("tool_use_id"))) for i, message in enumerate(messages) if isinstance(message, dict)
            for block in get_typed(message, "content", list, [])
            if isinstance(block, dict) and block.get("type") == "tool_result" and block.get("is_error")}


_OPEN_FILE = re.compile(r"\(Open file: ([^)\n]+)\)")  # SWE-agent's footer after every action


def _later_changes(outputs: list[ToolOutput], dialect: Dialect, body: dict[str, Any]) -> list[tuple[int, set[str]]]:
    """(message index, files changed) for every edit in the request, in order."""
    changes: list[tuple[int, set[str]]] = []
    if dialect is Dialect.ANTHROPIC:
        failed = _failed_calls(body["messages"])
        for i, message in enumerate(body["messages"]):
            for block in message.get("content") or [] if isinstance(message, dict) else []:
                if (isinstance(block, dict) and block.get("type") == "tool_use" and isinstance(block.get("input"), dict)
                        and (i, str(block.get("id"))) not in failed):
                    tool = str(block.get("name", "")).lower()
                    paths = _edited_paths(tool, block["input"], command_of(block["input"]), None)
                    if paths:
                        changes.append((i, paths))
        return changes
    open_file = None
    for output in outputs:  # a call's output follows it directly, so its index stands for the call's
        paths = _edited_paths(output.tool, output.call, output.command, open_file)
        if paths:
            changes.append((output.index, paths))
        words = output.command.split()
        if len(words) > 1 and words[0] in ("open", "create"):
            open_file = words[1]
        footer = _OPEN_FILE.findall(output.text)
        if footer and footer[-1].strip() != "n/a":
            open_file = footer[-1].strip()
    return changes


def _history_verdicts(outputs: list[ToolOutput], changes: list[tuple[int, set[str]]]) -> dict[tuple, str]:
    """Outputs that later messages made out of date: a read or edit snippet of a file edited later
    (stale_read, stale_snippet), a read of a file read again later (superseded_read), the output of a
    command run again later (superseded_run). Keyed by the output's position: agents reuse ids."""
    verdicts: dict[tuple, str] = {}

    def changed_later(path: str, index: int) -> bool:
        return any(at > index and any(_same_file(path, p) for p in paths) for at, paths in changes)

    for n, output in enumerate(outputs):
        later = outputs[n + 1:]
        if output.read_of is not None:
            if changed_later(output.read_of, output.index):
                verdicts[output.path] = "stale_read"
            elif any(o.read_of and _same_file(o.read_of, output.read_of)
                     and o.read_key in (output.read_key, "{}") for o in later):
                verdicts[output.path] = "superseded_read"
        elif output.snippet_of is not None:
            if changed_later(output.snippet_of, output.index) or any(
                    o.read_of and _same_file(o.read_of, output.snippet_of) for o in later):
                verdicts[output.path] = "stale_snippet"
        elif output.command and any(o.command == output.command and o.tool == output.tool for o in later):
            verdicts[output.path] = "superseded_run"
    return verdicts


def history_verdicts(dialect: Dialect, body: dict[str, Any], outputs: list[ToolOutput]) -> dict[tuple, str]:
    """Output position (ToolOutput.path) -> why later messages made it replaceable in max mode (the
    kinds of _history_verdicts)."""
    return _history_verdicts(outputs, _later_changes(outputs, dialect, body))


def history_marker(output: ToolOutput, verdict: str) -> str:
    lines = output.text.count("\n") + 1
    tokens = count_text(output.text)
    if verdict == "stale_read":
        return (f"{MARKER_PREFIX}stale read of {output.read_of}: the file was changed after this read; {lines:,} lines "
                f"({tokens:,} tokens) removed, read it again for the current content]")
    if verdict == "superseded_read":
        return (f"{MARKER_PREFIX}superseded read of {output.read_of}: the file is read again later; {lines:,} lines "
                f"({tokens:,} tokens) removed]")
    if verdict == "stale_snippet":
        return (f"{MARKER_PREFIX}outdated snippet of {output.snippet_of}: the file was changed or read again "
                f"later; {lines:,} lines ({tokens:,} tokens) removed]")
    kept = transforms.essentials(output.text)
    command = command_label(output.command, 80)
    essential = set(kept)
    removed = [line for line in output.text.split("\n") if line not in essential]
    marker = (f"{MARKER_PREFIX}superseded output of `{command}`: the same command runs again later; kept its "
              f"{len(kept):,} error and summary lines, removed {lines - len(kept):,} lines "
              f"({tokens - count_text(chr(10).join(kept)):,} tokens){transforms.paths_in(removed)}]")
    return "\n".join([marker, *kept])


def command_label(command: str, width: int) -> str:
    """A command's first line, shortened to `width`, fit to stand in a one-line marker."""
    command = command.strip().split("\n", 1)[0].replace("]", ")")
    return command if len(command) <= width else command[:width - 3] + "..."



@dataclasses.dataclass(frozen=True)
class Rewrite:
    """An already-sent output that later messages made replaceable (max mode)."""

    at: tuple  # the output's position (ToolOutput.path): ids repeat, positions do not
    index: int  # where the cache stops matching if it is replaced
    tokens_saved: int


# A rewrite round re-bills the prompt from its first replaced output on at the cache-write price
# (1.25x) instead of the cache-read price (0.1x), and saves 0.1x the removed tokens on every later
# turn. Removing at least half of that tail pays back within about ten turns.
WORTH_IT_SHARE = 0.5


class RewriteGate:
    """Which replaceable outputs one session replaces, by the rules' `rewrites`:

    * always: every one, at once (the most tokens; a cache miss each time an edit makes a read stale);
    * when_cold: only once the session was idle past `cold_after_s` (the provider's cache expired
      anyway), and what was replaced then;
    * when_worth_it: as when_cold, and also whenever the new replacements remove at least
      WORTH_IT_SHARE of the tokens the cache miss re-bills.

    What a session has replaced stays replaced: putting the original back would be a second miss.
    """

    def __init__(self, policy: str = "always", cold_after_s: float = 300, clock=None):
        self.policy, self.cold_after_s = policy, cold_after_s
        self._clock = clock  # None: no time passes (a benchmark's replay); the cache is warm after the first turn
        self._lock = threading.Lock()  # one session's requests may be compressed in two threads at once
        self.replaced: set[tuple] = set()  # positions: a session's messages only grow
        self.last_seen: float | None = None

    def choose(self, candidates: list[Rewrite], tail_tokens: Callable[[int], int]) -> set[tuple]:
        with self._lock:
            return self._choose(candidates, tail_tokens)

    def _choose(self, candidates: list[Rewrite], tail_tokens: Callable[[int], int]) -> set[tuple]:
        now = self._clock() if self._clock else None
        cold = self.last_seen is None or (now is not None and now - self.last_seen > self.cold_after_s)
        self.last_seen = now if now is not None else 0.0
        positions = {c.at for c in candidates}
        if self.policy == "always" or cold:
            chosen = positions
        else:
            chosen = positions & self.replaced
            new = [c for c in candidates if c.at not in self.replaced]
            if self.policy == "when_worth_it" and new:
                saved = sum(c.tokens_saved for c in new)
                if saved >= WORTH_IT_SHARE * tail_tokens(min(c.index for c in new)):
                    chosen |= {c.at for c in new}
        self.replaced |= chosen
        return chosen
