#!/usr/bin/env python
"""Compression benchmark: Clutch's cache_safe and max modes against Headroom's token and cache
modes, on the dev corpus, in one run. Prints markdown tables and writes them to
bench/results/compression.md (raw numbers in bench/results/compression.json).

    .venv/bin/python bench/compression.py                  # everything, Headroom included (~15 min)
    .venv/bin/python bench/compression.py --no-headroom    # Clutch only (under a minute)

Per corpus source and method:
  * token saving over the `messages` (o200k_base): the median of
    the per-request savings and the total (sum before - sum after) / sum before;
  * time per request: Clutch's in-process compression plus serialisation (what the addon adds);
    Headroom's added proxy latency (proxied minus direct round trip, bench/headroom_side.py);
  * the must-keep checks of tests/mustkeep.py: requests passing all of them, error lines kept,
    failing-test ids kept, fresh reads verbatim, file paths kept.
And over session replays (every turn of each session's deepest request, the last 60, in order):
  * rewrite turns: turns whose forwarded messages are not the previous turn's plus the new ones;
  * the session cost at each provider's cache prices (bench/cache_cost.py: Anthropic's explicit
    breakpoints, OpenAI's automatic caching, OpenRouter's per-model rules; also at Anthropic's with
    Clutch's breakpoints, modelled, and at the research's P3), against the uncompressed session;
  * compression time per turn, with a progress line and the machine's load average.
Then the issue's goals (stdout, 80 columns): no must-keep finding of the strict checker in any mode,
over the requests and every replayed turn; `cache_safe`'s cost saving on Claude Code against
Headroom token mode's (>= 2x); for the agents that mark no breakpoints, the saving of Clutch's
breakpoints alone (`clutch off`) at Anthropic's prices (>= 40 %) with every turn's prompt, markers
aside, extending the previous one's; p99 per turn <= 20 ms. Without Headroom (--no-headroom), its replay
rows are the last recorded ones (bench/results/compression.json), compared at P3 and so marked.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from cache_cost import WITH_BREAKPOINTS, measure_replays, percentile  # noqa: E402
from harness import deepest_per_session, session_turns  # noqa: E402
from mustkeep import check  # noqa: E402

from addons.compression import (
    history,  # noqa: E402
    tool_outputs,  # noqa: E402
)
from addons.compression import policy as compression  # noqa: E402
from addons.compression.history import RewriteGate  # noqa: E402
from addons.compression.policy import Mode, Settings, compress_request  # noqa: E402
from addons.wire import tokens  # noqa: E402
from addons.wire.dialects import Dialect  # noqa: E402

SHARED = Path(os.environ.get("CLUTCH_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "bench" / "results"
MAX_TURNS = 60
# the corpus's agents that mark no prompt-cache breakpoint of their own
UNMARKED_SOURCES = ("mini-swe-agent", "swe-agent")
# method, mode, rewrites; the requests are measured once per mode
CLUTCH_RUNS = (("clutch off", Mode.OFF, "always"), ("clutch cache_safe", Mode.CACHE_SAFE, "always"),
               ("clutch max", Mode.MAX, "always"), ("clutch max when_worth_it", Mode.MAX, "when_worth_it"))


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def progress_line(text: str) -> None:
    """One line that rewrites itself (a terminal), within 80 columns."""
    print(f"\r{text[:79]:<79}", end="", file=sys.stderr, flush=True)


def load() -> str:
    """How busy the shared machine was: the 1-minute load average against the cores."""
    return f"{os.getloadavg()[0]:.2f}"


def load_corpus(folder: Path) -> list[dict]:
    records = []
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        record["meta"]["id"] = path.stem
        records.append(record)
    return records


def dialect(fmt: str) -> Dialect:
    return Dialect.ANTHROPIC if fmt == "anthropic" else Dialect.OPENAI_CHAT


def message_tokens(fmt: str, body: dict) -> int:
    return tokens.request_tokens(dialect(fmt), {"messages": body.get("messages") or []})


# ---------------------------------------------------------------- running the methods

def fresh_caches() -> None:
    """Each method starts as a new gateway would: nothing shrunk or counted yet."""
    compression._shrunk.clear()
    tokens._cache.clear()
    tokens.encoding()  # the gateway builds the vocabulary at start-up, not on the first request


def run_clutch(records: list[dict], mode: Mode) -> list[dict]:
    """Every request through compress_request in session order, as the gateway would see them."""
    settings = Settings(mode=mode)
    fresh_caches()
    rows = []
    for record in records:
        started = time.perf_counter()
        outcome = compress_request(dialect(record["format"]), record["body"], settings)
        if outcome.changed:
            json.dumps(outcome.body, ensure_ascii=False, separators=(",", ":")).encode()
        elapsed = (time.perf_counter() - started) * 1000
        rows.append({"record": record, "forwarded": outcome.body, "ms": elapsed})
    return rows


def replay_clutch(records: list[dict], mode: Mode, rewrites: str = "always"
                  ) -> tuple[list[list[tuple[dict, dict]]], list[float]]:
    """Every turn of each session in order, as a live session reaches the gateway: each turn is the
    last one plus the new messages, so only the new outputs are seen for the first time. The turns
    come back to back, so for `rewrites` the provider's cache is always warm after the first."""
    settings = Settings(mode=mode)
    sessions, times = [], []
    fresh_caches()
    deepest = deepest_per_session(records)
    for done, record in enumerate(deepest):
        session = []
        gate = None if rewrites == "always" else RewriteGate(rewrites)
        progress_line(f"{mode} {rewrites}: session {done + 1}/{len(deepest)}, {len(times)} turns, "
                      f"p99 so far {percentile(times, 99):.1f} ms")
        for turn in session_turns(record)[-MAX_TURNS:]:
            started = time.perf_counter()
            outcome = compress_request(dialect(record["format"]), turn, settings, gate)
            if outcome.changed:
                json.dumps(outcome.body, ensure_ascii=False, separators=(",", ":")).encode()
            times.append((time.perf_counter() - started) * 1000)
            session.append((turn, outcome.body))
        sessions.append(session)
    return sessions, times


