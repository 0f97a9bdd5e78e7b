"""`xx aliases install|remove|show`: the classic alias set as one marked block of ~/.bashrc or ~/.zshrc.

The block defines `xx` itself (a function calling this checkout's ./clutch) and one alias per habit
users had, each spelled as an `xx` launch code, so the flags come from launcher.agents and are right.
Installing replaces the block in place (idempotent); removing takes out the block and nothing else.
The file is backed up before every change (`<rc>.xx-backup-<UTC time>`), and written atomically.

A name the user already has is left out, never shadowed (`taken`): a command on PATH (`cc` is the C
compiler, `ccr` claude-code-router, `ante` the Ante CLI itself), a builtin or keyword of the rc file's
shell, or an alias or function the user defines, read (never run) from the rc file outside the xx
block and from the files it sources by a literal path (`. ~/.bash_aliases`). `--force NAME` or `--all`
takes such names anyway. When `xx` itself is taken, the aliases call this checkout's ./clutch by path.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

BEGIN = "# >>> xx aliases (Clutch) >>>"
END = "# <<< xx aliases (Clutch) <<<"

# alias -> (xx arguments, what it does). A trailing -s / -p means the alias takes that value next:
# `hsr ID`, `codex-run "prompt"`.
ALIASES: dict[str, tuple[str, str]] = {
    "cc": ("cip", "Claude Code, new session, through Clutch"),
    "ccc": ("ccp", "Claude Code, continue the last session"),
    "ccr": ("crp", "Claude Code, resume picker"),
    "cc-debug": ("cip -- --debug", "Claude Code with its debug output"),
    "cc-ds": ("cipd", "Claude Code on DeepSeek V4 Flash (tier d)"),
    "cc-free": ("cipf", "Claude Code on the cheapest working free model (tier f)"),
    "cc-direct": ("cid", "Claude Code without Clutch"),
    "hsi": ("hip", "Hermes, new session"),
    "hsc": ("hcp", "Hermes, continue the last session"),
    "hsr": ("hsp -s", "Hermes, resume a session: hsr ID"),
    "hsi-bp": ("hib", "Hermes, new session, through Clutch without model rewrites"),
    "psi": ("pip", "Pi, new session"),
    "psi-c": ("pcp", "Pi, continue the last session"),
    "psi-ds": ("pipd", "Pi on DeepSeek V4 Flash"),
    "codex-run": ("xnp -p", "Codex, one prompt: codex-run \"fix the test\""),
    "codex-res": ("xrp", "Codex, resume picker"),
    "codex-last": ("xcp", "Codex, continue the last session"),
    "qw": ("qip", "Qwen Code, new session"),
    "qwc": ("qcp", "Qwen Code, continue"),
    "oc": ("oip", "OpenCode, new session"),
    "occ": ("ocp", "OpenCode, continue"),
    "claw": ("wip", "OpenClaw, local TUI"),
    "ante": ("aip", "Ante, new session, through Clutch"),
    "antigravity": ("gip", "Antigravity CLI, new session, through Clutch"),
}


def runner_words(clutch: Path) -> str:
    """The shell words that run this Clutch's xx. `clutch` is the file that starts it: a checkout's
    ./clutch script takes `xx` as its first argument; an installed Clutch's console script (or a
    symlink to ./clutch, which the script reads by its name) is named xx and is xx itself."""
    quoted = shlex.quote(str(clutch))
    return quoted if clutch.name == "xx" else f"{quoted} xx"


def block(clutch: Path, skipped: Mapping[str, str] | None = None) -> str:
    """The marked block, without the names in `skipped` (name -> why the user already has it)."""
    skipped = skipped or {}
    lines = [BEGIN,
             "# Written by `xx aliases install`; `xx aliases remove` takes it out. Edits inside are lost."]
    if skipped:
        lines.append("# Left out, you already have them (`xx aliases install --force NAME` takes one):")
        lines += [f"#   {name}: {why}" for name, why in skipped.items()]
    runner = "xx"
    if "xx" in skipped:  # someone else's xx: the aliases call this Clutch's xx by its path
        runner = runner_words(clutch)
    else:
        lines.append(f"xx() {{ {runner_words(clutch)} \"$@\"; }}")
    for name, (arguments, what) in ALIASES.items():
        if name not in skipped:
            lines.append(f"alias {name}={shlex.quote(runner + ' ' + arguments)}  # {what}")
    lines.append(END)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ names the user already has

MAX_SOURCED = 20  # rc files read at most (the rc and what it sources, and what those source)
_ALIAS = re.compile(r"(?:^|[;&|{(]|\bthen\b|\bdo\b|\belse\b)\s*alias\s+(.*)")
_FUNCTION = re.compile(r"^\s*(?:function\s+([^\s(){};]+)|([^\s(){};=$'\"]+)\s*\(\s*\))")
_SOURCE = re.compile(r"(?:^|[;&|]|\bthen\b|\bdo\b)\s*(?:\.|source)\s+([^\s;&|]+)")


def taken(names: Iterable[str], rc: Path, environ: Mapping[str, str], clutch: Path) -> dict[str, str]:
    """Which of `names` the user already has, and why: name -> "a command on PATH (/usr/bin/cc)", ..."""
    wanted = list(names)
    found: dict[str, str] = {}
    own = user_definitions(rc, Path(environ.get("HOME") or Path.home()))
    words = shell_builtins(_shell_of(rc))
    for name in wanted:
        command = shutil.which(name, path=environ.get("PATH", ""))
        if name == "xx" and command and Path(command).resolve() == clutch.resolve():
            command = None  # this checkout's own xx (a symlink to ./clutch)
        if name in own:
            found[name] = own[name]
        elif command:
            found[name] = f"a command on PATH ({command})"
        elif name in words:
            found[name] = f"a {_shell_of(rc)} builtin"
    return found


def user_definitions(rc: Path, home: Path) -> dict[str, str]:
    """Aliases and functions defined in `rc` (outside the xx block) and the files it sources: name ->
    where ("your alias in ~/.bashrc:3"). The files are read as text, never run; unreadable ones are skipped."""
    found: dict[str, str] = {}
    queue: list[Path] = [rc]
    seen: set[Path] = set()
    while queue and len(seen) < MAX_SOURCED:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        try:
            text = path.read_text(errors="replace")
            if path == rc:
                text, _ = without_block(text)
        except (OSError, ValueError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{_shown(path, home)}:{number}"
            for name in _aliases_in(line):
                found.setdefault(name, f"your alias in {where}")
            function = _FUNCTION.match(line)
            if function:
                found.setdefault(function.group(1) or function.group(2), f"your function in {where}")
            for sourced in _SOURCE.findall(line):
                queue.append(_expand(sourced, home, rc.parent))
    return found


def _aliases_in(line: str) -> list[str]:
    match = _ALIAS.search(line.split(" #", 1)[0])
    if not match:
        return []
    try:
        words = shlex.split(match.group(1), comments=True)
    except ValueError:  # an unbalanced quote: the names before it still count
        words = match.group(1).split()
    return [word.split("=", 1)[0] for word in words if "=" in word and not word.startswith("-")]


def _expand(word: str, home: Path, folder: Path) -> Path:
    word = word.strip("'\"")
    for spelling in ("${HOME}", "$HOME"):
        word = word.replace(spelling, str(home))
    if word.startswith("~/"):
        word = str(home / word[2:])
    path = Path(word)
    return path if path.is_absolute() else folder / path


def _shown(path: Path, home: Path) -> str:
    try:
        return "~/" + str(path.relative_to(home))
    except ValueError:
        return str(path)


def _shell_of(rc: Path) -> str:
    return "zsh" if "zsh" in rc.name else "bash"


def shell_builtins(shell: str) -> frozenset[str]:
    """The builtins and reserved words of `shell`, asked of the shell itself (empty without it)."""
    script = {"bash": "compgen -b; compgen -k", "zsh": "print -rl -- ${(k)builtins} ${(k)reswords}"}[shell]
    binary = shutil.which(shell)
    if binary is None:
        return frozenset()
    try:
        listed = subprocess.run([binary, "-f" if shell == "zsh" else "--norc", "-c", script], capture_output=True,
                                text=True, timeout=10, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(listed.split())


def default_rc(environ: dict[str, str]) -> Path:
    """~/.zshrc for zsh users, else ~/.bashrc."""
    home = Path(environ.get("HOME") or Path.home())
    return home / (".zshrc" if Path(environ.get("SHELL", "")).name == "zsh" else ".bashrc")


def without_block(text: str) -> tuple[str, bool]:
    """The text with the xx block taken out (the block's own lines only)."""
    lines = text.splitlines(keepends=True)
    begin = next((i for i, line in enumerate(lines) if line.rstrip("\n") == BEGIN), None)
    if begin is None:
        return text, False
    end = next((i for i in range(begin + 1, len(lines)) if lines[i].rstrip("\n") == END), None)
    if end is None:
        raise ValueError(f"the xx block starts at line {begin + 1} but its end marker {END!r} is missing: "
                         f"fix the file by hand")
    return "".join(lines[:begin] + lines[end + 1:]), True


def with_block(text: str, new_block: str) -> str:
    """The text with the xx block in place of the old one, or appended."""
    lines = text.splitlines(keepends=True)
    begin = next((i for i, line in enumerate(lines) if line.rstrip("\n") == BEGIN), None)
    if begin is None:
        separator = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        return text + separator + new_block
    stripped, _ = without_block(text)
    kept = stripped.splitlines(keepends=True)
    return "".join(kept[:begin]) + new_block + "".join(kept[begin:])


def install(rc: Path, clutch: Path, skipped: Mapping[str, str] | None = None) -> tuple[bool, Path | None]:
    """Write the block (without the `skipped` names); return (changed, backup path)."""
    old = rc.read_text() if rc.exists() else ""
    new = with_block(old, block(clutch, skipped))
    if new == old:
        return False, None
    return True, _replace(rc, old, new)


def remove(rc: Path) -> tuple[bool, Path | None]:
    if not rc.exists():
        return False, None
    old = rc.read_text()
    new, found = without_block(old)
    if not found:
        return False, None
    return True, _replace(rc, old, new)


def _replace(rc: Path, old: str, new: str) -> Path | None:
    backup = None
    if rc.exists():
        backup = rc.with_name(f"{rc.name}.xx-backup-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        counter = 1
        while backup.exists():
            backup = backup.with_name(f"{backup.name.split('~')[0]}~{counter}")
            counter += 1
        backup.write_text(old)
        os.chmod(backup, rc.stat().st_mode & 0o777)
    mode = rc.stat().st_mode & 0o777 if rc.exists() else 0o644
    target = rc.resolve() if rc.is_symlink() else rc  # a dotfiles symlink stays a symlink
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(handle, "w") as file:
        file.write(new)
    os.chmod(temporary, mode)
    os.replace(temporary, target)
    return backup
