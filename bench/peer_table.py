#!/usr/bin/env python
"""Clutch beside its peers, one interleaved run, with a realistic provider: the table of issue 19.

    .venv/bin/python bench/run.py --peers            # full run: 3 reps, about 25 minutes on 2 cores
    .venv/bin/python bench/run.py --peers --quick    # smoke check: 1 rep, few requests
    .venv/bin/python bench/peer_table.py --report bench/results/raw/peers-<stamp>.json

The fake provider (tests/fake_upstream.py --tokens 200 --first-token-delay 0.05 --chunk-delay
0.002) streams as real ones do: about 50 ms to the first token, then 200 word-sized tokens, one SSE
event each, at up to 500 tokens/s, usage at the end; for the saturation load it streams the same
200 events without pauses. Paths, each measured against the direct path of its client protocol:

  direct        client -> fake over TLS (api.openai.com resolved to the fake), OpenAI chat
  mitmdump      client -> bare mitmdump + bench/stream_addon.py (HTTPS proxy) -> fake over TLS
  clutch        client -> Clutch (`mitmdump -s addons/clutch.py`, default rules) -> fake over TLS
  clutch-base-url  client -> Clutch's base-URL entry (`--reverse https://api.openai.com@PORT`, plain
                HTTP, as the peers are reached) -> fake over TLS, OpenAI chat
  direct-http   client -> fake over plain HTTP, OpenAI chat
  litellm       client -> LiteLLM proxy (base URL, plain HTTP) -> fake, OpenAI chat
  headroom      client -> Headroom proxy (base URL, plain HTTP) -> fake, OpenAI chat
  direct-anthropic  client -> fake over plain HTTP, Anthropic Messages
  ccr           client (Anthropic Messages) -> claude-code-router (plain HTTP) -> fake OpenAI chat

The peers take base URLs, so their client leg is plain HTTP; Clutch and mitmdump intercept TLS on
both legs, and Clutch's base-URL entry takes plain HTTP in, as the peers do, and speaks TLS out.
Installing and starting the peers: bench/peers.py. Method and columns: bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
import run  # noqa: E402
from peer_report import render, text_table  # noqa: E402

OPENAI_HOST = "api.openai.com"
TLS_MODEL = "gpt-4.1-mini"  # any model without a fault token: the fake streams its token answer
TOKENS, FIRST_TOKEN_S, TOKEN_DELAY_S = 200, 0.05, 0.002
BASELINE = {"mitmdump": "direct", "clutch": "direct", "clutch-base-url": "direct-http", "litellm": "direct-http",
            "headroom": "direct-http", "ccr": "direct-anthropic"}
PATHS = ["direct", "direct-http", "direct-anthropic", "mitmdump", "clutch", "clutch-base-url", "ccr", "headroom",
         "litellm"]
REVERSE_MARKER = f"reverse proxy to https://{OPENAI_HOST} listening at 127.0.0.1:"


@dataclass(frozen=True)
class PeerLoad:
    name: str
    body: str
    concurrency: int
    requests: int
    warmup: int
    paced: bool  # False: the fake streams without pauses (saturation)


def peer_loads(quick: bool) -> list[PeerLoad]:
    n1, n16, nsat = (6, 32, 48) if quick else (20, 128, 192)
    return [PeerLoad("c1-2k", "2k", 1, n1, 2, True), PeerLoad("c1-200k", "200k", 1, n1, 2, True),
            PeerLoad("c16-2k", "2k", 16, n16, 16, True), PeerLoad("c16-200k", "200k", 16, n16, 16, True),
            PeerLoad("sat16-2k", "2k", 16, nsat, 16, False)]


# ----------------------------------------------------------------------------- bodies


def anthropic_body(chat: dict) -> dict:
    """The same conversation as an Anthropic Messages request (system apart, text contents)."""
    system, messages = [], []
    for message in chat["messages"]:
        content = message.get("content")
        if not isinstance(content, str):
            content = "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))
        if message.get("role") == "system":
            system.append(content)
        else:
            role = "assistant" if message.get("role") == "assistant" else "user"
            messages.append({"role": role, "content": content or "."})
    return {"model": "claude-sonnet-4-5", "max_tokens": 4096, "stream": True, "system": "\n".join(system),
            "messages": messages}


def bodies_for(path: str, raw: dict[str, bytes]) -> dict[str, bytes]:
    out = {}
    for size, data in raw.items():
        chat = json.loads(data)
        chat["stream_options"] = {"include_usage": True}  # usage at the end, as agents ask for it
        if path in ("ccr", "direct-anthropic"):
            out[size] = json.dumps(anthropic_body(chat)).encode()
            continue
        chat["model"] = TLS_MODEL if path in ("direct", "mitmdump", "clutch", "clutch-base-url") else peers.PEER_MODEL
        out[size] = json.dumps(chat).encode()
    return out


# ----------------------------------------------------------------------------- client


_TOKEN = re.compile(rb'"(?:content|text)": ?"[^"]')  # the first delta with text (role chunks carry "")


@dataclass
class PeerTarget:
    path: str
    url: str
    headers: dict[str, str]
    bodies: dict[str, bytes]
    proxy: str | None = None
    proxy_ca: Path | None = None
    proc: object | None = None  # run.Proc or peers.PeerProc: cpu_seconds(), status_kb()


async def one_request(session, target: PeerTarget, body: bytes) -> run.Sample:
    started = time.perf_counter()
    first = token = None
    seen = tail = b""
    try:
        async with session.post(target.url, data=body, headers=target.headers, proxy=target.proxy) as response:
            if response.status != 200:
                return run.Sample(False, error=f"HTTP {response.status}: {(await response.read())[:200]!r}")
            while chunk := await response.content.readany():
                now = time.perf_counter()
                first = first or now
                if token is None:
                    seen += chunk
                    if _TOKEN.search(seen):
                        token, seen = now, b""
                tail = (tail + chunk)[-200:]
        end = time.perf_counter()
    except Exception as e:  # noqa: BLE001 - any failure is a failed sample, counted and shown
        return run.Sample(False, error=f"{type(e).__name__}: {e}"[:300])
    if token is None or not (b"[DONE]" in tail or b"message_stop" in tail):
        return run.Sample(False, error=f"incomplete stream (tail {tail[-64:]!r})")
    return run.Sample(True, (first - started) * 1000, (token - started) * 1000, (end - started) * 1000)


async def run_cell(target: PeerTarget, load: PeerLoad, test_ca: Path, tls_port: int, stagger: float) -> dict:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=load.concurrency, ssl=run.client_ssl(test_ca, target.proxy_ca),
                                     resolver=run.MapResolver(tls_port) if target.path == "direct" else None)
    body = target.bodies[load.body]
    async with aiohttp.ClientSession(connector=connector, trust_env=False,
                                     timeout=aiohttp.ClientTimeout(total=300)) as session:
        warm = await run.run_batch(session, target, body, load.warmup, load.concurrency, stagger, one_request)
        cpu0 = target.proc.cpu_seconds() if target.proc else 0.0
        t0 = time.perf_counter()
        samples = await run.run_batch(session, target, body, load.requests, load.concurrency, stagger,
                                         one_request)
        wall = time.perf_counter() - t0
        cpu = (target.proc.cpu_seconds() - cpu0) if target.proc else None
    ok = [s for s in samples if s.ok]
    n = len(samples)
    return {"path": target.path, "load": load.name, "requests": n, "ok": len(ok), "rps": len(ok) / wall,
            "errors": [s.error for s in warm + samples if not s.ok][:3],
            "ttft_p50": run.pct([s.ttft for s in ok], 50), "ttft_p99": run.pct([s.ttft for s in ok], 99),
            "ttfb_p50": run.pct([s.ttfb for s in ok], 50), "total_p50": run.pct([s.total for s in ok], 50),
            "cpu_ms_per_req": cpu * 1000 / n if cpu is not None else None,
            "hwm_mb": target.proc.status_kb("VmHWM") / 1024 if target.proc else None}


# ----------------------------------------------------------------------------- processes


def start_fake(workdir: Path, pki, paced: bool, registry: list) -> int:
    port_file = workdir / "fake.port"
    args = [run.PYTHON, str(run.ROOT / "tests" / "fake_upstream.py"), "--port", "0", "--port-file", str(port_file),
            "--tokens", str(TOKENS)]
    if paced:
        args += ["--first-token-delay", str(FIRST_TOKEN_S), "--chunk-delay", str(TOKEN_DELAY_S)]
    if pki is not None:
        args += ["--cert", str(pki.cert), "--key", str(pki.key)]
    proc = run.Proc("fake", args, workdir)
    registry.append(proc)
    return int(run.wait_for_file(port_file, proc.process))


def start_targets(paths: list[str], workdir: Path, pki, raw: dict[str, bytes], tls_port: int, http_port: int,
                  registry: list, skipped: dict[str, str], t0: float) -> dict[str, PeerTarget]:
    openai_headers = {**run.HEADERS, "authorization": "Bearer sk-bench"}
    anthropic_headers = {"content-type": "application/json", "x-api-key": "sk-ant-bench",
                         "anthropic-version": "2023-06-01", "accept": "text/event-stream"}
    http_url = "http://127.0.0.1:{}/v1/chat/completions"
    targets = {
        "direct": PeerTarget("direct", f"https://{OPENAI_HOST}/v1/chat/completions", openai_headers, {}),
        "direct-http": PeerTarget("direct-http", http_url.format(http_port), openai_headers, {}),
        "direct-anthropic": PeerTarget("direct-anthropic", f"http://127.0.0.1:{http_port}/v1/messages",
                                       anthropic_headers, {}),
    }
    for path in ("mitmdump", "clutch"):
        if path in paths:
            args = run.proxy_args(path, workdir / f"confdir-{path}", tls_port, pki.ca_cert)
            option = "bench_resolve" if path == "mitmdump" else "clutch_resolve"
            args += ["--set", f"{option}={OPENAI_HOST}:443=127.0.0.1:{tls_port}"]
            proc = run.Proc(path, [run.MITMDUMP, *args], workdir / path)
            proc.confdir = workdir / f"confdir-{path}"
            registry.append(proc)
            port, ca = run.wait_listening(proc)
            targets[path] = PeerTarget(path, targets["direct"].url, openai_headers, {},
                                       f"http://{run.PROXY_USER}:bench-token@127.0.0.1:{port}", ca, proc)
    if "clutch-base-url" in paths:
        targets["clutch-base-url"] = start_base_url(workdir, pki, tls_port, openai_headers, registry)
    for name in ("ccr", "headroom", "litellm"):
        if name not in paths or name in skipped:
            continue
        try:
            peer = peers.STARTERS[name](workdir / name, http_port)
        except Exception as e:  # noqa: BLE001 - a peer that cannot run is reported, the rest go on
            skipped[name] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            run.log(t0, f"{name} skipped: {skipped[name][:60]}")
            continue
        registry.append(peer)
        if name == "ccr":
            targets[name] = PeerTarget(name, f"http://127.0.0.1:{peer.port}/v1/messages", anthropic_headers, {},
                                       proc=peer)
        else:
            key = peers.LITELLM_MASTER_KEY if name == "litellm" else "sk-bench"
            targets[name] = PeerTarget(name, http_url.format(peer.port),
                                       {**openai_headers, "authorization": f"Bearer {key}"}, {}, proc=peer)
    for target in targets.values():
        target.bodies = bodies_for(target.path, raw)
    return {p: targets[p] for p in paths if p in targets}


def start_base_url(workdir: Path, pki, tls_port: int, headers: dict[str, str], registry: list) -> PeerTarget:
    """Clutch with only a base-URL entry, as `./clutch start --reverse https://api.openai.com@PORT` runs
    it: the client speaks plain HTTP to it, as to the peers, and Clutch speaks TLS to the provider."""
    confdir = workdir / "confdir-clutch-base-url"
    args = run.proxy_args("clutch", confdir, tls_port, pki.ca_cert)
    args += ["--mode", f"reverse:https://{OPENAI_HOST}@127.0.0.1:0",
             "--set", f"clutch_resolve={OPENAI_HOST}:443=127.0.0.1:{tls_port}"]
    proc = run.Proc("clutch-base-url", [run.MITMDUMP, *args], workdir / "clutch-base-url")
    proc.confdir = confdir
    registry.append(proc)
    deadline = time.monotonic() + 30
    while REVERSE_MARKER not in (text := proc.output()):
        if proc.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"clutch-base-url did not start:\n{text[-2000:]}")
        time.sleep(0.01)
    port = int(text.split(REVERSE_MARKER, 1)[1].split(".", 1)[0].split()[0])
    # the agent's identity as the base URL's first segment (docs/xx.md), as `xx` would set it
    return PeerTarget("clutch-base-url", f"http://127.0.0.1:{port}/{run.PROXY_USER}/v1/chat/completions",
                      headers, {}, proc=proc)


async def bench(args, workdir: Path, registry: list, t0: float) -> dict:
    pki = run.make_test_pki(workdir / "pki", [OPENAI_HOST])
    raw = {"2k": run.small_body(), "200k": run.large_body()[0]}
    reps = args.reps or (1 if args.quick else 3)
    cells: list[dict] = []
    skipped: dict[str, str] = {}
    peaks: dict[str, float] = {}
    for paced in (True, False):
        loads = [load for load in peer_loads(args.quick) if load.paced == paced]
        phase = "paced" if paced else "zero"
        tls_port = start_fake(workdir / f"{phase}-fake-tls", pki, paced, registry)
        http_port = start_fake(workdir / f"{phase}-fake-http", None, paced, registry)
        targets = start_targets(args.paths, workdir / phase, pki, raw, tls_port, http_port, registry, skipped, t0)
        run.log(t0, f"phase {phase}: " + " ".join(targets))
        stream_s = FIRST_TOKEN_S + TOKENS * TOKEN_DELAY_S if paced else 0.0
        for load in loads:
            for rep in range(reps):
                for path, target in targets.items():
                    stagger = stream_s if load.concurrency > 1 else 0.0
                    cell = await run_cell(target, load, pki.ca_cert, tls_port, stagger)
                    cell["rep"] = rep
                    cells.append(cell)
                    fail = f" FAIL {cell['requests'] - cell['ok']}" if cell["ok"] < cell["requests"] else ""
                    run.log(t0, f"{load.name:8} {rep + 1}/{reps} {path:16} TTFT {cell['ttft_p50']:6.1f}"
                                f" p99 {cell['ttft_p99']:6.1f} {cell['rps']:5.1f}/s{fail}")
        for path, target in targets.items():
            if target.proc is not None:
                peaks[path] = max(peaks.get(path, 0.0), target.proc.status_kb("VmHWM") / 1024)
        for proc in reversed(registry):
            proc.stop()
        registry.clear()
    return {"quick": args.quick, "reps": reps, "paths": args.paths, "cells": cells, "skipped": skipped,
            "peak_rss_mb": peaks, "baseline": BASELINE, "versions": peers.VERSIONS,
            "stream": {"tokens": TOKENS, "first_token_s": FIRST_TOKEN_S, "token_delay_s": TOKEN_DELAY_S},
            "loads": [vars(load) for load in peer_loads(args.quick)], "bodies": {k: len(v) for k, v in raw.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 rep, few requests: a smoke check")
    parser.add_argument("--reps", type=int, default=0, help="repetitions per cell (default 3, --quick 1)")
    parser.add_argument("--paths", nargs="+", default=PATHS, choices=PATHS)
    parser.add_argument("--report", type=Path, help="only render the report of a raw JSON file")
    args = parser.parse_args(argv)
    if args.report:
        data = json.loads(args.report.read_text())
        print(text_table(data))
        return 0
    needed = {BASELINE.get(p) for p in args.paths} - {None}
    args.paths = [p for p in PATHS if p in args.paths or p in needed]
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    t0 = time.monotonic()
    started = datetime.datetime.now().astimezone()
    before = run.loadavg()
    code = run.code_version()
    workdir = Path(tempfile.mkdtemp(prefix="clutch-peers-"))
    registry: list = []
    try:
        run.log(t0, f"workdir {workdir}; load average {before}")
        data = asyncio.run(bench(args, workdir, registry, t0))
    except KeyboardInterrupt:
        run.log(t0, "interrupted; stopping processes")
        return 130
    finally:
        for proc in reversed(registry):
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    data["meta"] = {"started": started.isoformat(timespec="seconds"), "duration_s": time.monotonic() - t0,
                    "loadavg_before": before, "loadavg_after": run.loadavg(), "machine": run.machine_info(),
                    "code": code}
    stamp = started.strftime("%Y%m%dT%H%M%S")
    raw_dir = run.RESULTS / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    raw_path = raw_dir / f"peers-{stamp}{'-quick' if args.quick else ''}.json"
    raw_path.write_text(json.dumps(data, indent=1))
    md_path = raw_dir / f"peers-{stamp}-quick.md" if args.quick else run.RESULTS / "peers.md"
    md_path.write_text(render(data))
    print(text_table(data))
    run.log(t0, f"raw: {raw_path.relative_to(run.ROOT)}")
    run.log(t0, f"report: {md_path.relative_to(run.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
