"""Independent must-keep checker for Clutch's request compression.

Given a request body R as an agent sent it and R' as the compressor would forward it, `check()`
decides whether R' is admissible, without any model: facts read from R, MUST checks M1-M7 on R'
and prefix stability P1 across turns, as the compression team specified them:

* The ONLY thing a compressor may change is the text of tool outputs. A tool output is
  - Anthropic: the text of a `tool_result` block (its string content, or its text blocks);
  - OpenAI: the content of a `role: tool` message;
  - text-action agents (mini-SWE-agent, SWE-agent): a `role: user` message directly after an
    assistant message with no `tool_calls` whose text has a fenced ``` block (an observation).
  Its id is the `tool_use_id` / `tool_call_id`, or `obs@<message index>`.

Checks (`Finding.check`):

* M1 envelope: every top-level field except `messages` is byte-identical (json.dumps of each
  field), with the same set of keys.
* M2 structure: the body is JSON-serialisable; same number of messages, roles, block types per
  message, tool-call ids and result ids in the same order, `is_error` unchanged, tool-result
  content keeps its JSON type (a string stays a string, a list stays a list of the same block
  types).
* M3 protected content: everything that is not the text of a tool output is byte-identical:
  system, every assistant message (thinking + signature, tool_use inputs, hence every Edit
  `old_string`), user text blocks, the first user message(s), the newest user-authored text.
  (A "last K = 2 tool outputs stay verbatim" rule is deliberately left out: the compressor
  compresses each output at first sight, so stability is M7 + P1's business.)
* M4 errors survive: error lines of each tool output (8-300 chars after ANSI
  strip and whitespace normalisation) appear, normalised, in the compressed output with the same
  id; failing test ids and test summary lines appear somewhere in R'. Outputs replaced by a valid
  stale-read or superseded-read marker are exempt; a "same output as" reference may satisfy them
  from the referenced (earlier) output; a Write echo marker from the Write call's `content`.
* M5 fresh reads: the latest read of each file that no later edit/write of that
  file follows is byte-identical. Reads: Read/view/read_file tools, `str_replace_editor view`, and
  shell commands `cat|nl|head|tail|sed -n|open <path>` (text actions, bash tool calls, Claude
  Code's Bash). Writes: Edit/Write/MultiEdit/NotebookEdit, and shell heuristics (`> path`,
  `sed -i`, `tee`, `cp`/`mv`/`rm`, SWE-agent `create`/`edit` of the open file, ...).
* M6 honest markers: a changed tool output carries at least one
  `[clutch: ...]` marker (one line), unless the change is lossless normalisation only (ANSI
  removal, carriage-return redraw collapse, trailing whitespace); every new marker states how
  much was removed (a number followed by lines/tokens/times/items/bytes); stale-read,
  superseded-read, same-output and write-echo markers are only used where they are true.
* M8 fresh searches: every match line of a search result (Grep/Glob tools and their kin, shell
  commands whose last pipeline ends in grep/rg/ag/find/`ls -R`/`git grep`, then perhaps
  head/tail/sort/uniq) is still in the compressed output, or its location (file:line, the path,
  or `output line N`) is named in a new marker. Outputs replaced as superseded are exempt.

SHOULD (reported, not a failure): the share of file paths of tool outputs still present in R'.

`prefix_stable()` is P1 (each compressed turn's messages start with the previous one's, byte for
byte) for two consecutive compressed turns; `deterministic()` is the
in-process half of M7 (run the compressor twice, compare bytes).

Stdlib only. Run as `python -m tests.mustkeep [corpus dir]` for the identity baseline.
"""

from __future__ import annotations

import copy
import functools
import json
import posixpath
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

# --------------------------------------------------------------------------------------------
# Results


@dataclass
class Finding:
    check: str  # "M1".."M6"
    where: str  # e.g. "messages[12].content[0] (toolu_abc)"
    detail: str


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    error_lines: int = 0
    error_lines_kept: int = 0
    test_ids: int = 0  # failing test ids and test summary lines
    test_ids_kept: int = 0
    paths: int = 0
    paths_kept: int = 0
    fresh_reads: int = 0
    fresh_reads_verbatim: int = 0
    markers: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, check: str, where: str, detail: str) -> None:
        self.findings.append(Finding(check, where, detail))

    def summary(self) -> str:
        checks = Counter(f.check for f in self.findings)
        return (f"{'ok' if self.ok else 'FAIL ' + dict(sorted(checks.items())).__repr__()}; "
                f"errors {self.error_lines_kept}/{self.error_lines}, "
                f"tests {self.test_ids_kept}/{self.test_ids}, paths {self.paths_kept}/{self.paths}, "
                f"fresh reads {self.fresh_reads_verbatim}/{self.fresh_reads}, markers {self.markers}")


# --------------------------------------------------------------------------------------------
# Text normalisation

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
SPACES = re.compile(r"[ \t]+")
LINE_EDGES = re.compile(r"^[^\S\n]+|[^\S\n]+$", re.M)  # whitespace at either end of a line


def _after_last_cr(line: str) -> str:
    """Carriage-return redraw: what a terminal shows is the text after the last \\r."""
    line = line.rstrip("\r")
    return line.rsplit("\r", 1)[-1] if "\r" in line else line


def norm_text(text: str) -> str:
    """Text as compared by M4, line by line: ANSI removed, carriage-return redraw collapsed,
    stripped, runs of spaces/tabs collapsed to one space."""
    text = ANSI.sub("", text)
    if "\r" in text:
        text = "\n".join(_after_last_cr(line) for line in text.split("\n"))
    return SPACES.sub(" ", LINE_EDGES.sub("", text))


def norm_line(line: str) -> str:
    return norm_text(line)


