"""bench/profile_proxy.py --py-spy: where Clutch (or bare mitmdump) spends its CPU under the
realistic load of bench/peer_table.py, sampled by py-spy from outside the process.

The proxy starts as the benchmark starts it; after the warm-up requests py-spy attaches to its PID
(`py-spy record --pid --format raw`), samples while the measured requests run, and stops on SIGINT.
Only busy samples are counted: stacks whose leaf is a wait (IDLE_LEAVES) are left out. The report lists the
functions by own samples (the leaf of the stack: where the CPU was) and by inclusive samples (on
the stack: what it was doing), as shares of the busy samples, and by package."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import peer_table
import run
from headroom_side import find_python

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".pyspy-venv"
REQUIREMENTS = BENCH / "pyspy-requirements.txt"
RATE = 250  # samples per second
# Leaves that are a thread waiting, not working: py-spy's own idle detection does not catch them here
# (idle executor workers and the event loop's epoll wait showed up as half of all samples)
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py)", "wait (threading.py)", "select (selectors.py)",
               "_wait_for_tstate_lock (threading.py)", "get (queue.py)")


def ensure_pyspy() -> Path:
    exe = VENV / "bin" / "py-spy"
    stamp = VENV / ".bench-installed"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if exe.is_file() and stamp.is_file() and stamp.read_text().strip() == want:
        return exe
    print(f"installing py-spy into {VENV.relative_to(BENCH.parent)} ...", file=sys.stderr, flush=True)
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([find_python(), "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "install", "-q",
                    "-r", str(REQUIREMENTS)], check=True, stdout=sys.stderr)
    stamp.write_text(want)
    return exe


def _package(frame: str) -> str:
    """`function (file:line)` -> the package or part of Clutch it belongs to."""
    location = frame.rsplit(" (", 1)[-1].rstrip(")")
    if "site-packages/" in location:
        return location.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/addons/" in location:
        return "addons/" + location.split("/addons/", 1)[1].split("/", 1)[0].split(":", 1)[0]
    if "/lib/python3" in location:
        return "stdlib/" + location.rsplit("/", 1)[-1].split(":", 1)[0]
    return location.split(":", 1)[0]


def _short(frame: str) -> str:
    function, _, location = frame.rpartition(" (")
    path = location.rstrip(")")
    for marker in ("site-packages/", "/addons/", "/lib/python3.12/"):
        if marker in path:
            path = ("addons/" if marker == "/addons/" else "") + path.split(marker, 1)[1]
            break
    return f"{function} ({path.rsplit(':', 1)[0]})"


def summarise(stacks: Path, top: int, title: str) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = idle = 0
    for line in stacks.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        if frames[-1].endswith(IDLE_LEAVES):
            idle += count
            continue
        total += count
        own[frames[-1]] += count
        packages[_package(stack.split(";")[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return f"# {title}\n\nno samples\n"
    lines = [f"# {title}", "", f"{total} busy samples at {RATE}/s (threads waiting: {idle} more, left out).", "",
             "## By package (own samples)", "", "| package | share |", "|---|---|"]
    lines += [f"| {name} | {n / total:.1%} |" for name, n in packages.most_common(15)]
    for heading, counter in (("own samples (where the CPU was)", own),
                             ("inclusive samples (on the stack)", inclusive)):
        lines += ["", f"## Top {top} functions by {heading}", "", "| function | share |", "|---|---|"]
        # the event loop's own frames are on every stack: they say nothing
        ranked = [(name, n) for name, n in counter.most_common() if n < 0.9 * total][:top]
        lines += [f"| `{name}` | {n / total:.1%} |" for name, n in ranked]
    return "\n".join(lines) + "\n"


async def drive(path: str, load_name: str, requests: int, workdir: Path, registry: list,
                raw_out: Path) -> dict:
    pyspy = ensure_pyspy()
    load = next(load for load in peer_table.peer_loads(False) if load.name == load_name)
    if requests:
        load = peer_table.PeerLoad(load.name, load.body, load.concurrency, requests, load.warmup, load.paced)
    pki = run.make_test_pki(workdir / "pki", [peer_table.OPENAI_HOST])
    raw = {"2k": run.small_body(), "200k": run.large_body()[0]}
    tls_port = peer_table.start_fake(workdir / "fake-tls", pki, load.paced, registry)
    http_port = peer_table.start_fake(workdir / "fake-http", None, load.paced, registry)
    targets = peer_table.start_targets([path], workdir, pki, raw, tls_port, http_port, registry, {}, time.monotonic())
    target = targets[path]
    stagger = peer_table.FIRST_TOKEN_S + peer_table.TOKENS * peer_table.TOKEN_DELAY_S if load.paced else 0.0
    warm = peer_table.PeerLoad(load.name, load.body, load.concurrency, load.warmup, 0, load.paced)
    await peer_table.run_cell(target, warm, pki.ca_cert, tls_port, stagger)
    sampler = subprocess.Popen([str(pyspy), "record", "--pid", str(target.proc.pid), "--format", "raw",
                                "--rate", str(RATE), "--output", str(raw_out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    await asyncio.sleep(1.0)  # py-spy attaches (reads the interpreter's memory) before it samples
    try:
        cell = await peer_table.run_cell(target, load, pki.ca_cert, tls_port, stagger)
    finally:
        sampler.send_signal(signal.SIGINT)
        _, err = sampler.communicate(timeout=60)
    if not raw_out.exists():
        raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
    return cell


def main(path: str, load_name: str, requests: int, top: int) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="clutch-spy-"))
    registry: list = []
    raw_out = run.RESULTS / "raw" / f"pyspy-{path}-{load_name}.txt"
    raw_out.parent.mkdir(parents=True, exist_ok=True)
    raw_out.unlink(missing_ok=True)
    try:
        cell = asyncio.run(drive(path, load_name, requests, workdir, registry, raw_out))
    finally:
        for proc in reversed(registry):
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    title = (f"py-spy profile: {path} under {load_name} (realistic stream: 200 token events), "
             f"{cell['ok']}/{cell['requests']} ok, TTFT p50 {cell['ttft_p50']:.1f} ms, "
             f"CPU {cell['cpu_ms_per_req']:.2f} ms/req, load average {run.loadavg()}")
    report = summarise(raw_out, top, title)
    out = run.RESULTS / f"profile-{path}-{load_name}.md"
    out.write_text(report)
    print("\n".join(report.splitlines()[:40]))
    print(f"report: {out.relative_to(run.ROOT)}; stacks: {raw_out.relative_to(run.ROOT)}", file=sys.stderr)
    return 0
