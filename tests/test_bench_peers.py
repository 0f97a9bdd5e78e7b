"""The peer benchmark's report (bench/peer_report.py) and py-spy summary (bench/spy.py): each path is
compared with the direct path of its own client protocol, the terminal table fits 80 columns, and
threads that only wait are not counted as busy CPU."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import peer_report  # noqa: E402
import spy  # noqa: E402

LOADS = [*peer_report.LAT, peer_report.SAT]


def cell(path: str, load: str, ttft: float, rep: int = 0, rps: float = 10.0) -> dict:
    return {"path": path, "load": load, "requests": 10, "ok": 10, "rps": rps, "ttft_p50": ttft,
            "ttft_p99": ttft * 2, "cpu_ms_per_req": 2.5, "rep": rep}


def data() -> dict:
    base = {"direct": 50.0, "direct-http": 40.0, "direct-anthropic": 30.0}
    cells = [cell(p, load, t) for p, t in base.items() for load in LOADS]
    cells += [cell("clutch", load, 50.0 + 5 + rep, rep, rps=100 + rep) for load in LOADS for rep in range(3)]
    cells += [cell("ccr", load, 30.0 + 4, 0) for load in LOADS]
    cells += [cell("clutch-base-url", load, 40.0 + 3, 0) for load in LOADS]
    return {"paths": ["direct", "direct-http", "direct-anthropic", "clutch", "clutch-base-url", "ccr"],
            "cells": cells, "peak_rss_mb": {"clutch": 212.4},
            "baseline": {"clutch": "direct", "clutch-base-url": "direct-http", "ccr": "direct-anthropic"},
            "skipped": {"litellm": "RuntimeError: pip could not reach the index"}, "reps": 3,
            "versions": {"ccr": "claude-code-router 2.0.0"}, "stream": {"tokens": 200, "first_token_s": 0.05,
                                                                        "token_delay_s": 0.002},
            "meta": {"loadavg_before": [0.5, 0.4, 0.3]}}


def test_each_path_is_compared_with_the_direct_path_of_its_protocol():
    d = data()
    assert peer_report.added(d, "clutch", "c1-2k") == (6.0, 12.0)  # median rep (56, p99 112) minus direct (50, 100)
    assert peer_report.added(d, "ccr", "c16-200k") == (4.0, 8.0)  # against direct-anthropic, not direct
    assert peer_report.added(d, "clutch-base-url", "c1-200k") == (3.0, 6.0)  # plain HTTP in: against direct-http
    assert peer_report.median_run(d["cells"], "clutch", "sat16-2k")["rps"] == 101


def test_tables_name_the_skipped_peer_and_fit_80_columns():
    d = data()
    text = peer_report.text_table(d)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "litellm skipped: RuntimeError" in text and "+6.0" in text
    markdown = peer_report.render(d)
    assert "| Clutch, default rules (TLS both legs) | +6.0 / +12.0 |" in markdown
    assert "| Clutch, base-URL entry (HTTP in, TLS out) | +3.0 / +6.0 |" in markdown
    assert "litellm was not measured: RuntimeError: pip could not reach the index" in markdown


def test_pyspy_summary_leaves_out_waiting_threads(tmp_path):
    stacks = tmp_path / "stacks.txt"
    stacks.write_text(
        "_bootstrap (/lib/python3.12/threading.py:1030);_worker (/lib/python3.12/concurrent/futures/thread.py:90) 900\n"
        "run_forever (/lib/python3.12/asyncio/base_events.py:641);select (/lib/python3.12/selectors.py:468) 50\n"
        "run_forever (/lib/python3.12/asyncio/base_events.py:641);feed (/x/addons/wire/sse.py:40) 30\n"
        "run_forever (/lib/python3.12/asyncio/base_events.py:641);write (/v/site-packages/aiohttp/streams.py:9) 70\n")
    report = spy.summarise(stacks, 5, "t")
    assert "100 busy samples" in report and "950 more, left out" in report
    assert "| addons/wire | 30.0% |" in report and "| aiohttp | 70.0% |" in report
    assert "_worker" not in report
