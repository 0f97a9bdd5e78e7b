"""The Usage addon in-process (tests/addon_rig.py): a finished flow's attempts become rows in a real
SQLite file under the test's temporary state folder, read back here with sqlite3 itself
(tests/gateway/test_usage.py checks the rows of many more shapes through a real mitmdump)."""

from __future__ import annotations

import json
import sqlite3
import textwrap

from addon_rig import llm_flow, provider_options, running

from addons.flows.meta import USAGE

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
COLUMNS = ("request_id", "agent", "launch", "dialect", "stream", "requested_model", "provider", "model", "attempt",
           "outcome", "status", "served", "fallback", "input_tokens", "output_tokens", "cached_tokens",
           "cache_write_tokens", "tokens_estimated")


def rows(workdir) -> list[dict]:
    """The usage database's attempt rows, oldest first, as SQLite holds them."""
    with sqlite3.connect(workdir / "state" / "usage.db") as db:
        found = db.execute(f"SELECT {', '.join(COLUMNS)} FROM attempts ORDER BY ts, attempt").fetchall()
    return [dict(zip(COLUMNS, row, strict=True)) for row in found]


async def test_a_finished_flow_writes_its_row_with_the_providers_token_counts(tmp_path, provider, pki):
    async with running(tmp_path, **provider_options(provider.port, pki.ca_cert)) as rig:
        flow = llm_flow("https://api.anthropic.com/v1/messages", {"model": "use/good", "max_tokens": 8, **CHAT},
                        user="xx-cip")
        usage = json.loads(await rig.send(flow))["usage"]
    # the rig's end is the gateway's: Usage's `done` wrote what was queued and closed the database
    assert rows(tmp_path) == [{
        "request_id": flow.id, "agent": "claude", "launch": "cip", "dialect": "anthropic", "stream": 0,
        "requested_model": "use/good", "provider": "anthropic", "model": "use/good", "attempt": 0,
        "outcome": "success", "status": 200, "served": 1, "fallback": 0,
        # Anthropic counts cache reads and writes apart from input_tokens; the row's input is all of it
        "input_tokens": usage["input_tokens"] + usage["cache_read_input_tokens"]
        + usage["cache_creation_input_tokens"], "output_tokens": usage["output_tokens"],
        "cached_tokens": usage["cache_read_input_tokens"], "cache_write_tokens": usage["cache_creation_input_tokens"],
        "tokens_estimated": 0}]
    totals = flow.metadata[USAGE]  # what the journal and the budgets read
    assert (totals["output_tokens"], totals["cached_tokens"], totals["attempts"]) == \
        (usage["output_tokens"], usage["cache_read_input_tokens"], 1)


async def test_a_cascade_writes_a_row_per_attempt(tmp_path, provider, pki):
    """The first model's 429 and the next one's streamed answer are two rows of one request, the
    second with the tokens OpenRouter's stream reported."""
    rules = textwrap.dedent("""\
        version: 1
        providers:
          openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai]}
        cascades:
          "openrouter:use/fail-429": ["openrouter:use/next"]
        fallback: {method: cascade}
    """)
    async with running(tmp_path, rules, clutch_retries=0, **provider_options(provider.port, pki.ca_cert)) as rig:
        flow = llm_flow("https://openrouter.ai/api/v1/chat/completions",
                        {"model": "use/fail-429", "stream": True, **CHAT}, user="xx-ocp")
        streamed = await rig.send(flow)
    assert flow.response.status_code == 200 and b"pong" in streamed
    first, second = rows(tmp_path)
    assert first["request_id"] == second["request_id"] == flow.id
    assert (first["model"], first["attempt"], first["outcome"], first["status"], first["served"]) == \
        ("use/fail-429", 0, "failed", 429, 0)
    assert (second["model"], second["attempt"], second["outcome"], second["status"], second["served"],
            second["fallback"]) == ("use/next", 1, "success", 200, 1, 1)
    assert (second["agent"], second["launch"], second["stream"]) == ("opencode", "ocp", 1)
    chunks = [json.loads(line[6:]) for line in streamed.decode().splitlines() if line.startswith("data: {")]
    reported = [chunk["usage"] for chunk in chunks if chunk.get("usage")][-1]
    assert (second["output_tokens"], second["tokens_estimated"]) == (reported["completion_tokens"], 0)
    assert flow.metadata[USAGE]["attempts"] == 2