def run_headroom(corpus: Path, workload: str, modes: str, out: Path, reuse: bool = False) -> list[dict]:
    if reuse and out.exists():
        progress(f"headroom: reusing {out}")
        return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    command = [sys.executable, str(ROOT / "bench" / "headroom_side.py"), "--corpus", str(corpus),
               "--workload", workload, "--modes", modes, "--out", str(out)]
    if workload == "replay":
        command += ["--max-turns-per-session", str(MAX_TURNS)]
    progress(f"headroom: {' '.join(command[1:])}")
    subprocess.run(command, check=True)
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- measuring

def measure_requests(method: str, rows: list[dict]) -> dict[str, dict]:
    """Per source (and ALL): savings, time and must-keep results."""
    groups: dict[str, list[dict]] = collections.defaultdict(list)
    for row in rows:
        record = row["record"]
        before = message_tokens(record["format"], record["body"])
        after = message_tokens(record["format"], row["forwarded"])
        report = check(record["format"], record["body"], row["forwarded"])
        measured = {"before": before, "after": after, "ms": row["ms"], "report": report}
        groups[record["meta"]["source"]].append(measured)
        groups["ALL"].append(measured)
    summary = {}
    for source, items in groups.items():
        before = sum(i["before"] for i in items)
        after = sum(i["after"] for i in items)
        reports = [i["report"] for i in items]

        def share(kept: str, total: str) -> float:
            whole = sum(getattr(r, total) for r in reports)
            return 100.0 * sum(getattr(r, kept) for r in reports) / whole if whole else 100.0
        summary[source] = {
            "method": method, "n": len(items), "tokens_before": before, "tokens_after": after,
            "median_saving": statistics.median(100.0 * (i["before"] - i["after"]) / i["before"] for i in items),
            "total_saving": 100.0 * (before - after) / before,
            "p50_ms": percentile([i["ms"] for i in items], 50), "p99_ms": percentile([i["ms"] for i in items], 99),
            "mustkeep_ok": sum(r.ok for r in reports), "errors_kept": share("error_lines_kept", "error_lines"),
            "tests_kept": share("test_ids_kept", "test_ids"), "fresh_verbatim": share("fresh_reads_verbatim", "fresh_reads"),
            "paths_kept": share("paths_kept", "paths"),
            "findings": collections.Counter(f.check for r in reports for f in r.findings),
        }
    return summary


def ceilings(records: list[dict]) -> dict[str, dict[str, float]]:
    """The most each mode could save if it deleted, outright, every tool output it may touch:
    `cache_safe` all but file reads, `max` also the reads later messages made stale or superseded.
    Per source and ALL, as % of message tokens."""
    totals: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for record in records:
        d = dialect(record["format"])
        outputs = tool_outputs.find_outputs(d, record["body"]) or []
        verdicts = history.history_verdicts(d, record["body"], outputs)
        safe = sum(tokens.count_text(o.text) for o in outputs if o.read_of is None)
        most = safe + sum(tokens.count_text(o.text) for o in outputs if o.read_of is not None and o.path in verdicts)
        for key in (record["meta"]["source"], "ALL"):
            row = totals[key]
            row[0] += message_tokens(record["format"], record["body"])
            row[1] += safe
            row[2] += most
    return {key: {"cache_safe": 100.0 * row[1] / row[0], "max": 100.0 * row[2] / row[0]} for key, row in totals.items()}


# ---------------------------------------------------------------- reporting

