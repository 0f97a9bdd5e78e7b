"""The Budget addon in-process (tests/addon_rig.py): an agent over its daily limit gets a 429 in its own
dialect with Retry-After, counted from the rows the Usage addon wrote for its earlier request; and the
guarded hook answers when the budget check itself fails (tests/gateway/test_budget.py checks budgets
through a real mitmdump with the official SDKs)."""

from __future__ import annotations

import datetime
import json
import logging
import textwrap

from addon_rig import llm_flow, provider_options, running

RULES = textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai]}
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com]}
    budgets:
      agents:
        qwen: {tokens_per_day: 5}
""")
CHAT = {"messages": [{"role": "user", "content": "hi"}]}
URL = "https://openrouter.ai/api/v1/chat/completions"


def seconds_to_utc_midnight() -> float:
    now = datetime.datetime.now(datetime.UTC)
    midnight = datetime.datetime.combine(now.date() + datetime.timedelta(days=1), datetime.time(), datetime.UTC)
    return (midnight - now).total_seconds()


async def test_an_agent_over_its_budget_gets_a_429_in_its_dialect_with_retry_after(tmp_path, provider, pki):
    async with running(tmp_path, RULES, **provider_options(provider.port, pki.ca_cert)) as rig:
        first = llm_flow(URL, {"model": "bud/good", **CHAT}, user="xx-qip")
        spent = json.loads(await rig.send(first))["usage"]["total_tokens"]
        assert first.response.status_code == 200 and spent > 5
        second = llm_flow(URL, {"model": "bud/good", **CHAT}, user="xx-qip")
        before = seconds_to_utc_midnight()
        refused = json.loads(await rig.send(second))
        after = seconds_to_utc_midnight()
        other = llm_flow("https://api.anthropic.com/v1/messages", {"model": "bud/claude", "max_tokens": 8, **CHAT},
                         user="xx-cip")
        await rig.send(other)
        limits = rig.addon("budget").snapshot()["limits"]
    assert second.response.status_code == 429
    headers = second.response.headers
    assert (headers["x-clutch-error"], headers["x-should-retry"]) == ("budget", "false")
    assert after <= int(headers["retry-after"]) <= before + 1  # the budget resets at the next UTC day
    assert refused["error"]["type"] == "rate_limit_exceeded"  # OpenAI's shape: the SDK raises RateLimitError
    message = refused["error"]["message"]
    assert "agent qwen is over its daily budget" in message and "budgets.agents.qwen" in message
    assert "refused: agent qwen is over its daily budget" in second.comment
    assert [e["model"] for e in provider.log] == ["bud/good", "bud/claude"]  # refused at the gateway
    assert other.response.status_code == 200  # an agent with no budget goes on
    assert limits["agent:qwen"]["over"] is True and limits["agent:qwen"]["tokens"] == spent


ROUTER = """\
def route(request, context):
    # leaves the request unsendable to any other model (a set is not JSON); routes nothing itself
    request["metadata"] = {"seen": {1, 2}}
    return None
"""


async def test_a_failure_in_the_budget_check_is_answered_never_forwarded(tmp_path, provider, pki, caplog):
    """Over its budget with `over: free`, the request is re-planned for the free model, and that raises
    (the user's router left a body no JSON encoder takes): the guarded hook answers with a 500 in the
    agent's dialect; without it mitmproxy would log "Addon error" and the engine would send the request
    past the budget."""
    (tmp_path / "router.py").write_text(ROUTER)
    rules = RULES + "  over: free\n  free_model: openrouter:bud/free\nroutes: {custom: router.py}\n"
    caplog.set_level(logging.WARNING)
    async with running(tmp_path, rules, **provider_options(provider.port, pki.ca_cert)) as rig:
        first = llm_flow(URL, {"model": "bud/good", **CHAT}, user="xx-qip")
        await rig.send(first)
        assert first.response.status_code == 200  # sent as the agent sent it: the router routed nothing
        second = llm_flow(URL, {"model": "bud/good", **CHAT}, user="xx-qip")
        answer = json.loads(await rig.send(second))
    assert second.response.status_code == 500
    assert (second.response.headers["x-clutch-error"], second.response.headers["x-should-retry"]) == \
        ("internal_error", "false")
    assert answer["error"]["type"] == "server_error"
    assert "internal error in the budget check" in answer["error"]["message"]
    assert "TypeError" in answer["error"]["message"] and "not sent anywhere" in answer["error"]["message"]
    assert [e["model"] for e in provider.log] == ["bud/good"]
    assert "Addon error" not in caplog.text and "the budget check failed on" in caplog.text
