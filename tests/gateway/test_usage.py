"""Usage records through a real gateway (mitmdump -s addons/clutch.py) and the fake provider: one row
per upstream attempt, for every dialect, stream and non-stream, cascades and soft failures; nothing
of the prompt or the keys in the database; a restart keeps the rows; a burst of 200 loses none."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import textwrap
import time

import httpx
import pytest
from harness import Gateway, trust

from prometheus_client.parser import text_string_to_metric_families

from addons.models import catalog

RULES = textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
                   key_env: OPENROUTER_API_KEY}
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com]}
      openai: {base_url: "https://api.openai.com/v1", dialects: [openai_chat, openai_responses],
               hosts: [api.openai.com]}
      gemini: {base_url: "https://generativelanguage.googleapis.com", dialects: [gemini],
               hosts: [generativelanguage.googleapis.com]}
    cascades:
      "openrouter:u1/fail-429": ["openrouter:u1/chunks-3"]
      "openrouter:u2/empty": ["openrouter:u2/good"]
      "openrouter:u3/fail-500": ["openrouter:u3/fail-502"]
    fallback: {method: cascade}
    compression: {mode: "off"}
""")
SECRET_PROMPT = "usage-secret-prompt-7f3a"
AGENT_KEY = "sk-or-v1-agent-key-usage-5521"
RULES_KEY = "sk-or-v1-rules-key-usage-8812"


def start(workdir, fake, pki) -> Gateway:
    workdir.mkdir(parents=True, exist_ok=True)
    rules = workdir / "rules.yaml"
    rules.write_text(RULES)
    return Gateway(workdir, fake.port, pki.ca_cert, "--set", "clutch_retries=0", "--set",
                   f"clutch_state_dir={workdir / 'state'}", rules=rules, env={"OPENROUTER_API_KEY": RULES_KEY})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("usage")


# The model catalog `xx scan` keeps (OpenRouter's /api/v1/models shape): the Anthropic models' prices
# price the rows of a provider that reports no cost.
CATALOG = {"data": [{"id": f"anthropic/claude-usage-{s}", "name": "Claude usage", "context_length": 200000,
                     "pricing": {"prompt": "0.000003", "completion": "0.000015", "input_cache_read": "0.0000003",
                                 "input_cache_write": "0.00000375"},
                     "supported_parameters": ["tools"]} for s in ("whole", "stream")]}


@pytest.fixture(scope="module")
def gateway(workdir, fake, pki):
    catalog.save_cache(catalog.cache_path(workdir / "state"), CATALOG, time.time(), "test")
    process = start(workdir, fake, pki)
    yield process
    process.stop()


def client(gateway, user="xx-cip.s-u1") -> httpx.Client:
    return httpx.Client(proxy=gateway.proxy_url(user), verify=trust(gateway.bundle), trust_env=False, timeout=30)


def chat(gateway, model, stream, user="xx-cip.s-u1", url="https://openrouter.ai/api/v1/chat/completions"):
    with client(gateway, user) as c:
        return c.post(url, headers={"authorization": f"Bearer {AGENT_KEY}"},
                      json={"model": model, "stream": stream,
                            "messages": [{"role": "user", "content": f"{SECRET_PROMPT} {model}"}]})


def request_rows(gateway, model: str) -> list[dict]:
    found = gateway.usage_rows(requested_model=model)
    assert len({r["request_id"] for r in found}) == 1, found
    return sorted(found, key=lambda r: r["attempt"])


def sent_usage(response: httpx.Response) -> dict:
    """The usage block the agent received: the JSON answer's, or the stream's last one."""
    if "text/event-stream" not in response.headers.get("content-type", ""):
        return response.json()["usage"]
    found: dict = {}
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            event = json.loads(line[6:])
            # Anthropic splits it: message_start has the input, message_delta the final output count
            found.update(event.get("usage") or (event.get("response") or {}).get("usage")
                         or (event.get("message") or {}).get("usage") or event.get("usageMetadata") or {})
    return found


@pytest.mark.parametrize("stream", [False, True])
def test_a_served_request_is_one_row_with_the_providers_tokens_and_cost(gateway, stream):
    model = f"u0/good-{'stream' if stream else 'whole'}"
    response = chat(gateway, model, stream)
    assert response.status_code == 200
    usage = sent_usage(response)
    [row] = request_rows(gateway, model)
    assert (row["agent"], row["launch"], row["session"]) == ("claude", "cip", "u1")
    assert (row["dialect"], row["stream"], row["provider"], row["model"]) == ("openai_chat", stream, "openrouter", model)
    assert (row["outcome"], row["status"], row["served"], row["fallback"], row["attempt"]) == \
        ("success", 200, True, False, 0)
    assert row["input_tokens"] == usage["prompt_tokens"] and row["cached_tokens"] == usage["prompt_tokens"] // 2
    assert row["output_tokens"] == usage["completion_tokens"] and row["reasoning_tokens"] == 2
    assert row["tokens_estimated"] is False
    assert row["cost_source"] == "provider" and row["cost_usd"] == pytest.approx(usage["cost"])
    assert row["ttft_ms"] > 0 and row["duration_ms"] >= row["ttft_ms"] - 1


