"""Budgets through a real gateway: over an agent's or a provider's daily limit, the agent's own SDK
gets a 429 in its dialect that names the budget (and is told not to retry), or, with `over: free`,
the request goes to the free model; a restart remembers what was spent today."""

from __future__ import annotations

import concurrent.futures
import sqlite3
import textwrap
import time

import anthropic
import httpx
import openai
import pytest
from harness import Gateway, save, trust, wait_until

from addons.certs import ca_files
from launcher.recipe import agent_environment

PROVIDERS = """\
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat, anthropic],
                   hosts: [openrouter.ai], key_env: OPENROUTER_API_KEY}
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com]}
"""


def start(workdir, fake, pki, budgets: str) -> Gateway:
    workdir.mkdir(parents=True, exist_ok=True)
    rules = workdir / "rules.yaml"
    rules.write_text("version: 1\n" + textwrap.dedent(PROVIDERS) + textwrap.dedent(budgets))
    return Gateway(workdir, fake.port, pki.ca_cert, "--set", f"clutch_state_dir={workdir / 'state'}",
                   rules=rules, env={"OPENROUTER_API_KEY": "sk-or-v1-budget"})


def http_client(gateway, user) -> httpx.Client:
    return httpx.Client(proxy=gateway.proxy_url(user), verify=trust(gateway.bundle), trust_env=False, timeout=30)


def claude(gateway, model="claude-budget"):
    """Anthropic's SDK routed as the recipe routes Claude Code (its own httpx fork reads the environment)."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in agent_environment(gateway.proxy_url("xx-cip"), ca_files(gateway.confdir)).items():
            env.setenv(name, value)
        env.delenv("NO_PROXY", raising=False)
        env.delenv("no_proxy", raising=False)
        client = anthropic.Anthropic(api_key="sk-ant-test", max_retries=0)
        return client.messages.create(model=model, max_tokens=32, messages=[{"role": "user", "content": "hi"}])


def test_an_agent_over_its_dollar_budget_gets_a_429_in_its_dialect_and_a_restart_remembers(tmp_path, fake, pki):
    budgets = """\
    budgets:
      agents:
        qwen: {usd_per_day: 0.000001}
    """
    gateway = start(tmp_path, fake, pki, budgets)
    try:
        client = openai.OpenAI(api_key="sk-or-v1-agent", base_url="https://openrouter.ai/api/v1",
                               http_client=http_client(gateway, "xx-qip"), max_retries=2)
        first = client.chat.completions.create(model="b1/good", messages=[{"role": "user", "content": "hi"}])
        assert first.usage.cost > 0.000001  # OpenRouter's reported cost puts qwen over its budget
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="b1/good", messages=[{"role": "user", "content": "hi"}])
        error = refused.value
        assert "agent qwen is over its daily budget" in error.message and "budgets.agents.qwen" in error.message
        assert error.response.headers["x-should-retry"] == "false" and int(error.response.headers["retry-after"]) > 0
        sent = [e for e in fake.entries() if (e.get("request_json") or {}).get("model") == "b1/good"]
        assert len(sent) == 1  # refused at the gateway; the SDK did not retry it either
        assert claude(gateway).content  # another agent has no budget
        row = httpx.get(f"http://127.0.0.1:{gateway.port}/resilience", trust_env=False).json()["budgets"]
        assert row["limits"]["agent:qwen"]["over"] is True
    finally:
        gateway.stop()
    again = start(tmp_path, fake, pki, budgets)
    try:
        with http_client(again, "xx-qip") as c:
            answer = c.post("https://openrouter.ai/api/v1/chat/completions",
                            json={"model": "b1/good", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 429 and answer.json()["error"]["type"] == "rate_limit_exceeded"  # OpenAI's shape
    finally:
        again.stop()


def test_over_a_provider_budget_an_anthropic_agent_gets_its_own_error_shape(tmp_path, fake, pki):
    gateway = start(tmp_path, fake, pki, """\
    budgets:
      providers:
        anthropic: {tokens_per_day: 1}
    """)
    try:
        claude(gateway)
        with pytest.raises(anthropic.RateLimitError) as refused:
            claude(gateway)
        assert refused.value.body["error"]["type"] == "rate_limit_error"
        assert "provider anthropic is over its daily budget" in refused.value.body["error"]["message"]
    finally:
        gateway.stop()


def test_over_budget_with_over_free_goes_to_the_free_model(tmp_path, fake, pki):
    gateway = start(tmp_path, fake, pki, """\
    budgets:
      agents:
        claude: {tokens_per_day: 1}
      over: free
      free_model: "openrouter:b2/free-model:free"
    """)
    try:
        claude(gateway, "claude-paid")
        answer = claude(gateway, "claude-paid")
        assert answer.content
        last = fake.entries()[-1]
        assert (last["path"], last["request_json"]["model"]) == ("/api/v1/messages", "b2/free-model:free")
        with http_client(gateway, None) as c:
            usage = c.get(f"http://127.0.0.1:{gateway.port}/usage?by=rule").json()
        assert {r["key"] for r in usage["rows"]} >= {"budget:free"}
    finally:
        gateway.stop()


def spent_today(gateway, agent: str) -> int:
    """The agent's input + output tokens today, as the usage store holds them (/usage flushes first)."""
    today = time.strftime("%Y-%m-%d", time.gmtime())
    rows = httpx.get(f"http://127.0.0.1:{gateway.port}/usage?by=agent&since={today}", trust_env=False).json()["rows"]
    row = next((r for r in rows if r["key"] == agent), None)
    return row["input_tokens"] + row["output_tokens"] if row else 0


