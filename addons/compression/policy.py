"""Compression of an LLM request: which parts may change, and what each tool output becomes.

Pure logic, no mitmproxy. The rules in short (tests/mustkeep.py, a checker written apart from this
code, holds compressed requests to them):

* Only the text of tool outputs changes (which parts those are, in each dialect: tool_outputs.py).
  System prompt, tool schemas, every other field, assistant messages, user-authored text, ids and
  their pairing stay byte-identical.
* File reads are never shrunk: an agent edits against their exact bytes.
* `cache_safe`: what a tool output becomes depends only on that output, its own tool call and the
  outputs before it (a repeat of an earlier output becomes a reference to it), never on anything
  later. So an output compresses to the same bytes on every turn, and each request is the previous
  one plus the new turn, byte for byte: the provider's prompt cache keeps matching.
* `max` adds what depends on later messages: a read whose file was edited or read again later is
  replaced by a marker naming the file. That rewrites an already-sent message once, which costs one
  cache miss from that message on; a RewriteGate decides, per session, where that is accepted.

Unrecognised shapes pass unchanged.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import threading
from collections.abc import Callable
from typing import Any

from cachetools import LRUCache

from addons.compression import search, shell, transforms
from addons.compression.tool_outputs import ToolOutput, command_of, find_outputs, path_in
from addons.compression.transforms import MARKER_PREFIX, LogLimits
from addons.config.rules import Compression, Rules
from addons.wire.dialects import Dialect
from addons.wire.jsontext import get_typed
from addons.wire.tokens import count_text, request_tokens


class Mode(enum.StrEnum):
    OFF = "off"
    CACHE_SAFE = "cache_safe"
    MAX = "max"


@dataclasses.dataclass(frozen=True)
class Settings:
    mode: Mode = Mode.CACHE_SAFE
    limits: LogLimits = LogLimits()
    same_output_min_chars: int = 600  # shorter repeats cost less than the reference to them


def settings_for(section: Compression, mode: Mode) -> Settings:
    """The compressor's settings for a mode, from the rules' `compression` section."""
    return Settings(mode=mode, limits=LogLimits(log_tokens=section.log_tokens, other_tokens=section.output_tokens))


def mode_for(rules: Rules, agent: str, launch_profile: str | None) -> Mode:
    """The rules' mode, replaced by the agent's profile and then the launch profile's, as in routing."""
    mode = rules.compression.mode
    for name in (agent, launch_profile):
        profile = rules.profiles.get(name) if name else None
        if profile is not None and profile.compression is not None:
            mode = profile.compression
    return Mode(mode)


def describe_compression(mode: str, kinds: dict[str, int], tokens_before: int | None, tokens_after: int | None) -> str:
    """One line on what a request's compression did, for the flow comment and the dry run:
    `cache_safe: 12,000 -> 9,000 tokens (-25.0%), 1 shrunk, 2 same_output`."""
    if not kinds:
        return f"{mode}: nothing to cut"
    if tokens_before is None or tokens_after is None:
        size = "tokens not counted yet"
    else:
        size = (f"{tokens_before:,} -> {tokens_after:,} tokens "
                f"(-{100 * (tokens_before - tokens_after) / max(tokens_before, 1):.1f}%)")
    return f"{mode}: {size}, " + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))


@dataclasses.dataclass(frozen=True)
class Cut:
    output: str  # the tool output's id (tool_use_id, tool_call_id, call_id or obs@<message index>)
    kind: str  # shrunk | same_output | write_echo | stale_read | superseded_read | stale_snippet | superseded_run
    before: str = dataclasses.field(repr=False)
    after: str = dataclasses.field(repr=False)

    # Counted on demand, off the request's path: the addon counts while the provider answers.
    @property
    def tokens_before(self) -> int:
        return count_text(self.before)

    @property
    def tokens_after(self) -> int:
        return count_text(self.after)


@dataclasses.dataclass
class CompressionOutcome:
    """What compressing one request did: the body to send and each change made to it."""

    body: dict[str, Any]  # the request to send (the same object when nothing changed)
    cuts: list[Cut]
    rewrites: list[str]  # outputs replaced because of later messages (max mode): a cache miss each

    @property
    def changed(self) -> bool:
        return bool(self.cuts)

    @property
    def tokens_saved(self) -> int:
        return sum(c.tokens_before - c.tokens_after for c in self.cuts)


# ---------------------------------------------------------------- what a tool call changes