def lossless(text: str) -> str:
    """The text with only the lossless normalisations M6 allows without a marker applied: ANSI
    removal, carriage-return redraw collapse, trailing whitespace at line ends (and at the end)."""
    lines = (_after_last_cr(line.rstrip()).rstrip() for line in ANSI.sub("", text).split("\n"))
    return "\n".join(lines).rstrip()


# --------------------------------------------------------------------------------------------
# Facts extracted from tool outputs: error lines, failing test ids and summaries, file paths

ERROR_WORDS = re.compile(r"error|exception|traceback|failed|failure|fatal|panic|assertionerror"
                         r"|segmentation fault|undefined reference|cannot find|not found", re.I)
TEST_ID_PATTERNS = [
    re.compile(r"^(?:FAILED|ERROR) (\S*(?:::|/|\.py)\S*)"),  # pytest short summary
    re.compile(r"--- FAIL: (\S+)"),  # go
    re.compile(r"^test (\S+) \.\.\. FAILED"),  # cargo
    re.compile(r"✕ (.+?)(?: \(\d+(?:\.\d+)? ?m?s\))?$"),  # jest
]
SUMMARY_PATTERNS = [
    re.compile(r"=+ ([^=]*\b\d+ (?:failed|passed|errors?)\b[^=]*?) =+"),  # pytest
    re.compile(r"^(\d+ (?:failed|passed|errors?)(?:, \d+ \w+)* in \d[\d.]*s\b.*)"),  # pytest -q
    re.compile(r"\b\d+ tests?, \d+ failures?\b(?:, \d+ \w+)*"),  # ExUnit, ...
    re.compile(r"test result: .*"),  # cargo
    re.compile(r"^Tests:\s+.*\b\d+ (?:failed|passed|total)\b.*"),  # jest
    re.compile(r"^(?:\[\w+\] )?Tests run: \d+, Failures: \d+, Errors: \d+, Skipped: \d+\s*$"),  # Maven's total
]
TEST_HINT = re.compile(r"FAILED|ERROR|--- FAIL|✕|\d+ (?:failed|passed|errors?|tests?)\b|test result:|Tests:|Tests run:")
PATH = re.compile(r"(?:\.{0,2}/)?(?:[\w.-]+/)+[\w.-]+\.\w+(?::\d+)?")


def _lines_matching(normalised: str, pattern: re.Pattern) -> list[str]:
    """The lines of a normalised text in which `pattern` matches, each once."""
    lines, end = [], -1
    for m in pattern.finditer(normalised):
        if m.start() <= end:
            continue
        start = normalised.rfind("\n", 0, m.start()) + 1
        end = normalised.find("\n", m.end())
        end = len(normalised) if end < 0 else end
        lines.append(normalised[start:end])
    return lines


# Maven surefire's line for a test class that passed says "Failures: 0, Errors: 0" and is no error line
PASSING_CLASS = re.compile(r"^(?:\[INFO\] )?Tests run: \d+, Failures: 0, Errors: 0, Skipped: \d+, "
                           r"Time elapsed: [\d.,]+ s -- in [\w.$]+$")


def error_lines(normalised: str) -> set[str]:
    """Error lines, 8-300 characters long, of a text already passed through norm_text (a passing Maven
    class's tally is none)."""
    return {line for line in _lines_matching(normalised, ERROR_WORDS) if 8 <= len(line) <= 300
            and not PASSING_CLASS.match(line)}


def failing_tests(normalised: str) -> set[str]:
    """Failing test ids and summary lines of a normalised text, as substrings to find in R'."""
    facts = set()
    for line in _lines_matching(normalised, TEST_HINT):
        for pattern in TEST_ID_PATTERNS:
            if m := pattern.search(line):
                facts.add(m.group(1))
        for pattern in SUMMARY_PATTERNS:
            if m := pattern.search(line):
                facts.add((m.group(1) if m.groups() else m.group(0)).strip())
    return facts


def file_paths(text: str) -> set[str]:
    return set(PATH.findall(text))


# --------------------------------------------------------------------------------------------
# Markers (M6)

MARKER = re.compile(r"\[clutch: [^\]\n]+\]")
QUANTITY = re.compile(r"\d[\d,]*(?:\.\d+)?\s+(?:[a-z]+\s+){0,2}(?:lines?|tokens?|times|items?|bytes)\b")
STALE = re.compile(r"^\[clutch: stale read of (.+?): the file was changed after this read;")
# Headroom's stale-read marker (headroom-ai 0.42, ReadLifecycle): not Clutch's grammar, so it still
# fails M6, but its read is exempt from M4 as any stale-read marker's is (it names the file, says the
# content is outdated, and the file is edited later), to compare the two fairly.
FOREIGN_STALE = re.compile(r"^\[Read content stale: (.+?) was modified after this read")
SUPERSEDED = re.compile(r"^\[clutch: superseded read of (.+?): the file is read again later;")
# The id, and where ids repeat (agents reuse them) the place and command: `call_0 (message 12, `ls -F`)`.
SAME_OUTPUT = re.compile(r"^\[clutch: same output as tool call (\S+?)"
                         r"(?: \((?:message|input item|content) (\d+)(?:, `([^`]*)`)?\))? above;")
SUPERSEDED_RUN = re.compile(r"^\[clutch: superseded output of `(.*)`: the same command runs again later;")
STALE_SNIPPET = re.compile(r"^\[clutch: outdated snippet of (.+?): the file was changed or read again later;")
WRITE_ECHO = re.compile(r"^\[clutch: listing of the written file removed\b")
LINE_NUMBER = re.compile(r"^\s*\d+→")  # `cat -n` prefix of Claude Code's Read / Write echoes


def new_markers(original: str, compressed: str) -> list[str]:
    """Markers in the compressed text that the original did not already contain."""
    return list((Counter(MARKER.findall(compressed)) - Counter(MARKER.findall(original))).elements())


