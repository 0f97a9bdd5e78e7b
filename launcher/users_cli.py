"""`clutch users add|list|remove`: a team gateway's users and their tokens (docs/team.md).

The users live in the team's usage database (PostgreSQL): `--db postgresql://...`, else $CLUTCH_USAGE_DB,
else `clutch_usage_db` in the xx config's gateway_args. A token is shown once, when it is made; the
database keeps its SHA-256 only (addons/guard/user_tokens.py), so a lost token is replaced by removing
the user and adding one again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from addons.accounting.postgres import is_postgres_url
from addons.accounting.reports import UsageStoreError
from addons.guard.user_tokens import check_name, new_user_token, token_hash

app = typer.Typer(no_args_is_help=True, help="A team gateway's users and their tokens (clutch_users).")

Database = Annotated[str | None, typer.Option("--db", envvar="CLUTCH_USAGE_DB", show_envvar=True,
                                              help="the team's database, postgresql://user:password@host:port/db "
                                                   "(default: clutch_usage_db in the xx config)")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"clutch users: {message}", err=True)
    return typer.Exit(2)


def _store(db: str | None):
    from launcher.config import ConfigError, gateway_option, load_config
    from launcher.scan.places import open_usage_store

    if not db:
        try:
            db = gateway_option(load_config()[0], "clutch_usage_db")
        except ConfigError as e:
            raise _fail(str(e)) from None
    if not db or not is_postgres_url(db):
        raise _fail("users live in a team's PostgreSQL: pass --db postgresql://..., set CLUTCH_USAGE_DB, "
                    "or put clutch_usage_db in the xx config's gateway_args")
    try:
        return open_usage_store(db)
    except UsageStoreError as e:
        raise _fail(str(e)) from None


@app.command()
def add(name: Annotated[str, typer.Argument(help="lower-case letters, digits, '.', '_', '-'")],
        budget: Annotated[float | None, typer.Option("--budget", help="US dollars a UTC day, on every replica")]
        = None,
        db: Database = None) -> None:
    """Add a user and print its token, once."""
    try:
        check_name(name)
    except ValueError as e:
        raise _fail(str(e)) from None
    if budget is not None and not 0 <= budget < float("inf"):
        raise _fail("--budget is US dollars a day, 0 or more")
    token = new_user_token()
    _, where = _on_store(db, lambda store: store.add_user(name, token_hash(token), budget, time.time()))
    typer.echo(f"user {name} added to {where}. Its token, shown only now:\n\n  {token}\n")
    typer.echo("The agent's proxy password: HTTPS_PROXY=http://xx-claude:TOKEN@gateway:8780, or for xx, "
               "in ~/.xx/config.yaml (mode 0600): token: TOKEN")


@app.command(name="list")
def list_users(db: Database = None,
               as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """The users, their budgets, and which are removed (tokens are never shown again)."""
    users, where = _on_store(db, lambda store: store.users())
    if as_json:
        typer.echo(json.dumps(users, indent=2))
        return
    if not users:
        typer.echo(f"no users in {where} yet: clutch users add NAME")
        return
    for user in users:
        budget = f"${user['budget_usd_day']:g}/day" if user["budget_usd_day"] is not None else "no budget"
        state = f"removed {_when(user['revoked_at'])}" if user["revoked_at"] else f"since {_when(user['created_at'])}"
        typer.echo(f"{user['name']:24} {budget:16} {state}")


@app.command()
def budget(name: str,
           usd: Annotated[str, typer.Argument(help="US dollars a UTC day, or 'none'")],
           db: Database = None) -> None:
    """Set or remove a user's daily budget (every replica applies it within 30 s)."""
    amount: float | None = None
    if usd.strip().lower() != "none":
        try:
            amount = float(usd)
        except ValueError:
            amount = None
        if amount is None or not amount >= 0 or amount == float("inf"):
            raise _fail(f"{usd!r} is not a budget: US dollars a day, 0 or more, or 'none'")
    _working_user(name, *_on_store(db, lambda store: store.set_budget(name, amount)))
    what = f"${amount:g} a UTC day" if amount is not None else "no budget"
    typer.echo(f"user {name}: {what} (each replica within 30 s)")


@app.command()
def remove(name: str, db: Database = None) -> None:
    """Stop a user's token (every replica within 30 s); its usage rows stay."""
    _working_user(name, *_on_store(db, lambda store: store.revoke_user(name, time.time())))
    typer.echo(f"user {name}: token stopped (each replica within 30 s); its usage rows stay")


def _on_store(db: str | None, work: Callable[[Any], Any]) -> tuple[Any, str]:
    """`work(store)` on the team's database, closed after; its result and the database's name. A store
    error ends the command with its message."""
    store = _store(db)
    try:
        return work(store), store.name
    except UsageStoreError as e:
        raise _fail(str(e)) from None
    finally:
        store.close()


def _working_user(name: str, found: bool, where: str) -> None:
    if not found:
        raise _fail(f"no user {name!r} with a working token in {where}")


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))

