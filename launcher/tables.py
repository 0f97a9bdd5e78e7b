"""Plain-text tables for the terminal (no dependency: a table is a few padded columns)."""

from __future__ import annotations

import time
from typing import Any


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
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
