"""What an agent's shell command reads and writes, as far as a careful reading of its text can tell.

Pure logic, no mitmproxy. Compression needs two answers: is this output a file read (whose bytes the
agent edits against, so it is never shrunk), and did a later command change that file (so in max
mode the old read may go). A wrong "writes" would make a stale-read marker lie, so anything
unclear counts as no write; a wrong "reads" only keeps an output whole.
"""

from __future__ import annotations

import functools
import posixpath
import re
import shlex
from collections.abc import Callable
from typing import Any, cast

_HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][\w-]*)\1")
_SEPARATORS = frozenset({";", "&&", "||", "|", "&", "\n", "(", ")"})
_REDIRECT_OUT = frozenset({">", ">>", ">|", "&>", "&>>"})
_READ_FILTERS = frozenset({"sed", "head", "tail", "cat", "nl"})  # `| grep` makes a search, not a read
# Programs whose output is a search result (search.py), and the filters that may follow one.
_SEARCHERS = frozenset({"grep", "egrep", "fgrep", "zgrep", "rg", "ag", "ack", "find", "fd", "fdfind", "locate"})
_AFTER_SEARCH = frozenset({"head", "tail", "sort", "uniq"})
_PREFIXES = frozenset({"sudo", "xargs", "command", "nice", "time"})
_OPTION_VALUES = {"nl": {"-b", "-n", "-w", "-s", "-v", "-i", "-l", "-d", "-h", "-f"}, "head": {"-n", "-c"},
                  "tail": {"-n", "-c"}, "sed": {"-e", "-f"}}
_EDITORS = frozenset({"str_replace_editor", "str_replace_based_edit_tool"})
# one simple command: (the separator before it, argv, the files its output is redirected to)
_Simple = tuple[str, list[str], list[str]]


def _without_heredoc_bodies(command: str) -> str:
    kept: list[str] = []
    ends: list[str] = []
    for line in command.split("\n"):
        if ends:
            if line.strip() == ends[0]:
                ends.pop(0)
            continue
        kept.append(line)
        ends = [m.group(2) for m in _HEREDOC.finditer(line)]
    return "\n".join(kept)


def _words(text: str) -> list[str] | None:
    """The shell words and operators of `text`; None for unbalanced quotes."""
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>\n")
        lexer.whitespace = " \t\r"
        lexer.whitespace_split = True
        return list(lexer)
    except ValueError:
        return None


def _is_separator(word: str) -> bool:
    """A word that ends a simple command (`;`, `&&`, `|`, a newline, a parenthesis, or a run of them)."""
    return word in _SEPARATORS or (bool(word) and set(word) <= set(";&|()\n"))


def _is_redirection(word: str) -> bool:
    return bool(word) and set(word) <= set("<>&|")


def _is_output_file(operator: str, target: str) -> bool:
    """A redirection that writes a file (not a descriptor, not /dev/null and the like)."""
    return (operator in _REDIRECT_OUT and bool(target) and not target.startswith(("/dev/", "&"))
            and not target.isdigit())


def simple_commands(command: str) -> list[tuple[str, list[str], list[str]]]:
    """(separator before it, argv, files its output is redirected to) for each simple command."""
    words = _words(_without_heredoc_bodies(command).replace("\\\n", " "))
    if words is None:  # unbalanced quotes: nothing can be said
        return []
    found: list[tuple[str, list[str], list[str]]] = []
    separator, argv, targets = "", list[str](), list[str]()
    i = 0
    while i < len(words):
        word = words[i]
        if _is_separator(word):
            if argv or targets:
                found.append((separator, argv, targets))
            separator, argv, targets = word.strip("()\n") or ";", [], []
        elif _is_redirection(word):
            if argv and argv[-1].isdigit():
                argv.pop()  # the descriptor of 2> or 2>&1
            target = words[i + 1] if i + 1 < len(words) else ""
            if _is_output_file(word, target):
                targets.append(target)
            i += 1  # the redirection's target is not an argument
        else:
            argv.append(word)
        i += 1
    if argv or targets:
        found.append((separator, argv, targets))
    return found


def _operands(argv: list[str]) -> list[str]:
    with_value = _OPTION_VALUES.get(argv[0], set()) if argv else set()
    operands, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg in with_value:
            skip = True
        elif not arg.startswith("-") or arg == "-":
            operands.append(arg)
    return operands


def _joined(cwd: str, path: str) -> str:
    return posixpath.normpath(posixpath.join(cwd, path)) if cwd else path


def _after_cd(parts: list[_Simple]) -> tuple[str, list[_Simple]]:
    """The folder a leading `cd dir &&` (or `cd dir;`, repeated) moves to, and the commands after it."""
    cwd = ""
    while len(parts) > 1 and parts[0][1][:1] == ["cd"] and parts[1][0] in ("&&", ";"):
        cwd = _joined(cwd, parts[0][1][1]) if len(parts[0][1]) > 1 else cwd
        parts = parts[1:]
    return cwd, parts


