#!/usr/bin/env python
"""Where a proxy path spends its CPU: run it in-process under cProfile while bench/run.py's client
drives one load through it, then print the hottest functions and a per-package summary.

    .venv/bin/python bench/profile_proxy.py --path clutch --load sat16-2k
    .venv/bin/python bench/profile_proxy.py --path mitmdump --load c16-200k --top 40
    .venv/bin/python bench/profile_proxy.py --path clutch --load c16-2k --chunks 200
    .venv/bin/python bench/profile_proxy.py --py-spy --path clutch --load c16-2k   # top functions

With --py-spy the proxy runs unmodified and py-spy (PyPI `py-spy`, installed on first use into
bench/.pyspy-venv, bench/pyspy-requirements.txt) samples it from outside during the measured
requests of bench/peer_table.py's realistic load (200 token events per stream): a sampler does not
slow each Python call as cProfile does, so shares are not skewed towards call-heavy code, and it sees
C time (TLS, sockets) inside the Python function that called it. The top functions by own and by
inclusive samples go to bench/results/profile-<path>-<load>.md and the collapsed stacks to
bench/results/raw/.

The proxy runs as `python bench/profile_proxy.py --child ...`: mitmproxy.tools.main.mitmdump with
run.py's arguments for that path, profiled only during the measured requests (the driver sends
SIGRTMIN+1 after the warm-up and SIGRTMIN+2 at the end). The profile is written to
bench/results/raw/profile-<path>-<load>.prof (read it with `python -m pstats`). cProfile slows the
proxy by roughly 1.5-2x: read shares of time, not absolute latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import shutil
import signal
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
import spy  # noqa: E402

# mitmproxy takes SIGUSR1/SIGUSR2 for its own debug dumps (mitmproxy/utils/debug.py)
START, STOP = signal.SIGRTMIN + 1, signal.SIGRTMIN + 2


def child(out: str, args: list[str]) -> None:
    from mitmproxy.tools.main import mitmdump

    profiler = cProfile.Profile()

    def start(*_):
        profiler.enable()

    def stop(*_):
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(START, start)
    signal.signal(STOP, stop)
    mitmdump(args)


async def drive(args, workdir: Path, registry: list) -> tuple[Path, dict]:
    pki = run.make_test_pki(workdir / "pki", [run.HOST])
    base = next(load for load in run.loads_for(False) if load.name == args.load)
    load = run.Load(base.name, base.body, base.concurrency, args.requests or base.requests, base.warmup, base.phase)
    delay = {"c1": 0.005, "c16": 0.02, "zero": 0.0}[load.phase]
    fake, fake_port = run.start_fake(workdir / "fake", pki, delay, registry)
    prof = run.RESULTS / "raw" / f"profile-{args.path}-{args.load}.prof"
    prof.parent.mkdir(parents=True, exist_ok=True)
    prof.unlink(missing_ok=True)
    child_args = [run.PYTHON, __file__, "--child", str(prof), "--",
                  *run.proxy_args(args.path, workdir / "confdir", fake_port, pki.ca_cert)]
    proc = run.Proc(args.path, child_args, workdir / args.path)
    proc.confdir = workdir / "confdir"
    registry.append(proc)
    port, ca = run.wait_listening(proc, timeout=60)
    target = run.Target(args.path, fake_port, port, ca, proc)
    body = run.small_body() if load.body == "2k" else run.large_body()[0]
    stagger = run.N_CHUNKS * delay if load.concurrency > 1 and delay else 0.0

    def toggle(on: bool) -> None:
        os.kill(proc.pid, START if on else STOP)

    cell = await run.run_cell(target, load, body, pki.ca_cert, fake, stagger, toggle)
    for _ in range(100):
        if prof.exists():
            break
        await asyncio.sleep(0.1)
    return prof, cell


def package(filename: str, function: str) -> str:
    if filename == "~":  # C functions: name the expensive kinds
        if "epoll" in function or "poll" in function:
            return "idle: waiting in epoll"
        if "_ssl." in function or "SSL" in function or "_openssl" in function:
            return "C: TLS (ssl / OpenSSL)"
        if "socket" in function:
            return "C: socket send/recv"
        if "json" in function or "scanner" in function:
            return "C: json"
        return "C: other builtins"
    if "/addons/" in filename and "site-packages" not in filename:
        return "clutch addons/*"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/lib/python3" in filename:
        return "stdlib/" + filename.rsplit("/", 1)[-1]
    return filename


def summary(prof: Path, requests: int) -> str:
    stats = pstats.Stats(str(prof))
    total = 0.0
    by_package: dict[str, float] = defaultdict(float)
    idle = 0.0
    for (filename, _, function), (_, _, tottime, _, _) in stats.stats.items():
        name = package(filename, function)
        if name.startswith("idle"):
            idle += tottime
            continue
        by_package[name] += tottime
        total += tottime
    lines = [f"{'package (own time)':55} {'ms/req':>8} {'share':>6}"]
    for name, t in sorted(by_package.items(), key=lambda kv: -kv[1])[:18]:
        lines.append(f"{name:55} {t * 1000 / requests:8.3f} {t / total:6.1%}")
    lines.append(f"{'total (busy)':55} {total * 1000 / requests:8.3f}")
    lines.append(f"{'(idle in epoll, not counted)':55} {idle * 1000 / requests:8.3f}")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[4:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", choices=["mitmdump", "clutch", "clutch-httpx"], default="clutch")
    parser.add_argument("--load", default="sat16-2k", choices=run.LAT_LOADS + run.SAT_LOADS)
    parser.add_argument("--requests", type=int, default=0)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--chunks", type=int, default=0,
                        help="content chunks the fake streams per answer (default: run.py's 20); real providers "
                             "send about one per token, and the stream watch's cost grows with them")
    parser.add_argument("--show", type=Path, help="only summarise an existing .prof (with --requests)")
    parser.add_argument("--py-spy", action="store_true", help="sample with py-spy under the realistic load")
    args = parser.parse_args()
    if args.chunks:
        run.MODEL, run.N_CHUNKS = f"bench/chunks-{args.chunks}", args.chunks
    if args.py_spy:
        return spy.main(args.path, args.load, args.requests, args.top)
    if args.show:
        print(summary(args.show, args.requests or 1))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="clutch-profile-"))
    registry: list = []
    try:
        prof, cell = asyncio.run(drive(args, workdir, registry))
    finally:
        for proc in reversed(registry):
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{args.path} {args.load}: {cell['ok']}/{cell['requests']} ok, TTFB p50 {cell['ttfb_p50']:.1f} ms, "
          f"{cell['rps']:.1f} req/s, proxy CPU {cell['proxy_cpu_ms_per_req']:.2f} ms/req (under cProfile)\n")
    print(summary(prof, cell["requests"]))
    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(str(prof), stream=text).strip_dirs().sort_stats(order).print_stats(args.top)
        print(f"\n==== top {args.top} by {order} ====")
        print(text.getvalue().split("\n", 6)[-1])
    print(f"profile: {prof}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
