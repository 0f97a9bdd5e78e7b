#!/usr/bin/env python
"""Requests per second of one Clutch replica against two, behind HAProxy (docs/team.md's configuration).

    .venv/bin/python bench/replicas.py             # 3 reps, about 3 minutes on 2 cores
    .venv/bin/python bench/replicas.py --quick     # 1 rep, fewer requests

Three paths to the fake provider, measured in turns (rep by rep, path by path), each a saturated load
(the fake streams its 20 chunks with no delay) from `--concurrency` clients with a keep-alive connection
each, 2 KB bodies, as bench/run.py's sat loads:

  one          client -> replica A -> fake                  (Clutch alone, as the other benchmarks)
  haproxy-one  client -> HAProxy -> replica A -> fake       (what the balancer costs)
  haproxy-two  client -> HAProxy -> replica A or B -> fake  (leastconn over both replicas)

The replicas share one CA folder (provisioned by A's first start) and run on embedded state, so the
figure is the replicas' own: the shared state's cost is bench/run.py's clutch-team path. The client,
the fake and HAProxy run on the same machine and take their share of its cores: on 2 cores, two
replicas cannot reach twice one. Results: bench/results/replicas.md (and the raw JSON beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # noqa: E402
    RESULTS,
    Load,
    Target,
    code_version,
    log,
    machine_info,
    make_test_pki,
    run_cell,
    small_body,
    start_fake,
    start_proxy,
    wait_listening,
)
from haproxy_server import HAProxy, find_haproxy  # noqa: E402

PATHS = ("one", "haproxy-one", "haproxy-two")


async def measure(args, workdir: Path, registry: list, t0: float) -> dict:
    pki = make_test_pki(workdir / "pki", ["openrouter.ai", "api.anthropic.com"])
    fake, fake_port = start_fake(workdir / "fake", pki, 0.0, registry)
    confdir = workdir / "ca"  # one CA for both replicas: A makes it, B starts once it exists
    a = start_proxy("clutch", workdir / "replica-a", confdir, fake_port, pki.ca_cert, registry)
    a_port, ca = wait_listening(a)
    b = start_proxy("clutch", workdir / "replica-b", confdir, fake_port, pki.ca_cert, registry)
    b_port, _ = wait_listening(b)
    binary = find_haproxy()
    if binary is None:
        raise SystemExit("no haproxy: `CLUTCH_INSTALL_SYSTEM=1 ./clutch test` installs it (Debian's package)")
    to_one = HAProxy(workdir / "haproxy-one", [a_port], binary=binary)
    to_two = HAProxy(workdir / "haproxy-two", [a_port, b_port], binary=binary)
    registry += [to_one, to_two]
    targets = {"one": (a_port, [a]), "haproxy-one": (to_one.port, [a]), "haproxy-two": (to_two.port, [a, b])}
    load = Load("sat-2k", "2k", args.concurrency, args.requests, args.concurrency * 2, "zero")
    body = small_body()
    cells = []
    for rep in range(args.reps):
        for path in PATHS:
            port, replicas = targets[path]
            cpu0 = sum(r.cpu_seconds() for r in replicas)
            cell = await run_cell(Target(path, fake_port, port, ca, None), load, body, pki.ca_cert, fake, 0.0)
            cell["replicas_cpu_ms_per_req"] = (sum(r.cpu_seconds() for r in replicas) - cpu0) * 1000 / cell["requests"]
            cell["rep"] = rep
            cells.append(cell)
            failed = f", FAILED {cell['failed']} ({cell['errors'][:1]})" if cell["failed"] else ""
            log(t0, f"rep {rep + 1}/{args.reps} {path:12} {cell['ok']}/{cell['requests']} ok, {cell['rps']:.1f} req/s, "
                    f"TTFB p50 {cell['ttfb_p50']:.1f} ms, replicas' CPU {cell['replicas_cpu_ms_per_req']:.1f} ms/req, "
                    f"machine {cell['machine_busy_cores']:.2f} cores{failed}")
    return {"load": vars(load), "reps": args.reps, "cells": cells}


def summary(result: dict) -> list[dict]:
    rows = []
    for path in PATHS:
        cells = [c for c in result["cells"] if c["path"] == path]
        rows.append({"path": path, "rps": statistics.median(c["rps"] for c in cells),
                     "rps_min": min(c["rps"] for c in cells), "rps_max": max(c["rps"] for c in cells),
                     "ttfb_p50": statistics.median(c["ttfb_p50"] for c in cells),
                     "cpu": statistics.median(c["replicas_cpu_ms_per_req"] for c in cells),
                     "busy": statistics.median(c["machine_busy_cores"] for c in cells),
                     "failed": sum(c["failed"] for c in cells)})
    return rows


def render(result: dict, meta: dict) -> str:
    rows = summary(result)
    base = next(r["rps"] for r in rows if r["path"] == "haproxy-one")
    load = result["load"]
    lines = [
        "# One replica against two, behind HAProxy", "",
        f"`bench/replicas.py`, {meta['when']}, {result['reps']} reps (median; min-max in brackets), "
        f"{load['requests']} requests per cell from {load['concurrency']} clients with a keep-alive connection "
        f"each, 2 KB bodies, 20 chunks streamed with no delay. Machine: {meta['machine']['cores']} cores, "
        f"{meta['machine']['cpu']}; code {meta['code'].get('commit', '?')}.", "",
        "| path | req/s | vs HAProxy to one | TTFB p50 ms | replicas' CPU ms/req | machine busy cores | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['path']} | {r['rps']:.0f} ({r['rps_min']:.0f}-{r['rps_max']:.0f}) | "
                     f"{r['rps'] / base:.2f}x | {r['ttfb_p50']:.1f} | {r['cpu']:.1f} | {r['busy']:.2f} | {r['failed']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 rep, 160 requests per cell")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    args.reps = args.reps or (1 if args.quick else 3)
    args.requests = args.requests or (160 if args.quick else 600)
    t0 = time.monotonic()
    registry: list = []
    with tempfile.TemporaryDirectory(prefix="clutch-replicas-") as folder:
        try:
            result = asyncio.run(measure(args, Path(folder), registry, t0))
        finally:
            for proc in reversed(registry):
                proc.stop()
    meta = {"when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine_info(),
            "code": code_version()}
    text = render(result, meta)
    if not args.quick:
        (RESULTS / "replicas.md").write_text(text)
        (RESULTS / "raw").mkdir(exist_ok=True)
        (RESULTS / "raw" / "replicas.json").write_text(json.dumps({**meta, **result}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