def _shown_operands(argv: list[str]) -> list[str] | None:
    """The operands naming what a file-showing program shows; None when `argv` shows no file."""
    program = argv[0] if argv else ""
    operands = _operands(argv)
    if program == "sed":
        if "-n" not in argv or any(a.startswith("-i") for a in argv):
            return None
        return operands if "-e" in argv else operands[1:]
    if program == "open":
        return argv[1:2]
    if program in _EDITORS and len(argv) >= 3 and argv[1] == "view":
        return argv[2:3]
    return operands if program in ("cat", "nl", "head", "tail") else None


def _only_filters(later: list[_Simple]) -> bool:
    """Every later command filters the same text through a pipe (`| sed -n '1,80p'`, `| head`)."""
    return all(separator == "|" and argv and argv[0] in _READ_FILTERS and len(_operands(argv)) <= 1
               for separator, argv, _ in later)


# Agents resend every command on every turn, so the parses below are remembered, but only for commands
# up to _CACHED_COMMAND_CHARS: a heredoc carrying a whole file is a command too, and 8192 of those
# would keep hundreds of MB alive. Longer ones are parsed every time (they are rare).
_CACHED_COMMAND_CHARS = 1024


def _cached_when_short[F: Callable[..., Any]](function: F) -> F:
    cached = functools.lru_cache(maxsize=8192)(function)

    @functools.wraps(function)
    def call(command: str, *args):
        return cached(command, *args) if len(command) <= _CACHED_COMMAND_CHARS else function(command, *args)

    call.cached = cached  # type: ignore[attr-defined]  # for cache_info()
    return cast(F, call)


@_cached_when_short
def read_path(command: str) -> str | None:
    """The one file a command shows: `cat x`, `nl -ba x | sed -n '1,80p'`, `sed -n '5,9p' x`,
    `head -50 x`, SWE-agent's `open x`, optionally after `cd dir &&`. None for anything else."""
    if not command or "\n" in command.strip() or "<<" in command:
        return None
    cwd, parts = _after_cd(simple_commands(command.strip()))
    if not parts or any(targets for _, _, targets in parts):
        return None
    operands = _shown_operands(parts[0][1])
    if operands is None or len(operands) != 1 or operands[0] == "-" or not _only_filters(parts[1:]):
        return None
    return _joined(cwd, operands[0])


def _changed_by(argv: list[str]) -> list[str]:
    """The files one simple command changes through its arguments (its redirections aside)."""
    program = argv[0] if argv else ""
    operands = _operands(argv)
    if program == "sed" and any(a.startswith("-i") or a == "--in-place" for a in argv):
        return operands if "-e" in argv else operands[1:]
    if program in ("tee", "rm"):
        return operands
    if program in ("cp", "mv") and len(operands) >= 2:
        return operands[-1:] if program == "cp" else operands
    if program in _EDITORS and len(argv) >= 3 and argv[1] in ("create", "str_replace", "insert", "undo_edit"):
        return [argv[2]]
    return []


@_cached_when_short
def written_paths(command: str, open_file: str | None = None) -> tuple[str, ...]:
    """Files a command changes: output redirections, `sed -i`, `tee`, the target of `cp`/`mv`, `rm`,
    SWE-agent's `create`/`edit`/`insert` (the latter two change the open file)."""
    words = command.strip().split(None, 2)
    if words and words[0] in ("edit", "insert"):
        return (open_file,) if open_file else ()
    if words and words[0] == "create" and len(words) > 1:
        return (words[1],)
    paths: list[str] = []
    cwd = ""
    for _, argv, targets in simple_commands(command):
        if argv[:1] == ["cd"] and len(argv) > 1:
            cwd = _joined(cwd, argv[1])
            continue
        paths += [_joined(cwd, p) for p in [*targets, *_changed_by(argv)]]
    return tuple(paths)


def _searches(argv: list[str]) -> bool:
    while len(argv) > 1 and (argv[0] in _PREFIXES or "=" in argv[0]):  # `xargs grep`, `LC_ALL=C grep`
        argv = [a for a in argv[1:] if not a.startswith("-")] if argv[0] == "xargs" else argv[1:]
    program = argv[0] if argv else ""
    if program == "git":
        return argv[1:2] in (["grep"], ["ls-files"])
    if program == "ls":
        return any(a.startswith("-") and not a.startswith("--") and "R" in a for a in argv[1:])
    return program in _SEARCHERS


@_cached_when_short
def is_search(command: str) -> bool:
    """The command prints a search result: its last pipeline ends in `grep`, `rg`, `find`, `ls -R`,
    `git grep`, ... (`strings x | grep flag`, `cat log | grep ERROR`), perhaps followed by
    `| head`, `| sort` and the like, and perhaps after `cd dir &&`."""
    parts = simple_commands(command.strip())
    while parts and parts[-1][0] == "|" and parts[-1][1][:1] and parts[-1][1][0] in _AFTER_SEARCH:
        parts = parts[:-1]
    return bool(parts) and not parts[-1][2] and _searches(parts[-1][1])
