"""`xx scan`, the command (typer): its options, the arguments it refuses, then one scan
(rankings.run_scan) printed as JSON or as a table (report.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from addons.config.layering import load_layered
from addons.config.rules import Provider, RulesError
from addons.wire.dialects import Dialect
from launcher import lifecycle
from launcher.config import ConfigError, XXConfig, load_config
from launcher.rules_in_force import provider_keys, source_for
from launcher.scan import ScanError
from launcher.scan.places import named_store
from launcher.scan.probing import DEFAULT_PROBES
from launcher.scan.rankings import run_scan
from launcher.scan.report import print_run


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"xx scan: {message}", err=True)
    return typer.Exit(code)


def scan(count: Annotated[int | None, typer.Argument(metavar="N", show_default=False,
                                                     help=f"with --probe: how many of the best candidates "
                                                          f"(default {DEFAULT_PROBES})")] = None,
         probe_: Annotated[bool, typer.Option("--probe", help="send the N best candidates one tiny request each "
                                                             "(spends quota; never done without this flag)")] = False,
         refresh: Annotated[bool, typer.Option("--refresh",
                                               help="fetch the catalog even if the cache is fresh")] = False,
         as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
         free: Annotated[bool, typer.Option("--free", help="show and probe free models only")] = False,
         paid: Annotated[bool, typer.Option("--paid", help="show and probe paid models only")] = False,
         limit: Annotated[int, typer.Option(help="rows shown (0: all)")] = 15,
         min_context: Annotated[int, typer.Option(help="fewest context tokens a coding model needs")] = 32_000,
         ttl: Annotated[float, typer.Option(help="hours the cached catalog is used")] = 6.0,
         timeout: Annotated[float, typer.Option(help="seconds per probe")] = 30.0,
         provider_name: Annotated[str, typer.Option("--provider", help="the rules' provider whose catalog is read")]
         = "openrouter",
         rules: Annotated[Path | None, typer.Option(help="rules file (default: the gateway's)")] = None,
         db: Annotated[str | None, typer.Option(help="usage database, a file or a postgresql:// URL "
                                                     "(default: the gateway's)")] = None) -> None:
    """Rank OpenRouter's models for coding agents (the m and f tiers); --probe measures the best ones."""
    _check_arguments(count, probe_, free, paid)
    try:
        config = load_config()[0]
    except ConfigError as e:
        raise _fail(f"bad config: {e}", 2) from None
    healthy = lifecycle.health(config)
    provider = _provider(config, healthy, rules, provider_name)
    key = _probe_key(provider, provider_name) if probe_ else None
    probes = (DEFAULT_PROBES if count is None else count) if probe_ else 0
    try:
        run = run_scan(config, healthy, provider, provider_name, key=key, count=probes,
                       refresh=refresh, only=True if free else False if paid else None, limit=limit,
                       min_context=min_context, ttl_s=ttl * 3600, timeout=timeout,
                       db=named_store(db) if db else None, quiet=as_json)
    except ScanError as e:
        raise _fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps(run, indent=1))
    else:
        print_run(run)


def _check_arguments(count: int | None, probe_: bool, free: bool, paid: bool) -> None:
    """Arguments that contradict each other end the command (exit code 2)."""
    if count is not None and not probe_:
        raise _fail(f"N ({count}) is the number of models to probe: write `xx scan --probe {count}`", 2)
    if count is not None and count < 1:
        raise _fail("--probe N: N is at least 1", 2)
    if free and paid:
        raise _fail("--free and --paid exclude each other", 2)


def _provider(config: XXConfig, healthy: dict | None, rules: Path | None, provider_name: str) -> Provider:
    """The provider whose catalog is read, from the rules the gateway uses (launcher.rules_in_force)."""
    source = source_for(config, healthy, option=rules)
    try:
        loaded = load_layered(source)
    except RulesError as e:
        raise _fail(str(e), 2) from None
    provider = loaded.providers.get(provider_name)
    if provider is None:
        raise _fail(f"the rules ({source.describe()}) have no provider {provider_name!r} "
                    f"(known: {', '.join(loaded.providers)})", 2)
    return provider


def _probe_key(provider: Provider, provider_name: str) -> str:
    """The provider's key, which probing spends (the environment, then the keys file); the provider
    must speak Chat Completions."""
    variable = provider.key_variable
    try:
        key = provider_keys(os.environ).get(variable, "") if variable else None
    except RulesError as e:
        raise _fail(str(e), 2) from None
    if not key:
        raise _fail(f"probing needs the key of provider {provider_name!r}: set "
                    f"{variable or '(its key_env in the rules)'}", 2)
    if Dialect.OPENAI_CHAT not in provider.dialects:
        raise _fail(f"provider {provider_name!r} does not speak openai_chat: its models cannot be probed", 2)
    return key
