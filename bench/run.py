#!/usr/bin/env python
"""Clutch benchmark: what each request path adds to time to first byte and total time, versus
talking to the fake provider directly. One run, every path, interleaved.

    .venv/bin/python bench/run.py            # full run (3 reps per cell, about 11 minutes on 2 cores)
    .venv/bin/python bench/run.py --quick    # smoke check (1 rep, fewer requests, under a minute)
    .venv/bin/python bench/run.py --report bench/results/raw/<timestamp>.json   # re-render a report

Paths (all speak TLS to the fake, which presents a test-CA certificate for openrouter.ai):
  direct        client -> fake
  mitmdump      client -> bare mitmdump (bench/stream_addon.py: SSE streaming + resolve) -> fake
  clutch        client -> mitmdump -s addons/clutch.py (engine on aiohttp, the default) -> fake
  clutch-httpx  same with --set clutch_http_client=httpx
  clutch-routed      clutch with rules that rename the model (an alias on the same provider: the body
                     is parsed, changed and re-serialised)
  clutch-translated  clutch with rules that send the chat request to an Anthropic-dialect provider:
                     request translated to Anthropic Messages, the SSE answer translated back
  clutch-fallback    clutch with rules whose first model answers 503 every time: the cascade's cost
                     (the failed attempt, then the fallback model's stream)

See bench/README.md for the method and what every column means.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(BENCH))

from harness import MITMDUMP, PYTHON, stop as stop_process, wait_for_file  # noqa: E402
from pki import make_test_pki  # noqa: E402
from redis_server import RedisServer, find_redis  # noqa: E402
from report import LAT_LOADS, SAT_LOADS, render  # noqa: E402

HOST = "openrouter.ai"
URL = f"https://{HOST}/api/v1/chat/completions"
MODEL = "bench/chunks-20"  # the fake streams 20 content chunks for this model
N_CHUNKS = 20
PATHS = ["direct", "mitmdump", "clutch", "clutch-httpx", "clutch-routed", "clutch-team", "clutch-translated",
         "clutch-fallback"]
ANTHROPIC_HOST = "api.anthropic.com"
ROUTING_RULES = f"""\
version: 1
providers:
  openrouter: {{base_url: "https://{HOST}/api/v1", dialects: [openai_chat], hosts: [{HOST}], key_env: OPENROUTER_API_KEY}}
  anthropic: {{base_url: "https://{ANTHROPIC_HOST}", dialects: [anthropic], hosts: [{ANTHROPIC_HOST}],
              key_env: ANTHROPIC_API_KEY}}
