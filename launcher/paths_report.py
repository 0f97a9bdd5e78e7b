"""`clutch paths`: where this Clutch keeps the user's files and its own, as lines or JSON.

The folders come from addons/config/paths.py (the one map: XDG folders, a checkout's certs/, an
installed package's data folder); this module only lays them out. Nothing is created: a file that
does not exist yet (no rules of the user's, a CA no gateway has made) is shown as absent.
"""

from __future__ import annotations

import os
from pathlib import Path

from addons.certs import CAFiles
from addons.config.paths import Places, is_checkout
from addons.config.rules import DEFAULT_RULES_PATH

WIDTH = 80
_LABEL_WIDTH = 13  # the longest label, "default rules"

# key in --json -> label in the lines; the order of both
LABELS = {"rules": "rules", "default_rules": "default rules", "keys": "keys", "ca_folder": "CA folder",
          "ca_cert": "CA cert", "trust_bundle": "trust bundle", "state": "state", "usage_db": "usage db",
          "addon": "addon"}


def file_map(found: Places, ca: CAFiles, script: Path, root: Path) -> dict[str, object]:
    """Every path `clutch paths` shows, absolute, keyed as in `--json`."""
    files = {"rules": found.rules, "default_rules": DEFAULT_RULES_PATH, "keys": found.keys,
             "ca_folder": ca.folder, "ca_cert": ca.ca_cert, "trust_bundle": ca.bundle, "state": found.state,
             "usage_db": found.usage_db, "addon": script}
    return {"root": str(root), "installed": not is_checkout(root), **{k: str(v) for k, v in files.items()}}


def _short(path: str, home: str) -> str:
    """`~/...` for a path under HOME, so more of them fit a line."""
    if home and home != "/" and (path == home or path.startswith(home.rstrip("/") + "/")):
        return "~" + path[len(home.rstrip("/")):]
    return path


def _wrapped(path: str, room: int) -> list[str]:
    """`path` in pieces of at most `room` characters, broken after a `/` where it can be."""
    pieces: list[str] = []
    for part in path.replace("/", "/\0").split("\0"):
        while len(part) > room:  # one folder name longer than a line
            pieces.append(part[:room])
            part = part[room:]
        if pieces and len(pieces[-1]) + len(part) <= room:
            pieces[-1] += part
        elif part:
            pieces.append(part)
    return pieces


def _row(label: str, path: str, absent: bool, width: int) -> list[str]:
    """One line when it fits `width`; else the label, then the path on lines of its own (broken
    after a `/` when even a line of its own is too short: `--json` has it whole)."""
    line = f"  {label:<{_LABEL_WIDTH}} {path}" + ("  (absent)" if absent else "")
    if len(line) <= width:
        return [line]
    heading = f"  {label}" + (" (absent)" if absent else "") + ":"
    return [heading, *("    " + piece for piece in _wrapped(path, width - 4))]


def render_paths(found: dict[str, object], environ: dict[str, str] | None = None, width: int = WIDTH) -> str:
    """The file map as lines within `width` columns."""
    environ = dict(os.environ) if environ is None else environ
    home = environ.get("HOME", "")
    root = _short(str(found["root"]), home)
    title = f"Clutch, {'installed' if found['installed'] else 'a checkout'}:"
    lines = [f"{title} {root}"] if len(title) + 1 + len(root) <= width else \
        [title, *("    " + piece for piece in _wrapped(root, width - 4))]
    for key, label in LABELS.items():
        path = str(found[key])
        lines += _row(label, _short(path, home), not os.path.exists(path), width)
    return "\n".join(lines)
