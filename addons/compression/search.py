"""Search and fetch results: answers the agent asked for, not logs.

Pure logic, no mitmproxy. A grep over a lock file, a Glob, a fetched documentation page: every line
of them may be the one the agent was looking for, so they are never cut to head and tail (a real
session lost 27 of a grep's 67 matches that way, another the one section of a 1,416-line WebFetch
its subagent had asked about). Over `search_tokens` they shrink only losslessly in meaning (terminal
noise, exact repeated lines folded); in `max` only, what is still over the limit drops whole matches
(fetches: whole sections) behind a marker that names the location of every one it dropped, so the
agent can fetch it again. A line no cut may remove (an error, a failing test) is never dropped.
"""

from __future__ import annotations

import re

from addons.compression import shell
from addons.compression.transforms import MARKER_PREFIX, LogLimits, fold_repeats, is_important, strip_terminal_noise
from addons.wire.tokens import count_text

# Tool names in lower case: Claude Code, OpenCode, Pi (`grep`, `glob`, `ls`, `find`, `list`), Gemini
# CLI and Qwen Code (`search_file_content`, `list_directory`), Hermes (`search_files`).
SEARCH_TOOLS = frozenset({"grep", "glob", "ls", "find", "list", "list_directory", "search_file_content",
                          "grep_search", "search_files", "codesearch", "file_search", "find_files"})
FETCH_TOOLS = frozenset({"webfetch", "web_fetch", "fetch", "websearch", "web_search", "google_web_search",
                         "web_extract"})
# A match's location: `path:line:` (grep -n, rg -n), `path-line-` (context lines), `path:` (grep -r).
_GREP_LOCATION = re.compile(r"^((?:\.{0,2}/)?[\w.@+~-][^\s:]*?)(?::(\d+)[:-]|-(\d+)-|:)")
_LINE_ONLY = re.compile(r"^(\d+)[:-]")  # rg -n / grep -n over one file: `12:` with no path
_LONE_PATH = re.compile(r"^\S*[/.]\S*$")  # find, Glob, ls -R: a line that is one path
_HEADING = re.compile(r"^#{1,6} \S")


def kind_of(tool: str, command: str) -> str | None:
    """"search" or "fetch" for an output those rules cover, else None."""
    if tool in FETCH_TOOLS:
        return "fetch"
    if tool in SEARCH_TOOLS or (command and shell.is_search(command)):
        return "search"
    return None


def _location(line: str, number: int, searched: str) -> str:
    """Where a dropped match can be found again: file:line, the path itself, or its line in this output.
    `searched`: the one file the search ran over, for the `12:` lines of a search of one file."""
    only = _LINE_ONLY.match(line)
    if only and searched:
        return f"{searched}:{only.group(1)}"
    found = _GREP_LOCATION.match(line)
    if found and ("/" in found.group(1) or "." in found.group(1)):
        row = found.group(2) or found.group(3)
        return f"{found.group(1)}:{row}" if row else f"{found.group(1)} (output line {number})"
    if _LONE_PATH.match(line.strip()):
        return line.strip()
    return f"output line {number}"


def _units(lines: list[str], kind: str) -> list[tuple[int, list[str]]]:
    """What a drop takes whole: a line of a search, a section (heading to heading) of a fetch; each
    with the number of its first line."""
    if kind == "search":
        return [(i + 1, [line]) for i, line in enumerate(lines)]
    units: list[tuple[int, list[str]]] = []
    for i, line in enumerate(lines):
        if not units or _HEADING.match(line):
            units.append((i + 1, []))
        units[-1][1].append(line)
    return units


def _unit_name(unit: list[str], first: int, kind: str, source: str) -> str:
    if kind == "search":
        return _location(unit[0], first, source)
    heading = next((line.lstrip("#").strip() for line in unit if _HEADING.match(line)), "")
    return f'"{heading}"' if heading else f"lines {first}-{first + len(unit) - 1}"


def _drop_over(lines: list[str], limits: LogLimits, kind: str, source: str) -> list[str]:
    """Units in order up to the limit; later ones dropped, each named in one marker at the end."""
    kept: list[str] = []
    dropped: list[str] = []
    names: list[str] = []
    budget = limits.search_tokens
    for first, unit in _units(lines, kind):
        cost = count_text("\n".join(unit)) + 1
        if budget - cost >= 0 or any(is_important(line) for line in unit) or unit[0].startswith(MARKER_PREFIX):
            budget -= cost
            kept.extend(unit)
        else:
            budget = -1  # once over, later units go too: the marker lists them in order
            dropped.extend(unit)
            names.append(_unit_name(unit, first, kind, source))
    if not names:
        return lines
    what = "matches" if kind == "search" else "sections"
    where = "each is at" if kind == "search" else f"fetch {source or 'the page'} again for the sections"
    listed = ", ".join(names).replace("]", "%5D")
    return [*kept, f"{MARKER_PREFIX}{len(names):,} {what} ({len(dropped):,} lines, "
                   f"{count_text(chr(10).join(dropped)):,} tokens) dropped over the {limits.search_tokens:,}-token "
                   f"limit for search results; {where}: {listed}]"]


def shrink_search(text: str, limits: LogLimits, kind: str, drop: bool, source: str = "") -> str:
    """A search (`kind` "search") or fetch ("fetch") result: whole up to `search_tokens`; over it,
    repeated lines folded and, with `drop` (max mode), the matches or sections past the limit dropped
    behind a marker naming each. `source`: the fetched URL, the web search's query, or the path searched."""
    cleaned = strip_terminal_noise(text)
    if len(cleaned) < limits.search_tokens * 2 or count_text(cleaned) <= limits.search_tokens:
        return cleaned
    lines = cleaned.split("\n")
    result = "\n".join(fold_repeats(lines, limits, similar=False))
    if not drop or count_text(result) <= limits.search_tokens:
        return result
    # dropped before folding, so a marker's `output line N` is the line's number in the output as sent
    return "\n".join(fold_repeats(_drop_over(lines, limits, kind, source), limits, similar=False))