def malformed_markers(original: str, compressed: str) -> int:
    """`[clutch:` openings that do not start a well-formed one-line marker."""
    def bad(text: str) -> int:
        return text.count("[clutch:") - len(MARKER.findall(text))
    return max(0, bad(compressed) - bad(original))


# --------------------------------------------------------------------------------------------
# Parsing the request: tool calls, tool outputs, file reads and writes


@dataclass
class Call:
    id: str
    name: str  # tool name; "text" for a text action
    args: dict
    pos: tuple[int, int]  # (message index, block index) of the call


@dataclass
class Output:
    id: str
    index: int  # message index
    block: int | None  # content block index (Anthropic tool_result), else None
    where: str
    call: Call | None


@dataclass
class FileOp:
    kind: str  # "read" | "write"
    path: str
    pos: tuple[int, int]
    output: Output | None = None  # the tool output of a read (by place: agents reuse ids)


FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.S)
OPEN_FILE = re.compile(r"\(Open file: ([^)\n]+)\)")
READ_TOOLS = {"Read", "read_file", "view", "View", "ReadFile"}
WRITE_TOOLS = {"Edit", "Write", "MultiEdit", "NotebookEdit", "write_file", "edit_file"}
EDITOR_TOOLS = {"str_replace_editor", "str_replace_based_edit_tool"}
SHELL_TOOLS = {"bash", "shell", "run_shell_command", "execute_command"}


def _text_of(content: Any) -> str:
    """Text of a string content, or the text blocks of a list content, joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content
                         if isinstance(part, dict) and part.get("type") == "text")
    return ""


def _fenced_command(message: dict) -> str | None:
    """The last fenced block of an assistant message without tool_calls, else None."""
    if message.get("role") != "assistant" or message.get("tool_calls"):
        return None
    blocks = FENCE.findall(_text_of(message.get("content")))
    return blocks[-1].strip() if blocks else None


def is_observation(messages: list[dict], index: int) -> bool:
    return (index > 0 and messages[index].get("role") == "user"
            and _fenced_command(messages[index - 1]) is not None)


def tool_outputs(fmt: str, body: dict) -> list[Output]:
    """The tool outputs of a request, in order."""
    messages = body.get("messages") or []
    return _anthropic_outputs(messages) if fmt == "anthropic" else _openai_outputs(messages)


def _anthropic_outputs(messages: list[dict]) -> list[Output]:
    calls, outputs = {}, []
    for i, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                calls[block.get("id")] = Call(block.get("id"), block.get("name", ""),
                                              block.get("input") or {}, (i, j))
            elif block.get("type") == "tool_result":
                rid = block.get("tool_use_id", "")
                outputs.append(Output(rid, i, j, f"messages[{i}].content[{j}] ({rid})", calls.get(rid)))
    return outputs


def _openai_outputs(messages: list[dict]) -> list[Output]:
    calls, outputs = {}, []
    for i, message in enumerate(messages):
        for tc in message.get("tool_calls") or []:
            fn = tc.get("function") or {}
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except (TypeError, ValueError):
                args = {}
            calls[tc.get("id")] = Call(tc.get("id"), fn.get("name", ""),
                                       args if isinstance(args, dict) else {}, (i, 0))
        if message.get("role") == "tool":
            rid = message.get("tool_call_id", "")
            outputs.append(Output(rid, i, None, f"messages[{i}] ({rid})", calls.get(rid)))
        elif is_observation(messages, i):
            rid = f"obs@{i}"
            call = Call(rid, "text", {"command": _fenced_command(messages[i - 1])}, (i - 1, 0))
            outputs.append(Output(rid, i, None, f"messages[{i}] ({rid})", call))
    return outputs


def output_content(body: dict, out: Output) -> Any:
    """The JSON value holding the tool output's text: tool_result content or message content."""
    message = body["messages"][out.index]
    return message["content"][out.block].get("content") if out.block is not None else message.get("content")


def output_text(body: dict, out: Output) -> str:
    return _text_of(output_content(body, out))


# --- shell-ish commands of text actions (heuristics for M5's fresh reads)

REDIRECT_OUT = {">", ">>", ">|", "&>", "&>>"}
SEPARATORS = {"|", "||", "&&", ";", "&", "|&", "\n", "(", ")"}
PUNCTUATION = set("();<>|&\n")
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
READ_FILTERS = {"sed", "head", "tail", "nl", "cat"}


def _without_heredoc_bodies(command: str) -> str:
    """The command with the bodies of its here-documents taken out (they are data, not commands)."""
    kept, ends = [], []
    for line in command.split("\n"):
        if ends:
            if line.strip() == ends[0]:
                ends.pop(0)
            continue
        kept.append(line)
        ends = [m.group(2) for m in HEREDOC.finditer(line)]
    return "\n".join(kept)


def _split_commands(command: str) -> list[tuple[str, list[str], list[str]]]:
    """Simple commands of a shell line: (separator before it, argv, output-redirection targets)."""
    command = _without_heredoc_bodies(command).replace("\\\n", " ")
    try:
        lex = shlex.shlex(command, posix=True, punctuation_chars="".join(sorted(PUNCTUATION)))
        lex.whitespace = " \t\r"
        lex.whitespace_split = True
        tokens = list(lex)
    except ValueError:
        tokens = command.replace("\n", " \n ").split()
    result, sep, argv, targets = [], "", [], []
    it = iter(range(len(tokens)))
    for k in it:
        token = tokens[k]
        if token and set(token) <= PUNCTUATION and not set(token) & set("<>"):  # separator(s)
            if argv or targets:
                result.append((sep, argv, targets))
            sep, argv, targets = token.strip("()\n") or ";", [], []
        elif token and set(token) <= PUNCTUATION:  # a redirection operator
            if argv and argv[-1].isdigit():
                argv.pop()  # the fd of 2>&1 / 2> file
            target = tokens[k + 1] if k + 1 < len(tokens) else ""
            if token in REDIRECT_OUT and target and not target.startswith("/dev/"):
                targets.append(target)
            if target and target not in SEPARATORS:
                next(it, None)
        else:
            argv.append(token)
    if argv or targets:
        result.append((sep, argv, targets))
    return result


