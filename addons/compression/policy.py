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
  cache miss from that message on; a RewriteGate decides, per session, where that is accepted
  (history.py: what later messages make replaceable, and the gate).

Unrecognised shapes pass unchanged.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import threading
from typing import Any

from cachetools import LRUCache

from addons.compression import search, transforms
from addons.compression.history import Rewrite, RewriteGate, command_label, history_marker, history_verdicts
from addons.compression.tool_outputs import ToolOutput, find_outputs, path_in
from addons.compression.transforms import MARKER_PREFIX, LogLimits
from addons.config.rules import Compression, Rules
from addons.wire.dialects import Dialect
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


_SHELL_LOG = re.compile(r"\b(?:pytest|py\.test|tox|nox|unittest|mix\s+(?:test|compile|deps|ecto|dialyzer|credo)"
                        r"|go\s+(?:test|build|vet)|cargo\s+(?:test|build|check|clippy)|npm\s+(?:test|install|ci|run)"
                        r"|pnpm|yarn|jest|vitest|make|cmake|ninja|gradle|mvn|pip3?\s+install|uv\s+(?:pip|sync)"
                        r"|poetry|tsc|eslint|ruff|mypy|docker\s+build|bundle|rake|rspec|dotnet|mocha|phpunit)\b")
_WRITE_ECHO = re.compile(r"^(The file \S.* has been updated\. Here's the result of running `cat -n` on a snippet "
                         r"of the edited file:\n)(.*)$", re.S)
_NUMBERED = re.compile(r"^ *\d+→(.*)$")


# ---------------------------------------------------------------- the transforms per output

# Keyed by the output's length and hash (as tokens._cache), not by the output: a key holding the text
# kept every original output alive, uncounted by the size bound. An output left as it was is
# remembered as None, so only shrunk texts are kept, up to _SHRUNK_CHARS.
_SHRUNK_CHARS = 16 * 1024 * 1024
_shrunk: LRUCache[tuple, str | None] = LRUCache(
    maxsize=_SHRUNK_CHARS, getsizeof=lambda value: (len(value) if value else 0) + 200)
_shrunk_lock = threading.Lock()
_MISSING = object()


def _shrink_cached(text: str, limits: LogLimits, log_hint: bool) -> str:
    """shrink_output, remembered by content: agents resend every old output on every turn."""
    key = (limits, log_hint, len(text), hash(text))
    with _shrunk_lock:
        found = _shrunk.get(key, _MISSING)
    if found is None:
        return text
    if isinstance(found, str):
        return found
    shrunk = transforms.shrink_output(text, limits, log_hint)
    with _shrunk_lock:
        _shrunk[key] = None if shrunk == text else shrunk
    return shrunk


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


def _reference(earlier: ToolOutput, before: list[ToolOutput]) -> str:
    """How a marker names an earlier output: its id, and where its id is not unique among the outputs
    before (agents reuse ids), also its place and command: `toolu_1 (message 12, `ls -F`)`.
    Only earlier outputs decide, so the marker is the same on every later turn (cache_safe)."""
    if sum(o.id == earlier.id for o in before) <= 1:
        return earlier.id
    command = command_label(earlier.command.replace("`", "'"), 60)
    place = {"input": "input item", "contents": "content"}.get(earlier.path[0], "message")
    return f"{earlier.id} ({place} {earlier.index}{f', `{command}`' if command else ''})"


# ---------------------------------------------------------------- the request

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
        marker = history_marker(output, verdict)
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
