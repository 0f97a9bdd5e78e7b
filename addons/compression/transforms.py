"""Transforms of one tool output's text: terminal noise, repeated lines, long logs, JSON arrays.

Pure logic, no mitmproxy. Every function here is a pure function of its arguments, so a tool output
shrinks to the same bytes on every turn of a session and the provider's prompt cache keeps matching
(each request's messages start with the previous request's, byte for byte). Every cut leaves a
marker `[clutch: ...]` on a line of its own that says what went and how much; error lines, failing
test names and summaries are never cut (tests/mustkeep.py checks both), nor file:line references.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import re

from addons.wire.tokens import count_text

# CSI (colours, cursor moves), OSC (titles, hyperlinks) and two-character escapes, as terminals send them.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_BACKSPACED = re.compile(r".\x08")  # spinners and man pages overstrike with backspaces

# Lines that must survive any cut: errors, failing tests, summaries and exit codes (the error words
# and test-result lines tests/mustkeep.py checks, and more).
_MUST_KEEP = re.compile(
    r"error|exception|traceback|failed|failure|fatal|panic|assert|segmentation fault|undefined reference"
    r"|cannot find|not found|denied|refused|timed? ?out|abort|killed|exit (?:code|status)|returncode"
    r"|\bfail|✕|✗"
    r"|\b\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?|tests?|failures?|doctests?)\b"
    r"|test result:|^tests?:|^ran \d+ tests?|^ok\b|finished in|^=+ .* =+\r?$|^-+ (?:fail|pass)"
    r"|file \"[^\"]+\", line \d+"
    r"|^[ \t]*(?:expected|received):"  # jest's and vitest's assertion values
    r"|^ *\d+\) test .+ \([\w.]+\)\r?$|^ +(?:left|right|code|actual): "  # ExUnit's failure header and values
    r"|^ +(?:\([\w]+ [\w.-]+\) )?[\w/.-]+\.exs?:\d+: "  # an ExUnit stacktrace frame in an app's files
    r"|^ +at (?:[^ ]| (?!in ))++ in .*:line \d+\r?$"  # a .NET frame with its source: the project's, not the runtime's
    r"|tests run: \d+, failures: \d+, errors: \d+, skipped: \d+[ \t\r]*$",  # Maven's total for the run
)  # matched against the lower-cased line: several times faster than re.IGNORECASE
# Maven's surefire prints `Tests run: 1, Failures: 0, Errors: 0, Skipped: 0, Time elapsed: 0.1 s -- in
# shop.FooTest` for every passing test class: a tally of zero names no failure, so a run of 500 passing
# classes can be cut. Only that exact shape: any other line saying "failed: 0" is judged as usual.
_PASSING_TALLY = re.compile(r"^(?:\[\w+\] )?tests run: \d+, failures: 0, errors: 0, skipped: \d+, "
                            r"time elapsed: [\d.,]+ \w+ -- in [\w.$]+[ \t\r]*$")
# Lines kept the first time their kind appears: a warning, a file:line reference. A build that
# prints one deprecation for every file of a dependency keeps the first and its count in the cut.
# The lookbehinds and the possessive quantifier keep these two linear on a long run of path characters
# (a minified line, a base64 blob): without them each position of the run starts a scan to its end.
_FIRST_KEEP = re.compile(r"warn|deprecat|(?<![\w./-])[\w./-]+\.\w+:\d+", re.IGNORECASE)
# Lines whose only differences are numbers (progress, counters, timings): foldable as one kind.
_DIGITS = re.compile(r"\d+")

# File paths as tests/mustkeep.py counts them (`dir/name.ext`, optionally `:line`): a cut names the
# ones it removed.
_PATH = re.compile(r"(?<![\w./-])(?:\.{0,2}/+)?(?:[\w.-]+/+)++[\w.-]+\.\w+(?::\d+)?")
_PATHS_NAMED = 200  # more than this in one cut and the marker would be the output again

MARKER_PREFIX = "[clutch: "


@dataclasses.dataclass(frozen=True)
class LogLimits:
    """When a tool output counts as long, and how much of it a cut keeps."""

    log_tokens: int = 600  # test, build and install logs longer than this are reduced
    other_tokens: int = 4000  # any other output longer than this is reduced
    search_tokens: int = 4000  # search and fetch results longer than this shrink (search.py)
    head_lines: int = 15
    tail_lines: int = 25
    context_before: int = 1
    context_after: int = 2
    min_cut_lines: int = 6  # shorter gaps are kept: a marker would cost about as much
    repeat_fold: int = 3  # identical consecutive lines from this many on are folded
    similar_fold: int = 6  # consecutive lines differing only in numbers, from this many on
    json_keep_items: int = 4
    json_min_items: int = 12


def strip_terminal_noise(text: str) -> str:
    """ANSI escapes removed, carriage-return redraws reduced to what the terminal finally showed.

    What a person saw on the terminal is kept exactly; only the invisible part goes.
    """
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    while "\x08" in text:
        erased = _BACKSPACED.sub("", text)
        # a backspace at the start of a line erases nothing and is dropped
        text = erased if erased != text else text.replace("\x08", "")
    if "\r" in text:
        lines = text.split("\n")
        for i, line in enumerate(lines):
            body, crlf = (line[:-1], "\r") if line.endswith("\r") else (line, "")
            if "\r" in body:
                # a redraw: the terminal shows what was written after the last carriage return
                # (an empty redraw, e.g. a cleared progress bar, leaves the line before it)
                pieces = [p for p in body.split("\r") if p.strip()]
                lines[i] = (pieces[-1] if pieces else "") + crlf
        text = "\n".join(lines)
    return text


def paths_in(lines: list[str]) -> str:
    """The distinct file paths in `lines`, in order of appearance, as a marker's tail."""
    found = dict.fromkeys(p for line in lines if "/" in line for p in _PATH.findall(line))  # every path has a /
    if not found:
        return ""
    names = list(found)[:_PATHS_NAMED]
    return "; paths in them: " + ", ".join(names).replace("]", "%5D")


