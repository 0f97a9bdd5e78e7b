"""What each real agent CLI does and shows when every candidate of its request fails.

    .venv/bin/python bench/agent_failures.py [--agents claude codex ...] [--cases 429 5xx] [--bound 120]
                                            [--knobs] [--clutch-retries N] [--no-breakers] [--json FILE]
    .venv/bin/python bench/agent_failures.py --report FILE.json      # the table of an earlier --json run

For every agent x case: a fresh gateway (the real `mitmdump -s addons/clutch.py`, its other options at
their defaults) whose rules give the agent's request three candidates that all fail (tests/failure_rig.py),
the fake provider behind it, and the agent's one-prompt command line in print mode, in a fresh HOME,
stopped by its process group after `--bound` seconds. Cases: `429` (every candidate answers 429 with
`retry-after: 2`) and `5xx` (500, 503 with `retry-after: 2`, 500).

Per run it reports: the agent's requests as the gateway's journal saw them (count, seconds between
them, what Clutch answered each), the calls the candidates received, the exit code (or that the run was
stopped at the bound), the wall time, whether every candidate's name reached stdout or stderr, and the
last line the agent printed. bench/results/agent_failures.md holds the runs behind the README's table.

`--knobs` sets each agent's documented retry knob to its smallest value (the ones the end-to-end tests
use, KNOBS below). Needs the agent CLIs `./clutch test` installs. Takes up to agents x cases x bound.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from failure_rig import ANSI, codex_retries, json_settings, run_agent, start_gateway, text_file  # noqa: E402
from harness import PROVIDER_HOSTS, FakeProcess, agent_folder  # noqa: E402
from pki import make_test_pki  # noqa: E402

AGENTS = ["claude", "codex", "opencode", "qwen", "pi", "hermes", "openclaw"]
# env, configure hook: each agent's own retry knob at its smallest useful value
KNOBS = {
    "claude": ({"CLAUDE_CODE_MAX_RETRIES": "0"}, None),
    "codex": ({}, codex_retries(0, 0)),
    "qwen": ({}, json_settings(".qwen/settings.json", {"model": {"generationConfig": {"maxRetries": 0}}})),
    "pi": ({}, json_settings(".pi/agent/settings.json", {"retry": {"maxRetries": 0, "provider": {"maxRetries": 0}}})),
    "hermes": ({}, text_file(".hermes/config.yaml", "agent:\n  api_max_retries: 1\n")),
}


def run(args) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="clutch-agent-failures-") as tmp:
        tmp = Path(tmp)
        pki = make_test_pki(tmp / "pki", [*PROVIDER_HOSTS, "tunnelled.test"])
        fake = FakeProcess(tmp, pki)
        try:
            for agent in args.agents:
                binary = agent_folder(agent) / agent
                if not binary.exists():
                    print(f"{agent}: not installed ({binary}), skipped", file=sys.stderr)
                    continue
                for case in args.cases:
                    workdir = tmp / f"{agent}-{case}"
                    workdir.mkdir()
                    options = ["--set", f"clutch_retries={args.clutch_retries}"] if args.clutch_retries is not None else []
                    if args.no_breakers:
                        options += ["--set", "clutch_breaker_failures=1000"]
                    gateway = start_gateway(workdir, fake, pki, agent, case, *options)
                    env, configure = KNOBS.get(agent, ({}, None)) if args.knobs else ({}, None)
                    try:
                        result = run_agent(agent, case, gateway, fake, workdir, binary, bound=args.bound,
                                           env=env, configure=configure)
                    finally:
                        gateway.stop()
                    row = summary(result)
                    results.append(row)
                    print(json.dumps({k: row[k] for k in ("agent", "case", "requests", "gaps", "exit_code",
                                                          "seconds", "shown_in")}), file=sys.stderr, flush=True)
        finally:
            fake.stop()
    return results


def summary(result) -> dict:
    where = [name for name, text in (("stdout", result.stdout), ("stderr", result.stderr))
             if result.names_every_candidate(text)]
    return {
        "agent": result.agent, "case": result.case, "candidates": result.candidates,
        "requests": len(result.requests), "gaps": result.gaps(),
        "by_model": dict(collections.Counter(e["model"] for e in result.requests)),
        "answers": [(e["status"], e["outcome"], e["error"], e["attempts"]) for e in result.requests],
        "upstream_calls": len(result.upstream),
        "exit_code": result.exit_code, "killed": result.killed, "seconds": result.seconds,
        "shown_in": where,
        "stdout_tail": result.stdout[-1500:], "stderr_tail": result.stderr[-1500:],
    }


def last_line(row: dict) -> str:
    """The last line the agent printed (stdout first: that is where an answer goes), without colours."""
    for text in (row["stdout_tail"], row["stderr_tail"]):
        lines = [line.strip() for line in ANSI.sub("", text).splitlines() if line.strip()]
        if lines:
            line = lines[-1].replace("|", "\\|")
            return line if len(line) <= 110 else line[:107] + "..."
    return ""


def table(rows: list[dict]) -> str:
    lines = ["| agent | case | requests | gaps s | upstream calls | exit | seconds | names shown in | last line |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        exit_code = "killed" if r["killed"] else r["exit_code"]
        gaps = ", ".join(str(g) for g in r["gaps"][:12]) + (" ..." if len(r["gaps"]) > 12 else "")
        lines.append(f"| {r['agent']} | {r['case']} | {r['requests']} | {gaps} | {r['upstream_calls']} | "
                     f"{exit_code} | {r['seconds']} | {', '.join(r['shown_in']) or 'nowhere'} | {last_line(r)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", nargs="+", default=AGENTS, choices=AGENTS)
    parser.add_argument("--cases", nargs="+", default=["429", "5xx"], choices=["429", "5xx"])
    parser.add_argument("--bound", type=float, default=120, help="seconds before the agent is stopped")
    parser.add_argument("--knobs", action="store_true", help="each agent's retry knob at its smallest value")
    parser.add_argument("--clutch-retries", type=int, default=None, help="clutch_retries (default: the option's)")
    parser.add_argument("--no-breakers", action="store_true",
                        help="breakers never open (clutch_breaker_failures=1000): every agent request asks every candidate")
    parser.add_argument("--json", type=Path, help="write every run's details here")
    parser.add_argument("--report", type=Path, help="re-render the table of a --json file instead of running")
    args = parser.parse_args()
    if args.report:
        print(table(json.loads(args.report.read_text())))
        return
    rows = run(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
