#!/usr/bin/env python
"""Memory of a real gateway under streaming load, against bare mitmdump: resident set (VmRSS) after every
block of requests and its peak (VmHWM), at 32 concurrent streams, over 10,000 requests.

    .venv/bin/python bench/memory.py                          # 10,000 requests, c=32, 2 KB bodies
    .venv/bin/python bench/memory.py --body 200k --requests 2000
    .venv/bin/python bench/memory.py --before /tmp/old        # also a checkout of older code

Each path gets a fresh proxy (bench/run.py's arguments: as `./clutch start` runs it) and the same fake
provider (20 content chunks, `--chunk-delay` apart, so 32 streams are open at once); the client keeps
32 keep-alive connections. "Flat" means the RSS after the last block is within a few MB of the RSS
after the first: a leak grows with every request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from first_request import launch, listening_port  # noqa: E402
from pki import make_test_pki  # noqa: E402
from run import (  # noqa: E402
    ANTHROPIC_HOST,
    HOST,
    Target,
    client_ssl,
    large_body,
    loadavg,
    run_batch,
    small_body,
    start_fake,
)


async def one_path(path: str, args, workdir: Path, fake_port: int, test_ca: Path, body: bytes) -> dict:
    import aiohttp

    proc = launch(path, args.before, workdir, fake_port, test_ca)
    try:
        port = listening_port(proc)
        target = Target(path, fake_port, port, workdir / "confdir" / "mitmproxy-ca-cert.pem", proc)
        idle = proc.status_kb("VmRSS") / 1024
        samples, failed, done = [], 0, 0
        connector = aiohttp.TCPConnector(limit=args.concurrency, ssl=client_ssl(test_ca, target.proxy_ca))
        started = time.monotonic()
        async with aiohttp.ClientSession(connector=connector, trust_env=False,
                                         timeout=aiohttp.ClientTimeout(total=300)) as session:
            while done < args.requests:
                n = min(args.every, args.requests - done)
                batch = await run_batch(session, target, body, n, args.concurrency)
                done += n
                failed += sum(1 for s in batch if not s.ok)
                samples.append((done, proc.status_kb("VmRSS") / 1024))
                print(f"{path:13} {done:6} requests: RSS {samples[-1][1]:6.1f} MB, peak "
                      f"{proc.status_kb('VmHWM') / 1024:6.1f} MB, {failed} failed", file=sys.stderr)
        return {"idle_mb": idle, "samples": samples, "hwm_mb": proc.status_kb("VmHWM") / 1024, "failed": failed,
                "rps": done / (time.monotonic() - started), "cpu_ms_per_req": proc.cpu_seconds() * 1000 / done}
    finally:
        proc.stop()


async def bench(args, workdir: Path) -> dict[str, dict]:
    pki = make_test_pki(workdir / "pki", [HOST, ANTHROPIC_HOST])
    body = small_body() if args.body == "2k" else large_body()[0]
    fake, fake_port = start_fake(workdir / "fake", pki, args.chunk_delay, [])
    paths = [p for p in args.paths if p != "clutch-before"] + (["clutch-before"] if args.before else [])
    try:
        return {path: await one_path(path, args, workdir / path, fake_port, pki.ca_cert, body) for path in paths}
    finally:
        fake.stop()


def report(results: dict[str, dict], every: int) -> str:
    marks = sorted({n for r in results.values() for n, _ in r["samples"]})
    shown = [n for n in marks if n == marks[0] or n == marks[-1] or n % (every * 5) == 0]
    lines = ["| path | idle MB | " + " | ".join(f"after {n:,}" for n in shown) + " | peak (VmHWM) | req/s | failed |",
             "|---|---|" + "---|" * len(shown) + "---|---|---|"]
    for path, r in results.items():
        at = dict(r["samples"])
        lines.append(f"| {path} | {r['idle_mb']:.0f} | " + " | ".join(f"{at[n]:.0f}" for n in shown)
                     + f" | {r['hwm_mb']:.0f} | {r['rps']:.0f} | {r['failed']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--every", type=int, default=500, help="requests between RSS samples")
    parser.add_argument("--body", choices=["2k", "200k"], default="2k")
    parser.add_argument("--chunk-delay", type=float, default=0.01, help="fake's delay between chunks, s")
    parser.add_argument("--paths", nargs="+", default=["mitmdump", "clutch"], choices=["mitmdump", "clutch"])
    parser.add_argument("--before", type=Path, help="a checkout of other code to run as clutch-before")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="clutch-memory-"))
    load_before = loadavg()
    try:
        results = asyncio.run(bench(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report(results, args.every))
    print(f"\n{args.requests:,} requests at c={args.concurrency}, {args.body} bodies; load average before "
          f"{load_before}, after {loadavg()} ({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
