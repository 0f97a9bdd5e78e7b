"""The peer table (bench/peer_table.py) from its raw JSON: each path's median run per load, its
added time to first token over the direct path of its client protocol, saturated throughput, CPU
per request and peak memory; as markdown (bench/results/peers.md, docs/benchmarks.md) and as an
80-column text table for the terminal."""

from __future__ import annotations

import math

LAT = ["c1-2k", "c1-200k", "c16-2k", "c16-200k"]
SAT = "sat16-2k"
LABELS = {
    "mitmdump": "bare mitmdump + SSE streaming (TLS both legs)",
    "clutch": "Clutch, default rules (TLS both legs)",
    "clutch-base-url": "Clutch, base-URL entry (HTTP in, TLS out)",
    "ccr": "claude-code-router (HTTP; Anthropic in, Chat out)",
    "headroom": "Headroom proxy (HTTP)",
    "litellm": "LiteLLM proxy (HTTP)",
    "direct": "direct, TLS",
    "direct-http": "direct, HTTP",
    "direct-anthropic": "direct, HTTP, Anthropic Messages",
}


def median_run(cells: list[dict], path: str, load: str) -> dict | None:
    """The rep whose TTFT p50 (req/s for saturation) is the median of the reps."""
    runs = [c for c in cells if c["path"] == path and c["load"] == load and c["ok"]]
    if not runs:
        return None
    key = "rps" if load == SAT else "ttft_p50"
    runs.sort(key=lambda c: c[key])
    return runs[(len(runs) - 1) // 2]


def added(data: dict, path: str, load: str) -> tuple[float, float] | None:
    """(p50, p99) of the path's TTFT minus its baseline's, median runs."""
    base = data["baseline"].get(path)
    mine, theirs = median_run(data["cells"], path, load), median_run(data["cells"], base or "", load)
    if mine is None or theirs is None:
        return None
    return mine["ttft_p50"] - theirs["ttft_p50"], mine["ttft_p99"] - theirs["ttft_p99"]


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if abs(value) < 100 else f"{value:+.0f}"


def _sat(data: dict, path: str) -> tuple[str, str]:
    run = median_run(data["cells"], path, SAT)
    if run is None:
        return "–", "–"
    cpu = run.get("cpu_ms_per_req")
    return f"{run['rps']:.0f}", (f"{cpu:.1f}" if cpu is not None else "–")


def _failures(data: dict, path: str) -> int:
    return sum(c["requests"] - c["ok"] for c in data["cells"] if c["path"] == path)


def rows(data: dict) -> list[str]:
    return [p for p in data["paths"] if p in data["baseline"] and any(c["path"] == p for c in data["cells"])]


def render(data: dict) -> str:
    meta = data.get("meta", {})
    machine = meta.get("machine", {})
    stream = data["stream"]
    lines = [
        "# Clutch beside its peers (bench/peer_table.py)",
        "",
        f"Run {meta.get('started', '?')}, {data['reps']} rep(s) per cell, paths interleaved; Clutch at "
        f"{meta.get('code', {}).get('commit', '?')}. Machine: {machine.get('cores')} cores "
        f"({machine.get('cpu', '?')}), load average before {meta.get('loadavg_before')} and after "
        f"{meta.get('loadavg_after')}. Fake provider: {stream['first_token_s'] * 1000:.0f} ms to the first "
        f"token, {stream['tokens']} tokens one SSE event each at up to "
        f"{1 / stream['token_delay_s']:.0f} tok/s, usage at the end; saturation without pauses.",
        "",
        "Added time to first token over direct (same client protocol), ms, p50 / p99 of the median run; "
        "saturated req/s and the gateway's CPU ms per request at c=16 (2 KB, no pauses); peak RSS MB "
        "(process group).",
        "",
        "| target | " + " | ".join(LAT) + " | req/s sat16 | CPU ms/req | peak RSS MB |",
        "|---|" + "---|" * (len(LAT) + 3),
    ]
    for path in rows(data):
        cells = []
        for load in LAT:
            d = added(data, path, load)
            cells.append(f"{_fmt(d[0])} / {_fmt(d[1])}" if d else "–")
        rps, cpu = _sat(data, path)
        rss = data["peak_rss_mb"].get(path)
        rss_text = f"{rss:.0f}" if rss else "–"
        lines.append(f"| {LABELS[path]} | " + " | ".join(cells) + f" | {rps} | {cpu} | {rss_text} |")
    lines += ["", "Direct baselines (absolute TTFT p50 ms of the median run; req/s at saturation):", "",
              "| baseline | " + " | ".join(LAT) + " | req/s sat16 |", "|---|" + "---|" * (len(LAT) + 1)]
    for path in ("direct", "direct-http", "direct-anthropic"):
        runs = [median_run(data["cells"], path, load) for load in LAT]
        rps, _ = _sat(data, path)
        lines.append(f"| {LABELS[path]} | " + " | ".join(f"{r['ttft_p50']:.1f}" if r else "–" for r in runs)
                     + f" | {rps} |")
    spreads = []
    for path in rows(data):
        for load in LAT:
            reps = [c["ttft_p50"] for c in data["cells"] if c["path"] == path and c["load"] == load and c["ok"]]
            if len(reps) > 1:
                spreads.append(f"{path} {load} {min(reps):.1f}–{max(reps):.1f}")
    if spreads:
        lines += ["", "TTFT p50 over the reps (min–max, ms): " + "; ".join(spreads) + "."]
    failed = {p: _failures(data, p) for p in data["paths"] if _failures(data, p)}
    if failed:
        lines += ["", "Failed requests: " + ", ".join(f"{p} {n}" for p, n in failed.items())
                  + " (first errors in the raw JSON)."]
    for name, reason in data.get("skipped", {}).items():
        lines += ["", f"{name} was not measured: {reason}"]
    lines += ["", "Versions: " + ", ".join(data["versions"].values()) + f"; mitmproxy "
              f"{machine.get('mitmproxy', '?')}, Python {machine.get('python', '?')}."]
    return "\n".join(lines) + "\n"


def text_table(data: dict) -> str:
    """The same verdicts in 80 columns: added TTFT p50 per load, sat16 req/s, CPU ms/req."""
    head = f"{'added TTFT p50 ms':18}" + "".join(f"{load:>9}" for load in LAT) + f"{'req/s':>7}{'CPU':>6}{'RSS':>6}"
    lines = [head, "-" * len(head)]
    for path in rows(data):
        cells = "".join(f"{_fmt(d[0]) if (d := added(data, path, load)) else '–':>9}" for load in LAT)
        rps, cpu = _sat(data, path)
        rss = data["peak_rss_mb"].get(path)
        lines.append(f"{path:18}{cells}{rps:>7}{cpu:>6}{(f'{rss:.0f}' if rss else '–'):>6}")
    lines.append("(peers, clutch-base-url: plain HTTP client leg; mitmdump, clutch: TLS)")
    loadavg = data.get("meta", {}).get("loadavg_before")
    if loadavg:
        lines.append(f"load average before the run: {loadavg}")
    for name, reason in data.get("skipped", {}).items():
        lines.append(f"{name} skipped: {reason[:60]}")
    return "\n".join(lines)
