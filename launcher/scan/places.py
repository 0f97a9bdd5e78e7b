"""Where the scan finds what it reads and writes: the gateway's state folder and usage store, and the
rules file; each the running gateway's when one answers, else what a gateway xx starts would use."""

from __future__ import annotations

from pathlib import Path

from addons.config.paths import places
from addons.config.rules import DEFAULT_RULES_PATH
from launcher import lifecycle
from launcher.config import XXConfig


def gateway_option(config: XXConfig, name: str) -> str | None:
    """The value of `--set name=value` among the config's gateway_args (the last one wins)."""
    found, args = None, list(config.gateway_args)
    for i, arg in enumerate(args):
        text = args[i + 1] if arg == "--set" and i + 1 < len(args) else arg.removeprefix("--set=")
        if text.startswith(f"{name}="):
            found = text.split("=", 1)[1]
    return found


def state_dir(config: XXConfig, healthy: dict | None = None) -> Path:
    """The gateway's state folder: the running gateway's, else the one a gateway xx starts would use."""
    reported = (lifecycle.resilience(config) or {}).get("state_dir") if healthy else None
    if isinstance(reported, str) and reported:
        return Path(reported)
    configured = gateway_option(config, "clutch_state_dir")
    return Path(configured).expanduser() if configured else places().state


def usage_db(config: XXConfig, healthy: dict | None = None, folder: Path | None = None) -> Path:
    reported = (healthy or {}).get("usage_db")
    if isinstance(reported, str) and reported:
        return Path(reported)
    configured = gateway_option(config, "clutch_usage_db")
    if configured:
        return Path(configured).expanduser()
    return (folder or state_dir(config, healthy)) / "usage.db"


def rules_file(config: XXConfig, healthy: dict | None, option: Path | None) -> Path:
    if option is not None:
        return option
    running = ((healthy or {}).get("rules") or {}).get("path")
    if running:
        return Path(running)
    return Path(config.rules).expanduser() if config.rules else DEFAULT_RULES_PATH