def _operands(argv: list[str], with_value: set[str]) -> list[str]:
    """Non-option arguments after the program name; options in `with_value` take the next token."""
    operands, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg in with_value:
            skip = True
        elif not (arg.startswith("-") and arg != "-"):
            operands.append(arg)
    return operands


def _join(cwd: str, path: str) -> str:
    return posixpath.normpath(posixpath.join(cwd, path)) if cwd else posixpath.normpath(path)


def _read_target(argv: list[str]) -> tuple[bool, list[str]]:
    """(is a read program, file operands) for one simple command."""
    prog = argv[0] if argv else ""
    if prog == "cat":
        return True, _operands(argv, set())
    if prog == "nl":
        return True, _operands(argv, {"-b", "-n", "-w", "-s", "-v", "-i", "-l", "-d", "-h", "-f"})
    if prog in ("head", "tail"):
        return True, _operands(argv, {"-n", "-c"})
    if prog == "sed":
        if not any(a in ("-n", "--quiet", "--silent") for a in argv) or any(a.startswith("-i") for a in argv):
            return False, []
        operands = _operands(argv, {"-e", "-f"})
        return True, operands if any(a in ("-e", "-f") for a in argv) else operands[1:]
    if prog == "open":
        return True, argv[1:2]
    if prog in EDITOR_TOOLS and len(argv) >= 3 and argv[1] == "view":
        return True, argv[2:3]
    return False, []


def command_read(command: str) -> str | None:
    """The path a one-line command reads (`cat|nl|head|tail|sed -n|open <path>`, optionally
    after `cd dir &&`, optionally piped through sed -n/head/tail), else None."""
    if not command or "\n" in command.strip():
        return None
    parts = _split_commands(command.strip())
    cwd = ""
    while parts and parts[0][1][:1] == ["cd"] and len(parts) > 1 and parts[1][0] in ("&&", ";"):
        cwd = _join(cwd, parts[0][1][1]) if len(parts[0][1]) > 1 else cwd
        parts = parts[1:]
    if not parts or any(targets for _, _, targets in parts):
        return None
    is_read, paths = _read_target(parts[0][1])
    if not is_read or len(paths) != 1:
        return None
    for sep, argv, _ in parts[1:]:
        if sep != "|" or argv[:1] == [] or argv[0] not in READ_FILTERS or _read_target(argv)[1]:
            return None
    return _join(cwd, paths[0])


def command_writes(command: str, open_file: str | None) -> list[str]:
    """Paths a command may change (heuristic): `> path`, `sed -i`, `tee`, `cp`/`mv` targets,
    `rm`, SWE-agent `create`/`edit`/`insert`, `str_replace_editor create|str_replace|insert`."""
    first = command.strip().split(None, 1)
    if first and first[0] in ("edit", "insert"):  # SWE-agent: edits the open file; body follows
        return [open_file] if open_file else []
    if first and first[0] == "create" and len(first) > 1:
        return [first[1].split()[0]]
    writes, cwd = [], ""
    for sep, argv, targets in _split_commands(command):
        if argv[:1] == ["cd"] and len(argv) > 1:
            cwd = _join(cwd, argv[1])
            continue
        paths = list(targets)
        prog = argv[0] if argv else ""
        if prog == "sed" and any(a.startswith("-i") or a == "--in-place" for a in argv):
            operands = _operands(argv, {"-e", "-f"})
            paths += operands if any(a in ("-e", "-f") for a in argv) else operands[1:]
        elif prog == "tee":
            paths += _operands(argv, set())
        elif prog in ("cp", "mv") and len(_operands(argv, set())) >= 2:
            paths.append(_operands(argv, set())[-1])
        elif prog == "rm":
            paths += _operands(argv, set())
        elif prog in EDITOR_TOOLS and len(argv) >= 3 and argv[1] in ("create", "str_replace", "insert", "undo_edit"):
            paths.append(argv[2])
        writes += [_join(cwd, p) for p in paths]
    return writes


def _call_command(call: Call) -> str | None:
    """A tool call of an OpenAI agent as the equivalent text-action command."""
    a = call.args
    if call.name in ("text", "bash"):
        return a.get("command")
    if call.name == "open" and a.get("path"):
        return f"open {a['path']}"
    if call.name == "create" and a.get("filename"):
        return f"create {a['filename']}"
    if call.name in ("edit", "insert"):
        return call.name
    if call.name in EDITOR_TOOLS and a.get("command") and a.get("path"):
        return f"{call.name} {a['command']} {a['path']}"
    return None


def _tool_path(call: Call) -> str | None:
    a = call.args
    path = a.get("file_path") or a.get("notebook_path") or a.get("path")
    return path if isinstance(path, str) else None


def file_ops(fmt: str, body: dict, outputs: list[Output]) -> list[FileOp]:
    """File reads and writes of a request, in order (for M5's fresh reads)."""
    calls = _anthropic_calls(body) if fmt == "anthropic" else [o.call for o in outputs if o.call]
    by_call = {(o.call.pos, o.call.id): o for o in outputs if o.call}
    return _anthropic_ops(calls, by_call) if fmt == "anthropic" else _text_ops(body, calls, by_call)