aliases: {{ALIASES}}
"""
# the fake streams 20 chunks for any model name containing chunks-20, and answers 503 at once for fail-503
RULES_BY_PATH = {
    # a model rename, with breakers and (generous) quotas counting every request: the success path's cost
    "clutch-routed": '{"bench/chunks-20": "openrouter:bench/routed-chunks-20"}\n'
                     'quotas: {openrouter: {rpm: 100000000}, "openrouter:bench/routed-chunks-20": {rpm: 100000000}}',
    "clutch-translated": '{"bench/chunks-20": "anthropic:bench/translated-chunks-20"}',
    # every request fails once (503) and is served by the fallback
    "clutch-fallback": '{"bench/chunks-20": "openrouter:bench/first-fail-503"}\n'
                       'cascades: {"openrouter:bench/first-fail-503": ["openrouter:bench/fallback-chunks-20"]}\n'
                       'fallback: {method: cascade}',
}
# team mode: clutch-routed's rules with the state on a redis-server the bench starts (docs/team.md), so
# every request reads the shared breakers and takes its two quotas in Redis
RULES_BY_PATH["clutch-team"] = RULES_BY_PATH["clutch-routed"]
TEAM_STATE: dict[str, str] = {}  # "url": the bench's redis-server, once started
# the fallback path measures the failed attempt every time: no breaker may open, no session stick
FALLBACK_OPTIONS = ["--set", "clutch_breaker_failures=1000000000", "--set", "clutch_sticky_ms=0"]
PROXY_USER = "xx-claude.s-bench"  # what an agent launched by Clutch puts in its proxy URL
CORPUS = Path(os.environ.get("CLUTCH_SHARED") or ROOT.parent / "shared") / "corpus" / "dev"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- loads


@dataclass(frozen=True)
class Load:
    name: str
    body: str  # "2k" | "200k"
    concurrency: int
    requests: int
    warmup: int
    phase: str  # "c1" / "c16": fake with --c1-delay / --c16-delay between chunks; "zero": no delay


def loads_for(quick: bool) -> list[Load]:
    if quick:
        return [
            Load("c1-2k", "2k", 1, 10, 2, "c1"),
            Load("c1-200k", "200k", 1, 10, 2, "c1"),
            Load("c16-2k", "2k", 16, 32, 16, "c16"),
            Load("c16-200k", "200k", 16, 32, 16, "c16"),
            Load("sat16-2k", "2k", 16, 80, 16, "zero"),
            Load("sat32-2k", "2k", 32, 80, 32, "zero"),
        ]
    return [
        Load("c1-2k", "2k", 1, 40, 3, "c1"),
        Load("c1-200k", "200k", 1, 40, 3, "c1"),
        Load("c16-2k", "2k", 16, 128, 16, "c16"),
        Load("c16-200k", "200k", 16, 128, 16, "c16"),
        Load("sat16-2k", "2k", 16, 256, 32, "zero"),
        Load("sat32-2k", "2k", 32, 256, 64, "zero"),
    ]


def small_body() -> bytes:
    """A ~2 KB OpenAI chat request as a coding agent sends it early in a session."""
    system = ("You are a coding agent working in the user's repository. Use the tools to read and edit "
              "files, run tests, and explain what you changed. Keep answers short and precise. ") * 4
    messages = [
        {"role": "system", "content": system.strip()},
        {"role": "user", "content": "The test suite fails in tests/test_parser.py::test_unicode_escape. "
                                    "Find out why and fix it without changing the public API."},
        {"role": "assistant", "content": "I'll start by running the failing test to see the error."},
        {"role": "user", "content": "FAILED tests/test_parser.py::test_unicode_escape - AssertionError: "
                                    "assert '\\\\u00e9' == 'é'\n1 failed, 212 passed in 3.41s"},
        {"role": "assistant", "content": "The escape sequence is not decoded. Let me read the parser."},
    ]
    body = {"model": MODEL, "stream": True, "max_tokens": 4096, "temperature": 0, "messages": messages}
    pad = 2048 - len(json.dumps(body, separators=(",", ":")).encode()) - len('{"role":"user","content":""},')
    messages.append({"role": "user", "content": ("def decode(s):\n    return s.encode().decode('unicode_escape')\n"
                                                 * 40)[:max(pad, 0)]})
    return json.dumps(body, separators=(",", ":")).encode()


def large_body(target: int = 200 * 1024) -> tuple[bytes, str]:
    """A ~200 KB OpenAI chat request: the messages of a real agent transcript from the corpus."""
    candidates = []
    for path in sorted(CORPUS.glob("*.json")) if CORPUS.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("format") == "openai" and path.stat().st_size >= target:
            candidates.append((path.stat().st_size, path, record["body"]["messages"]))
    if candidates:
        _, path, all_messages = min(candidates, key=lambda c: c[0])
        messages: list = []
        body = {"model": MODEL, "stream": True, "max_tokens": 4096, "temperature": 0, "messages": messages}
        for message in all_messages:
            messages.append(message)
            if len(json.dumps(body).encode()) >= target:
                break
        return json.dumps(body).encode(), f"{path.name} (first {len(messages)} messages)"
    # synthetic fallback: a long agent session of tool output
    messages = [{"role": "system", "content": "You are a coding agent."}]
    i = 0
    body = {"model": MODEL, "stream": True, "messages": messages}
    while len(json.dumps(body).encode()) < target:
        messages.append({"role": "assistant", "content": f"```bash\ncat src/module_{i}.py\n```"})
        messages.append({"role": "user", "content": "".join(f"line {n}: x_{n} = compute({n}, '{i}')\n"
                                                            for n in range(60))})
        i += 1
    return json.dumps(body).encode(), "synthetic"


# ----------------------------------------------------------------------------- processes


class Proc:
    """A process we started: its log, CPU and memory from /proc, stopped by its PID."""

    def __init__(self, name: str, args: list[str], workdir: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None):
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "home").mkdir(exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=str(cwd or workdir),
                                        env={**os.environ, **(env or {}), "HOME": str(workdir / "home")})
        self.pid = self.process.pid
        self.confdir: Path = workdir

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def status_kb(self, key: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        try:
            stop_process(self.process)
        finally:
            self.log.close()


def start_fake(workdir: Path, pki, chunk_delay: float, registry: list[Proc]) -> tuple[Proc, int]:
    port_file = workdir / "fake.port"
    args = [PYTHON, str(ROOT / "tests" / "fake_upstream.py"), "--host", "127.0.0.1", "--port", "0",
            "--cert", str(pki.cert), "--key", str(pki.key), "--port-file", str(port_file),
            "--chunk-delay", str(chunk_delay)]  # no --log-path: the fake's own disk log is not under test
    proc = Proc("fake", args, workdir)
    registry.append(proc)
    return proc, int(wait_for_file(port_file, proc.process))


def proxy_args(path: str, confdir: Path, fake_port: int, test_ca: Path, workdir: Path | None = None) -> list[str]:
    """mitmdump's arguments for a proxy path (without the executable)."""
    common = ["--listen-host", "127.0.0.1", "--listen-port", "0", "--set", f"confdir={confdir}",
              "--set", "connection_strategy=lazy", "--set", f"ssl_verify_upstream_trusted_ca={test_ca}"]
    if path == "mitmdump":
        return ["-s", str(BENCH / "stream_addon.py"), *common,
                "--set", f"bench_resolve={HOST}:443=127.0.0.1:{fake_port}"]
    # as `./clutch start` runs it (launcher/gateway.py), plus the fake's address and CA
    args = ["-s", str(ROOT / "addons" / "clutch.py"), *common,
            "--set", f"clutch_resolve={HOST}:443=127.0.0.1:{fake_port}"]
    if path == "clutch-httpx":
        args += ["--set", "clutch_http_client=httpx"]
    if path in RULES_BY_PATH and workdir is not None:
        rules = workdir / "rules.yaml"
        workdir.mkdir(parents=True, exist_ok=True)
        rules.write_text(ROUTING_RULES.replace("{ALIASES}", RULES_BY_PATH[path]))
        args += ["--set", f"clutch_rules={rules}", "--set", f"clutch_state_dir={workdir / 'state'}",
                 "--set", f"clutch_resolve={ANTHROPIC_HOST}:443=127.0.0.1:{fake_port}"]
        if path == "clutch-fallback":
            args += FALLBACK_OPTIONS
        if path == "clutch-team":
            args += ["--set", f"clutch_state={TEAM_STATE['url']}"]
    return args


