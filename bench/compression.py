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
  * cost saving at Anthropic's cache prices: a turn costs 0.1 x the tokens of the
    prefix byte-equal to the previous forwarded request (a cache read) + 1.25 x the rest (a cache
    write), against the same sum for the uncompressed session.
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
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from addons.compression import policy as compression

from addons.wire import tokens

from addons.compression import tool_outputs  # noqa: E402
from addons.compression.policy import Mode, RewriteGate, Settings, compress_request  # noqa: E402
from addons.wire.dialects import Dialect  # noqa: E402
from harness import deepest_per_session, session_turns  # noqa: E402
from mustkeep import check  # noqa: E402

SHARED = Path(os.environ.get("CLUTCH_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "bench" / "results"
MAX_TURNS = 60
CLUTCH_METHODS = {"clutch cache_safe": Mode.CACHE_SAFE, "clutch max": Mode.MAX}


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


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
    for record in deepest_per_session(records):
        session = []
        gate = None if rewrites == "always" else RewriteGate(rewrites)
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

def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


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


def _without_cache_control(node):
    """`cache_control` markers are ignored: moving a cache breakpoint changes where the cache is written,
    not the prompt, so it does not invalidate the cache."""
    if isinstance(node, dict):
        return {k: _without_cache_control(v) for k, v in node.items() if k != "cache_control"}
    if isinstance(node, list):
        return [_without_cache_control(v) for v in node]
    return node


def _message_bytes(body: dict) -> list[str]:
    return [json.dumps(_without_cache_control(m), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
            for m in body.get("messages", [])]


def measure_replay(method: str, sessions: list[list[tuple[dict, dict]]], times: list[float],
                   source: str = "ALL") -> dict:
    """Token saving over every turn, rewrite turns and the P3-priced cost of the replayed sessions."""
    rewrite_turns = turns_total = 0
    cost_raw = cost_compressed = 0.0
    tokens_raw = tokens_compressed = 0
    per_session = []
    for session in sessions:
        previous: list[str] | None = None
        previous_raw: list[str] | None = None
        raw_cost = compressed_cost = 0.0
        for sent, forwarded in session:
            fmt = "anthropic" if "max_tokens" in sent else "openai"
            raw_cost += _turn_cost(fmt, sent, previous_raw)
            compressed_cost += _turn_cost(fmt, forwarded, previous)
            tokens_raw += _turn_tokens(fmt, sent)
            tokens_compressed += _turn_tokens(fmt, forwarded)
            current = _message_bytes(forwarded)
            if previous is not None:
                turns_total += 1
                rewrite_turns += current[:len(previous)] != previous
            previous, previous_raw = current, _message_bytes(sent)
        per_session.append(100.0 * (1 - compressed_cost / raw_cost) if raw_cost else 0.0)
        cost_raw += raw_cost
        cost_compressed += compressed_cost
    return {"method": method, "source": source, "sessions": len(sessions), "turns": turns_total,
            "rewrite_turns": rewrite_turns,
            "token_saving": 100.0 * (1 - tokens_compressed / tokens_raw) if tokens_raw else 0.0,
            "cost_saving": 100.0 * (1 - cost_compressed / cost_raw) if cost_raw else 0.0,
            "median_session_cost_saving": statistics.median(per_session) if per_session else 0.0,
            "p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99)}


def measure_replays(method: str, sessions: list[list[tuple[dict, dict]]], times: list[float],
                    source_of: dict[int, str]) -> list[dict]:
    """measure_replay over all sessions, then per corpus source."""
    rows = [measure_replay(method, sessions, times)]
    for source in sorted(set(source_of.values())):
        picked = [s for i, s in enumerate(sessions) if source_of[i] == source]
        rows.append(measure_replay(method, picked, [], source))
    return rows


def _turn_tokens(fmt: str, body: dict) -> int:
    return sum(_tokens_of_message(fmt, text, message)
               for text, message in zip(_message_bytes(body), body.get("messages", [])))


_turn_tokens_cache: dict[str, int] = {}


def _tokens_of_message(fmt: str, serialised: str, message: dict) -> int:
    found = _turn_tokens_cache.get(serialised)
    if found is None:
        found = _turn_tokens_cache[serialised] = tokens.request_tokens(dialect(fmt), {"messages": [message]})
    return found


def _turn_cost(fmt: str, body: dict, previous: list[str] | None) -> float:
    messages = body.get("messages", [])
    serialised = _message_bytes(body)
    cached = 0
    if previous is not None:
        while cached < min(len(previous), len(serialised)) and previous[cached] == serialised[cached]:
            cached += 1
    cost = 0.0
    for i, (text, message) in enumerate(zip(serialised, messages)):
        cost += (0.1 if i < cached else 1.25) * _tokens_of_message(fmt, text, message)
    return cost


def ceilings(records: list[dict]) -> dict[str, dict[str, float]]:
    """The most each mode could save if it deleted, outright, every tool output it may touch:
    `cache_safe` all but file reads, `max` also the reads later messages made stale or superseded.
    Per source and ALL, as % of message tokens."""
    totals: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for record in records:
        d = dialect(record["format"])
        outputs = tool_outputs.find_outputs(d, record["body"]) or []
        verdicts = compression.history_verdicts(d, record["body"], outputs)
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
    lines = ["| source | method | sessions | turns | turns with a prefix rewrite | token saving % | cost saving % (P3) | "
             "median session cost saving % | p50 ms per turn | p99 ms per turn |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r["source"] == "ALL", r["source"])):
        lines.append(f"| {row['source']} | {row['method']} | {row['sessions']} | {row['turns']} | {row['rewrite_turns']} | "
                     f"{row['token_saving']:.1f} | {row['cost_saving']:.1f} | {row['median_session_cost_saving']:.1f} | "
                     + (f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} |" if row["source"] == "ALL" else " | |"))
    return "\n".join(lines)


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
    request_summaries, replays = [], []
    for method, mode in CLUTCH_METHODS.items():
        progress(f"{method}: {len(records)} requests")
        request_summaries.append(measure_requests(method, run_clutch(records, mode)))
        progress(f"{method}: session replays")
        sessions, times = replay_clutch(records, mode)
        sources = {i: r["meta"]["source"] for i, r in enumerate(deepest_per_session(records))}
        replays += measure_replays(method, sessions, times, sources)
    progress("clutch max, rewrites when_worth_it: session replays")
    sessions, times = replay_clutch(records, Mode.MAX, "when_worth_it")
    sources = {i: r["meta"]["source"] for i, r in enumerate(deepest_per_session(records))}
    replays += measure_replays("clutch max when_worth_it", sessions, times, sources)
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
    limits = ceilings(records)
    ceiling_table = "\n".join(["| source | cache_safe ceiling % | max ceiling % |", "|---|---|---|"] + [
        f"| {key} | {row['cache_safe']:.1f} | {row['max']:.1f} |"
        for key, row in sorted(limits.items(), key=lambda kv: (kv[0] == "ALL", kv[0]))])
    report = ("## Requests (dev corpus, savings over message tokens)\n\n" + request_table(request_summaries)
              + "\n\n## Session replays (cache cost)\n\n" + replay_table(replays)
              + "\n\n## Ceilings: every tool output a mode may touch deleted outright\n\n" + ceiling_table + "\n")
    print(report)
    # a run without Headroom must not replace the comparison the README quotes
    out = RESULTS if args.headroom else args.work
    out.mkdir(parents=True, exist_ok=True)
    name = "compression" if args.headroom else "compression-no-headroom"
    (out / f"{name}.md").write_text(report)
    (out / f"{name}.json").write_text(json.dumps(
        {"requests": request_summaries, "replays": replays, "ceilings": limits}, indent=1, default=lambda o: dict(o)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
