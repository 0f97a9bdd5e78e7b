#!/usr/bin/env python
"""What one large request costs the gateway: its peak RSS (VmHWM in /proc/<pid>/status) and the time
to its answer, for realistic agent bodies (an Anthropic conversation whose tool outputs make up the
size) and pathological ones (one huge string, a million spaces, JSON nested as deep as the parser
allows, a gzip bomb), sent with httpx through a real gateway (cache_safe compression, the default
clutch_max_body_mb of 32) to the fake provider. Each case gets a fresh gateway, warmed with one small
request, so its VmHWM is that one request's peak.

    .venv/bin/python bench/bodies.py [--sizes 1,8,32]     # about a minute
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import httpx  # noqa: E402
from harness import PROVIDER_HOSTS, FakeProcess, gateway_on_rules, trust  # noqa: E402
from pki import make_test_pki  # noqa: E402

MB = 1_000_000
RULES = """\
version: 1
providers:
  anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
              key_env: ANTHROPIC_API_KEY}
compression: {mode: cache_safe}
"""
HEADERS = {"content-type": "application/json", "x-api-key": "sk-ant-bench", "anthropic-version": "2023-06-01"}


def conversation(size: int) -> dict:
    """A Claude Code session: turns of Bash calls whose outputs (build logs, 20 KB each) fill `size`."""
    log = "\n".join(f"[{n:05d}] cc -O2 -c src/module_{n}.c -o build/module_{n}.o  ok" for n in range(300))
    messages = [{"role": "user", "content": [{"type": "text", "text": "Build it and fix what fails."}]}]
    n = 0
    while len(json.dumps(messages)) < size:
        n += 1
        messages.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"toolu_{n}", "name": "Bash",
                                                           "input": {"command": f"make step{n}"}}]})
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{n}",
                                                      "content": log}]})
    messages.append({"role": "user", "content": [{"type": "text", "text": "What failed?"}]})
    return {"model": "bench-good", "max_tokens": 64, "messages": messages}


def one_string(size: int) -> dict:
    return {"model": "bench-good", "max_tokens": 64, "messages": [{"role": "user", "content": "word " * (size // 5)}]}


def spaces(_: int) -> dict:
    return {"model": "bench-good", "max_tokens": 64, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": " " * 1_000_000}]}]}


def cases(sizes: list[int]):
    for mb in sizes:
        yield f"conversation {mb} MB", json.dumps(conversation(mb * MB)).encode(), {}
    for mb in sizes:
        yield f"one string {mb} MB", json.dumps(one_string(mb * MB)).encode(), {}
    yield "1M spaces in a tool output", json.dumps(spaces(0)).encode(), {}
    depth = 100_000
    yield f"nested {depth:,} deep", (b'{"model":"bench-good","messages":' + b"[" * depth + b"]" * depth + b"}"), {}
    bomb = gzip.compress(b'{"model":"bench-good","messages":[{"role":"user","content":"' + b" " * (256 << 20)
                         + b'"}]}', 9)
    yield f"gzip bomb ({len(bomb) >> 10} KB -> 256 MB)", bomb, {"content-encoding": "gzip"}


def hwm_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,8,32", help="body sizes in MB (10^6 bytes)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pki = make_test_pki(work / "pki", PROVIDER_HOSTS)
        fake = FakeProcess(work, pki)
        try:
            for n, (label, raw, headers) in enumerate(cases(sizes)):
                (work / f"gw{n}").mkdir()
                gateway = gateway_on_rules(work / f"gw{n}", fake, pki, RULES, "--set", "clutch_retries=0",
                                           "--set", f"clutch_state_dir={work / f'gw{n}' / 'state'}")
                try:
                    with httpx.Client(proxy=gateway.proxy_url("claude"), verify=trust(gateway.bundle),
                                      trust_env=False, timeout=300) as client:
                        url = "https://api.anthropic.com/v1/messages"
                        client.post(url, content=json.dumps(one_string(100)).encode(), headers=HEADERS)
                        idle = hwm_mb(gateway.process.pid)
                        started = time.perf_counter()
                        response = client.post(url, content=raw, headers={**HEADERS, **headers})
                        elapsed = time.perf_counter() - started
                        peak = hwm_mb(gateway.process.pid)
                finally:
                    gateway.stop()
                rows.append((label, len(raw) / MB, response.status_code, elapsed, idle, peak))
                print(f"{label:34} {len(raw) / MB:8.2f} MB  {response.status_code}  {elapsed:6.2f} s  "
                      f"idle {idle:6.0f} MB  peak {peak:6.0f} MB", flush=True)
        finally:
            fake.stop()
    print("\n| body | sent | status | time | gateway peak RSS (idle) |\n|---|---:|---:|---:|---:|")
    for label, size, status, elapsed, idle, peak in rows:
        print(f"| {label} | {size:.2f} MB | {status} | {elapsed:.2f} s | {peak:.0f} MB ({idle:.0f}) |")


if __name__ == "__main__":
    main()
