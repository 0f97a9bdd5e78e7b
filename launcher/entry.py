"""The console scripts of an installed Clutch: `clutch` (launcher.gateway) and `xx` (launcher.xx).

An installed Clutch mirrors the checkout under one top-level name: site-packages/clutch/ holds
addons/, launcher/ and rules/ (pyproject.toml maps them), while the code imports its packages as
`addons` and `launcher`, by the names they have in the checkout. mitmproxy's script
addons/clutch.py makes that work by putting its parent's parent first on sys.path; the console
scripts import this module as `clutch.launcher.entry` and do the same before they import the
launcher, so the installed tree is the one root both sides use.

It lives in launcher/ because it is the launcher's door and the checkout has no clutch/ folder to
hold a package `clutch` (its `clutch` is the bash script). It imports nothing of Clutch at module
level: under the name `clutch.launcher.entry` it is loaded once, and everything else once, as
`launcher.*` and `addons.*`.
"""

from __future__ import annotations

import sys
from pathlib import Path

INSTALLED_ROOT = Path(__file__).resolve().parent.parent  # site-packages/clutch, or a checkout


def use_installed_root(root: Path = INSTALLED_ROOT) -> None:
    """Put `root` first on sys.path, so `import launcher` and `import addons` find this tree."""
    entry = str(root)
    while entry in sys.path:
        sys.path.remove(entry)
    sys.path.insert(0, entry)


def clutch_command() -> None:
    use_installed_root()
    from launcher.gateway import app
    app(prog_name="clutch")


def xx_command() -> None:
    use_installed_root()
    from launcher.xx import main
    main()
