"""`xx aliases install|remove|show`: the classic alias set as one marked block of ~/.bashrc or ~/.zshrc.

The block defines `xx` itself (a function calling this checkout's ./clutch) and one alias per habit
users had, each spelled as an `xx` launch code, so the flags come from launcher.agents and are right.
Installing replaces the block in place (idempotent); removing takes out the block and nothing else.
The file is backed up before every change (`<rc>.xx-backup-<UTC time>`), and written atomically.
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
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


def block(clutch: Path) -> str:
    lines = [BEGIN,
             "# Written by `xx aliases install`; `xx aliases remove` takes it out. Edits inside are lost.",
             f"xx() {{ {shlex.quote(str(clutch))} xx \"$@\"; }}"]
    for name, (arguments, what) in ALIASES.items():
        lines.append(f"alias {name}={shlex.quote('xx ' + arguments)}  # {what}")
    lines.append(END)
    return "\n".join(lines) + "\n"


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


def install(rc: Path, clutch: Path) -> tuple[bool, Path | None]:
    """Write the block; return (changed, backup path)."""
    old = rc.read_text() if rc.exists() else ""
    new = with_block(old, block(clutch))
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