_EDIT_TOOLS = frozenset({"edit", "write", "multiedit", "notebookedit", "write_file", "edit_file", "create_file",
                         "replace", "str_replace_based_edit_tool", "str_replace_editor", "apply_patch", "patch"})
_SHELL_LOG = re.compile(r"\b(?:pytest|py\.test|tox|nox|unittest|mix\s+(?:test|compile|deps|ecto|dialyzer|credo)"
                        r"|go\s+(?:test|build|vet)|cargo\s+(?:test|build|check|clippy)|npm\s+(?:test|install|ci|run)"
                        r"|pnpm|yarn|jest|vitest|make|cmake|ninja|gradle|mvn|pip3?\s+install|uv\s+(?:pip|sync)"
                        r"|poetry|tsc|eslint|ruff|mypy|docker\s+build|bundle|rake|rspec|dotnet|mocha|phpunit)\b")
_WRITE_ECHO = re.compile(r"^(The file \S.* has been updated\. Here's the result of running `cat -n` on a snippet "
                         r"of the edited file:\n)(.*)$", re.S)
_NUMBERED = re.compile(r"^ *\d+→(.*)$")
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


# ---------------------------------------------------------------- collecting the outputs of each dialect

# ---------------------------------------------------------------- the transforms per output

_shrunk: LRUCache[tuple, str] = LRUCache(maxsize=64 * 1024 * 1024, getsizeof=lambda value: len(value) + 64)
_shrunk_lock = threading.Lock()


def _shrink_cached(text: str, limits: LogLimits, log_hint: bool) -> str:
    """shrink_output, remembered by content: agents resend every old output on every turn."""
    key = (limits, log_hint, text)
    with _shrunk_lock:
        found = _shrunk.get(key)
    if found is None:
        found = transforms.shrink_output(text, limits, log_hint)
        with _shrunk_lock:
            _shrunk[key] = found
    return found


def _write_echo(output: ToolOutput) -> str | None:
    """Claude Code's Write result repeats the whole file it just wrote, numbered; that listing is the
    Write call's own `content`, so only the first line is needed."""
    if output.tool != "write" or not isinstance(output.call.get("content"), str):
        return None
    match = _WRITE_ECHO.match(output.text)
    if match is None:
        return None
    listing = match.group(2).rstrip("\n").split("\n")
    lines = []
    for line in listing:
        numbered = _NUMBERED.match(line)
        if numbered is None:
            return None
        lines.append(numbered.group(1))
    if "\n".join(lines).rstrip("\n") != output.call["content"].rstrip("\n"):
        return None  # a snippet, or a file that differs from what was written: keep it
    tokens = count_text(match.group(2))
    header = match.group(1).split(". Here's", 1)[0] + "."
    return (f"{header}\n{MARKER_PREFIX}listing of the written file removed ({len(lines):,} lines, {tokens:,} tokens); "
            "it is the content of this Write call]")


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


def _history_marker(output: ToolOutput, verdict: str) -> str:
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
    command = _command_label(output.command, 80)
    essential = set(kept)
    removed = [line for line in output.text.split("\n") if line not in essential]
    marker = (f"{MARKER_PREFIX}superseded output of `{command}`: the same command runs again later; kept its "
              f"{len(kept):,} error and summary lines, removed {lines - len(kept):,} lines "
              f"({tokens - count_text(chr(10).join(kept)):,} tokens){transforms.paths_in(removed)}]")
    return "\n".join([marker, *kept])


def _command_label(command: str, width: int) -> str:
    """A command's first line, shortened to `width`, fit to stand in a one-line marker."""
    command = command.strip().split("\n", 1)[0].replace("]", ")")
    return command if len(command) <= width else command[:width - 3] + "..."


def _reference(earlier: ToolOutput, before: list[ToolOutput]) -> str:
    """How a marker names an earlier output: its id, and where its id is not unique among the outputs
    before (agents reuse ids), also its place and command: `toolu_1 (message 12, `ls -F`)`.
    Only earlier outputs decide, so the marker is the same on every later turn (cache_safe)."""
    if sum(o.id == earlier.id for o in before) <= 1:
        return earlier.id
    command = _command_label(earlier.command.replace("`", "'"), 60)
    place = {"input": "input item", "contents": "content"}.get(earlier.path[0], "message")
    return f"{earlier.id} ({place} {earlier.index}{f', `{command}`' if command else ''})"


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


