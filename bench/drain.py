"""What a SIGTERM does to the streams a gateway is serving.

    .venv/bin/python bench/drain.py [--streams 50] [--grace-ms 10000] [--longest-s 20]

A real gateway (`mitmdump -s addons/clutch.py`) in front of the fake provider; `--streams` streams at
once, half from the openai SDK (OpenRouter chat), half from the anthropic SDK, their lengths spread
evenly from 1 s to `--longest-s` (100 ms between pieces); once every stream has its first token, the
gateway gets SIGTERM. Printed: streams that finished normally, streams that ended with an error event
the SDK raised as an APIError, anything else (a reset, a hang), the usage rows written for them, and
the time from the SIGTERM to the gateway's exit.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from harness import FakeProcess, PROVIDER_HOSTS  # noqa: E402
from pki import make_test_pki  # noqa: E402
from test_shutdown import Streams, rows, start  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--grace-ms", type=int, default=10_000)
    parser.add_argument("--longest-s", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        pki = make_test_pki(work / "pki", PROVIDER_HOSTS)
        (work / "fake").mkdir()
        fake = FakeProcess(work / "fake", pki)
        try:
            run(work / "gateway", fake, pki, args)
        finally:
            fake.stop()


def run(work: Path, fake, pki, args) -> None:
    work.mkdir()
    gateway = start(work, fake, pki, "--set", f"clutch_drain_timeout_ms={args.grace_ms}")
    streams = Streams(gateway, "bench")
    models = []
    for index in range(args.streams):
        pieces = max(10, round(10 + index * (args.longest_s * 10 - 10) / max(1, args.streams - 1)))
        model = f"bench-{index}-chunks-{pieces}-delay-100"
        models.append(model)
        (streams.openai if index % 2 == 0 else streams.anthropic)(model)
    streams.wait_first(60)
    stopped = time.monotonic()
    os.kill(gateway.process.pid, signal.SIGTERM)
    streams.join(args.grace_ms / 1000 + 60)
    code = gateway.process.wait(timeout=args.grace_ms / 1000 + 60)
    exit_s = time.monotonic() - stopped
    gateway.log.close()
    outcomes = [streams.results.get(model, ("missing", ""))[0] for model in models]
    booked = [row for row in rows(work) if row["model"] in set(models)]
    print(f"streams: {args.streams}, grace {args.grace_ms / 1000:g} s, lengths 1-{args.longest_s:g} s")
    print(f"finished normally:          {outcomes.count('done')}")
    print(f"ended by an error event:    {outcomes.count('error')} (the SDK raised an APIError)")
    print(f"cut otherwise or hung:      {len(outcomes) - outcomes.count('done') - outcomes.count('error')}")
    print(f"usage rows written:         {len(booked)} "
          f"({sum(r['outcome'] == 'success' for r in booked)} success, "
          f"{sum(r['error_class'] == 'shutdown' for r in booked)} aborted by the shutdown)")
    print(f"gateway exit:               {exit_s:.1f} s after SIGTERM, exit code {code}")


if __name__ == "__main__":
    main()
