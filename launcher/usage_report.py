"""`xx usage`: what each agent, session, model, provider or day cost, from the gateway's usage store.

Reads the store directly (SQLite's WAL lets a reader in while the gateway writes), so it works with the
gateway stopped too. The store is `--db` (a file or a postgresql:// URL), else the xx config's
clutch_usage_db when it is a URL, else the one the running gateway names in /health, else the default
state folder's (launcher/scan/places.py `usage_db`).
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Annotated

import typer

from addons.accounting.reports import GROUPS, UsageStoreError, parse_time
from launcher.scan.places import open_usage_store
from launcher.tables import money
from launcher.terminal import FittedTable, TableColumn, fit_table, fit_text, render_text, terminal_width

COLUMNS = ("key", "requests", "attempts", "failures", "fallbacks", "soft_failures", "input_tokens", "output_tokens",
           "cached_tokens", "cache_write_tokens", "reasoning_tokens", "tokens_saved", "cost_usd", "cache_saved_usd",
           "estimated", "ttft_ms_p50",
           "duration_ms_avg", "first_ts", "last_ts")
# the table's columns after the key: (field, heading, priority): requests and cost always, the rest in
# order of importance while the terminal has room (launcher/terminal.py)
_HEADINGS = (("requests", "requests", 0), ("attempts", "attempts", 7), ("failures", "failed", 3),
             ("fallbacks", "fallbacks", 4), ("soft_failures", "soft", 8), ("input_tokens", "tokens in", 1),
             ("output_tokens", "tokens out", 2), ("cached_tokens", "cached", 5),
             ("cache_write_tokens", "cache writes", 9), ("cost_usd", "cost", 0),
             ("cache_saved_usd", "cache saved", 5),
             ("ttft_ms_p50", "ttft p50 ms", 6))
_SUMMED = ("requests", "attempts", "failures", "fallbacks", "soft_failures", "input_tokens", "output_tokens",
           "cached_tokens", "cache_write_tokens", "reasoning_tokens", "tokens_saved", "cost_usd", "cache_saved_usd",
           "estimated")



def render_usage(rows: list[dict], by: str, width: int) -> FittedTable:
    """The report as a table that fits `width` columns: the key (model, agent, ...) whole, wrapped after
    its provider and vendor when it must be, and the numbers that fit in order of importance."""
    columns = [TableColumn(by, kind="key", min_width=20)]
    columns += [TableColumn(heading, justify="right", priority=priority) for _, heading, priority in _HEADINGS]
    cells = [[str(row["key"]), *(_cell(name, row.get(name)) for name, _, _ in _HEADINGS)] for row in rows]
    if len(rows) > 1:
        total = {name: sum(r.get(name) or 0 for r in rows) for name in _SUMMED}
        # a request that touched two models counts under both; the total counts it once per row
        cells.append(["total", *(_cell(name, total.get(name)) for name, _, _ in _HEADINGS)])
    marked = [len(rows)] if len(rows) > 1 else []
    return fit_table(columns, cells, width, sections=marked, bold_rows=marked)


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _cell(name: str, value) -> str:
    if value is None:
        return "-"
    if name in ("cost_usd", "cache_saved_usd"):
        return money(value)
    if isinstance(value, float):
        return f"{value:,.0f}"
    return f"{value:,}"


By = Annotated[str, typer.Option("--by", "-b", help=f"group by: {', '.join(GROUPS)}")]
Since = Annotated[str, typer.Option("--since", help="from: 24h, 7d, 90m, a date or epoch seconds")]
Until = Annotated[str | None, typer.Option("--until", help="up to (same forms as --since)")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]
AsCsv = Annotated[bool, typer.Option("--csv", help="print CSV")]
Database = Annotated[str | None, typer.Option("--db", help="the usage database, a file or a postgresql:// URL "
                                                               "(default: the gateway's)")]


def usage(by: str, since: str, until: str | None, as_json: bool, as_csv: bool, path: Path | str) -> None:
    """Print the report (see the module docstring for where the database is found)."""
    if by not in GROUPS:
        raise _fail(f"cannot group by {by!r}; one of {', '.join(GROUPS)}")
    try:
        start, end = parse_time(since), parse_time(until)
    except ValueError as e:
        raise _fail(str(e)) from None
    if isinstance(path, Path) and not path.exists():
        raise _fail(f"no usage database at {path} yet: the gateway writes it once a request passed "
                    f"(or name one with --db)")
    try:
        store = open_usage_store(path)
        try:
            rows = store.report(by, start, end)
        finally:
            store.close()
    except UsageStoreError as e:
        raise _fail(str(e)) from None
    path = store.name
    if as_json:
        typer.echo(json.dumps({"by": by, "since": start, "until": end, "database": str(path), "rows": rows}, indent=2))
    elif as_csv:
        typer.echo(to_csv(rows), nl=False)
    elif not rows:
        typer.echo(f"xx: no requests in {path} {_span(start, end)}")
    else:
        width = terminal_width()
        fitted = render_usage(rows, by, width)
        typer.echo(fit_text(f"usage by {by} {_span(start, end)}", width))
        typer.echo(render_text(fitted.table, width))
        for line in (fitted.note(width), f"(database {path})"):
            if line:
                typer.echo(fit_text(line, width, indent=1))


def _span(start: float | None, end: float | None) -> str:
    def when(t):
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
    if start is None and end is None:
        return "of all time"
    return f"from {when(start) if start else 'the start'} to {when(end) if end else 'now'}"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"xx: {message}", err=True)
    return typer.Exit(2)