def test_a_cascade_is_a_row_per_attempt_and_the_fallback_is_marked(gateway):
    assert chat(gateway, "u1/fail-429", True).status_code == 200
    failed, served = request_rows(gateway, "u1/fail-429")
    assert (failed["model"], failed["attempt"], failed["outcome"], failed["status"], failed["served"]) == \
        ("u1/fail-429", 0, "failed", 429, False)
    assert failed["error_class"] == "status" and failed["input_tokens"] is None and failed["ttft_ms"] is None
    assert (served["model"], served["attempt"], served["outcome"], served["served"], served["fallback"]) == \
        ("u1/chunks-3", 1, "success", True, True)
    assert served["output_tokens"] == 3 + 2 and served["rule"] == failed["rule"]


def test_a_soft_failure_is_recorded_as_one_and_the_next_model_serves(gateway):
    assert chat(gateway, "u2/empty", False).status_code == 200
    empty, good = request_rows(gateway, "u2/empty")
    assert (empty["outcome"], empty["status"], empty["error_class"], empty["served"]) == \
        ("soft_failure", 200, "empty", False)
    assert empty["output_tokens"] == 0  # the empty answer's own usage block: billed, and counted
    assert (good["outcome"], good["served"], good["fallback"]) == ("success", True, True)


def test_every_candidate_failing_leaves_a_failed_row_for_each(gateway):
    assert chat(gateway, "u3/fail-500", True).status_code == 500
    first, second = request_rows(gateway, "u3/fail-500")
    assert [(r["model"], r["status"], r["outcome"], r["served"]) for r in (first, second)] == \
        [("u3/fail-500", 500, "failed", False), ("u3/fail-502", 502, "failed", False)]
    summary = httpx.get(f"http://127.0.0.1:{gateway.port}/usage?by=model", trust_env=False).json()
    by_model = {r["key"]: r for r in summary["rows"]}
    assert by_model["openrouter:u3/fail-502"]["failures"] == 1 and by_model["openrouter:u3/fail-502"]["failed_attempts"] == 1