def start_proxy(path: str, workdir: Path, confdir: Path, fake_port: int, test_ca: Path, registry: list[Proc]) -> Proc:
    proc = Proc(path, [MITMDUMP, *proxy_args(path, confdir, fake_port, test_ca, workdir)], workdir,
                env={"ANTHROPIC_API_KEY": "sk-ant-api03-bench"})
    proc.confdir = confdir
    registry.append(proc)
    return proc


def wait_listening(proc: Proc, timeout: float = 30) -> tuple[int, Path]:
    deadline = time.monotonic() + timeout
    marker = "HTTP(S) proxy listening at 127.0.0.1:"
    while time.monotonic() < deadline:
        text = proc.output()
        if marker in text:
            port = int(text.split(marker, 1)[1].split(".", 1)[0].split()[0])
            return port, proc.confdir / "mitmproxy-ca-cert.pem"
        if proc.process.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.process.returncode}:\n{text}")
        time.sleep(0.05)
    raise TimeoutError(f"{proc.name} did not start:\n{proc.output()}")


# ----------------------------------------------------------------------------- client


_TOKEN = re.compile(rb'"content":"[^"]')  # a delta with non-empty content (the role chunk has "")


@dataclass
class Target:
    path: str
    fake_port: int
    proxy_port: int | None = None
    proxy_ca: Path | None = None
    proc: Proc | None = None