def _anthropic_calls(body: dict) -> list[Call]:
    calls = []
    for i, message in enumerate(body.get("messages") or []):
        for j, block in enumerate(message.get("content") if isinstance(message.get("content"), list) else []):
            if isinstance(block, dict) and block.get("type") == "tool_use":
                calls.append(Call(block.get("id"), block.get("name", ""), block.get("input") or {}, (i, j)))
    return calls


def _anthropic_ops(calls: list[Call], by_call: dict[tuple, Output]) -> list[FileOp]:
    """Read/Edit/Write... tools, and shell tools (Claude Code's Bash) read with the same command
    heuristics as text actions (`cat|sed -n|head|tail|nl` of a path)."""
    ops = []
    for call in calls:
        path, command = _tool_path(call), call.args.get("command")
        if call.name.lower() in SHELL_TOOLS and isinstance(command, str):
            ops += [FileOp("write", p, call.pos) for p in command_writes(command, None)]
            if read := command_read(command):
                ops.append(FileOp("read", read, call.pos, by_call.get((call.pos, call.id))))
            continue
        if not path:
            continue
        if call.name in READ_TOOLS or (call.name in EDITOR_TOOLS and command == "view"):
            ops.append(FileOp("read", path, call.pos, by_call.get((call.pos, call.id))))
        elif call.name in WRITE_TOOLS or call.name in EDITOR_TOOLS:
            ops.append(FileOp("write", path, call.pos))
    return ops


def _text_ops(body: dict, calls: list[Call], by_call: dict[tuple, Output]) -> list[FileOp]:
    """Reads and writes of text actions and OpenAI tool calls, tracking SWE-agent's open file."""
    messages, ops, open_file = body.get("messages") or [], [], None
    calls_at = {call.pos[0]: [] for call in calls}
    for call in calls:
        calls_at[call.pos[0]].append(call)
    for i, message in enumerate(messages):
        for call in calls_at.get(i, []):
            command = _call_command(call) or ""
            for path in command_writes(command, open_file):
                ops.append(FileOp("write", path, call.pos))
            if path := command_read(command) or (_tool_path(call) if call.name in READ_TOOLS else None):
                ops.append(FileOp("read", path, call.pos, by_call.get((call.pos, call.id))))
            words = command.split()
            if len(words) > 1 and words[0] in ("open", "create"):
                open_file = words[1]
        if message.get("role") in ("user", "tool"):
            footers = OPEN_FILE.findall(_text_of(message.get("content")))
            if footers and footers[-1].strip() != "n/a":
                open_file = footers[-1].strip()
    return ops


UP = re.compile(r"^(?:\.\./)+")


def same_file(a: str, b: str) -> bool:
    """Equal after normalisation, or one relative path is a suffix of the other at a '/'."""
    a, b = posixpath.normpath(a), posixpath.normpath(b)
    if a == b:
        return True
    if not a.startswith("/") and b.endswith("/" + UP.sub("", a)):
        return True
    return not b.startswith("/") and a.endswith("/" + UP.sub("", b))


def _later(ops: list[FileOp], op: FileOp, kind: str, path: str) -> bool:
    return any(o.kind == kind and o.pos > op.pos and same_file(o.path, path) for o in ops)


def fresh_reads(ops: list[FileOp]) -> list[FileOp]:
    """Reads not followed by a read or a write of the same file."""
    return [op for op in ops if op.kind == "read" and op.output
            and not _later(ops, op, "read", op.path) and not _later(ops, op, "write", op.path)]


# --------------------------------------------------------------------------------------------
# The checks


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr)  # repr: M2 reports unserialisable


def check_envelope(original: dict, compressed: dict, report: Report) -> None:
    """M1: every field except messages byte-identical, same keys. The allow-list of M1:
    `cache_control` breakpoints may be added, moved or removed (they do not change the prompt)."""
    for key in sorted(set(original) | set(compressed), key=str):
        if key == "messages":
            continue
        if key not in compressed:
            report.add("M1", key, "field dropped")
        elif key not in original:
            report.add("M1", key, "field added")
        elif _dumps(_without_cache_control(original[key])) != _dumps(_without_cache_control(compressed[key])):
            report.add("M1", key, "field changed")


def _block_types(content: Any) -> Any:
    if isinstance(content, list):
        return [b.get("type") if isinstance(b, dict) else type(b).__name__ for b in content]
    return type(content).__name__


def _message_shape(fmt: str, message: dict) -> list:
    """What M2 compares per message: role, block types, call/result ids, is_error, result types."""
    content = message.get("content")
    shape = [message.get("role"), _block_types(content)]
    if fmt == "anthropic" and isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                shape.append(("call", block.get("id")))
            elif isinstance(block, dict) and block.get("type") == "tool_result":
                shape.append(("result", block.get("tool_use_id"), "is_error" in block,
                              block.get("is_error"), _block_types(block.get("content"))))
    else:
        shape.append(("calls", [tc.get("id") for tc in message.get("tool_calls") or []]))
        shape.append(("result", message.get("tool_call_id")))
    return shape


def check_structure(fmt: str, original: dict, compressed: dict, report: Report) -> set[int]:
    """M2. Returns the indexes of messages with a structural finding (None of them are compared
    further); all indexes if the messages cannot be aligned."""
    try:
        json.dumps(compressed, allow_nan=False)
    except (TypeError, ValueError) as exc:
        report.add("M2", "body", f"not JSON-serialisable: {exc}")
    before, after = original.get("messages") or [], compressed.get("messages")
    if not isinstance(after, list) or len(after) != len(before):
        report.add("M2", "messages", f"{len(before)} messages became "
                   f"{len(after) if isinstance(after, list) else type(after).__name__}")
        return set(range(len(before)))
    bad = set()
    for i, (a, b) in enumerate(zip(before, after)):
        if not isinstance(b, dict):
            report.add("M2", f"messages[{i}]", f"message became {type(b).__name__}")
            bad.add(i)
            continue
        shape_a, shape_b = _message_shape(fmt, a), _message_shape(fmt, b)
        if shape_a != shape_b:
            report.add("M2", f"messages[{i}]", f"structure changed: {shape_a!r} -> {shape_b!r}"[:500])
            bad.add(i)
    return bad


