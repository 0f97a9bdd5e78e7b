"""The ranking: the fit models of the catalog ranked with the usage store's evidence (probes and real use
of the last week), probed when asked, and stored for the gateway's `m` and `f` tiers; and the ranking in
force, as `xx`'s dry run names it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from addons.config.rules import Provider
from launcher import lifecycle
from launcher.config import XXConfig
from launcher.scan import ScanError, ago, client
from launcher.scan.fetch import get_catalog
from launcher.scan.places import open_usage_store, state_dir, usage_db
from launcher.scan.probing import probe


def run_scan(config: XXConfig, healthy: dict | None, provider: Provider, provider_name: str, *, key: str | None,
             count: int, refresh: bool, only: bool | None, limit: int, min_context: int, ttl_s: float,
             timeout: float, db: Path | str | None, quiet: bool) -> dict[str, Any]:
    """One scan: the catalog, the fit models ranked (the `count` best of them probed first, `only` free or
    paid ones when set), the ranking stored; what `xx scan --json` prints."""
    from addons.accounting.reports import UsageStoreError
    from addons.models import catalog, ranking

    def say(text: str) -> None:
        if not quiet:
            typer.echo(f"xx scan: {text}", err=True)

    now = time.time()
    folder = state_dir(config, healthy)
    found, origin = get_catalog(provider, folder, ttl_s=ttl_s, refresh=refresh, now=now, say=say)
    fit, left_out = catalog.fit_models(found.models, min_context)
    path = db or usage_db(config, healthy, folder)
    try:
        store = open_usage_store(path)
    except UsageStoreError as e:
        raise ScanError(str(e)) from None
    try:
        since = now - ranking.EVIDENCE_WINDOW_S
        stats = store.model_stats(since)
        rows = ranking.rank(fit, probes=store.probes(since), stats=stats, provider=provider_name, now=now)
        probes: list[dict] = []
        if count:
            chosen = [r for r in rows if only is None or r["free"] == only][:count]
            say(f"probing {len(chosen)} model(s), one tiny streamed request each (up to {timeout:g} s each) ...")
            with client(timeout) as http:
                for number, row in enumerate(chosen, 1):
                    say(f"probe {number}/{len(chosen)}: {row['model']} ...")
                    probes.append(probe(http, provider, key or "", provider_name,
                                        row["model"].split(":", 1)[1], timeout=timeout))
            store.add_probes(probes)
            now = time.time()
            rows = ranking.rank(fit, probes=store.probes(now - ranking.EVIDENCE_WINDOW_S), stats=stats,
                                provider=provider_name, now=now)
        store.save_rankings(rows, now)
    finally:
        store.close()
    shown = [r for r in rows if only is None or r["free"] == only]
    tiers = {letter: (str(p.target) if (p := ranking.pick(rows, letter, now)) else None)
             for letter in ranking.TIER_FREE}
    reasons: dict[str, int] = {}
    for why in left_out.values():
        reasons[_reason_kind(why)] = reasons.get(_reason_kind(why), 0) + 1
    return {"catalog": {"url": found.source, "models": len(found), "origin": origin, "fetched_at": found.fetched_at,
                        "fit": len(fit), "left_out": reasons},
            "left_out": left_out, "probes": probes, "rankings": shown[:limit] if limit > 0 else shown,
            "ranked": len(rows), "tiers": tiers, "db": store.name, "computed_at": now}


def _reason_kind(why: str) -> str:
    for word, kind in (("tool", "no tools"), ("context length unknown", "unknown context"),
                       ("context", "small context"), ("output", "small output"), ("price", "no fixed price"),
                       ("answers", "not text")):
        if word in why:
            return kind
    return why


def current_rankings(config: XXConfig, healthy: dict | None) -> tuple[list[dict], str] | None:
    """The ranking now in force, and where it was read: the running gateway's /rankings, else the
    usage store a gateway would read. None when no scan has stored one."""
    if healthy is not None:
        served = lifecycle._get_json(config, "/rankings", 2.0)
        if isinstance(served, dict) and isinstance(served.get("rankings"), list):
            return served["rankings"], "the gateway's ranking"
    path = usage_db(config, healthy)
    if isinstance(path, Path) and not path.is_file():
        return None
    from addons.accounting.reports import UsageStoreError

    try:
        store = open_usage_store(path)
        try:
            rows = store.rankings()
        finally:
            store.close()
    except UsageStoreError:
        return None
    return (rows, f"the model scan in {store.name}") if rows else None


def tier_note(letter: str, config: XXConfig, healthy: dict | None, providers: list[str], source: str) -> str:
    """The dry run's note for tier m or f when launch_tiers does not pin it."""
    from addons.models import ranking

    found = current_rankings(config, healthy)
    if found is None:
        return (f"tier {letter} has no model in launch_tiers of {source} and no model scan has ranked one: "
                f"the gateway routes as usual (run `xx scan --probe` to rank models, or set launch_tiers.{letter} "
                f"to pin one)")
    rows, where = found
    picked = ranking.pick(rows, letter)
    if picked is None:
        kind = "free model that works" if letter == "f" else "model that works"
        return (f"tier {letter} has no model in launch_tiers of {source}, and the model scan ranked no {kind} "
                f"({where}): the gateway routes as usual (`xx scan --probe` to rank again)")
    if picked.target.provider not in providers:
        return (f"tier {letter}: the model scan ranks {picked.target}, but the rules ({source}) have no provider "
                f"{picked.target.provider!r}: the gateway routes as usual")
    row = picked.row
    what = "best-ranked model" if letter == "m" else "best working free model"
    return (f"tier {letter}: every request goes to {picked.target} (the model scan's {what}: rank {row.get('rank')}, "
            f"score {row.get('score')}, ranked {ago(time.time() - float(row.get('computed_at') or time.time()))} ago; "
            f"{where})")
