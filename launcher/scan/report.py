"""What `xx scan` prints without --json: the catalog, each probe, the ranking as a table (rich), the
tiers it picks and where it was stored."""

from __future__ import annotations

import time
from typing import Any

from launcher.scan import ago
from launcher.terminal import TableColumn, fit_table, fit_text, render_text, terminal_width

# the ranking table's columns: the rank and the model always, then by what matters most for choosing
_COLUMNS = (
    TableColumn("#", justify="right"), TableColumn("model", kind="key", min_width=24),
    TableColumn("score", justify="right", priority=1), TableColumn("success", justify="right", priority=3),
    TableColumn("ttft ms", justify="right", priority=4), TableColumn("tok/s", justify="right", priority=6),
    TableColumn("context", justify="right", priority=7), TableColumn("$/M in", justify="right", priority=2),
    TableColumn("$/M out", justify="right", priority=2), TableColumn("why", kind="text", priority=5, min_width=20))


def print_run(run: dict[str, Any]) -> None:
    """A scan (rankings.run_scan) as `xx scan` prints it, within the terminal's width: the catalog, the
    probes, the ranked table, the tiers."""
    import typer

    width = terminal_width()

    def say(line: str) -> None:  # prose wraps at the width, the next lines indented under the first's text
        typer.echo(fit_text(line, width, indent=9))

    info = run["catalog"]
    left = ", ".join(f"{n} {kind}" for kind, n in sorted(info["left_out"].items())) or "none"
    age = f"fetched {ago(time.time() - info['fetched_at'])} ago"
    say(f"catalog  {info['models']} models from {info['url']} "
        f"({age if info['origin'] == 'fetched' else info['origin'] + ', ' + age})")
    say(f"fit      {info['fit']} for coding agents (tools, context); left out: {left}")
    for p in run["probes"]:
        outcome = (f"ok, first token {p['ttft_ms']:.0f} ms" + (f", {p['tokens_per_s']:.0f} tokens/s"
                                                               if p["tokens_per_s"] else "")) if p["ok"] \
            else f"failed: {p['error']}"
        say(f"probe    {p['model']}: {outcome}")
    rows = [[str(r["rank"]), str(r["model"]), f"{r['score']:.3f}",
             "-" if r["success_rate"] is None else f"{r['success_rate']:.0%}",
             "-" if r["ttft_ms"] is None else f"{r['ttft_ms']:.0f}",
             "-" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.0f}",
             f"{r['context_length'] or 0:,}", _per_million(r["prompt_price"], r["free"]),
             _per_million(r["completion_price"], r["free"]), str(r["why"])] for r in run["rankings"]]
    fitted = fit_table(_COLUMNS, rows, width)
    typer.echo(render_text(fitted.table, width))
    if fitted.note(width):
        say(str(fitted.note(width)))
    if len(run["rankings"]) < run["ranked"]:
        say(f"(the {len(run['rankings'])} best shown of {run['ranked']} ranked; --limit 0 shows all)")
    tiers = run["tiers"]
    say(f"tier m   {tiers['m'] or '(none works)'}")
    say(f"tier f   {tiers['f'] or '(no free model works)'}")
    say(f"stored in {run['db']}: a running gateway uses it within 30 s"
        + ("" if run["probes"] else "; `xx scan --probe` measures the best ones (spends quota)"))


def _per_million(price: float | None, free: bool) -> str:
    if free:
        return "free"
    return "-" if price is None else f"{price * 1e6:.2f}"
