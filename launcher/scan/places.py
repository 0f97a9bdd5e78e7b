"""Where the scan finds what it reads and writes: the gateway's state folder and usage store; each the
running gateway's when one answers, else what a gateway xx starts would use. (The rules:
launcher.rules_in_force.)"""

from __future__ import annotations

from pathlib import Path

from addons.accounting.postgres import PostgresStore, check_url, is_postgres_url
from addons.accounting.reports import UsageStoreError
from addons.accounting.store import UsageStore
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


def usage_db(config: XXConfig, healthy: dict | None = None, folder: Path | None = None) -> Path | str:
    """The usage store: a SQLite file, or a team gateway's PostgreSQL URL. A URL in the xx config comes
    first, as it has the password that /health leaves out."""
    configured = gateway_option(config, "clutch_usage_db")
    if configured and is_postgres_url(configured):
        return configured
    reported = (healthy or {}).get("usage_db")
    if isinstance(reported, str) and reported:
        return reported if is_postgres_url(reported) else Path(reported)
    if configured:
        return Path(configured).expanduser()
    return (folder or state_dir(config, healthy)) / "usage.db"


def named_store(text: str) -> Path | str:
    """`--db`'s value: a PostgreSQL URL, else a file."""
    return text if is_postgres_url(text) else Path(text).expanduser()


def open_usage_store(target: Path | str) -> UsageStore | PostgresStore:
    """The store at `target`, reached (a server) or opened (a file); UsageStoreError says why not."""
    if isinstance(target, Path):
        return UsageStore(target)
    if "***@" in target:
        raise UsageStoreError(f"the gateway's usage database is {target}, and /health never shows its "
                              f"password: pass --db postgresql://user:password@host:port/db, or put "
                              f"clutch_usage_db in the xx config's gateway_args")
    try:
        check_url(target)
    except ValueError as e:
        raise UsageStoreError(str(e)) from None
    store = PostgresStore(target)
    try:
        store.connect()
    except UsageStoreError:
        store.close()
        raise
    return store
