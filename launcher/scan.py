"""`xx scan`: read OpenRouter's model catalog, keep the models a coding agent can use, rank them, and
(only with `--probe`) measure the best of them with a tiny streamed request.

    xx scan [--probe [N]] [--refresh] [--free | --paid] [--json] [--limit 15] [--rules FILE] [--db FILE]

* The catalog comes from `<base_url>/models` of the rules' `openrouter` provider (`--provider` names
  another), the rules being the running gateway's, else the xx config's, else the embedded default.
  It needs no key. It is cached in `<state_dir>/catalog.json` for 6 hours (`--ttl`); `--refresh`
  fetches it anyway, and a failed fetch falls back to the cache, however old, saying so.
* Fit for coding (addons/models/catalog.py): tool calling and at least 32k tokens of context
  (`--min-context`); the rest is counted by reason.
* Ranked (addons/models/ranking.py) with the usage store's probes and real use of the last 7 days, and
  stored there: the gateway's `m` and `f` tiers read it within 30 s (addons/models/rankings_book.py).
* `--probe [N]` (default 5) sends each of the N best candidates shown one streamed chat request
  (64 output tokens at most) with the provider's key ($OPENROUTER_API_KEY): whether it answers, the
  time to its first token and its tokens per second, stored as probes and ranked again. Probing is
  never done otherwise: it spends the key's quota (OpenRouter's free variants share 50 or 1000
  requests a day per account). `--free` probes free models only.
* The scan talks to the provider directly, never through a proxy from the environment: through
  Clutch it would be routed, and measure whatever model the rules chose. `SSL_CERT_FILE` is honoured.

The usage store is the running gateway's (its /health `usage_db`, else `clutch_usage_db` or
`clutch_state_dir` in the xx config's gateway_args, else `~/.local/state/clutch/usage.db`); `--db`
names another. This module imports little at load time: `xx` imports it on every launch.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from addons.config.rules import DEFAULT_RULES_PATH, Provider, RulesError, load_rules
from addons.wire.dialects import Dialect
from launcher import lifecycle
from launcher.config import ConfigError, XXConfig, load_config

if TYPE_CHECKING:
    from addons.models.catalog import Catalog

DEFAULT_PROBES = 5
PROBE_MAX_TOKENS = 64
PROBE_PROMPT = "Count from 1 to 20, separated by spaces. Reply with the numbers only."
PROBE_TITLE = "Clutch model scan"
MIN_MEASURED_S = 0.05  # a stream shorter than this gives no meaningful tokens per second


class ScanError(RuntimeError):
    """The scan cannot go on; the message says why and what to do."""


# ------------------------------------------------------------ where things are

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
    from addons.resilience import default_state_dir

    reported = (lifecycle.resilience(config) or {}).get("state_dir") if healthy else None
    if isinstance(reported, str) and reported:
        return Path(reported)
    configured = gateway_option(config, "clutch_state_dir")
    return Path(configured).expanduser() if configured else default_state_dir()


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


# ------------------------------------------------------------ the catalog

def _verify() -> ssl.SSLContext:
    """certifi's roots, or the bundle SSL_CERT_FILE names (httpx only reads it with trust_env, which
    would also send the scan through a proxy from the environment)."""
    import certifi

    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or certifi.where())


def _client(timeout: float):
    import httpx

    return httpx.Client(verify=_verify(), trust_env=False, follow_redirects=True,
                        timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
                        headers={"user-agent": "clutch-scan", "x-title": PROBE_TITLE})


def fetch_catalog(provider: Provider, timeout: float = 30.0) -> tuple[dict, str]:
    """OpenRouter's `GET /models` answer and its URL; ScanError when it cannot be had."""
    import httpx

    url = provider.base_url + "/models"
    try:
        with _client(timeout) as client:
            response = client.get(url)
    except httpx.HTTPError as e:
        raise ScanError(f"cannot fetch the model catalog {url}: {type(e).__name__}: {e}") from None
    if response.status_code != 200:
        raise ScanError(f"the model catalog {url} answered {response.status_code}: {response.text[:200]}")
    try:
        data = response.json()
    except ValueError:
        raise ScanError(f"the model catalog {url} is not JSON") from None
    return data, url


def get_catalog(provider: Provider, folder: Path, *, ttl_s: float, refresh: bool, now: float,
                say=lambda text: None) -> tuple[Catalog, str]:
    """The catalog and where it came from ("fetched", "cached", "stale cache"): the cache while it is
    fresh and from the same URL, else a fetch (saved), else, when the fetch fails, any cache."""
    from addons.models import catalog

    path = catalog.cache_path(folder)
    url = provider.base_url + "/models"
    if not refresh:
        cached = catalog.load_cache(path, ttl_s, now)
        if cached is not None and cached.source == url:
            return cached, "cached"
    try:
        raw, url = fetch_catalog(provider)
        parsed = catalog.parse_catalog(raw, now, url)
    except (ScanError, catalog.CatalogError) as e:
        stale = catalog.read_cache(path)
        if stale is None or stale.source != url:
            raise ScanError(str(e)) from None
        say(f"{e}; using the cached catalog from {_ago(now - stale.fetched_at)} ago")
        return stale, "stale cache"
    try:
        catalog.save_cache(path, raw, now, url)
    except OSError as e:
        say(f"cannot cache the catalog in {path}: {e.strerror or e}")
    return parsed, "fetched"