# Substrings at least one of which every match of the pattern contains, and line starts for its
# `^` branches: a scan for them finds the few lines worth the regex (a search per line costs about
# 15 us; tens of milliseconds on a 100 KB output).
_MUST_KEEP_HINTS = ("error", "exception", "traceback", "fail", "fatal", "panic", "assert", "segmentation fault",
                    "undefined reference", "cannot find", "not found", "denied", "refused", "timeout", "time out",
                    "timedout", "timed out", "abort", "killed", "exit code", "exit status", "returncode", "✕", "✗",
                    " passed", " skipped", " xpass", " deselected", " warning", " test", " doctest", "test result:",
                    "finished in", 'file "', "expected:", "received:", "left: ", "right: ", "code: ", "actual: ",
                    ".ex:", ".exs:", ":line ")
_MUST_KEEP_STARTS = ("test", "ran ", "ok", "=", "-")
_FIRST_KEEP_HINTS = ("warn", "deprecat")
_LINE_NUMBER_REF = re.compile(r":\d")  # every file:line reference has one


def _lines_matching(pattern: re.Pattern, lines: list[str], hints: tuple[str, ...], starts: tuple[str, ...] = (),
                    hint_pattern: re.Pattern | None = None) -> set[int]:
    """Indexes of the lines (lower-cased) in which `pattern` matches, the regex run only on lines
    that hold a hint."""
    lowered = [line.lower() for line in lines]  # per line: lower-casing may change a length ('İ')
    text = "\n".join(lowered)
    offsets = [0]
    for line in lowered[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    candidates: set[int] = set()
    for hint in hints:
        at = text.find(hint)
        while at != -1:
            index = bisect.bisect_right(offsets, at) - 1
            candidates.add(index)
            at = text.find(hint, offsets[index + 1] if index + 1 < len(offsets) else len(text))
    if hint_pattern is not None:
        candidates.update(bisect.bisect_right(offsets, m.start()) - 1 for m in hint_pattern.finditer(text))
    if starts:
        candidates.update(i for i, line in enumerate(lowered) if line.startswith(starts))
    return {i for i in candidates if pattern.search(lowered[i])}


def must_keep_lines(lines: list[str]) -> set[int]:
    """Indexes of the lines no cut may remove."""
    found = _lines_matching(_MUST_KEEP, lines, _MUST_KEEP_HINTS, _MUST_KEEP_STARTS)
    return {i for i in found if "Tests run: " not in lines[i] or _important(lines[i].lower())}


def first_keep_lines(lines: list[str]) -> set[int]:
    """Indexes of the lines kept the first time their kind appears (warnings, file:line references)."""
    return _lines_matching(_FIRST_KEEP, lines, _FIRST_KEEP_HINTS, hint_pattern=_LINE_NUMBER_REF)


def is_important(line: str) -> bool:
    """A line no cut may remove."""
    return _important(line.lower())


def _important(lowered: str) -> bool:
    if "tests run: " in lowered and _PASSING_TALLY.match(lowered):
        return False
    return _MUST_KEEP.search(lowered) is not None


def fold_repeats(lines: list[str], limits: LogLimits, similar: bool = True) -> list[str]:
    """Runs of identical lines become one line and a count. With `similar` (logs), runs of lines that
    differ only in their numbers (progress bars, counters, one PASSED line per test) keep their first
    and last line. Important lines never fold into a count unless they are exact repeats."""
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        j = i + 1
        while j < n and lines[j] == line:
            j += 1
        if j - i >= limits.repeat_fold and line.strip():
            out.append(line)
            out.append(f"{MARKER_PREFIX}the line above repeats {j - i - 1:,} more times]")
            i = j
            continue
        k = i + 1
        if similar and not is_important(line):
            shape = _DIGITS.sub("#", line).replace(" ", "")
            if shape != line.replace(" ", ""):
                while k < n and _DIGITS.sub("#", lines[k]).replace(" ", "") == shape and not is_important(lines[k]):
                    k += 1
        if k - i >= limits.similar_fold:
            middle = lines[i + 1:k - 1]
            out.append(line)
            out.append(f"{MARKER_PREFIX}{len(middle):,} similar lines ({count_text(chr(10).join(middle)):,} tokens) "
                       f"that differ only in their numbers folded{paths_in(middle)}]")
            out.append(lines[k - 1])
            i = k
            continue
        out.extend(lines[i:j])
        i = j
    return out


def reduce_log(lines: list[str], limits: LogLimits, what: str) -> list[str]:
    """The head, the tail, and every important line with a little context; the rest is cut in runs,
    each replaced by a marker that counts its lines and tokens."""
    n = len(lines)
    keep = bytearray(n)
    for i in range(min(limits.head_lines, n)):
        keep[i] = 1
    for i in range(max(0, n - limits.tail_lines), n):
        keep[i] = 1
    must = must_keep_lines(lines)
    first = first_keep_lines(lines)
    seen_kinds: set[str] = set()
    for i in sorted(must | first):
        if i not in must and not lines[i].startswith(MARKER_PREFIX):
            kind = _DIGITS.sub("#", lines[i].strip())
            if kind in seen_kinds:
                continue
            seen_kinds.add(kind)
        for k in range(max(0, i - limits.context_before), min(n, i + limits.context_after + 1)):
            keep[k] = 1
    for i, line in enumerate(lines):
        if line.startswith(MARKER_PREFIX):
            keep[i] = 1
    out: list[str] = []
    i = 0
    while i < n:
        if keep[i]:
            out.append(lines[i])
            i += 1
            continue
        j = i
        while j < n and not keep[j]:
            j += 1
        if j - i < limits.min_cut_lines:
            out.extend(lines[i:j])
        else:
            tokens = count_text("\n".join(lines[i:j]))
            out.append(f"{MARKER_PREFIX}{j - i:,} lines ({tokens:,} tokens) cut from this {what}: kept errors, "
                       f"failing tests, summaries, the first of each warning and the first and last lines"
                       f"{paths_in(lines[i:j])}]")
        i = j
    return out


def essentials(text: str) -> list[str]:
    """The lines no cut may remove (errors, failing tests, summaries), each once, in order."""
    kept, seen = [], set()
    for line in strip_terminal_noise(text).split("\n"):
        if is_important(line) and line not in seen:
            seen.add(line)
            kept.append(line)
    return kept


_LOG_SIGNS = re.compile(
    r"^(?:=+ test session starts|collected \d+ items|Ran \d+ tests|PASSED|FAILED|ok \d+|not ok \d+"
    r"|Collecting |Downloading |Installing |Requirement already satisfied|Building wheel|Successfully installed"
    r"|added \d+ packages|npm (?:WARN|ERR)|\* Getting |==> |Compiling \d+ files|Generated \w+ app|Resolving Hex"
    r"|Running |test result:|running \d+ tests?|[ \t]+Compiling |warning: |error(?:\[E\d+\])?: "
    r"|\d+ tests?, \d+ failures?"
    r"|Finished in |Randomized with seed|\[\s*\d+%\]|\d+%\|"
    r"|[ \t]+\d+ (?:passing|failing|pending)|PHPUnit \d|Tests: \d+, Assertions:|[ \t]+[✔✘] )",  # mocha, PHPUnit
    re.IGNORECASE | re.MULTILINE,
)  # `[ \t]`, never `\s`, after `^`: with MULTILINE, `\s+` runs across every blank line that follows,
# and a million newlines make that quadratic (test_hostile's "1M newlines in a tool output")


def looks_like_log(text: str) -> bool:
    """Test runs, builds, installs: output made of many similar status lines, where the errors and
    the summary are what an agent reads."""
    return len(_LOG_SIGNS.findall(text, 0, 200_000)) >= 3


def summarise_json_array(text: str, limits: LogLimits) -> str | None:
    """A JSON array of many objects with the same keys keeps its first and last items and every item
    that mentions an error; the rest become one marker item. None when the text is not such an array."""
    stripped = text.strip()
    if not stripped.startswith("[") or not stripped.endswith("]"):
        return None
    try:
        items = json.loads(stripped)
    except ValueError:
        return None
    if not isinstance(items, list) or len(items) < limits.json_min_items:
        return None
    if not all(isinstance(item, dict) for item in items):
        return None
    keys = set(items[0])
    if not keys or sum(1 for item in items if set(item) == keys) < 0.8 * len(items):
        return None
    head = limits.json_keep_items - 1
    parts: list[str] = []
    gap: list[str] = []
    for i, item in enumerate(items):
        dumped = json.dumps(item, ensure_ascii=False)
        if i < head or i == len(items) - 1 or is_important(dumped):
            if gap:
                parts.append(json.dumps(f"{MARKER_PREFIX}{len(gap):,} more similar items "
                                        f"({count_text(','.join(gap)):,} tokens) removed; each has the keys "
                                        f"{', '.join(sorted(keys))}"
                                        f"{paths_in(gap)}]"))
                gap = []
            parts.append(dumped)
        else:
            gap.append(dumped)
    if len(parts) == len(items):
        return None
    return "[\n" + ",\n".join(parts) + "\n]"


def shrink_output(text: str, limits: LogLimits, log_hint: bool = False) -> str:
    """A tool output (not a file read) with its noise removed, repeats folded and, when long, reduced.
    `log_hint`: the command that made it runs tests, builds or installs."""
    cleaned = strip_terminal_noise(text)
    summary = summarise_json_array(cleaned, limits)
    if summary is not None:
        return summary
    lines = cleaned.split("\n")
    log = log_hint or looks_like_log(cleaned)
    folded = fold_repeats(lines, limits, similar=log) if len(lines) >= limits.repeat_fold else lines
    result = "\n".join(folded) if len(folded) != len(lines) else cleaned
    threshold = limits.log_tokens if log else limits.other_tokens
    # Code and logs run 2.5 to 4 characters a token: only the middle ground needs counting.
    if len(result) < threshold * 2 or (len(result) < threshold * 6 and count_text(result) <= threshold):
        return result
    reduced = "\n".join(reduce_log(folded, limits, "log" if log else "output"))
    # a log that is nearly all errors keeps nearly everything, and markers would make it longer
    return reduced if len(reduced) < len(result) else result