def request_table(summaries: list[dict[str, dict]]) -> str:
    lines = ["| source | method | n | tokens before | median saving % | total saving % | p50 ms | p99 ms | "
             "must-keep ok | errors kept % | failing tests kept % | fresh reads verbatim % | paths kept % |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    sources = sorted({s for summary in summaries for s in summary}, key=lambda s: (s == "ALL", s))
    for source in sources:
        for summary in summaries:
            row = summary.get(source)
            if row is None:
                continue
            lines.append(f"| {source} | {row['method']} | {row['n']} | {row['tokens_before']:,} | "
                         f"{row['median_saving']:.1f} | {row['total_saving']:.1f} | {row['p50_ms']:.1f} | "
                         f"{row['p99_ms']:.1f} | {row['mustkeep_ok']}/{row['n']} | {row['errors_kept']:.1f} | "
                         f"{row['tests_kept']:.1f} | {row['fresh_verbatim']:.1f} | {row['paths_kept']:.1f} |")
    return "\n".join(lines)


def replay_table(rows: list[dict]) -> str:
    """Per source and method: rewrites, token saving and the cost saving at each provider's prices."""
    names = list(rows[0]["cost_savings"]) if rows else []
    lines = ["| source | method | sessions | turns | rewrite turns | token saving % | "
             + " | ".join(f"{n} %" for n in names) + " | $ before / after (anthropic) |",
             "|---" * (7 + len(names)) + "|"]
    for row in sorted(rows, key=lambda r: (r["source"] == "ALL", r["source"])):
        costs = row.get("cost_savings") or {"P3": row["cost_saving"]}  # a recorded row has only P3
        dollars = f"{row['usd_before']:.2f} / {row['usd_after']:.2f}" if "usd_before" in row else "not recorded"
        lines.append(f"| {row['source']} | {row['method']} | {row['sessions']} | {row['turns']} | "
                     f"{row['rewrite_turns']} | {row['token_saving']:.1f} | " + " | ".join(
                         f"{costs[n]:.1f}" if n in costs else "–" for n in names) + f" | {dollars} |")
    return "\n".join(lines)


def goals(replays: list[dict], mustkeep: dict[str, list[int]], busy: str, recorded: bool) -> str:
    """The issue's goals, measured: lines of at most 80 columns."""
    out = [f"machine: {busy}", "must-keep (strict checker), findings:"]
    for method, (requests, turns, findings) in mustkeep.items():
        verdict = "PASS" if findings == 0 else "FAIL"
        out.append(f"  {method}: {findings} in {requests} requests + {turns} turns: {verdict}")
    row = {(r["method"], r["source"]): r for r in replays}
    ours = row.get(("clutch cache_safe", "claude-code"))
    theirs = row.get(("headroom token", "claude-code")) or row.get(("headroom token (recorded)", "claude-code"))
    if ours and theirs:
        price = "anthropic" if "cost_savings" in theirs else "P3"  # rows recorded before the table: P3
        mine = ours["cost_savings"][price]
        other = theirs["cost_savings"][price] if price != "P3" else theirs["cost_saving"]
        ratio = mine / other if other > 0 else float("inf")
        out.append(f"cache_safe on Claude Code, at {price} prices: cost saving {mine:.1f} %")
        out.append(f"  vs Headroom token {other:.1f} %{' (recorded)' if recorded else ''}: "
                   f"{ratio:.2f}x (goal >= 2x): {'PASS' if ratio >= 2 else 'FAIL'}")
    out.append("no breakpoints of their own, with Clutch's, at anthropic prices")
    out.append("  (goal: cost saving >= 40 % from caching alone, prefix kept):")
    for source in UNMARKED_SOURCES:
        off = row.get(("clutch off", source))
        if off:
            saving, rewrites = off["cost_savings"][WITH_BREAKPOINTS], off["bp_rewrite_turns"]
            verdict = "PASS" if saving >= 40 and rewrites == 0 else "FAIL"
            out.append(f"  {source}: {saving:.1f} %, {off['turns']} turns, {rewrites} with the "
                       f"prefix changed: {verdict}")
    out.append("ms per turn, p50 / p99 (goal: p99 <= 20 ms):")
    for r in replays:
        if r["source"] == "ALL" and r["method"].startswith("clutch"):
            verdict = "PASS" if r["p99_ms"] <= 20 else "FAIL"
            out.append(f"  {r['method']}: {r['p50_ms']:.1f} / {r['p99_ms']:.1f} ({r['timed_turns']} turns): {verdict}")
    return "\n".join(line[:80] for line in out)


def run_clutch_methods(records: list[dict]) -> tuple[list[dict], list[dict], dict[str, list[int]]]:
    """Every Clutch method over the requests and the session replays; the must-keep findings of the
    strict checker over both (requests, turns, findings) per method."""
    request_summaries, replays, mustkeep = [], [], {}
    sources = {i: r["meta"]["source"] for i, r in enumerate(deepest_per_session(records))}
    for method, mode, rewrites in CLUTCH_RUNS:
        found = [0, 0, 0]
        if rewrites == "always":
            progress(f"{method}: {len(records)} requests")
            request_summaries.append(summary := measure_requests(method, run_clutch(records, mode)))
            found[0], found[2] = summary["ALL"]["n"], sum(summary["ALL"]["findings"].values())
        sessions, times = replay_clutch(records, mode, rewrites)
        progress("")
        replays += measure_replays(method, sessions, times, sources)
        for session in sessions:
            for sent, forwarded in session:
                found[1] += 1
                found[2] += len(check("anthropic" if "max_tokens" in sent else "openai", sent, forwarded).findings)
        mustkeep[method] = found
    return request_summaries, replays, mustkeep


def recorded_headroom() -> list[dict]:
    """Headroom's replay rows of the last recorded full run, for a run without Headroom."""
    path = RESULTS / "compression.json"
    rows = json.loads(path.read_text())["replays"] if path.exists() else []
    return [{**r, "method": f"{r['method']} (recorded)"} for r in rows if r["method"].startswith("headroom")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=SHARED / "corpus" / "dev")
    parser.add_argument("--no-headroom", dest="headroom", action="store_false", help="Clutch's modes only")
    parser.add_argument("--work", type=Path, default=RESULTS / "raw", help="where Headroom's raw rows go")
    parser.add_argument("--reuse-headroom", action="store_true",
                        help="measure the Headroom rows of the last run in --work instead of running Headroom again")
    args = parser.parse_args()
    records = load_corpus(args.corpus)
    if not records:
        print(f"no corpus under {args.corpus} (set CLUTCH_SHARED)", file=sys.stderr)
        return 2
    by_id = {r["meta"]["id"]: r for r in records}
    busy_before = load()
    request_summaries, replays, mustkeep = run_clutch_methods(records)
    busy = f"load {busy_before} before, {load()} after (1 min average, {os.cpu_count()} cores)"
    if args.headroom:
        args.work.mkdir(parents=True, exist_ok=True)
        rows = run_headroom(args.corpus, "requests", "token,cache", args.work / "headroom-requests.jsonl",
                            args.reuse_headroom)
        for mode in ("token", "cache"):
            mine = [{"record": by_id[r["id"]], "forwarded": r["forwarded"], "ms": r["added_ms"]}
                    for r in rows if r["mode"] == mode and r.get("forwarded") is not None]
            request_summaries.append(measure_requests(f"headroom {mode}", mine))
        replay_rows = run_headroom(args.corpus, "replay", "token,cache", args.work / "headroom-replay.jsonl",
                                   args.reuse_headroom)
        for mode in ("token", "cache"):
            sessions: dict[str, list[tuple[dict, dict]]] = collections.defaultdict(list)
            source_of: dict[str, str] = {}
            times = []
            for r in replay_rows:
                if r["mode"] == mode and r.get("forwarded") is not None:
                    sessions[r["session"]].append((r["sent"], r["forwarded"]))
                    source_of[r["session"]] = r["source"]
                    times.append(r["added_ms"])
            names = list(sessions)
            replays += measure_replays(f"headroom {mode}", [sessions[n] for n in names], times,
                                       {i: source_of[n] for i, n in enumerate(names)})
    else:
        replays += recorded_headroom()
    summary = goals(replays, mustkeep, busy, recorded=not args.headroom)
    limits = ceilings(records)
    ceiling_table = "\n".join(["| source | cache_safe ceiling % | max ceiling % |", "|---|---|---|"] + [
        f"| {key} | {row['cache_safe']:.1f} | {row['max']:.1f} |"
        for key, row in sorted(limits.items(), key=lambda kv: (kv[0] == "ALL", kv[0]))])
    report = ("## Requests (dev corpus, savings over message tokens)\n\n" + request_table(request_summaries)
              + "\n\n## Session replays (cost at each provider's cache prices)\n\n" + replay_table(replays)
              + "\n\n## Ceilings: every tool output a mode may touch deleted outright\n\n" + ceiling_table
              + "\n\n## Goals\n\n```\n" + summary + "\n```\n")
    print(summary)
    # a run without Headroom must not replace the comparison the README quotes
    out = RESULTS if args.headroom else args.work
    out.mkdir(parents=True, exist_ok=True)
    name = "compression" if args.headroom else "compression-no-headroom"
    (out / f"{name}.md").write_text(report)
    (out / f"{name}.json").write_text(json.dumps(
        {"requests": request_summaries, "replays": replays, "ceilings": limits, "mustkeep": mustkeep,
         "load": busy}, indent=1, default=lambda o: dict(o)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