DIALECT_CALLS = {
    "anthropic": ("https://api.anthropic.com/v1/messages", "claude-usage-{s}",
                  lambda model, stream: {"model": model, "max_tokens": 64, "stream": stream,
                                         "messages": [{"role": "user", "content": SECRET_PROMPT}]},
                  {"x-api-key": AGENT_KEY, "anthropic-version": "2023-06-01"}),
    "openai_chat": ("https://api.openai.com/v1/chat/completions", "gpt-usage-{s}",
                    lambda model, stream: {"model": model, "stream": stream,
                                           **({"stream_options": {"include_usage": True}} if stream else {}),
                                           "messages": [{"role": "user", "content": SECRET_PROMPT}]},
                    {"authorization": f"Bearer {AGENT_KEY}"}),
    "openai_responses": ("https://api.openai.com/v1/responses", "gpt-resp-usage-{s}",
                         lambda model, stream: {"model": model, "stream": stream, "input": SECRET_PROMPT},
                         {"authorization": f"Bearer {AGENT_KEY}"}),
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("dialect", sorted(DIALECT_CALLS))
def test_every_dialect_records_the_providers_usage(gateway, dialect, stream):
    url, model, body, headers = DIALECT_CALLS[dialect]
    model = model.format(s="stream" if stream else "whole")
    with client(gateway, "xx-xip") as c:
        response = c.post(url, headers=headers, json=body(model, stream))
    assert response.status_code == 200, response.text
    usage = sent_usage(response)
    [row] = request_rows(gateway, model)
    assert (row["dialect"], row["stream"], row["outcome"], row["tokens_estimated"]) == (dialect, stream, "success", False)
    if dialect == "anthropic":  # input_tokens excludes the cache; the row counts every prompt token
        total = usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
        assert (row["input_tokens"], row["cached_tokens"], row["cache_write_tokens"]) == \
            (total, usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"])
        assert row["output_tokens"] == usage["output_tokens"]
    elif dialect == "openai_chat":
        assert (row["input_tokens"], row["output_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    else:
        assert (row["input_tokens"], row["output_tokens"]) == (usage["input_tokens"], usage["output_tokens"])
        assert row["reasoning_tokens"] == usage["output_tokens_details"]["reasoning_tokens"]
    if dialect == "anthropic":  # priced from the catalog: Anthropic reports no cost
        plain = row["input_tokens"] - row["cached_tokens"] - row["cache_write_tokens"]
        expected = plain * 3e-6 + row["cached_tokens"] * 3e-7 + row["cache_write_tokens"] * 3.75e-6 \
            + row["output_tokens"] * 15e-6
        assert row["cost_source"] == "catalog" and row["cost_usd"] == pytest.approx(expected)
    else:  # not in the catalog, and OpenAI reports no cost: unknown, not zero
        assert (row["cost_usd"], row["cost_source"]) == (None, None)


@pytest.mark.parametrize("sse", [True, False], ids=["alt-sse", "json-array"])
def test_gemini_streams_record_the_last_usage_metadata(gateway, sse):
    model = f"gemini-usage-{'sse' if sse else 'array'}"
    url = f"https://generativelanguage.googleapis.com/v1beta/models/{model}:streamGenerateContent"
    with client(gateway, "xx-gip") as c:
        response = c.post(url + ("?alt=sse" if sse else ""), headers={"x-goog-api-key": AGENT_KEY},
                          json={"contents": [{"role": "user", "parts": [{"text": SECRET_PROMPT}]}]})
    assert response.status_code == 200
    usage = sent_usage(response) if sse else response.json()[-1]["usageMetadata"]
    [row] = gateway.usage_rows(model=model)
    assert (row["dialect"], row["stream"], row["outcome"]) == ("gemini", True, "success")
    assert row["input_tokens"] == usage["promptTokenCount"]
    assert row["output_tokens"] == usage["candidatesTokenCount"] + usage.get("thoughtsTokenCount", 0)


def test_no_prompt_text_and_no_key_reaches_the_database(gateway):
    assert chat(gateway, "u4/good", True).status_code == 200
    gateway.usage_rows()  # flushed
    state = gateway.workdir / "state"
    data = b"".join(p.read_bytes() for p in state.glob("usage.db*"))
    assert data and b"u4/good" in data  # the model names are there, as they should be
    for secret in (SECRET_PROMPT, AGENT_KEY, RULES_KEY, "test-token"):
        assert secret.encode() not in data, secret
    assert oct((state / "usage.db").stat().st_mode & 0o777) == "0o600"


def test_the_journal_shows_tokens_and_cost(gateway):
    assert chat(gateway, "u5/good", False).status_code == 200
    [row] = gateway.usage_rows(requested_model="u5/good")
    page = httpx.get(f"http://127.0.0.1:{gateway.port}/requests", trust_env=False).json()
    [entry] = [e for e in page["requests"] if e["model"] == "u5/good"]
    assert (entry["input_tokens"], entry["output_tokens"], entry["cost_usd"]) == \
        (row["input_tokens"], row["output_tokens"], row["cost_usd"])


def test_a_burst_of_200_loses_no_row_and_a_restart_keeps_them(workdir, fake, pki):
    gateway = start(workdir / "burst", fake, pki)
    try:
        async def burst():
            async with httpx.AsyncClient(proxy=gateway.proxy_url("xx-oip.s-burst"), verify=trust(gateway.bundle),
                                         trust_env=False, timeout=60,
                                         limits=httpx.Limits(max_connections=50)) as c:
                async def one(i):
                    r = await c.post("https://openrouter.ai/api/v1/chat/completions",
                                     json={"model": f"burst/good-{i}", "stream": i % 2 == 0,
                                           "messages": [{"role": "user", "content": "hi"}]})
                    return r.status_code
                return await asyncio.gather(*(one(i) for i in range(200)))

        assert asyncio.run(burst()) == [200] * 200
        found = gateway.usage_rows(session="burst")
        assert sorted(r["model"] for r in found) == sorted(f"burst/good-{i}" for i in range(200))
    finally:
        assert gateway.stop() == 0
    again = start(workdir / "burst", fake, pki)
    try:
        assert len(again.usage_rows(session="burst")) == 200  # the rows survived the restart
        assert chat(again, "burst/after-restart", False).status_code == 200
        assert len(again.usage_rows(requested_model="burst/after-restart")) == 1
    finally:
        again.stop()
    db = sqlite3.connect(workdir / "burst" / "state" / "usage.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def test_codex_responses_over_websocket_are_a_row_per_response_completed(workdir, fake, pki):
    import aiohttp

    folder = workdir / "websocket"
    folder.mkdir()
    (folder / "rules.yaml").write_text(RULES)
    gateway = Gateway(folder, fake.port, pki.ca_cert, "--set", "clutch_websocket=pass", "--set",
                      f"clutch_state_dir={folder / 'state'}", rules=folder / "rules.yaml")
    try:
        async def talk() -> list[dict]:
            completed = []
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect("wss://api.openai.com/v1/responses", proxy=gateway.proxy_url("xx-xip.s-ws"),
                                              ssl=trust(gateway.bundle),
                                              headers={"authorization": f"Bearer {AGENT_KEY}"}) as ws:
                    for turn in range(2):
                        await ws.send_str(json.dumps({"type": "response.create", "model": "gpt-ws",
                                                      "input": f"{SECRET_PROMPT} turn {turn}"}))
                        while True:
                            event = json.loads((await ws.receive()).data)
                            if event["type"] == "response.completed":
                                completed.append(event["response"]["usage"])
                                break
            return completed

        sent = asyncio.run(talk())
        found = sorted(gateway.usage_rows(session="ws"), key=lambda r: r["request_id"])
        assert len(found) == 2
        for row, usage in zip(found, sent):
            assert (row["agent"], row["dialect"], row["model"], row["outcome"]) == \
                ("codex", "openai_responses", "gpt-ws", "success")
            assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"], row["reasoning_tokens"]) == \
                (usage["input_tokens"], usage["output_tokens"], usage["input_tokens_details"]["cached_tokens"], 2)
            assert row["tokens_estimated"] is False
        data = b"".join(p.read_bytes() for p in (folder / "state").glob("usage.db*"))
        assert SECRET_PROMPT.encode() not in data and AGENT_KEY.encode() not in data
    finally:
        gateway.stop()


def test_metrics_parse_with_the_prometheus_parser_and_count_what_the_store_holds(gateway):
    assert chat(gateway, "u6/fail-429", False).status_code == 429  # no cascade for u6: the 429 reaches the agent
    text = httpx.get(f"http://127.0.0.1:{gateway.port}/metrics", trust_env=False).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = sum(s.value for s in families["clutch_requests"].samples if s.name == "clutch_requests_total")
    stored = gateway.usage_rows()
    assert requests == len({r["request_id"] for r in stored})
    attempts = sum(s.value for s in families["clutch_attempts"].samples if s.name == "clutch_attempts_total")
    assert attempts == sum(r["outcome"] != "refused" for r in stored)
    spend = sum(s.value for s in families["clutch_spend_usd"].samples if s.name == "clutch_spend_usd_total")
    assert spend == pytest.approx(sum(r["cost_usd"] or 0 for r in stored))
    failed = [s for s in families["clutch_attempts"].samples
              if s.labels.get("model") == "u6/fail-429" and s.labels.get("exception_status") == "429"]
    assert failed and failed[0].labels["api_provider"] == "openrouter"
    buckets = [s for s in families["clutch_llm_api_time_to_first_token_seconds"].samples if s.name.endswith("_bucket")]
    assert buckets and all(s.labels["le"] for s in buckets)


def test_an_agents_own_session_header_groups_its_calls(gateway):
    """Claude Code names its session in a header; its title and warm-up calls carry the same one."""
    with client(gateway, "xx-cip") as c:  # a launch without a session of its own
        for model in ("u7/title", "u7/main"):
            assert c.post("https://openrouter.ai/api/v1/chat/completions",
                          headers={"x-claude-code-session-id": "3f1c-session", "authorization": f"Bearer {AGENT_KEY}"},
                          json={"model": model, "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    found = gateway.usage_rows(session="3f1c-session")
    assert sorted(r["requested_model"] for r in found) == ["u7/main", "u7/title"]
    report = httpx.get(f"http://127.0.0.1:{gateway.port}/usage?by=session", trust_env=False).json()["rows"]
    assert [r["requests"] for r in report if r["key"] == "3f1c-session"] == [2]


def test_a_broken_database_is_moved_aside_and_a_fresh_one_keeps_the_accounts(workdir, fake, pki):
    folder = workdir / "broken"
    folder.mkdir()
    (folder / "rules.yaml").write_text(RULES)
    broken = folder / "usage.db"
    broken.write_bytes(b"this is not an SQLite database, it is a text file someone left here\n" * 64)
    gateway = Gateway(folder, fake.port, pki.ca_cert, "--set", f"clutch_usage_db={broken}",
                      "--set", f"clutch_state_dir={folder / 'state'}", rules=folder / "rules.yaml")
    try:
        assert chat(gateway, "u8/good", False).status_code == 200  # the agent is served all the same
        answer = httpx.get(f"http://127.0.0.1:{gateway.port}/usage", trust_env=False)
        assert answer.status_code == 200  # a fresh database took the broken one's place
        health = gateway.health()
        assert health["usage_db"] == str(broken) and health["status"] == "degraded"
        aside = [p for p in folder.glob("usage.db.broken-*")]
        assert len(aside) == 1 and aside[0].name in health["problems"][0]
        assert "file is not a database" in health["problems"][0]
    finally:
        gateway.stop()
    broken = aside[0]
    assert broken.read_bytes().startswith(b"this is not an SQLite database")  # left as it was
