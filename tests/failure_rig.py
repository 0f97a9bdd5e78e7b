"""A real agent CLI, one prompt, against a gateway whose every candidate fails: what it asks, how often,
how it ends and what it prints. Shared by tests/e2e/test_e2e_failures.py and bench/agent_failures.py.

Each run gets a fresh gateway (breakers, cooldowns and the journal start empty) whose rules give the
agent's provider a cascade of candidates (three unless asked) that all fail, in the agent's own dialect,
so nothing is translated: Claude Code on Anthropic, Codex on OpenAI Responses, the others on OpenRouter Chat. The
launch pins the first candidate (`.m-` in the proxy user name, as `xx ... -m provider:model` does), so
every LLM call of the agent (side calls such as titles too) goes down the same cascade.

What is counted: the agent's requests are the gateway's journal (`GET /requests`, one entry per LLM
request the agent sent, with its arrival time); the candidates' calls are the fake provider's log.
The run is bounded: past `bound` seconds the agent's process group is stopped (SIGTERM, then SIGKILL)
and the run says it was killed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from agent_setups import AgentSetup, prepare
from harness import agent_search_path, gateway_on_rules, stop_group

from addons.certs import ca_files
from addons.wire.identity import Identity, username_for
from launcher.agents import command_line, yolo_env
from launcher.recipe import agent_environment

PROMPT = "say hi"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# the provider each agent's setup calls (tests/agent_setups.py), named as in RULES
PROVIDER = {"claude": "anthropic", "codex": "openai", "opencode": "openrouter", "qwen": "openrouter",
            "pi": "openrouter", "hermes": "openrouter", "openclaw": "openrouter"}
# the fake's fault tokens (tests/fake_upstream.py), taken in turn: 429 with retry-after: 2; 500 without a
# wait, 503 with retry-after: 2 (and, on Anthropic's API, x-should-retry: true on every one of them)
FAULTS = {"429": ("fail-429",), "5xx": ("fail-500", "fail-503")}
RULES = """\
version: 1
providers:
  anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
              key_env: ANTHROPIC_API_KEY}
  openai: {base_url: "https://api.openai.com/v1", dialects: [openai_responses, openai_chat],
           hosts: [api.openai.com], key_env: OPENAI_API_KEY}
  openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
               key_env: OPENROUTER_API_KEY}
compression: {mode: "off"}
fallback: {method: cascade}
"""


def candidates(agent: str, case: str, count: int = 3) -> list[str]:
    """The `count` failing targets of `agent`'s cascade in `case` ("429" or "5xx")."""
    provider, faults = PROVIDER[agent], FAULTS[case]
    return [f"{provider}:cand-{n}/{faults[(n - 1) % len(faults)]}" for n in range(1, count + 1)]


def rules_for(agent: str, case: str, count: int = 3) -> str:
    first, *rest = candidates(agent, case, count)
    return RULES + f"cascades:\n  {first!r}: [{', '.join(repr(t) for t in rest)}]\n"


@dataclasses.dataclass
class Run:
    agent: str
    case: str
    candidates: list[str]
    argv: list[str]
    exit_code: int | None  # None: still running at the bound, stopped
    seconds: float
    stdout: str
    stderr: str
    requests: list[dict]  # the gateway's journal entries, oldest first
    upstream: list[dict]  # the fake's log entries for the candidates

    @property
    def killed(self) -> bool:
        return self.exit_code is None

    @property
    def shown(self) -> str:
        return self.stdout + self.stderr

    def plain(self, text: str) -> str:
        """`text` without terminal colour codes (OpenCode colours its error line even into a pipe)."""
        return ANSI.sub("", text)

    def names_every_candidate(self, text: str | None = None) -> bool:
        text = self.shown if text is None else text
        return all(target in text for target in self.candidates)

    def gaps(self) -> list[float]:
        """Seconds between one agent request's arrival and the next one's."""
        times = [entry["time"] for entry in self.requests]
        return [round(b - a, 2) for a, b in zip(times, times[1:])]


def start_gateway(workdir: Path, fake, pki, agent: str, case: str, *options: str, count: int = 3):
    """A fresh gateway on the failing cascade for `agent`; its state folder is its own."""
    workdir.mkdir(parents=True, exist_ok=True)
    settings = ["--set", f"clutch_state_dir={workdir / 'state'}", *options]
    return gateway_on_rules(workdir, fake, pki, rules_for(agent, case, count), *settings)