def reloads(gateway) -> int:
    return gateway.output().count("rules reloaded from")


def set_budget(gateway, rules_path, budgets: str) -> None:
    """Rewrite the rules file in one step and wait until the gateway reloaded it."""
    before = reloads(gateway)
    save(rules_path, "version: 1\n" + textwrap.dedent(PROVIDERS) + textwrap.dedent(budgets))
    assert wait_until(lambda: reloads(gateway) > before), gateway.output()[-2000:]


def test_budgets_added_by_a_reload_count_what_the_store_already_holds(tmp_path, fake, pki):
    """Budgets a hot reload adds count today's spending already in the usage store, also the rows of
    an earlier run the book never saw; a raised limit lets requests through; nothing counts twice."""
    def ask(gateway, client) -> httpx.Response:
        return client.post("https://openrouter.ai/api/v1/chat/completions",
                           json={"model": "b3/good", "messages": [{"role": "user", "content": "hi"}]})

    earlier = start(tmp_path, fake, pki, "")  # an earlier run today, without budgets
    try:
        with http_client(earlier, "xx-qip") as client:
            for _ in range(3):
                assert ask(earlier, client).status_code == 200
    finally:
        earlier.stop()
    gateway = start(tmp_path, fake, pki, "")
    try:
        with http_client(gateway, "xx-qip") as client:
            assert ask(gateway, client).status_code == 200  # a row this run counts before any budget exists
            spent = spent_today(gateway, "qwen")
            assert spent > 0
            set_budget(gateway, tmp_path / "rules.yaml", f"""\
            budgets:
              agents:
                qwen: {{tokens_per_day: {spent}}}
            """)
            refused = ask(gateway, client)
            assert refused.status_code == 429, refused.text
            assert refused.headers["x-clutch-error"] == "budget"
            assert f"{spent:,} of its {spent:,} tokens a day" in refused.json()["error"]["message"]

            set_budget(gateway, tmp_path / "rules.yaml", f"""\
            budgets:
              agents:
                qwen: {{tokens_per_day: {spent * 100}}}
            """)
            assert ask(gateway, client).status_code == 200
            # a burst whose rows finish around each other: the book must still match the store
            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                assert all(r.status_code == 200 for r in pool.map(lambda _: ask(gateway, client), range(6)))
        budgets = httpx.get(f"http://127.0.0.1:{gateway.port}/resilience", trust_env=False).json()["budgets"]
        assert budgets["seeded"] is True
        assert budgets["limits"]["agent:qwen"]["tokens"] == spent_today(gateway, "qwen") > spent
    finally:
        gateway.stop()


def test_reading_todays_spending_never_blocks_the_gateway_and_a_failed_read_refuses_visibly(tmp_path, fake, pki):
    """While another process holds the usage database's write lock, the usage writer waits for it and
    so does the read of today's spending: every other request (here /health) is still answered, and
    the request that needed the budgets gets a 503 saying why instead of going unchecked."""
    def ask(client) -> httpx.Response:
        return client.post("https://openrouter.ai/api/v1/chat/completions",
                           json={"model": "b4/good", "messages": [{"role": "user", "content": "hi"}]})

    gateway = start(tmp_path, fake, pki, "")
    locker = sqlite3.connect(tmp_path / "state" / "usage.db", isolation_level=None)
    try:
        with http_client(gateway, "xx-qip") as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
            assert ask(client).status_code == 200
            spent = spent_today(gateway, "qwen")
            locker.execute("BEGIN IMMEDIATE")  # e.g. `xx scan` writing its ranking, or a stuck backup tool
            assert ask(client).status_code == 200  # its row waits in the writer's queue
            set_budget(gateway, tmp_path / "rules.yaml", """\
            budgets:
              agents:
                qwen: {tokens_per_day: 100000000}
            """)
            waiting = pool.submit(ask, client)  # needs today's spending: queued behind that row
            while not waiting.done():
                assert gateway.health()["status"] == "ok"  # the event loop is free (health() times out at 5 s)
            refused = waiting.result()
            assert refused.status_code == 503 and refused.headers["x-clutch-error"] == "budget_unknown"
            assert refused.json()["error"]["message"] == (
                "Clutch: budgets are configured but cannot be checked: reading today's spending from the "
                "usage store took longer than 5 s. Try again shortly.")
            locker.execute("ROLLBACK")
            assert ask(client).status_code == 200  # read again, now that the writer could go on
        budgets = httpx.get(f"http://127.0.0.1:{gateway.port}/resilience", trust_env=False).json()["budgets"]
        assert budgets["limits"]["agent:qwen"]["tokens"] == spent_today(gateway, "qwen") == 3 * spent
        assert "reading today's spending from the usage store took longer than 5 s" in gateway.output()
    finally:
        locker.close()
        gateway.stop()
