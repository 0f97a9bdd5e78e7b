"""What `xx status`, `xx watch`, `clutch resilience` and `xx breakers reset` print, fitted to the
terminal's width through rich (launcher/terminal.py: the width, the fitting, the shortened model names)."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING, Any

from launcher.terminal import TableColumn, fit_table, fit_text, label_grid, render_text, shorten_model

if TYPE_CHECKING:
    from rich.console import JustifyMethod


def _in(seconds_until: float | None, now: float) -> str:
    if not seconds_until:
        return ""
    left = seconds_until - now
    return f"{left:.0f} s" if left > 0 else "now"


def _section(title: str, columns: list[TableColumn], rows: list[list[str]], empty: str, width: int) -> str:
    if not rows:
        return f"{title}\n  {empty}"
    fitted = fit_table(columns, rows, width)
    note = fitted.note(width)
    return f"{title}\n{render_text(fitted.table, width)}" + (f"\n{fit_text(note, width)}" if note else "")


def render_resilience(state: dict, width: int) -> str:
    """`clutch resilience` and the end of `xx status`: breakers, quotas, sticky sessions, in `width` columns."""
    now = time.time()
    out = []
    breakers = state.get("breakers") or {}
    rows = [[str(key), str(b.get("state")), str(b.get("failures")), _in(b.get("until"), now),
             str(b.get("reason") or "")] for key, b in sorted(breakers.items())]
    out.append(_section("Circuit breakers", [
        TableColumn("model", kind="key", min_width=24), TableColumn("state"),
        TableColumn("failures", justify="right", priority=3), TableColumn("probe in", justify="right", priority=2),
        TableColumn("last failure", kind="text", priority=1, min_width=16)], rows, "(none has failed yet)", width))
    quotas = dict(state.get("quotas") or {})
    capped = quotas.pop("free_daily_cap", {}) or {}
    rows = [[str(key), str(q.get("rpm", "")), str(q.get("rpd", "")), _in(q.get("cooldown_until"), now)]
            for key, q in sorted(quotas.items()) if isinstance(q, dict)]
    out.append(_section("Quotas", [
        TableColumn("model or provider", kind="key", min_width=24), TableColumn("rpm", justify="right"),
        TableColumn("rpd", justify="right"), TableColumn("cooling down", justify="right")], rows,
        "(no quota in the rules, no 429 cooldown running)", width))
    if capped:
        out.append(fit_text("Free-tier daily cap hit: " + ", ".join(f"{p} (until {_in(u, now)})"
                                                                 for p, u in capped.items()), width))
    sticky = state.get("sticky") or []
    rows = [[str(s.get("session")), str(s.get("primary")), str(s.get("target")),
             f"{s.get('expires_in_s', 0):.0f} s"] for s in sticky]
    out.append(_section("Sticky sessions", [
        TableColumn("session", priority=1), TableColumn("asked for", kind="key", min_width=20),
        TableColumn("stays on", kind="key", min_width=20), TableColumn("expires in", justify="right")], rows,
        "(none)", width))
    return "\n\n".join(out)


def render_status(gateway: str, health: dict | None, pid: int | None, log: Any, width: int) -> str:
    """`xx status`: the gateway at a glance, a label and its value a line, values wrapped within `width`."""
    if health is None:
        if pid is not None:
            return fit_text(f"gateway   pid {pid} runs but does not answer /health on {gateway} (see {log})", width, 10)
        return fit_text(f"gateway   not running on {gateway} (start it: xx start; log: {log})", width, 10)
    rules = health.get("rules") or {}
    owner = "started by xx" if pid == health.get("pid") else "not started by xx"
    lines = [
        ("gateway", f"running on {gateway}, up {_duration(health.get('uptime_s') or 0)}, version "
                    f"{health.get('version')}"),
        ("pid", f"{health.get('pid')}, {owner}"),
        ("listen", ", ".join(health.get("listen") or [])),
        ("rules", f"{rules.get('path')} (loaded {rules.get('loaded_at')})"),
        ("providers", ", ".join(rules.get("providers") or [])),
    ]
    if rules.get("last_reload_error"):
        lines.append(("", f"last reload FAILED, older rules in force: {rules['last_reload_error']}"))
    if rules.get("overrides"):
        lines.append(("overrides", ", ".join(sorted(rules["overrides"]))))
    lines += [("CA", str(health.get("ca_cert"))), ("log", str(log))]
    lines += [("DEGRADED", str(problem)) for problem in health.get("problems") or []]
    return label_grid(lines, width)


@dataclasses.dataclass(frozen=True)
class WatchField:
    """A column of `xx watch`: at least `least` columns wide, growing to `most` when the terminal has room.
    Columns are shown by `priority` (0 first) while they fit; what is left widens them in `GROW` order."""

    heading: str
    least: int
    most: int
    priority: int
    justify: JustifyMethod = "left"


WATCH_FIELDS = (
    WatchField("time", 8, 8, 0), WatchField("agent", 8, 11, 0), WatchField("launch", 6, 6, 6),
    WatchField("session", 10, 10, 8), WatchField("model asked", 18, 34, 5),
    WatchField("served by", 22, 44, 0), WatchField("status", 7, 16, 1),
    WatchField("tries", 5, 5, 7, "right"), WatchField("tok in/out", 11, 13, 2, "right"),
    WatchField("cost", 9, 9, 3, "right"), WatchField("ms", 6, 7, 4, "right"),
)
SERVED_FIRST = 38  # "served by" grows to this before the columns of priority 5 and up are considered
_GROW = ("served by", "model asked", "agent", "status", "tok in/out", "ms")
# How a stream that began as a 200 and then failed ended, in a word (the journal's `error`).
_ENDED = {"stream_cut": "cut", "timeout_idle": "stalled", "stream_error": "error", "protocol": "broken"}


@dataclasses.dataclass(frozen=True)
class WatchLayout:
    """The columns `xx watch` shows at a width and how wide each is: one layout for the whole run, so
    the lines stay aligned, and none is longer than the width."""

    fields: tuple[WatchField, ...]
    widths: tuple[int, ...]
    gap: int

    @classmethod
    def for_width(cls, width: int) -> WatchLayout:
        gap = 1 if width < 100 else 2
        chosen: dict[str, int] = {}

        def room() -> int:
            return width - sum(chosen.values()) - gap * (len(chosen) - 1)

        def grow(heading: str, most: int) -> None:
            if heading in chosen:
                chosen[heading] += max(min(most - chosen[heading], room()), 0)

        for field in sorted(WATCH_FIELDS, key=lambda f: f.priority):
            if field.priority == 5:  # the model that answered matters more than the columns after this
                grow("served by", SERVED_FIRST)
            if field.least + (gap if chosen else 0) <= room():
                chosen[field.heading] = field.least
        for field in sorted(WATCH_FIELDS, key=lambda f: _GROW.index(f.heading) if f.heading in _GROW else 99):
            grow(field.heading, field.most)
        fields = tuple(f for f in WATCH_FIELDS if f.heading in chosen)
        return cls(fields, tuple(chosen[f.heading] for f in fields), gap)

    def line(self, values: dict[str, str] | None) -> str:
        """One line: the headings (None), or a request's values; never wider than the layout."""
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, show_header=False, show_edge=False, pad_edge=False, padding=(0, self.gap, 0, 0))
        for field, width in zip(self.fields, self.widths, strict=True):
            table.add_column(width=width, justify=field.justify, no_wrap=True, overflow="ellipsis")
        texts = [f.heading if values is None else values.get(f.heading, "") for f in self.fields]
        table.add_row(*(Text(text) for text in texts))
        return render_text(table, sum(self.widths) + self.gap * (len(self.widths) - 1))


