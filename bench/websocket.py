#!/usr/bin/env python
"""What a turn on Codex's Responses WebSocket costs against the same request over HTTPS, both through
Clutch to the fake provider (no routing, usage records off): time to the first event (the first byte
over HTTPS) and to the turn's end, p50 and p90 over N turns on one socket / one keep-alive connection,
for a 2 KB and a 200 KB input, interleaved twice.

    .venv/bin/python bench/websocket.py [N]     # about 30 s with N=40
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import aiohttp  # noqa: E402
import httpx  # noqa: E402
from harness import PROVIDER_HOSTS, FakeProcess, Gateway, trust  # noqa: E402
from pki import make_test_pki  # noqa: E402

WARMUP = 3


def create(size: int) -> dict:
    return {"model": "bench-good", "store": False,
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x" * size}]}]}


async def websocket_turns(gateway: Gateway, size: int, n: int) -> tuple[list[float], list[float]]:
    first, total = [], []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect("wss://api.openai.com/v1/responses", proxy=gateway.proxy_url("xx-codex"),
                                      ssl=trust(gateway.bundle), max_msg_size=0) as ws:
            for i in range(n + WARMUP):
                started, seen = time.perf_counter(), None
                await ws.send_str(json.dumps({"type": "response.create", **create(size)}))
                while True:
                    event = json.loads((await ws.receive()).data)
                    seen = seen or time.perf_counter() - started
                    if event["type"] == "response.completed":
                        break
                if i >= WARMUP:
                    first.append(seen)
                    total.append(time.perf_counter() - started)
    return first, total


async def https_requests(gateway: Gateway, size: int, n: int) -> tuple[list[float], list[float]]:
    first, total = [], []
    async with httpx.AsyncClient(proxy=gateway.proxy_url("xx-codex"), verify=trust(gateway.bundle),
                                 timeout=30) as client:
        for i in range(n + WARMUP):
            started, seen = time.perf_counter(), None
            async with client.stream("POST", "https://api.openai.com/v1/responses",
                                     json={**create(size), "stream": True}) as response:
                async for _ in response.aiter_raw():
                    seen = seen or time.perf_counter() - started
            if i >= WARMUP:
                first.append(seen)
                total.append(time.perf_counter() - started)
    return first, total


def ms(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q * 100) - 1] * 1000 if q != 0.5 else statistics.median(values) * 1000


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        pki = make_test_pki(base / "pki", PROVIDER_HOSTS)
        (base / "fake").mkdir()
        (base / "gateway").mkdir()
        fake = FakeProcess(base / "fake", pki, chunk_delay="0")
        gateway = Gateway(base / "gateway", fake.port, pki.ca_cert, "--set", "clutch_usage_db=off",
                          "--set", "flow_detail=0")
        try:
            print("| input | transport | first event p50 / p90 ms | whole turn p50 / p90 ms |")
            print("|---|---|---|---|")
            for size in (2_000, 200_000):
                for name, run in [("HTTPS", https_requests), ("WebSocket", websocket_turns)] * 2:
                    first, total = asyncio.run(run(gateway, size, n))
                    print(f"| {size // 1000} KB | {name} | {ms(first, .5):.2f} / {ms(first, .9):.2f} | "
                          f"{ms(total, .5):.2f} / {ms(total, .9):.2f} |")
        finally:
            gateway.stop()
            fake.stop()


if __name__ == "__main__":
    main()