def compress_request(dialect: Dialect, body: dict[str, Any], settings: Settings,
                     gate: RewriteGate | None = None) -> CompressionOutcome:
    """The request with its tool outputs compressed; `body` itself is never modified (the result
    shares every part that did not change with it).

    `gate` (max mode) chooses which outputs made replaceable by later messages are replaced; None
    replaces all of them.
    """
    if settings.mode is Mode.OFF:
        return CompressionOutcome(body, [], [])
    outputs = find_outputs(dialect, body)
    if not outputs:
        return CompressionOutcome(body, [], [])
    replacements: dict[tuple, tuple[str, str]] = {}  # output position -> (verdict, marker)
    if settings.mode is Mode.MAX:
        replacements = _replacements(dialect, body, outputs, gate)
    cuts: list[Cut] = []
    changes: list[tuple[tuple, str]] = []
    first_seen: dict[str, ToolOutput] = {}  # an output's text -> its first occurrence
    for n, output in enumerate(outputs):
        if output.path in replacements:
            kind, new = replacements[output.path]
        elif output.read_of is not None:
            continue  # a file read: its exact bytes matter
        else:
            kind, new = _first_sight(output, outputs[:n + 1], settings, first_seen)
        if new != output.text:
            changes.append((output.path, new))
            cuts.append(Cut(output.id, kind, output.text, new))
    if not cuts:
        return CompressionOutcome(body, [], [])
    rewritten = [output.id for output in outputs if output.path in replacements]
    return CompressionOutcome(_with_changes(body, changes), cuts, rewritten)


def _replacements(dialect: Dialect, body: dict[str, Any], outputs: list[ToolOutput],
                  gate: RewriteGate | None) -> dict[tuple, tuple[str, str]]:
    """The history verdicts the gate lets through, with their markers."""
    verdicts = history_verdicts(dialect, body, outputs)
    found: dict[tuple, tuple[str, str, ToolOutput]] = {}
    for output in outputs:
        verdict = verdicts.get(output.path)
        if not verdict:
            continue
        marker = _history_marker(output, verdict)
        if marker is not None and len(marker) < len(output.text):  # a short read is cheaper than its marker
            found[output.path] = (verdict, marker, output)
    if gate is not None:  # asked even with nothing to replace: it tells the gate the session is active
        key = {Dialect.OPENAI_RESPONSES: "input", Dialect.GEMINI: "contents"}.get(dialect, "messages")
        candidates = [Rewrite(at, o.index, count_text(o.text) - count_text(m)) for at, (_, m, o) in found.items()]
        chosen = gate.choose(candidates, lambda index: request_tokens(dialect, {key: body[key][index:]}))
        found = {at: v for at, v in found.items() if at in chosen}
    return {at: (verdict, marker) for at, (verdict, marker, _) in found.items()}


def _with_changes(body: dict[str, Any], changes: list[tuple[tuple, str]]) -> dict[str, Any]:
    """A copy of `body` with the strings at the given paths replaced. Only the containers on those
    paths are copied (a few messages, not a 400 KB history); the rest is shared with `body`."""
    root = dict(body)
    copied: dict[tuple, Any] = {(): root}
    for path, text in changes:
        node: Any = root  # a dict or a list on the way down
        for depth, key in enumerate(path[:-1]):
            prefix = path[:depth + 1]
            child = copied.get(prefix)
            if child is None:
                child = node[key]
                child = dict(child) if isinstance(child, dict) else list(child)
                copied[prefix] = child
                node[key] = child
            node = child
        node[path[-1]] = text
    return root


def _first_sight(output: ToolOutput, before: list[ToolOutput], settings: Settings,
                 first_seen: dict[str, ToolOutput]) -> tuple[str, str]:
    """What an output becomes from itself, its call and the outputs `before` it (itself the last) only."""
    text = output.text
    if len(text) >= settings.same_output_min_chars:
        earlier = first_seen.get(text)
        if earlier is not None:
            lines = text.count("\n") + 1
            return "same_output", (f"{MARKER_PREFIX}same output as tool call {_reference(earlier, before)} above; "
                                   f"{lines:,} lines ({count_text(text):,} tokens) removed]")
        first_seen[text] = output
    echo = _write_echo(output)
    if echo is not None:
        return "write_echo", echo
    kind = search.kind_of(output.tool, output.command)
    if kind is not None:  # an answer the agent asked for, not a log: search.py
        source = output.call.get("url") or output.call.get("query") or path_in(output.call) or ""
        return "shrunk", search.shrink_search(text, settings.limits, kind, settings.mode is Mode.MAX, str(source))
    return "shrunk", _shrink_cached(text, settings.limits, bool(output.command and _SHELL_LOG.search(output.command)))