def journal(gateway) -> list[dict]:
    return httpx.get(f"http://127.0.0.1:{gateway.port}/requests", timeout=10, trust_env=False).json()["requests"]


def run_agent(agent: str, case: str, gateway, fake, workdir: Path, binary: Path, *, bound: float = 120,
              env: dict[str, str] | None = None, configure: Callable[[AgentSetup, Path], None] | None = None,
              count: int = 3) -> Run:
    """One prompt of `agent` (the launcher's `xx <agent>np` argv and the recipe's environment, fresh
    HOME) through `gateway`. `env` adds variables (retry knobs); `configure(setup, home)` may edit the
    agent's own files after its setup wrote them. Waits for the agent to exit, at most `bound` s."""
    home, work = workdir / "home", workdir / "work"
    setup = prepare(agent, home, work)
    if configure is not None:
        configure(setup, home)
    targets = candidates(agent, case, count)
    identity = Identity(agent=agent, session=f"fail-{agent}-{case}", model=targets[0])
    full_env = {
        "PATH": agent_search_path(agent), "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb",
        **yolo_env(agent, is_root=os.geteuid() == 0), **setup.env,
        **agent_environment(gateway.proxy_url(username_for(identity)), ca_files(gateway.confdir)),
        **(env or {}),
    }
    argv = command_line(agent, "n", prompt=PROMPT, extra=setup.args)
    argv[0] = str(binary)
    before = len(fake.entries())
    out, err = open(workdir / "agent.out", "w+"), open(workdir / "agent.err", "w+")
    started = time.monotonic()
    # its own process group: whatever the agent starts is stopped with it
    process = subprocess.Popen(argv, env=full_env, cwd=work, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                               start_new_session=True)
    try:
        code: int | None = process.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        code = None
    seconds = time.monotonic() - started
    stop_group(process)
    out.seek(0), err.seek(0)
    stdout, stderr = out.read(), err.read()
    out.close(), err.close()
    names = {target.split(":", 1)[1] for target in targets}
    upstream = [e for e in fake.entries()[before:] if e.get("model") in names]
    return Run(agent, case, targets, argv, code, round(seconds, 1), stdout, stderr, settled(gateway), upstream)


def settled(gateway, timeout: float = 10) -> list[dict]:
    """The journal once it stops growing: an entry is written when its flow ends, which can be just after
    the agent read its last byte (and a killed agent's last request ends when the gateway sees it go)."""
    deadline = time.monotonic() + timeout
    entries = journal(gateway)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        newer = journal(gateway)
        if len(newer) == len(entries):
            return newer
        entries = newer
    return entries


def codex_retries(request: int, stream: int) -> Callable[[AgentSetup, Path], None]:
    """A `configure` hook for Codex: its retry knobs, `request_max_retries` (HTTP retries of one request,
    5xx and transport errors; never a 429) and `stream_max_retries` (the turn re-sent after a failed
    stream, a 429 included), belong to a model provider, and the built-in `openai` cannot be redefined
    ("model_providers contains reserved built-in provider IDs"), so this defines the same API under
    another id and selects it (a top-level key, so before the file's first table)."""
    def configure(setup: AgentSetup, home: Path) -> None:
        path = home / ".codex" / "config.toml"
        provider = textwrap.dedent(f"""
            [model_providers.openai-clutch]
            name = "OpenAI through Clutch"
            base_url = "https://api.openai.com/v1"
            env_key = "CODEX_API_KEY"
            wire_api = "responses"
            request_max_retries = {request}
            stream_max_retries = {stream}
            """)
        path.write_text('model_provider = "openai-clutch"\n' + path.read_text() + provider)
    return configure


def json_settings(relative: str, settings: dict) -> Callable[[AgentSetup, Path], None]:
    """A `configure` hook that merges `settings` (one level deep) into the agent's JSON file `relative`."""
    def configure(setup: AgentSetup, home: Path) -> None:
        path = home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        current = json.loads(path.read_text()) if path.exists() else {}
        for key, value in settings.items():
            current[key] = {**current.get(key, {}), **value} if isinstance(value, dict) else value
        path.write_text(json.dumps(current))
    return configure


def text_file(relative: str, text: str) -> Callable[[AgentSetup, Path], None]:
    """A `configure` hook that writes `text` to the agent's file `relative`."""
    def configure(setup: AgentSetup, home: Path) -> None:
        path = home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return configure