def render_request(entry: dict | None, layout: WatchLayout) -> str:
    """One line of `xx watch` (None: the header line). Tokens are in/out; a ~ marks tiktoken's estimate
    where the provider reported none; a * after the model that served marks a fallback's answer. Model
    names are shortened to fit their column (terminal.shorten_model)."""
    if entry is None:
        return layout.line(None)
    widths = dict(zip((f.heading for f in layout.fields), layout.widths, strict=True))
    served = entry.get("served_by") or entry.get("target") or f"{entry.get('provider')}:{entry.get('model')}"
    mark = "*" if entry.get("fallback") else ""
    status = str(entry.get("status") or entry.get("error") or "-")
    if entry.get("outcome") in ("broken", "aborted"):  # began as a 200, did not end as one
        status = _ENDED.get(entry.get("error") or "", entry["outcome"])
    elif entry.get("error") and entry.get("status") and len(f"{status} {entry['error']}") <= widths["status"]:
        status += f" {entry['error']}"  # the word only where it fits: `429` says more than `429 st…`
    return layout.line({
        "time": time.strftime("%H:%M:%S", time.localtime(entry.get("time") or 0)),
        "agent": entry.get("agent") or "unknown",
        "launch": entry.get("launch") or (entry.get("route") or "-"),
        "session": entry.get("session") or "-",
        "model asked": shorten_model(entry.get("model") or "?", widths.get("model asked", 0)),
        "served by": shorten_model(served, widths.get("served by", 1) - len(mark)) + mark,
        "status": status,
        "tries": str(entry.get("attempts", 0)),
        "tok in/out": _tokens(entry),
        "cost": _cost(entry.get("cost_usd")),
        "ms": str(entry.get("duration_ms", "")),
    })


