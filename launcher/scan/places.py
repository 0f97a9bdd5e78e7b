"""Where the scan finds what it reads and writes: the gateway's state folder and usage store; each the
running gateway's when one answers, else what a gateway xx starts would use. (The rules:
launcher.rules_in_force.)"""

from __future__ import annotations

from pathlib import Path

from addons.config.paths import places
from launcher import lifecycle
from launcher.config import XXConfig, gateway_option


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
