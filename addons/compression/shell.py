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

_HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][\w-]*)\1")
_SEPARATORS = frozenset({";", "&&", "||", "|", "&", "\n", "(", ")"})
_REDIRECT_OUT = frozenset({">", ">>", ">|", "&>", "&>>"})
_READ_FILTERS = frozenset({"sed", "head", "tail", "cat", "nl", "grep"})
_OPTION_VALUES = {"nl": {"-b", "-n", "-w", "-s", "-v", "-i", "-l", "-d", "-h", "-f"}, "head": {"-n", "-c"},
                  "tail": {"-n", "-c"}, "sed": {"-e", "-f"}}
_EDITORS = frozenset({"str_replace_editor", "str_replace_based_edit_tool"})


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


def simple_commands(command: str) -> list[tuple[str, list[str], list[str]]]:
    """(separator before it, argv, files its output is redirected to) for each simple command."""
    text = _without_heredoc_bodies(command).replace("\\\n", " ")
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>\n")
        lexer.whitespace = " \t\r"
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:  # unbalanced quotes: nothing can be said
        return []
    found: list[tuple[str, list[str], list[str]]] = []
    separator, argv, targets = "", list[str](), list[str]()
    i = 0
    while i < len(words):
        word = words[i]
        if word in _SEPARATORS or (word and set(word) <= set(";&|()\n") and not set(word) & set("<>")):
            if argv or targets:
                found.append((separator, argv, targets))
            separator, argv, targets = word.strip("()\n") or ";", [], []
        elif word and set(word) <= set("<>&|"):
            if argv and argv[-1].isdigit():
                argv.pop()  # the descriptor of 2> or 2>&1
            target = words[i + 1] if i + 1 < len(words) else ""
            if word in _REDIRECT_OUT and target and not target.startswith(("/dev/", "&")) and not target.isdigit():
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


@functools.lru_cache(maxsize=8192)  # agents resend every command on every turn
def read_path(command: str) -> str | None:
    """The one file a command shows: `cat x`, `nl -ba x | sed -n '1,80p'`, `sed -n '5,9p' x`,
    `head -50 x`, SWE-agent's `open x`, optionally after `cd dir &&`. None for anything else."""
    if not command or "\n" in command.strip() or "<<" in command:
        return None
    parts = simple_commands(command.strip())
    cwd = ""
    while len(parts) > 1 and parts[0][1][:1] == ["cd"] and parts[1][0] in ("&&", ";"):
        cwd = _joined(cwd, parts[0][1][1]) if len(parts[0][1]) > 1 else cwd
        parts = parts[1:]
    if not parts or any(targets for _, _, targets in parts):
        return None
    argv = parts[0][1]
    program = argv[0] if argv else ""
    operands = _operands(argv)
    if program == "sed":
        if "-n" not in argv or any(a.startswith("-i") for a in argv):
            return None
        operands = operands if "-e" in argv else operands[1:]
    elif program == "open":
        operands = argv[1:2]
    elif program in _EDITORS and len(argv) >= 3 and argv[1] == "view":
        operands = argv[2:3]
    elif program not in ("cat", "nl", "head", "tail"):
        return None
    if len(operands) != 1 or operands[0] == "-":
        return None
    for separator, later, _ in parts[1:]:  # only filters of the same text may follow
        if separator != "|" or not later or later[0] not in _READ_FILTERS or len(_operands(later)) > 1:
            return None
    return _joined(cwd, operands[0])


@functools.lru_cache(maxsize=8192)
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
        changed = list(targets)
        program = argv[0] if argv else ""
        operands = _operands(argv)
        if program == "sed" and any(a.startswith("-i") or a == "--in-place" for a in argv):
            changed += operands if "-e" in argv else operands[1:]
        elif program == "tee":
            changed += operands
        elif program in ("cp", "mv") and len(operands) >= 2:
            changed += operands[-1:] if program == "cp" else operands
        elif program == "rm":
            changed += operands
        elif program in _EDITORS and len(argv) >= 3 and argv[1] in ("create", "str_replace", "insert", "undo_edit"):
            changed.append(argv[2])
        paths += [_joined(cwd, p) for p in changed]
    return tuple(paths)