def _tokens(entry: dict) -> str:
    tokens_in, tokens_out = entry.get("input_tokens"), entry.get("output_tokens")
    if tokens_in is None and tokens_out is None:
        return "-"
    mark = "~" if entry.get("estimated") else ""
    return f"{mark}{_count(tokens_in)}/{_count(tokens_out)}"


def _count(value: int | None) -> str:
    if value is None:
        return "?"
    if value < 10_000:
        return str(value)
    return f"{value / 1000:.1f}k" if value < 1_000_000 else f"{value / 1_000_000:.1f}M"


def _cost(value: float | None) -> str:
    return "-" if value is None else money(value)


def money(value: float) -> str:
    """Dollars readable at any size: a single request costs fractions of a cent, so small amounts keep
    two significant digits ($0.000084), large ones cents ($12.30); a loss with its sign (-$0.0012)."""
    if value < 0:
        return "-" + money(-value)
    if value == 0:
        return "$0"
    if value < 0.01:
        return f"${value:.{1 - math.floor(math.log10(value))}f}"
    return f"${value:.4f}" if value < 10 else f"${value:,.2f}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def render_reset(answer: dict, gateway: str, width: int = 80) -> str:
    """`xx breakers reset`: what the gateway cleared, one target a line, within `width` columns."""
    now = time.time()
    cleared = answer.get("cleared") or {}
    what = answer.get("target") or "every target"
    rows = []
    for key, entry in sorted((cleared.get("breakers") or {}).items()):
        detail = f"was {entry.get('state')}".replace("_", "-")
        if entry.get("until"):
            detail += f", {_in(entry['until'], now)} left"
        elif entry.get("failures"):
            detail += f", {entry['failures']:g} failures"
        rows.append(("breaker", key, detail))
    for key, until in sorted((cleared.get("cooldowns") or {}).items()):
        rows.append(("cooldown", key, f"429 rest, {_in(until, now)} left"))
    for key in sorted(cleared.get("free_daily_cap") or {}):
        rows.append(("free cap", key, "its free models' daily cap, until 00:00 UTC"))
    note = "\n" + fit_text(f"xx: note: {answer['note']}", width) if answer.get("note") else ""
    if not rows:
        return fit_text(f"xx: nothing to reset for {what} on {gateway}: no breaker had failures, no 429 "
                    f"cooldown or free-model cap was running", width) + note
    lines = [fit_text(f"xx: reset {what} on {gateway}:", width)]
    for kind, key, detail in rows:
        line = f"  {kind:<9} {key}  ({detail})"
        if len(line) <= width:
            lines.append(line)
        else:  # a long model name: the detail goes on its own line
            lines.append(fit_text(f"  {kind:<9} {key}", width, indent=12))
            lines.append(fit_text(f"{' ' * 12}({detail})", width, indent=12))
    return "\n".join(lines) + note