def _blank(content: Any) -> Any:
    """A tool output's content with its text taken out (what must not change around it)."""
    if isinstance(content, str):
        return "<text>"
    if isinstance(content, list):
        return [{**part, "text": "<text>"} if isinstance(part, dict) and part.get("type") == "text"
                else part for part in content]
    return content


def _skeleton(message: dict, outputs: list[Output]) -> dict:
    """The message with the text of its tool outputs blanked out."""
    message = dict(message)
    for out in outputs:
        if out.block is None:
            message["content"] = _blank(message.get("content"))
        else:
            content = list(message["content"])
            content[out.block] = {**content[out.block], "content": _blank(content[out.block].get("content"))}
            message["content"] = content
    return message


def check_protected(original: dict, compressed: dict, outputs: list[Output], skip: set[int],
                    report: Report) -> None:
    """M3: everything that is not tool-output text is byte-identical."""
    per_message: dict[int, list[Output]] = {}
    for out in outputs:
        per_message.setdefault(out.index, []).append(out)
    for i, (a, b) in enumerate(zip(original["messages"], compressed["messages"])):
        if i in skip:
            continue
        outs = per_message.get(i, [])
        sa, sb = (_skeleton(a, outs), _skeleton(b, outs)) if outs else (a, b)
        sa, sb = _without_cache_control(sa), _without_cache_control(sb)  # M1's allow-list holds here too
        if _dumps(sa) == _dumps(sb):
            continue
        for place, what in _differing_parts(sa, sb):
            report.add("M3", f"messages[{i}]{place}", f"protected {a.get('role')} {what} changed")


def _differing_parts(a: dict, b: dict) -> list[tuple[str, str]]:
    """Where two different messages differ: the content blocks if only blocks differ, else the
    whole message (key order counts: it changes the bytes)."""
    ca, cb = a.get("content"), b.get("content")
    rest_a = _dumps({k: v for k, v in a.items() if k != "content"})
    rest_b = _dumps({k: v for k, v in b.items() if k != "content"})
    if (isinstance(ca, list) and isinstance(cb, list) and len(ca) == len(cb) and rest_a == rest_b
            and list(a) == list(b)):
        parts = [(f".content[{j}]", f"{x.get('type') if isinstance(x, dict) else '?'} block")
                 for j, (x, y) in enumerate(zip(ca, cb)) if _dumps(x) != _dumps(y)]
        if parts:
            return parts
    return [("", "message")]


@dataclass
class _Analysed:
    """One tool output, original and compressed, with its markers judged."""
    out: Output
    before: str
    after: str
    changed: bool
    markers: list[str]
    exempt: bool = False  # a valid stale/superseded read marker: its facts need not survive
    refers_to: _Analysed | None = None  # the earlier output a valid same-output reference names
    write_content: str | None = None  # a valid write echo: the Write call's content

    @functools.cached_property
    def norm_before(self) -> str:
        return norm_text(self.before)

    @functools.cached_property
    def norm_after(self) -> str:
        return norm_text(self.after)


def _command(out: Output) -> str:
    command = out.call.args.get("command") if out.call else None
    return command if isinstance(command, str) else ""


def _names_command(label: str, command: str) -> bool:
    """Whether a marker's label (a command's first line, perhaps shortened to `...`) is `command`'s."""
    line = command.strip().split("\n", 1)[0].replace("]", ")")  # a marker holds no `]`; a reference no backtick
    shown = (line, line.replace("`", "'"))
    return any(s.startswith(label[:-3]) if label.endswith("...") else s == label for s in shown)


def _position(out: Output) -> tuple[int, int]:
    return out.index, out.block or 0


def _judge_same_output(m: re.Match, item: _Analysed, analysed: list[_Analysed], report: Report) -> None:
    """A repeat reference names exactly one earlier output (by id, and where given place and
    command), and that output's text is this one's."""
    rid, index, label = m.group(1), m.group(2), m.group(3)
    found = [x for x in analysed if x.out.id == rid and _position(x.out) < _position(item.out)
             and (index is None or x.out.index == int(index))
             and (label is None or _names_command(label, _command(x.out)))]
    if len(found) != 1:
        report.add("M6", item.out.where, f"same-output marker names {m.group(0)[34:]!r}: "
                   f"{len(found)} earlier tool outputs fit, not one")
    elif lossless(found[0].before) != lossless(item.before):
        report.add("M6", item.out.where, f"same-output marker, but the output of {rid} was different")
    else:
        item.refers_to = found[0]


def _judge_superseded_run(m: re.Match, item: _Analysed, analysed: list[_Analysed], report: Report) -> None:
    """A superseded-run marker names this output's own command, and that command runs again later."""
    command = _command(item.out)
    if not command or not _names_command(m.group(1), command):
        report.add("M6", item.out.where, f"superseded-run marker names `{m.group(1)[:80]}`, "
                   f"but this is the output of `{command.strip()[:80]}`")
    elif not any(_position(x.out) > _position(item.out) and _command(x.out) == command for x in analysed):
        report.add("M6", item.out.where, f"superseded-run marker, but `{m.group(1)[:80]}` does not run again later")


