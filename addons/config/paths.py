"""Where Clutch keeps its files, in one place for the gateway and the launcher.

Clutch runs from two kinds of home: a git checkout (`./clutch start`), and an installed package
(`pipx install .`, `clutch start`). Both lay their files out the same way below ROOT (`addons/`,
`launcher/`, `rules/`), so code finds its own files relative to ROOT either way. What differs is where
the user's files go:

| what | checkout | installed |
|---|---|---|
| the user's rules, layered over the defaults | `$XDG_CONFIG_HOME/clutch/rules.yaml` | the same |
| the keys file (`NAME=value` lines, 0600) | `$XDG_CONFIG_HOME/clutch/keys.env` | the same |
| the CA and its key (mitmproxy's confdir) | `certs/` of the checkout | `$XDG_DATA_HOME/clutch/ca` (0700) |
| breakers, quotas, usage, rankings | `$XDG_STATE_HOME/clutch` | the same |

XDG's defaults when the variables are unset: `~/.config`, `~/.local/share`, `~/.local/state`
(https://specifications.freedesktop.org/basedir-spec/latest/). A relative XDG value is ignored, as the
specification says. Pure logic, no mitmproxy; nothing here creates a folder.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout, or the installed package's folder


def is_checkout(root: Path = ROOT) -> bool:
    """A git checkout carries its pyproject.toml; an installed package does not."""
    return (root / "pyproject.toml").is_file()


def _xdg(variable: str, fallback: str, env: dict[str, str]) -> Path:
    value = env.get(variable, "")
    if value and os.path.isabs(value):
        return Path(value)
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / fallback


@dataclasses.dataclass(frozen=True)
class Places:
    config: Path  # the user's folder: rules.yaml, keys.env
    ca: Path  # mitmproxy's confdir: the CA certificate and its key
    state: Path  # breakers, quotas, sticky sessions, usage.db, the model scan's catalog

    @property
    def rules(self) -> Path:
        return self.config / "rules.yaml"

    @property
    def keys(self) -> Path:
        return self.config / "keys.env"

    @property
    def usage_db(self) -> Path:
        return self.state / "usage.db"


def places(env: dict[str, str] | None = None, root: Path = ROOT) -> Places:
    """The folders for this environment (os.environ unless given) and this home (checkout or installed)."""
    env = dict(os.environ) if env is None else env
    data = _xdg("XDG_DATA_HOME", ".local/share", env) / "clutch"
    return Places(config=_xdg("XDG_CONFIG_HOME", ".config", env) / "clutch",
                  ca=root / "certs" if is_checkout(root) else data / "ca",
                  state=_xdg("XDG_STATE_HOME", ".local/state", env) / "clutch")
