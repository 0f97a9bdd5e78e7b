#!/usr/bin/env python
"""The first request after start: how long a fresh gateway takes to answer it, against the second and
third, through Clutch and bare mitmdump, median over several starts.

    .venv/bin/python bench/first_request.py                     # 7 starts per path
    .venv/bin/python bench/first_request.py --before /tmp/old   # also a checkout of older code, interleaved
    .venv/bin/python bench/first_request.py --after listening   # the first request on the listening line

Each start: the proxy is launched, the first request leaves the moment the gateway is ready (`--after
health`, the default: GET /health answers, which is what `xx` waits for before it starts an agent; bare
mitmdump has no such signal, so its first request leaves on its listening line) or the moment its log
says it listens (`--after listening`: earlier than any agent `xx` starts), then two more follow, each on a new connection (CONNECT + TLS every time, as an agent's first request pays), c=1,
streaming 2 KB chat requests to the fake provider (bench/run.py's). A gateway that builds something
heavy on its first request, or in a thread that holds the GIL while that request is served, shows as
a first request much slower than the second. Columns: start -> listening, start -> first answer ended,
and time to first token of requests 1-3 (ms, medians); "1st / 2nd" is the median of each start's ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pki import make_test_pki  # noqa: E402
from run import (  # noqa: E402
    ANTHROPIC_HOST,
    HOST,
    MITMDUMP,
    Proc,
    Target,
    client_ssl,
    loadavg,
    one_request,
    proxy_args,
    small_body,
    start_fake,
)

MARKER = "HTTP(S) proxy listening at 127.0.0.1:"


def launch(path: str, before: Path | None, workdir: Path, fake_port: int, test_ca: Path) -> Proc:
    args = proxy_args("mitmdump" if path == "mitmdump" else "clutch", workdir / "confdir", fake_port, test_ca)
    if path == "clutch-before" and before is not None:
        args[1] = str(before / "addons" / "clutch.py")  # ["-s", script, ...]
    return Proc(path, [MITMDUMP, *args], workdir, env={"ANTHROPIC_API_KEY": "sk-ant-api03-bench"})


def listening_port(proc: Proc, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = proc.output()
        if MARKER in text:
            return int(text.split(MARKER, 1)[1].split(".", 1)[0])
        if proc.process.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.process.returncode}:\n{text}")
        time.sleep(0.002)  # a poll of the proxy's log; 2 ms is the resolution of "start -> listening"
    raise TimeoutError(f"{proc.name} did not start:\n{proc.output()}")


async def wait_health(session, port: int, proc: Proc, timeout: float = 60) -> None:
    """Until GET /health on the proxy port answers 200, as `xx` waits before it starts an agent."""
    import aiohttp

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(f"http://127.0.0.1:{port}/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if proc.process.poll() is not None:
            break
        await asyncio.sleep(0.002)  # the resolution of "ready", as listening_port's poll
    raise TimeoutError(f"{proc.name}: /health did not answer:\n{proc.output()[-2000:]}")


async def one_start(path: str, before: Path | None, workdir: Path, fake_port: int, test_ca: Path,
                    body: bytes, requests: int, settle: float = 0.0, after: str = "health") -> dict:
    import aiohttp

    started = time.perf_counter()
    proc = launch(path, before, workdir, fake_port, test_ca)
    try:
        port = listening_port(proc)
        listening = time.perf_counter()
        if after == "health" and path != "mitmdump":
            async with aiohttp.ClientSession(trust_env=False) as session:
                await wait_health(session, port, proc)
        ready = time.perf_counter()
        if settle:
            await asyncio.sleep(settle)  # --settle: tells start-up work still running apart from first-use costs
        target = Target(path, fake_port, port, workdir / "confdir" / "mitmproxy-ca-cert.pem", proc)
        ttft, first_done = [], None
        for _ in range(requests):
            connector = aiohttp.TCPConnector(limit=1, ssl=client_ssl(test_ca, target.proxy_ca), force_close=True)
            async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
                sample = await one_request(session, target, body)
            if not sample.ok:
                raise RuntimeError(f"{path}: {sample.error}\n{proc.output()[-2000:]}")
            first_done = first_done or time.perf_counter()
            ttft.append(sample.ttft)
        return {"listening_ms": (listening - started) * 1000, "ready_ms": (ready - started) * 1000,
                "first_answer_ms": (first_done - started) * 1000,
                "ttft": ttft, "rss_mb": proc.status_kb("VmRSS") / 1024}
    finally:
        proc.stop()


async def bench(args, workdir: Path) -> dict[str, list[dict]]:
    pki = make_test_pki(workdir / "pki", [HOST, ANTHROPIC_HOST])
    fake, fake_port = start_fake(workdir / "fake", pki, args.chunk_delay, [])
    paths = ["mitmdump", "clutch"] + (["clutch-before"] if args.before else [])
    runs: dict[str, list[dict]] = {path: [] for path in paths}
    try:
        for rep in range(args.starts):
            for path in paths:  # interleaved: the machine's state changes alike for every path
                run = await one_start(path, args.before, workdir / f"{path}-{rep}", fake_port, pki.ca_cert,
                                      small_body(), args.requests, args.settle, args.after)
                runs[path].append(run)
                print(f"start {rep + 1}/{args.starts} {path:13} listening {run['listening_ms']:6.0f} ms, "
                      f"TTFT " + " / ".join(f"{t:.1f}" for t in run["ttft"]) + " ms", file=sys.stderr)
    finally:
        fake.stop()
    return runs


def report(runs: dict[str, list[dict]]) -> str:
    lines = ["| path | start -> listening | start -> ready | start -> 1st answer | TTFT 1st | TTFT 2nd | TTFT 3rd "
             "| 1st / 2nd | RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    for path, rows in runs.items():
        med = statistics.median
        ttft = [med(row["ttft"][i] for row in rows) for i in range(len(rows[0]["ttft"]))]
        ratio = med(row["ttft"][0] / row["ttft"][1] for row in rows)
        lines.append(f"| {path} | {med(r['listening_ms'] for r in rows):.0f} ms | "
                     f"{med(r['ready_ms'] for r in rows):.0f} ms | "
                     f"{med(r['first_answer_ms'] for r in rows):.0f} ms | "
                     + " | ".join(f"{t:.1f} ms" for t in (ttft + [float('nan')] * 3)[:3])
                     + f" | {ratio:.2f}x | {med(r['rss_mb'] for r in rows):.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=7, help="starts per path (median over them)")
    parser.add_argument("--requests", type=int, default=3, help="requests per start (at least 2)")
    parser.add_argument("--chunk-delay", type=float, default=0.005, help="fake's delay between chunks, s")
    parser.add_argument("--after", choices=["health", "listening"], default="health",
                        help="the first request leaves when /health answers (as xx waits) or on the listening line")
    parser.add_argument("--settle", type=float, default=0.0, help="wait this long after that, s")
    parser.add_argument("--before", type=Path, help="a checkout of other code to run as clutch-before")
    args = parser.parse_args()
    args.requests = max(args.requests, 2)
    workdir = Path(tempfile.mkdtemp(prefix="clutch-first-"))
    load_before = loadavg()
    try:
        runs = asyncio.run(bench(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report(runs))
    print(f"\nfirst request after: {args.after}" + (f" + {args.settle} s" if args.settle else ""))
    print(f"\nload average before {load_before}, after {loadavg()} ({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
