"""How long `xx` takes before the agent runs: its own start-up, the gateway check, and a cold gateway start.

    .venv/bin/python bench/xx_launch.py [--reps 10]

The agent is a fake executable that exits at once (it only records that it ran), so every millisecond
measured is the launcher's. Cases, each timed from the user's command to the agent's exit:

* `agent alone`: the fake agent run directly (the floor: process start-up);
* `xx cnd` via `python -m launcher.xx` and via `./clutch xx` (the bash bootstrap that checks the venv,
  what the `xx` shell function calls): route d, no gateway involved;
* `xx cnp` with the gateway up: adds the /health check and the CA lookup;
* `xx cnp`, gateway down: `xx` starts it (mitmdump start-up, CA, rules) and waits for /health; the
  gateway is stopped by its PID after every repetition.

Temporary HOME, an ephemeral loopback port, every process stopped by its PID. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKE_AGENT = "#!/bin/sh\necho ran >> \"$XX_BENCH_RECORD\"\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, cwd=env["HOME"], capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{argv} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed * 1000


def stop_gateway(home: Path) -> None:
    try:
        pid = int((home / ".xx" / "gateway.pid").read_text())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xx-bench-") as scratch:
        home = Path(scratch) / "home"
        (home / ".xx").mkdir(parents=True)
        bin_folder = Path(scratch) / "bin"
        bin_folder.mkdir()
        (bin_folder / "claude").write_text(FAKE_AGENT)
        (bin_folder / "claude").chmod(0o755)
        (home / ".xx" / "config.json").write_text(json.dumps({"gateway": f"127.0.0.1:{free_port()}",
                                                             "confdir": str(home / "certs")}))
        env = {"PATH": f"{bin_folder}:{os.environ['PATH']}", "HOME": str(home), "LANG": "C.UTF-8",
               "PYTHONPATH": str(ROOT), "XX_BENCH_RECORD": str(Path(scratch) / "record")}
        module = [sys.executable, "-m", "launcher.xx"]
        bootstrap = [str(ROOT / "clutch"), "xx"]
        cases = {
            "agent alone": lambda: timed([str(bin_folder / "claude"), "--print", "hi"], env),
            "xx cnd (python -m launcher.xx)": lambda: timed([*module, "cnd", "-p", "hi"], env),
            "xx cnd (./clutch xx, as the xx function runs it)": lambda: timed([*bootstrap, "cnd", "-p", "hi"], env),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        samples["xx cnp, gateway up"] = []
        samples["xx cnp, gateway down (xx starts it)"] = []
        try:
            for rep in range(args.reps):
                for name, case in cases.items():
                    samples[name].append(case())
                samples["xx cnp, gateway down (xx starts it)"].append(timed([*module, "cnp", "-p", "hi"], env))
                samples["xx cnp, gateway up"].append(timed([*module, "cnp", "-p", "hi"], env))
                stop_gateway(home)
                print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr, flush=True)
        finally:
            stop_gateway(home)
    print("| case | median ms | p90 ms | min ms |")
    print("|---|---|---|---|")
    for name, values in samples.items():
        values.sort()
        p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
        print(f"| {name} | {statistics.median(values):.0f} | {p90:.0f} | {values[0]:.0f} |")


if __name__ == "__main__":
    main()