# ------------------------------------------------------------ probing

def probe(client, provider: Provider, key: str, provider_name: str, model_id: str, *,
          timeout: float, max_tokens: int = PROBE_MAX_TOKENS, clock=time.perf_counter) -> dict[str, Any]:
    """One tiny streamed chat request: a probe dict of the usage store's shape. Works when the answer
    is a 200 stream with text, reasoning or a tool call and no error event."""
    import httpx

    started_at = time.time()
    result: dict[str, Any] = {"ts": started_at, "model": f"{provider_name}:{model_id}", "ok": False, "status": None,
                              "error": None, "ttft_ms": None, "tokens_per_s": None, "output_tokens": None}
    body = {"model": model_id, "messages": [{"role": "user", "content": PROBE_PROMPT}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    start = clock()
    first = last = None
    pieces, usage, error = 0, None, None
    try:
        with client.stream("POST", provider.base_url + "/chat/completions", json=body,
                           headers={"authorization": f"Bearer {key}"}) as response:
            result["status"] = response.status_code
            if response.status_code != 200:
                response.read()
                result["error"] = f"HTTP {response.status_code}: {_error_text(response)}"
                return result
            for line in response.iter_lines():
                if clock() - start > timeout:
                    error = f"no end of stream within {timeout:.0f} s"
                    break
                if not line.startswith("data:"):
                    continue  # SSE comments (": OPENROUTER PROCESSING"), event names, blank lines
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    error = "a stream event that is not JSON"
                    break
                if not isinstance(chunk, dict):
                    continue
                if chunk.get("error"):
                    error = f"stream error: {_message(chunk['error'])}"
                    break
                for choice in chunk.get("choices") or []:
                    delta = (choice or {}).get("delta") or {}
                    if delta.get("content") or delta.get("reasoning") or delta.get("tool_calls"):
                        now = clock()
                        first = now if first is None else first
                        last = now
                        pieces += 1
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
    except httpx.TimeoutException:
        error = f"timed out after {timeout:.0f} s"
    except httpx.HTTPError as e:
        error = f"{type(e).__name__}: {e}"
    if error is None and first is None:
        error = "an empty answer (no text, reasoning or tool call)"
    result["error"] = error
    if first is not None:
        result["ttft_ms"] = round((first - start) * 1000, 1)
    tokens = (usage or {}).get("completion_tokens")
    result["output_tokens"] = tokens if isinstance(tokens, int) else (pieces or None)
    if first is not None and last is not None and last - first >= MIN_MEASURED_S and result["output_tokens"]:
        result["tokens_per_s"] = round(result["output_tokens"] / (last - first), 1)
    result["ok"] = error is None
    return result


def _error_text(response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    return _message(payload.get("error") if isinstance(payload, dict) else payload)[:200]


def _message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or error)
    return str(error)


# ------------------------------------------------------------ what the launcher shows

def current_rankings(config: XXConfig, healthy: dict | None) -> tuple[list[dict], str] | None:
    """The ranking now in force, and where it was read: the running gateway's /rankings, else the
    usage store a gateway would read. None when no scan has stored one."""
    if healthy is not None:
        served = lifecycle._get_json(config, "/rankings", 2.0)
        if isinstance(served, dict) and isinstance(served.get("rankings"), list):
            return served["rankings"], "the gateway's ranking"
    path = usage_db(config, healthy)
    if not path.is_file():
        return None
    from addons.accounting.store import UsageStore, UsageStoreError

    try:
        store = UsageStore(path)
    except UsageStoreError:
        return None
    try:
        rows = store.rankings()
    finally:
        store.close()
    return (rows, f"the model scan in {path}") if rows else None


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
            f"score {row.get('score')}, ranked {_ago(time.time() - float(row.get('computed_at') or time.time()))} ago; "
            f"{where})")


def _ago(seconds: float) -> str:
    from addons.models.ranking import _age

    return _age(seconds)


# ------------------------------------------------------------ the command

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
         db: Annotated[Path | None, typer.Option(help="usage database (default: the gateway's)")] = None) -> None:
    """Rank OpenRouter's models for coding agents (the m and f tiers); --probe measures the best ones."""
    if count is not None and not probe_:
        raise _fail(f"N ({count}) is the number of models to probe: write `xx scan --probe {count}`", 2)
    if count is not None and count < 1:
        raise _fail("--probe N: N is at least 1", 2)
    if free and paid:
        raise _fail("--free and --paid exclude each other", 2)
    try:
        config = load_config()[0]
    except ConfigError as e:
        raise _fail(f"bad config: {e}", 2) from None
    healthy = lifecycle.health(config)
    path = rules_file(config, healthy, rules)
    try:
        loaded = load_rules(path)
    except RulesError as e:
        raise _fail(str(e), 2) from None
    provider = loaded.providers.get(provider_name)
    if provider is None:
        raise _fail(f"the rules ({path}) have no provider {provider_name!r} (known: {', '.join(loaded.providers)})", 2)
    key = None
    if probe_:
        key = os.environ.get(provider.key_env or "") if provider.key_env else None
        if not key:
            raise _fail(f"probing needs the key of provider {provider_name!r}: set "
                        f"{provider.key_env or '(its key_env in the rules)'}", 2)
        if Dialect.OPENAI_CHAT not in provider.dialects:
            raise _fail(f"provider {provider_name!r} does not speak openai_chat: its models cannot be probed", 2)
    probes = (DEFAULT_PROBES if count is None else count) if probe_ else 0
    try:
        run = _run(config, healthy, provider, provider_name, key=key, count=probes,
                   refresh=refresh, only=True if free else False if paid else None, limit=limit,
                   min_context=min_context, ttl_s=ttl * 3600, timeout=timeout, db=db, quiet=as_json)
    except ScanError as e:
        raise _fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps(run, indent=1))
    else:
        _print(run)