def _judge_snippet(m: re.Match, item: _Analysed, ops: list[FileOp], report: Report) -> None:
    """An outdated-snippet marker names the file this call edited, written or read again later."""
    call = item.out.call
    path = _tool_path(call) if call else None
    if not (path and call and same_file(m.group(1), path) and any(
            o.pos > call.pos and same_file(o.path, path) for o in ops)):
        report.add("M6", item.out.where, f"outdated-snippet marker, but {m.group(1)} is not this call's file "
                   "changed or read later")


def _judge_marker(marker: str, item: _Analysed, analysed: list[_Analysed], ops: list[FileOp],
                  report: Report) -> None:
    """M6 for one marker; records the exemption a valid special marker grants."""
    out = item.out
    if not QUANTITY.search(marker):
        report.add("M6", out.where, f"marker does not say how much was removed: {marker}")
    read = next((op for op in ops if op.kind == "read" and op.output is out), None)
    if m := STALE.match(marker):
        if read and same_file(m.group(1), read.path) and _later(ops, read, "write", read.path):
            item.exempt = True
        else:
            report.add("M6", out.where, f"stale-read marker, but this is no read of {m.group(1)} "
                       "edited or written later")
    elif m := SUPERSEDED.match(marker):
        if read and same_file(m.group(1), read.path) and _later(ops, read, "read", read.path):
            item.exempt = True
        else:
            report.add("M6", out.where, f"superseded-read marker, but {m.group(1)} is not read again later")
    elif m := SAME_OUTPUT.match(marker):
        _judge_same_output(m, item, analysed, report)
    elif m := SUPERSEDED_RUN.match(marker):
        _judge_superseded_run(m, item, analysed, report)
    elif m := STALE_SNIPPET.match(marker):
        _judge_snippet(m, item, ops, report)
    elif WRITE_ECHO.match(marker):
        if out.call and out.call.name == "Write" and isinstance(out.call.args.get("content"), str):
            item.write_content = out.call.args["content"]
        else:
            report.add("M6", out.where, "write-echo marker on the result of a call that is no Write")


def analyse_outputs(original: dict, compressed: dict, outputs: list[Output], ops: list[FileOp],
                    skip: set[int], report: Report) -> list[_Analysed]:
    """M6 on every tool output; returns the outputs with their exemptions."""
    analysed = []
    for out in outputs:
        if out.index in skip:
            continue
        before, after = output_text(original, out), output_text(compressed, out)
        changed = _dumps(output_content(original, out)) != _dumps(output_content(compressed, out))
        analysed.append(_Analysed(out, before, after, changed, new_markers(before, after) if changed else []))
    for item in analysed:  # every output, each by its place: agents reuse ids
        if not item.changed:
            continue
        report.markers += len(item.markers)
        if malformed_markers(item.before, item.after):
            report.add("M6", item.out.where, "malformed marker: '[clutch:' not closed on the same line")
        if not item.markers and lossless(item.before) != lossless(item.after):
            report.add("M6", item.out.where, "tool output changed without a [clutch: ...] marker")
            if m := FOREIGN_STALE.match(item.after):
                read = next((op for op in ops if op.kind == "read" and op.output is item.out), None)
                item.exempt = bool(read and same_file(m.group(1), read.path) and _later(ops, read, "write", read.path))
        for marker in item.markers:
            _judge_marker(marker, item, analysed, ops, report)
    return analysed


def _resolve_reference(item: _Analysed) -> list[_Analysed]:
    """The outputs an error line of `item` may be found in: itself, then the chain of
    same-output references (each to an earlier output, so the chain ends)."""
    chain = [item]
    while item.refers_to is not None:
        item = item.refers_to
        chain.append(item)
    return chain


def check_errors(items: list[_Analysed], report: Report) -> None:
    """M4, error lines: each survives in the compressed output with the same id (or where a
    valid marker sends it)."""
    for item in items:
        if item.exempt:
            continue
        lines = error_lines(item.norm_before)
        if not lines:
            continue
        if not item.changed:
            report.error_lines += len(lines)
            report.error_lines_kept += len(lines)
            continue
        places = [ref.norm_after for ref in _resolve_reference(item)]
        content = norm_text(item.write_content) if item.write_content is not None else None
        missing = [line for line in sorted(lines)
                   if not any(line in place for place in places)
                   and not (content is not None and norm_line(LINE_NUMBER.sub("", line)) in content)]
        report.error_lines += len(lines)
        report.error_lines_kept += len(lines) - len(missing)
        if missing:
            examples = "; ".join(repr(line[:120]) for line in missing[:3])
            report.add("M4", item.out.where, f"{len(missing)} of {len(lines)} error lines lost, e.g. {examples}")


def _all_strings(node: Any, into: list[str]) -> list[str]:
    if isinstance(node, str):
        into.append(node)
    elif isinstance(node, dict):
        for value in node.values():
            _all_strings(value, into)
    elif isinstance(node, list):
        for value in node:
            _all_strings(value, into)
    return into


def check_tests_and_paths(items: list[_Analysed], compressed: dict, report: Report) -> None:
    """M4, failing test ids and summary lines, anywhere in R'; and the SHOULD path share."""
    haystack = None  # normalised text of every string in R', built only if something is missing
    facts: dict[str, str] = {}
    paths: dict[str, _Analysed] = {}
    for item in items:
        if item.exempt:
            continue
        for fact in failing_tests(item.norm_before):
            facts.setdefault(fact, item.out.where)
        for path in file_paths(item.norm_before):
            paths.setdefault(path, item)

    def present(text: str, item: _Analysed | None) -> bool:
        nonlocal haystack
        if item is not None and (not item.changed or text in item.norm_after):
            return True
        if haystack is None:
            haystack = "\n".join(norm_text(s) for s in _all_strings(compressed.get("messages"), []))
        return text in haystack

    by_where = {item.out.where: item for item in items}
    for fact, where in facts.items():
        report.test_ids += 1
        if present(fact, by_where.get(where)):
            report.test_ids_kept += 1
        else:
            report.add("M4", where, f"failing test id / test summary lost: {fact[:160]!r}")
    for path, item in paths.items():
        report.paths += 1
        report.paths_kept += present(path, item)


