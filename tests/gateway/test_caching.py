"""Prompt caching through a real gateway: an agent's Anthropic request without breakpoints goes out
with them, the fake provider (caching at breakpoints as Anthropic does) bills turn 2's repeated
prefix as cache reads, and the usage rows and `xx usage` show it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
from harness import ROOT, FakeProcess, Gateway, trust

from addons.models import catalog
from launcher.tables import money

pytestmark = pytest.mark.gateway

RULES = textwrap.dedent("""\
    version: 1
    providers:
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com]}
    compression: {mode: "off"}
""")
MODEL = "claude-cache-turns"
PRICES = {"prompt": 3e-6, "completion": 15e-6, "input_cache_read": 0.3e-6, "input_cache_write": 3.75e-6}
CATALOG = {"data": [{"id": f"anthropic/{MODEL}", "name": "Claude cache turns", "context_length": 200000,
                     "pricing": {k: f"{v:.10f}" for k, v in PRICES.items()}, "supported_parameters": ["tools"]}]}
SYSTEM = "You are a careful coding agent. " * 200  # a long, stable prefix worth caching
TOOLS = [{"name": "Bash", "description": "Run a shell command. " * 50,
          "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, pki):
    work = tmp_path_factory.mktemp("caching")
    (work / "fake").mkdir()
    (work / "gw").mkdir()
    fake = FakeProcess(work / "fake", pki, prompt_cache="on")
    rules = work / "rules.yaml"
    rules.write_text(RULES)
    # the catalog `xx scan` keeps, with Anthropic's cache prices: the rows' cost and cache saving
    catalog.save_cache(catalog.cache_path(work / "gw" / "state"), CATALOG, time.time(), "test")
    gateway = Gateway(work / "gw", fake.port, pki.ca_cert, "--set", f"clutch_state_dir={work / 'gw' / 'state'}",
                      rules=rules)
    yield work, fake, gateway
    gateway.stop()
    fake.stop()


def send(gateway, messages: list[dict]) -> dict:
    with httpx.Client(proxy=gateway.proxy_url("xx-pip.s-cache1"), verify=trust(gateway.bundle), trust_env=False,
                      timeout=30) as client:
        answer = client.post("https://api.anthropic.com/v1/messages",
                             headers={"x-api-key": "sk-ant-agent-cache", "anthropic-version": "2023-06-01"},
                             json={"model": MODEL, "max_tokens": 100, "system": SYSTEM, "tools": TOOLS,
                                   "messages": messages})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_turn_two_is_billed_as_cache_reads_in_the_rows_and_in_xx_usage(stack):
    work, fake, gateway = stack
    turn1 = [{"role": "user", "content": "Run the tests and fix what fails."}]
    first = send(gateway, turn1)
    turn2 = [*turn1, {"role": "assistant", "content": first["content"]},
             {"role": "user", "content": "Now run them again."}]
    second = send(gateway, turn2)

    # the fake caches only at breakpoints: a cache write means the gateway added them
    assert first["usage"]["cache_read_input_tokens"] == 0 and first["usage"]["cache_creation_input_tokens"] > 0
    read = second["usage"]["cache_read_input_tokens"]
    assert read >= first["usage"]["cache_creation_input_tokens"]  # all turn 1 wrote, turn 2 reads

    rows = gateway.usage_rows(model=MODEL)
    assert [(r["cached_tokens"], r["cache_write_tokens"]) for r in rows] == [
        (0, first["usage"]["cache_creation_input_tokens"]), (read, second["usage"]["cache_creation_input_tokens"])]

    env = {**os.environ, "HOME": str(work), "PYTHONPATH": str(ROOT)}
    database = str(work / "gw" / "state" / "usage.db")
    report = subprocess.run([sys.executable, "-m", "launcher.xx", "usage", "--db", database, "--by", "model",
                             "--json"], env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    [row] = [r for r in json.loads(report.stdout)["rows"] if MODEL in r["key"]]
    assert row["cached_tokens"] == read
    assert row["cache_write_tokens"] == sum(r["cache_write_tokens"] for r in rows)

    # what caching saved: turn 1 paid the write premium, turn 2 read at a tenth of the price
    premium = PRICES["input_cache_write"] - PRICES["prompt"]
    saved = [-r["cache_write_tokens"] * premium + r["cached_tokens"] * (PRICES["prompt"] - PRICES["input_cache_read"])
             for r in rows]
    assert [r["cache_saved_usd"] for r in rows] == pytest.approx(saved)
    assert saved[0] < 0 < saved[1] and row["cache_saved_usd"] == pytest.approx(sum(saved))
    table = subprocess.run([sys.executable, "-m", "launcher.xx", "usage", "--db", database, "--by", "model"],
                           env={**env, "COLUMNS": "120"}, cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert "saved" in table.stdout and money(sum(saved)) in table.stdout, table.stdout  # "cache" above it