def _run(config: XXConfig, healthy: dict | None, provider: Provider, provider_name: str, *, key: str | None, count: int,
         refresh: bool, only: bool | None, limit: int, min_context: int, ttl_s: float, timeout: float,
         db: Path | None, quiet: bool) -> dict[str, Any]:
    from addons.accounting.store import UsageStore, UsageStoreError
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
        store = UsageStore(path)
    except UsageStoreError as e:
        raise ScanError(str(e)) from None
    try:
        since = now - ranking.EVIDENCE_WINDOW_S
        stats = store.model_stats(since)
        rows = ranking.rank(fit, probes=store.probes(since), stats=stats, provider=provider_name, now=now)
        probes: list[dict] = []
        if count:
            chosen = [r for r in rows if only is None or r["free"] == only][:count]
            with _client(timeout) as client:
                for row in chosen:
                    say(f"probing {row['model']} ...")
                    probes.append(probe(client, provider, key or "", provider_name,
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
            "ranked": len(rows), "tiers": tiers, "db": str(path), "computed_at": now}


def _reason_kind(why: str) -> str:
    for word, kind in (("tool", "no tools"), ("context length unknown", "unknown context"),
                       ("context", "small context"), ("output", "small output"), ("price", "no fixed price"),
                       ("answers", "not text")):
        if word in why:
            return kind
    return why


def _print(run: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=False)
    info = run["catalog"]
    left = ", ".join(f"{n} {kind}" for kind, n in sorted(info["left_out"].items())) or "none"
    age = f"fetched {_ago(time.time() - info['fetched_at'])} ago"
    console.print(f"catalog  {info['models']} models from {info['url']} "
                  f"({age if info['origin'] == 'fetched' else info['origin'] + ', ' + age})")
    console.print(f"fit      {info['fit']} for coding agents (tools, context); left out: {left}")
    for p in run["probes"]:
        outcome = (f"ok, first token {p['ttft_ms']:.0f} ms" + (f", {p['tokens_per_s']:.0f} tokens/s"
                                                               if p["tokens_per_s"] else "")) if p["ok"] \
            else f"failed: {p['error']}"
        console.print(f"probe    {p['model']}: {outcome}")
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for name, justify in (("#", "right"), ("model", "left"), ("score", "right"), ("success", "right"),
                          ("ttft ms", "right"), ("tok/s", "right"), ("context", "right"), ("$/M in", "right"),
                          ("$/M out", "right"), ("why", "left")):
        if name == "why":  # the long one: wraps at words in what the terminal leaves
            table.add_column(name, justify=justify, min_width=24, overflow="fold")
        else:
            table.add_column(name, justify=justify, no_wrap=True)
    for r in run["rankings"]:
        table.add_row(str(r["rank"]), r["model"], f"{r['score']:.3f}",
                      "-" if r["success_rate"] is None else f"{r['success_rate']:.0%}",
                      "-" if r["ttft_ms"] is None else f"{r['ttft_ms']:.0f}",
                      "-" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.0f}",
                      f"{r['context_length'] or 0:,}", _per_million(r["prompt_price"], r["free"]),
                      _per_million(r["completion_price"], r["free"]), r["why"])
    console.print(table)
    if len(run["rankings"]) < run["ranked"]:
        console.print(f"(the {len(run['rankings'])} best shown of {run['ranked']} ranked; --limit 0 shows all)")
    tiers = run["tiers"]
    console.print(f"tier m   {tiers['m'] or '(none works)'}    tier f   {tiers['f'] or '(no free model works)'}")
    console.print(f"stored in {run['db']}: a running gateway uses it within 30 s"
                  + ("" if run["probes"] else "; `xx scan --probe` measures the best ones (spends quota)"))


def _per_million(price: float | None, free: bool) -> str:
    if free:
        return "free"
    return "-" if price is None else f"{price * 1e6:.2f}"