def check_fresh_reads(original: dict, compressed: dict, ops: list[FileOp], outputs: list[Output],
                      skip: set[int], report: Report) -> None:
    """M5: every fresh read byte-identical."""
    for op in fresh_reads(ops):
        out = op.output
        if out is None or out.index in skip:
            continue
        report.fresh_reads += 1
        if _dumps(output_content(original, out)) == _dumps(output_content(compressed, out)):
            report.fresh_reads_verbatim += 1
        else:
            report.add("M5", out.where, f"fresh read of {op.path} changed")


SEARCH_TOOLS = {"Grep", "Glob", "LS", "grep", "glob", "search_file_content", "list_directory", "search_files"}
SEARCH_PROGRAMS = {"grep", "egrep", "fgrep", "zgrep", "rg", "ag", "ack", "find", "fd", "locate"}
GREP_LOCATION = re.compile(r"^([^\s:]+)[:-](\d+)[:-]")


def is_search(call: Call | None) -> bool:
    """A call whose output is a search result (M8)."""
    if call is None:
        return False
    command = call.args.get("command")
    if not isinstance(command, str):
        return call.name in SEARCH_TOOLS
    parts = _split_commands(command)
    while parts and parts[-1][0] == "|" and parts[-1][1][:1] and parts[-1][1][0] in ("head", "tail", "sort", "uniq"):
        parts = parts[:-1]
    argv = parts[-1][1] if parts else []
    return bool(argv) and (argv[0] in SEARCH_PROGRAMS or argv[:2] == ["git", "grep"]
                           or (argv[0] == "ls" and any(a.startswith("-") and "R" in a for a in argv)))


def check_fresh_searches(items: list[_Analysed], report: Report) -> None:
    """M8: no match of a search result lost without its location in a marker."""
    for item in items:
        if not item.changed or item.exempt or item.refers_to or not is_search(item.out.call):
            continue
        if any(m.startswith("[clutch: superseded output of") for m in item.markers):
            continue  # the same command runs again later: its newer output has the matches
        kept = set(item.norm_after.split("\n"))
        searched = item.out.call.args.get("path") if item.out.call else None
        listed = " ".join(item.markers)
        for number, line in enumerate(item.norm_before.split("\n"), 1):
            found, only = GREP_LOCATION.match(line), re.match(r"(\d+)[:-]", line)
            where = (f"{searched}:{only.group(1)}" if only and searched else f"{found.group(1)}:{found.group(2)}"
                     if found else line if " " not in line else f"output line {number}")
            if line.strip() and line not in kept and where not in listed:
                report.add("M8", item.out.where, f"search match lost, its location in no marker: {line[:160]!r}")


def check(fmt: str, original: dict, compressed: dict) -> Report:
    """All MUST checks (M1-M6) of R' = `compressed` against R = `original`."""
    if fmt not in ("anthropic", "openai"):
        raise ValueError(f"unknown format {fmt!r}")
    report = Report()
    check_envelope(original, compressed, report)
    skip = check_structure(fmt, original, compressed, report)
    if len(skip) == len(original.get("messages") or []) and skip:
        return report
    outputs = tool_outputs(fmt, original)
    ops = file_ops(fmt, original, outputs)
    check_protected(original, compressed, outputs, skip, report)
    items = analyse_outputs(original, compressed, outputs, ops, skip, report)
    check_errors(items, report)
    check_tests_and_paths(items, compressed, report)
    check_fresh_reads(original, compressed, ops, outputs, skip, report)
    check_fresh_searches(items, report)
    return report


# --------------------------------------------------------------------------------------------
# P1 prefix stability and M7 determinism


def _without_cache_control(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_cache_control(v) for k, v in node.items() if k != "cache_control"}
    if isinstance(node, list):
        return [_without_cache_control(v) for v in node]
    return node


def _canonical(node: Any) -> str:
    return json.dumps(_without_cache_control(node), ensure_ascii=False, separators=(",", ":"))


def prefix_stable(prev: dict, nxt: dict) -> tuple[bool, int | None]:
    """P1: the compressed messages of turn t are, byte for byte (cache_control ignored), the
    first messages of turn t+1, and every other top-level field is identical. Returns (True, None)
    or (False, the first differing message index); -1 when a top-level field differs (the cache
    breaks before messages[0])."""
    for key in (set(prev) | set(nxt)) - {"messages"}:
        if key not in prev or key not in nxt or _canonical(prev[key]) != _canonical(nxt[key]):
            return False, -1
    before, after = prev.get("messages") or [], nxt.get("messages") or []
    for i, message in enumerate(before):
        if i >= len(after) or _canonical(message) != _canonical(after[i]):
            return False, i
    return True, None


def deterministic(compress: Callable[[dict], dict], body: dict) -> bool:
    """M7, in-process half: compress(body) twice, on fresh copies, gives the same bytes."""
    first = json.dumps(compress(copy.deepcopy(body)), ensure_ascii=False)
    second = json.dumps(compress(copy.deepcopy(body)), ensure_ascii=False)
    return first == second


# --------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """Identity baseline over a corpus directory: every record must pass."""
    from pathlib import Path
    folder = Path(argv[0]) if argv else Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "dev"
    failed = 0
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        report = check(record["format"], record["body"], copy.deepcopy(record["body"]))
        failed += not report.ok
        print(f"{path.name}: {report.summary()}")
        for finding in report.findings[:5]:
            print(f"  {finding.check} {finding.where}: {finding.detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    import sys
    raise SystemExit(main(sys.argv[1:]))
