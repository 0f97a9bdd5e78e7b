"""What `xx scan` prints without --json: the catalog, each probe, the ranking as a table (rich), the
tiers it picks and where it was stored."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from launcher.scan import ago

if TYPE_CHECKING:  # only the type: print_run imports rich when it prints
    from rich.console import JustifyMethod

# the ranking table's columns and how each is aligned
_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("#", "right"), ("model", "left"), ("score", "right"), ("success", "right"), ("ttft ms", "right"),
    ("tok/s", "right"), ("context", "right"), ("$/M in", "right"), ("$/M out", "right"), ("why", "left"))


def print_run(run: dict[str, Any]) -> None:
    """A scan (rankings.run_scan) as `xx scan` prints it: the catalog, the probes, the ranked table, the tiers."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=False)
    info = run["catalog"]
    left = ", ".join(f"{n} {kind}" for kind, n in sorted(info["left_out"].items())) or "none"
    age = f"fetched {ago(time.time() - info['fetched_at'])} ago"
    console.print(f"catalog  {info['models']} models from {info['url']} "
                  f"({age if info['origin'] == 'fetched' else info['origin'] + ', ' + age})")
    console.print(f"fit      {info['fit']} for coding agents (tools, context); left out: {left}")
    for p in run["probes"]:
        outcome = (f"ok, first token {p['ttft_ms']:.0f} ms" + (f", {p['tokens_per_s']:.0f} tokens/s"
                                                               if p["tokens_per_s"] else "")) if p["ok"] \
            else f"failed: {p['error']}"
        console.print(f"probe    {p['model']}: {outcome}")
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for name, justify in _COLUMNS:
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
