"""Plain-text tables for the terminal (no dependency: a table is a few padded columns)."""

from __future__ import annotations

import math
import textwrap
import time
from typing import Any


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _in(seconds_until: float | None, now: float) -> str:
    if not seconds_until:
        return ""
    left = seconds_until - now
    return f"{left:.0f} s" if left > 0 else "now"


def render_resilience(state: dict) -> str:
    now = time.time()
    out = []
    breakers = state.get("breakers") or {}
    rows = [[key, b.get("state"), b.get("failures"), _in(b.get("until"), now), b.get("reason") or ""]
            for key, b in sorted(breakers.items())]
    out.append("Circuit breakers\n" + (table(["model", "state", "failures", "probe in", "last failure"], rows)
                                       if rows else "  (none has failed yet)"))
    quotas = dict(state.get("quotas") or {})
    capped = quotas.pop("free_daily_cap", {}) or {}
    rows = [[key, q.get("rpm", ""), q.get("rpd", ""), _in(q.get("cooldown_until"), now)]
            for key, q in sorted(quotas.items()) if isinstance(q, dict)]
    out.append("Quotas\n" + (table(["model or provider", "rpm", "rpd", "cooling down"], rows)
                             if rows else "  (no quota in the rules, no 429 cooldown running)"))
    if capped:
        out.append("Free-tier daily cap hit: " + ", ".join(f"{p} (until {_in(u, now)})" for p, u in capped.items()))
    sticky = state.get("sticky") or []
    rows = [[s.get("session"), s.get("primary"), s.get("target"), f"{s.get('expires_in_s', 0):.0f} s"] for s in sticky]
    out.append("Sticky sessions\n" + (table(["session", "asked for", "stays on", "expires in"], rows)
                                      if rows else "  (none)"))
    return "\n\n".join(out)


def render_status(gateway: str, health: dict | None, pid: int | None, log: Any) -> str:
    """`xx status`: the gateway at a glance."""
    if health is None:
        if pid is not None:
            return f"gateway   pid {pid} runs but does not answer /health on {gateway} (see {log})"
        return f"gateway   not running on {gateway} (start it: xx start; log: {log})"
    rules = health.get("rules") or {}
    owner = f"pid {health.get('pid')}" + (", started by xx" if pid == health.get("pid") else ", not started by xx")
    lines = [
        f"gateway   running on {gateway} ({owner}), up {_duration(health.get('uptime_s') or 0)}, "
        f"version {health.get('version')}",
        "listen    " + ", ".join(health.get("listen") or []),
        f"rules     {rules.get('path')} (loaded {rules.get('loaded_at')}); providers "
        f"{', '.join(rules.get('providers') or [])}",
    ]
    if rules.get("last_reload_error"):
        lines.append(f"          last reload FAILED, older rules in force: {rules['last_reload_error']}")
    if rules.get("overrides"):
        lines.append("overrides " + ", ".join(sorted(rules["overrides"])))
    lines += [f"CA        {health.get('ca_cert')}", f"log       {log}"]
    for problem in health.get("problems") or []:
        lines.append(f"DEGRADED  {problem}")
    return "\n".join(lines)


_REQUEST_COLUMNS = (("time", 8), ("agent", 11), ("launch", 6), ("session", 10), ("model asked", 28),
                    ("served by", 36), ("status", 6), ("tries", 5), ("tokens in/out", 13), ("cost", 9),
                    ("ms", 7))


# How a stream that began and then failed ended, in a word (the journal's `error`).
_ENDED = {"stream_cut": "cut", "timeout_idle": "idle-timeout", "stream_error": "error-event",
          "protocol": "broken"}


def render_request(entry: dict | None) -> str:
    """One line of `xx watch` (None: the header line). Tokens are in/out; a ~ marks tiktoken's estimate
    where the provider reported none."""
    if entry is None:
        return "  ".join(name.ljust(width) for name, width in _REQUEST_COLUMNS).rstrip()
    served = entry.get("served_by") or entry.get("target") or f"{entry.get('provider')}:{entry.get('model')}"
    status = str(entry.get("status") or entry.get("error") or "-")
    if entry.get("outcome") in ("broken", "aborted"):  # began as a 200, did not end as one
        status += f" {_ENDED.get(entry.get('error') or '', entry['outcome'])}"
    elif entry.get("error") and entry.get("status"):
        status += f" {entry['error']}"
    values = (
        time.strftime("%H:%M:%S", time.localtime(entry.get("time") or 0)),
        entry.get("agent") or "unknown",
        entry.get("launch") or (entry.get("route") or "-"),
        (entry.get("session") or "-")[:10],
        _clip(entry.get("model") or "?", 28),
        _clip(served + (" (fallback)" if entry.get("fallback") else ""), 36),
        status,
        str(entry.get("attempts", 0)),
        _tokens(entry),
        _cost(entry.get("cost_usd")),
        str(entry.get("duration_ms", "")),
    )
    return "  ".join(value.ljust(width) for value, (_, width) in zip(values, _REQUEST_COLUMNS, strict=True)).rstrip()


def _tokens(entry: dict) -> str:
    tokens_in, tokens_out = entry.get("input_tokens"), entry.get("output_tokens")
    if tokens_in is None and tokens_out is None:
        return "-"
    mark = "~" if entry.get("estimated") else ""
    return f"{mark}{_count(tokens_in)}/{_count(tokens_out)}"


def _count(value: int | None) -> str:
    if value is None:
        return "?"
    return f"{value / 1000:.1f}k" if value >= 10_000 else str(value)


def _cost(value: float | None) -> str:
    return "-" if value is None else money(value)


def money(value: float) -> str:
    """Dollars readable at any size: a single request costs fractions of a cent, so small amounts keep
    two significant digits ($0.000084), large ones cents ($12.30)."""
    if value <= 0:
        return "$0"
    if value < 0.01:
        return f"${value:.{1 - math.floor(math.log10(value))}f}"
    return f"${value:.4f}" if value < 10 else f"${value:,.2f}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


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
    note = "\n" + _fit(f"xx: note: {answer['note']}", width) if answer.get("note") else ""
    if not rows:
        return _fit(f"xx: nothing to reset for {what} on {gateway}: no breaker had failures, no 429 "
                    f"cooldown or free-model cap was running", width) + note
    lines = [_fit(f"xx: reset {what} on {gateway}:", width)]
    for kind, key, detail in rows:
        line = f"  {kind:<9} {key}  ({detail})"
        if len(line) <= width:
            lines.append(line)
        else:  # a long model name: the detail goes on its own line
            lines.append(_fit(f"  {kind:<9} {key}", width, indent=12))
            lines.append(_fit(f"{' ' * 12}({detail})", width, indent=12))
    return "\n".join(lines) + note


def _fit(text: str, width: int, indent: int = 4) -> str:
    if len(text) <= width:
        return text
    return "\n".join(textwrap.wrap(text, width, subsequent_indent=" " * indent, break_long_words=True,
                                   break_on_hyphens=False))
