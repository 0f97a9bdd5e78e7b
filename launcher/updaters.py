"""Each agent's self-updater and the switch that turns it off in a process `xx` launches.

Why: an interactive `xx cip` let Claude Code update itself into the system's global npm folder.
An agent launched by `xx` must run the version the user installed, and change no installation on
its own; updating stays the user's decision, outside the launch (`claude update`, `npm i -g ...`,
`pi update`, `hermes update`). So every launch, on every route, gets the agent's own switch, where
it has one, and the agents' start-up update checks go with it (Codex's waits for a key press
before it offers `npm install -g`).

The rule for the user's own setting: a variable already in the launch's environment (the shell's,
or a profile's `env`) is kept as it is, whatever its value (`DISABLE_AUTOUPDATER=0 xx cip` lets
Claude Code update itself); for a switch that is a command-line setting (Codex), the user's own
`-- -c check_for_update_on_startup=...` replaces xx's. The agents' own config files do not count:
each agent ranks the variable or flag above its files, except Qwen Code, whose switch is a settings
layer below the user's own `settings.json` (so its `general.enableAutoUpdate` still wins there).

Where each switch comes from (agents re-read on this machine unless marked):
* Claude Code 2.1.330: `DISABLE_AUTOUPDATER` (its binary: a truthy value turns the background
  auto-updater off, `claude doctor` then says "Auto-updates: disabled (set by env:
  DISABLE_AUTOUPDATER)"; `claude update` still works, unlike `DISABLE_UPDATES`).
* Codex CLI 0.169.0: the config key `check_for_update_on_startup` (its binary and openai/codex
  codex-rs/tui/src/updates.rs: the TUI's check of GitHub releases and its update prompt, which runs
  `npm install -g @openai/codex` on Enter); `codex doctor` shows "startup update check false".
* OpenCode 1.18.33: `OPENCODE_DISABLE_AUTOUPDATE` (its binary: "true" or "1" skips the updater,
  whatever `autoupdate` in opencode.json says).
* Qwen Code 0.15.10: no variable or flag; its updater (interactive mode: check npm, then
  `npm install -g`) obeys the setting `general.enableAutoUpdate`. Settings merge as system defaults
  < user < workspace < system, and `QWEN_CODE_SYSTEM_DEFAULTS_PATH` names the first layer (its
  cli.js): xx points it at qwen-system-defaults.json beside this module. Where the machine has a
  system-defaults file of its own, xx does not hide it and changes nothing.
* Pi 0.73.1: no self-updater (`pi update` is manual). `PI_SKIP_VERSION_CHECK=1` skips its
  start-up version check of pi.dev (its README and dist/utils/version-check.js).
* Hermes Agent 0.19.0: no self-updater (`hermes update` is manual) and no switch for the update
  check its banner shows (hermes_cli/banner.py).
* OpenClaw 2026.9.6: `OPENCLAW_NO_AUTO_UPDATE` (its package's docs/install/updating/
  automatic-updates.md and its dist code: no update checks, no automatic applies). A Gateway or
  node service started elsewhere keeps its own environment.
* Ante: updates only on `/update` or `ante update`; no switch for its background update notice
  (FROM-DOCS, AntigmaLabs/ante docs-site/docs/start/update.mdx; never run here).
* Antigravity CLI: `AGY_CLI_DISABLE_AUTO_UPDATE=true` (FROM-DOCS, the antigravity-cli documentation; never
  run here).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from pathlib import Path

QWEN_DEFAULTS = Path(__file__).resolve().parent / "qwen-system-defaults.json"


@dataclasses.dataclass(frozen=True)
class Updater:
    what: str  # what the switch turns off, or why there is none (the dry run's `updates` line)
    env: tuple[tuple[str, str], ...] = ()
    args: tuple[str, ...] = ()  # go first among the agent's flags
    own_word: str = ""  # a word that marks the user's own setting of `args` among their arguments
    unless_files: tuple[str, ...] = ()  # machine-wide files the switch would hide: then it is not set


UPDATERS: dict[str, Updater] = {
    "claude": Updater("Claude Code's auto-updater (`claude update` still works)",
                      env=(("DISABLE_AUTOUPDATER", "1"),)),
    "codex": Updater("Codex's update check and its `npm install -g` prompt",
                     args=("-c", "check_for_update_on_startup=false"), own_word="check_for_update_on_startup"),
    "opencode": Updater("OpenCode's auto-updater", env=(("OPENCODE_DISABLE_AUTOUPDATE", "1"),)),
    "qwen": Updater("Qwen Code's auto-update, as its lowest settings layer",
                    env=(("QWEN_CODE_SYSTEM_DEFAULTS_PATH", str(QWEN_DEFAULTS)),),
                    unless_files=("/etc/qwen-code/system-defaults.json",
                                  "/Library/Application Support/QwenCode/system-defaults.json")),
    "pi": Updater("Pi's version check (Pi never updates itself)", env=(("PI_SKIP_VERSION_CHECK", "1"),)),
    "hermes": Updater("none: Hermes never updates itself (`hermes update`), and its update notice has no switch"),
    "ante": Updater("none: Ante updates only on `/update` or `ante update` (FROM-DOCS), and its update notice "
                    "has no switch"),
    "antigravity": Updater("Antigravity's auto-update (FROM-DOCS)", env=(("AGY_CLI_DISABLE_AUTO_UPDATE", "true"),)),
    "openclaw": Updater("OpenClaw's update checks and auto-updates", env=(("OPENCLAW_NO_AUTO_UPDATE", "1"),)),
}


def args_for(agent: str, extra: Iterable[str]) -> list[str]:
    """The arguments that turn the agent's updater off, unless the user's own arguments set it."""
    updater = UPDATERS[agent]
    if updater.own_word and any(updater.own_word in word for word in extra):
        return []
    return list(updater.args)


def env_for(agent: str, environ: dict[str, str], extra: Iterable[str] = (),
            exists: Callable[[str], bool] = os.path.exists) -> tuple[dict[str, str], str]:
    """(the variables to set, the dry run's `updates` line) for a launch whose environment so far
    (the user's, plus a profile's) is `environ`."""
    updater = UPDATERS[agent]
    shadowed = [path for path in updater.unless_files if exists(path)]
    if shadowed:
        return {}, f"as configured: {shadowed[0]} exists, and xx does not hide it; {updater.what}"
    own = [f"{name}={environ[name]}" for name, _ in updater.env if name in environ]
    own += [word for word in extra if updater.own_word and updater.own_word in word]
    if own:
        return {}, f"yours: {', '.join(own)} decides about {updater.what}"
    switches = [f"{name}={value}" for name, value in updater.env] + [" ".join(updater.args)] * bool(updater.args)
    if not switches:
        return {}, updater.what
    return dict(updater.env), f"off by {', '.join(switches)}: {updater.what}"