class MapResolver:
    """aiohttp resolver for `direct`: openrouter.ai:443 is the fake; TLS still checks openrouter.ai."""

    def __init__(self, port: int):
        self.port = port

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
        return [{"hostname": host, "host": "127.0.0.1", "port": self.port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass


def client_ssl(test_ca: Path, proxy_ca: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(test_ca))
    if proxy_ca is not None:
        context.load_verify_locations(cafile=str(proxy_ca))
    return context


HEADERS = {
    "content-type": "application/json",
    "authorization": "Bearer sk-or-v1-bench",
    "accept": "text/event-stream",
    "user-agent": "clutch-bench/1 (aiohttp)",
    "http-referer": "https://github.com/clutch/bench",
    "x-title": "clutch-bench",
}


@dataclass
class Sample:
    ok: bool
    ttfb: float = math.nan
    ttft: float = math.nan
    total: float = math.nan
    error: str | None = None


async def one_request(session, target: Target, body: bytes) -> Sample:
    proxy = f"http://{PROXY_USER}:bench-token@127.0.0.1:{target.proxy_port}" if target.proxy_port else None
    started = time.perf_counter()
    first = token = None
    seen = b""
    tail = b""
    try:
        async with session.post(URL, data=body, headers=HEADERS, proxy=proxy) as response:
            if response.status != 200:
                return Sample(False, error=f"HTTP {response.status}: {(await response.read())[:200]!r}")
            while True:
                chunk = await response.content.readany()
                if not chunk:
                    break
                now = time.perf_counter()
                if first is None:
                    first = now
                if token is None:
                    seen += chunk
                    if _TOKEN.search(seen):
                        token = now
                        seen = b""
                tail = (tail + chunk)[-64:]
        end = time.perf_counter()
    except Exception as e:  # noqa: BLE001 - any failure is a failed sample, counted and shown
        return Sample(False, error=f"{type(e).__name__}: {e}"[:300])
    if token is None or not tail.rstrip().endswith(b"data: [DONE]"):
        return Sample(False, error=f"incomplete stream (tail {tail!r})")
    return Sample(True, (first - started) * 1000, (token - started) * 1000, (end - started) * 1000)


async def run_batch(session, target, body: bytes, n: int, concurrency: int, stagger_s: float = 0.0,
                    request=None) -> list[Sample]:
    """`n` requests from `concurrency` workers, each with its own keep-alive connection. With a
    stagger, worker k starts k/concurrency of `stagger_s` late, so the streams overlap like
    independent agents instead of arriving together as one burst. `request(session, target, body)`
    sends one (default: this module's `one_request`; the peer table passes its own)."""
    one = request or one_request
    samples: list[Sample] = []
    remaining = n

    async def worker(k: int):
        nonlocal remaining
        if stagger_s:
            await asyncio.sleep(stagger_s * k / concurrency)
        while remaining > 0:
            remaining -= 1
            samples.append(await one(session, target, body))

    await asyncio.gather(*(worker(k) for k in range(min(concurrency, n))))
    return samples


def pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation (numpy's default)."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


async def run_cell(target: Target, load: Load, body: bytes, test_ca: Path, fake: Proc, stagger_s: float,
                   around_measurement=None) -> dict:
    import aiohttp

    created = 0

    async def on_create(session, ctx, params):
        nonlocal created
        created += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    connector = aiohttp.TCPConnector(
        limit=load.concurrency, ssl=client_ssl(test_ca, target.proxy_ca),
        resolver=MapResolver(target.fake_port) if target.proxy_port is None else None,
    )
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace], trust_env=False,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        warm = await run_batch(session, target, body, load.warmup, load.concurrency, stagger_s)
        if around_measurement:
            around_measurement(True)
        proxy_cpu0 = target.proc.cpu_seconds() if target.proc else 0.0
        fake_cpu0 = fake.cpu_seconds()
        client_cpu0 = time.process_time()
        busy0, steal0 = cpu_jiffies()
        conns0 = created
        t0 = time.perf_counter()
        samples = await run_batch(session, target, body, load.requests, load.concurrency, stagger_s)
        wall = time.perf_counter() - t0
        busy1, steal1 = cpu_jiffies()
        busy, steal = (busy1 - busy0) / CLK_TCK, (steal1 - steal0) / CLK_TCK
        client_cpu = time.process_time() - client_cpu0
        fake_cpu = fake.cpu_seconds() - fake_cpu0
        proxy_cpu = (target.proc.cpu_seconds() - proxy_cpu0) if target.proc else None
        if around_measurement:
            around_measurement(False)
        new_conns = created - conns0
    ok = [s for s in samples if s.ok]
    errors = [s.error for s in samples + warm if not s.ok]
    ttfb = [s.ttfb for s in ok]
    ttft = [s.ttft for s in ok]
    total = [s.total for s in ok]
    n = len(samples)
    return {
        "path": target.path, "load": load.name, "phase": load.phase, "concurrency": load.concurrency,
        "body": load.body, "requests": n, "ok": len(ok), "failed": n - len(ok), "warmup_failed":
        sum(1 for s in warm if not s.ok), "errors": errors[:5], "wall_s": wall, "rps": len(ok) / wall,
        "ttfb_p50": pct(ttfb, 50), "ttfb_p99": pct(ttfb, 99), "ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99),
        "total_p50": pct(total, 50), "total_p99": pct(total, 99),
        "proxy_cpu_s": proxy_cpu, "proxy_cpu_ms_per_req": proxy_cpu * 1000 / n if proxy_cpu is not None else None,
        "fake_cpu_ms_per_req": fake_cpu * 1000 / n, "client_cpu_ms_per_req": client_cpu * 1000 / n,
        "proxy_rss_mb": target.proc.status_kb("VmRSS") / 1024 if target.proc else None,
        "proxy_hwm_mb": target.proc.status_kb("VmHWM") / 1024 if target.proc else None,
        "machine_busy_cores": busy / wall,
        "others_cores": max(0.0, busy - client_cpu - fake_cpu - (proxy_cpu or 0.0)) / wall,
        "steal_cores": steal / wall,
        "connections_opened": created, "connections_opened_measured": new_conns,
        "samples": {"ttfb": [round(x, 3) for x in ttfb], "ttft": [round(x, 3) for x in ttft],
                    "total": [round(x, 3) for x in total]},
    }


# ----------------------------------------------------------------------------- orchestration


def log(t0: float, message: str) -> None:
    print(f"[{time.monotonic() - t0:6.1f}s] {message}", file=sys.stderr, flush=True)


def cpu_jiffies() -> tuple[int, int]:
    """Machine-wide CPU time (all cores, clock ticks): (busy in this VM, stolen by the hypervisor)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def code_version() -> dict:
    """Which Clutch was measured: the commit, and a hash of addons/*.py as they were on disk."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((ROOT / "addons").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"commit": commit or "?", "addons_sha256": digest.hexdigest()[:12]}


def machine_info() -> dict:
    import aiohttp
    import httpx
    from mitmproxy import version

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cores": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version(), "mitmproxy": version.VERSION,
            "aiohttp": aiohttp.__version__, "httpx": httpx.__version__}


async def bench(args, workdir: Path, registry: list[Proc], t0: float) -> dict:
    pki = make_test_pki(workdir / "pki", [HOST, ANTHROPIC_HOST])
    bodies = {"2k": small_body()}
    bodies["200k"], large_source = large_body()
    loads = loads_for(args.quick)
    paths = [p for p in PATHS if p in args.paths]
    reps = args.reps or (1 if args.quick else 3)
    cells: list[dict] = []
    peaks: dict[str, float] = {}
    proxy_totals: dict[str, dict] = {}
    phases = [("c1", args.c1_delay), ("c16", args.c16_delay), ("zero", 0.0)]
    if "clutch-team" in paths:
        if find_redis() is not None:  # the tests' own server: a free loopback port, nothing saved
            redis = RedisServer(workdir / "redis")
            registry.append(redis)
            TEAM_STATE["url"] = redis.url
            log(t0, f"clutch-team: shared state on {TEAM_STATE['url']}")
        else:
            paths.remove("clutch-team")
            log(t0, "clutch-team left out: no redis-server (CLUTCH_REDIS_SERVER names one)")
    for phase, delay in phases:
        phase_loads = [load for load in loads if load.phase == phase and load.name in args.loads]
        if not phase_loads:
            continue
        fake, fake_port = start_fake(workdir / f"{phase}-fake", pki, delay, registry)
        targets = {"direct": Target("direct", fake_port)}
        procs = {path: start_proxy(path, workdir / f"{phase}-{path}", workdir / f"confdir-{path}", fake_port,
                                    pki.ca_cert, registry)
                 for path in paths if path != "direct"}  # started together, to save time
        for path, proc in procs.items():
            port, ca = wait_listening(proc)
            targets[path] = Target(path, fake_port, port, ca, proc)
        log(t0, f"phase {phase}: fake :{fake_port} (chunk delay {delay * 1000:g} ms), proxies "
                + ", ".join(f"{p} :{t.proxy_port}" for p, t in targets.items() if t.proxy_port))
        for load in phase_loads:
            for rep in range(reps):
                for path in paths:
                    started = time.monotonic()
                    # paced loads with concurrency: spread the workers' starts over one stream's duration
                    stagger = (N_CHUNKS * delay) if (load.concurrency > 1 and delay) else 0.0
                    cell = await run_cell(targets[path], load, bodies[load.body], pki.ca_cert, fake, stagger)
                    cell["stagger_s"] = stagger
                    cell["rep"] = rep
                    cells.append(cell)
                    cpu = f", CPU ms/req proxy {cell['proxy_cpu_ms_per_req']:.1f}" if cell["proxy_cpu_s"] is not None else ", CPU ms/req"
                    cpu += (f" fake {cell['fake_cpu_ms_per_req']:.1f} client {cell['client_cpu_ms_per_req']:.1f}; "
                            f"other processes {cell['others_cores']:.2f} cores, steal {cell['steal_cores']:.2f}")
                    fails = f", FAILED {cell['failed']} ({cell['errors'][:1]})" if cell["failed"] or cell["warmup_failed"] else ""
                    log(t0, f"{load.name:9} rep {rep + 1}/{reps} {path:12} {cell['ok']}/{cell['requests']} ok, "
                            f"TTFB p50 {cell['ttfb_p50']:.2f} p99 {cell['ttfb_p99']:.2f} ms, total p50 "
                            f"{cell['total_p50']:.1f} ms, {cell['rps']:.1f} req/s{cpu}{fails} "
                            f"({time.monotonic() - started:.1f} s)")
                    await asyncio.sleep(0.1)
        for path, target in targets.items():
            if target.proc is not None:
                hwm = target.proc.status_kb("VmHWM") / 1024
                peaks[path] = max(peaks.get(path, 0.0), hwm)
                proxy_totals[f"{phase}/{path}"] = {"cpu_s": target.proc.cpu_seconds(), "hwm_mb": hwm,
                                                   "rss_mb": target.proc.status_kb("VmRSS") / 1024}
                target.proc.stop()
                registry.remove(target.proc)
                problems = [line for line in target.proc.output().splitlines()
                            if re.search(r"error|Traceback|exception", line, re.I)]
                if problems:
                    proxy_totals[f"{phase}/{path}"]["log_problems"] = problems[:10]
        fake.stop()
        registry.remove(fake)
    return {
        "quick": args.quick, "reps": reps, "paths": paths, "chunk_delay_s": {"c1": args.c1_delay, "c16": args.c16_delay, "zero": 0.0}, "model": MODEL,
        "n_chunks": N_CHUNKS, "bodies": {k: len(v) for k, v in bodies.items()}, "large_body_source": large_source,
        "loads": [vars(load) for load in loads if load.name in args.loads], "cells": cells,
        "peak_rss_mb": peaks, "proxy_totals": proxy_totals,
    }


# ----------------------------------------------------------------------------- main


def main() -> int:
    if "--peers" in sys.argv[1:]:  # Clutch beside claude-code-router, LiteLLM and Headroom
        import peer_table

        return peer_table.main([arg for arg in sys.argv[1:] if arg != "--peers"])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 rep, fewer requests: a smoke check")
    parser.add_argument("--reps", type=int, default=0, help="repetitions per cell (default 3, --quick 1)")
    parser.add_argument("--paths", nargs="+", default=PATHS, choices=PATHS)
    parser.add_argument("--loads", nargs="+", default=LAT_LOADS + SAT_LOADS, choices=LAT_LOADS + SAT_LOADS)
    parser.add_argument("--c1-delay", type=float, default=0.005, help="fake's delay between chunks for c=1, s")
    parser.add_argument("--c16-delay", type=float, default=0.02, help="fake's delay between chunks for c=16, s")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, confdirs)")
    parser.add_argument("--report", type=Path, help="only render the markdown report of a raw JSON file")
    args = parser.parse_args()
    if "direct" not in args.paths:
        args.paths = ["direct", *args.paths]

    if args.report:
        print(render(json.loads(args.report.read_text())))
        return 0

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background (SIG_IGN)
    t0 = time.monotonic()
    started = datetime.datetime.now().astimezone()
    before = loadavg()
    code = code_version()  # before the run: others may edit addons/ while it runs
    workdir = Path(tempfile.mkdtemp(prefix="clutch-bench-"))
    registry: list[Proc] = []
    try:
        log(t0, f"workdir {workdir}; load average {before}")
        data = asyncio.run(bench(args, workdir, registry, t0))
    except KeyboardInterrupt:
        log(t0, "interrupted; stopping processes")
        return 130
    finally:
        for proc in reversed(registry):
            try:
                proc.stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                print(f"could not stop {proc.name} (pid {proc.pid}): {e}", file=sys.stderr)
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    data["meta"] = {"started": started.isoformat(timespec="seconds"), "duration_s": time.monotonic() - t0,
                    "loadavg_before": before, "loadavg_after": loadavg(), "machine": machine_info(), "code": code,
                    "argv": sys.argv[1:]}
    stamp = started.strftime("%Y%m%dT%H%M%S")
    raw_dir = RESULTS / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    raw_path = raw_dir / f"{stamp}{'-quick' if args.quick else ''}.json"
    raw_path.write_text(json.dumps(data, indent=1))
    report = render(data)
    # a quick run is a smoke check: its report stays beside the raw data, latest.md keeps the last full run
    md_path = raw_dir / f"{stamp}-quick.md" if args.quick else RESULTS / "latest.md"
    md_path.write_text(report)
    print(report)
    log(t0, f"raw results: {raw_path.relative_to(ROOT)}; report: {md_path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
