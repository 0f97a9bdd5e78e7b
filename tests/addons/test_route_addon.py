"""The Route addon in-process (tests/addon_rig.py): a routed flow carries its decision and upstream plan
(in the flow's metadata, its comment and the x-clutch-route header), and a failure in routing answers
the agent in its own dialect, never forwarding its request (tests/gateway/test_route.py and
test_fail_closed.py check the same through a real mitmdump)."""

from __future__ import annotations

import json
import logging
import textwrap

from addon_rig import llm_flow, provider_options, running

from addons.flows.meta import ROUTE, route_of

RULES = textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
                   key_env: OPENROUTER_API_KEY}
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com]}
    aliases:
      "rt-*": "openrouter:rt/routed"
""")
KEY = "sk-or-v1-route-rules"
MESSAGES = {"max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


async def test_a_routed_flow_carries_its_plan_and_reaches_the_target(tmp_path, provider, pki, monkeypatch):
    """Claude Code's Messages request, aliased to a chat-only OpenRouter: the plan (provider, model,
    URL, translation, key) is in the flow before the engine runs; the provider gets a Chat request
    with the rules' key; the agent gets a Messages answer that says how it was routed."""
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    async with running(tmp_path, RULES, **provider_options(provider.port, pki.ca_cert)) as rig:
        flow = llm_flow("https://api.anthropic.com/v1/messages", {"model": "rt-sonnet", **MESSAGES}, user="xx-cip",
                        headers={"x-api-key": "sk-ant-api03-agent-own"})
        await rig.request_hooks(flow)
        decision, plan = route_of(flow)
        assert (decision.rule, str(decision.target)) == ("alias:rt-*", "openrouter:rt/routed")
        assert (plan.provider, plan.model, plan.url) == ("openrouter", "rt/routed",
                                                         "https://openrouter.ai/api/v1/chat/completions")
        assert flow.metadata[ROUTE] | {"reason": "", "signals": [], "layer": [], "notes": []} == {
            "rule": "alias:rt-*", "reason": "", "target": "openrouter:rt/routed", "signals": [], "tokens": None,
            "layer": [], "provider": "openrouter", "model": "rt/routed",
            "url": "https://openrouter.ai/api/v1/chat/completions", "translated": "anthropic->openai_chat",
            "key": "OPENROUTER_API_KEY", "notes": []}
        answer = json.loads(await rig.finish(flow))
    assert flow.response.status_code == 200 and answer["type"] == "message"
    assert answer["content"][0]["text"] == "pong from the fake upstream"
    assert flow.response.headers["x-clutch-route"].startswith("alias:rt-*; ")
    assert "route alias" in flow.comment
    sent = provider.log[-1]
    assert (sent["host"], sent["path"], sent["model"]) == ("openrouter.ai", "/api/v1/chat/completions", "rt/routed")
    assert sent["headers"]["authorization"] == f"Bearer {KEY}" and "x-api-key" not in sent["headers"]


ROUTER = """\
def route(request, context):
    # a router that leaves the request unsendable (a set is not JSON)
    request["metadata"] = {"seen": {1, 2}}
    return None
"""


async def test_a_failure_in_routing_is_a_500_in_the_agents_dialect_and_nothing_is_sent(tmp_path, provider, pki,
                                                                                      caplog):
    """Building the routed request raises (the user's router left a body no JSON encoder takes): the
    guarded hook answers with a 500 Claude Code's SDK reads and does not retry; without it mitmproxy
    would log "Addon error" and the engine would send the agent's request, with its own key, to the
    provider it named, past the rules."""
    (tmp_path / "router.py").write_text(ROUTER)
    caplog.set_level(logging.WARNING)
    rules = RULES.replace("aliases:\n", "routes: {custom: router.py}\naliases:\n").replace(
        '"openrouter:rt/routed"', '"anthropic:rt/renamed"')  # same dialect: the body is sent re-encoded
    async with running(tmp_path, rules, **provider_options(provider.port, pki.ca_cert)) as rig:
        flow = llm_flow("https://api.anthropic.com/v1/messages", {"model": "rt-sonnet", **MESSAGES}, user="xx-cip",
                        headers={"x-api-key": "sk-ant-api03-agent-own"})
        answer = json.loads(await rig.send(flow))
    assert flow.response.status_code == 500
    assert (flow.response.headers["x-clutch-error"], flow.response.headers["x-should-retry"]) == \
        ("internal_error", "false")
    assert (answer["type"], answer["error"]["type"]) == ("error", "api_error")
    message = answer["error"]["message"]
    assert "internal error in routing" in message and "TypeError" in message and "not sent anywhere" in message
    assert flow.id in message and "refused (internal_error)" in flow.comment
    assert provider.log == []
    assert "Addon error" not in caplog.text and "routing failed on" in caplog.text
