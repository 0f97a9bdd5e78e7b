"""Routing fails closed, through a real gateway: a request routed to another provider whose body is
malformed where translation reads it gets a 400 in the agent's own dialect naming the field (the
official SDKs raise BadRequestError with that message), the fake provider receives nothing, and the
refusal is in the journal (GET /requests) like any other. An exception in Clutch's own logic on an
LLM call is answered as an error, never forwarded to the provider the agent named."""

from __future__ import annotations

import textwrap

import anthropic
import httpx2 as httpx
import openai
import pytest
from harness import gateway_on_rules, trust

from addons.wire.identity import Identity, username_for

RULES = textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
                   key_env: OPENROUTER_API_KEY}
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
                  key_env: ANTHROPIC_API_KEY}
      openai: {base_url: "https://api.openai.com/v1", dialects: [openai_chat, openai_responses],
               hosts: [api.openai.com]}
    aliases:
      "fc-anthropic-*": "openrouter:fc/from-anthropic"
      "fc-chat-*": "anthropic:fc/from-chat"
      "fc-responses-*": "openrouter:fc/from-responses"
""")
KEYS = {"OPENROUTER_API_KEY": "sk-or-v1-fail-closed", "ANTHROPIC_API_KEY": "sk-ant-api03-fail-closed"}


@pytest.fixture(scope="module")
def routed(tmp_path_factory, fake, pki):
    gateway = gateway_on_rules(tmp_path_factory.mktemp("fail-closed"), fake, pki, RULES, env=KEYS)
    yield gateway
    gateway.stop()


def http_client(gateway, agent):
    return httpx.Client(proxy=gateway.proxy_url(username_for(Identity(agent=agent, session="fail-closed"))),
                        verify=trust(gateway.ca_cert), timeout=30)


def sent_anywhere(fake, model: str) -> list[dict]:
    """Every request the fake provider received that came from this test's request (its model, as
    the agent sent it or as the rules routed it)."""
    return [e for e in fake.entries() if model in str(e.get("request_json") or "") or e.get("model") == model]


def assert_refused_in_journal(gateway, model: str, kind: str, status: int = 400) -> None:
    entry = gateway.journal(model)[-1]
    assert (entry["status"], entry["error"], entry["outcome"], entry["attempts"]) == (status, kind, "refused", 0)


ANTHROPIC_CASES = {
    "content-5": ([{"role": "user", "content": 5}], {}, "messages[0].content: must be a string or an array"),
    "messages-string": ("x", {}, "messages: must be an array of messages, not a string"),
    "tools-7": ([{"role": "user", "content": "hi"}], {"tools": 7}, "tools: must be an array of tools, not a number"),
    "system-object": ([{"role": "user", "content": "hi"}], {"system": {}},
                      "system: must be a string or an array of content blocks, not an object"),
    "block-without-type": ([{"role": "user", "content": [{"text": "hi"}]}], {},
                           "messages[0].content[0].type: must be a string, not null"),
    "tool-result-content-5": ([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                              "content": 5}]}], {},
                              "messages[0].content[0].content: must be a string or an array"),
}


@pytest.mark.parametrize("case", list(ANTHROPIC_CASES))
def test_malformed_anthropic_request_routed_to_chat_gets_a_400_naming_the_field(routed, fake, case):
    messages, extra, expected = ANTHROPIC_CASES[case]
    model = f"fc-anthropic-{case}"
    client = anthropic.Anthropic(api_key="sk-ant-api03-agent-own", http_client=http_client(routed, "claude"),
                                 max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model=model, max_tokens=32, messages=messages, **extra)
    assert expected in refused.value.message, refused.value.message
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert refused.value.response.headers["x-clutch-error"] == "malformed"
    assert not sent_anywhere(fake, model)
    assert_refused_in_journal(routed, model, "malformed")


CHAT_CASES = {
    "content-5": ([{"role": "user", "content": 5}], {}, "messages[0].content: must be a string or an array"),
    "messages-string": ("x", {}, "messages: must be an array of messages, not a string"),
    "tool-call-5": ([{"role": "assistant", "content": None, "tool_calls": [5]},
                     {"role": "user", "content": "go on"}], {}, "messages[0].tool_calls[0]: must be a tool call"),
    "effort-object": ([{"role": "user", "content": "hi"}], {"reasoning_effort": {}},
                      "reasoning_effort: must be a string, not an object"),
}


@pytest.mark.parametrize("case", list(CHAT_CASES))
def test_malformed_chat_request_routed_to_anthropic_gets_a_400_naming_the_field(routed, fake, case):
    messages, extra, expected = CHAT_CASES[case]
    model = f"fc-chat-{case}"
    client = openai.OpenAI(api_key="sk-agent-own", http_client=http_client(routed, "opencode"), max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=model, messages=messages, **extra)
    assert expected in refused.value.message, refused.value.message
    assert not sent_anywhere(fake, model)
    assert_refused_in_journal(routed, model, "malformed")


def test_malformed_responses_input_routed_to_chat_gets_a_400_naming_the_item(routed, fake):
    model = "fc-responses-items"
    client = openai.OpenAI(api_key="sk-agent-own", http_client=http_client(routed, "codex"), max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=model, input=[5])
    assert "input[0]: must be an input item (an object), not a number" in refused.value.message
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=model, input=[{"type": "message", "role": "user", "content": 5}])
    assert "input[0].content: must be a string or an array" in refused.value.message
    assert not sent_anywhere(fake, model)
    assert_refused_in_journal(routed, model, "malformed")


def test_a_well_formed_request_on_the_same_routes_still_goes_through(routed, fake):
    """The checks let real requests pass (the research corpus's bodies pass them too)."""
    client = anthropic.Anthropic(api_key="sk-ant-api03-agent-own", http_client=http_client(routed, "claude"),
                                 max_retries=0)
    message = client.messages.create(model="fc-anthropic-good", max_tokens=32, system=[{"type": "text", "text": "s"}],
                                     messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert message.content[0].text == "pong from the fake upstream"
    assert fake.entries_for("fc/from-anthropic")


ROUTER = """\
def route(request, context):
    # a router that leaves the request unsendable (a set is not JSON)
    request["metadata"] = {"seen": {1, 2}}
    return None
"""


def test_an_exception_in_routing_is_answered_never_forwarded_to_the_agents_provider(tmp_path, fake, pki):
    """Before: mitmproxy logged "Addon error" and the engine sent the agent's original request, with the
    agent's own key, to the provider it named, past the rules (which route it to fc/same)."""
    (tmp_path / "router.py").write_text(ROUTER)
    rules = RULES.replace("aliases:\n", 'routes: {custom: router.py}\naliases:\n  "fc-router-*": "anthropic:fc/same"\n')
    gateway = gateway_on_rules(tmp_path, fake, pki, rules, env=KEYS)
    try:
        model = "fc-router-breaks-the-body"
        client = anthropic.Anthropic(api_key="sk-ant-api03-agent-own", http_client=http_client(gateway, "claude"),
                                     max_retries=0)
        with pytest.raises(anthropic.InternalServerError) as refused:
            client.messages.create(model=model, max_tokens=32, messages=[{"role": "user", "content": "hi"}])
        error = refused.value
        assert error.status_code == 500 and error.response.headers["x-clutch-error"] == "internal_error"
        assert error.response.headers["x-should-retry"] == "false"
        assert "internal error in routing" in error.message and "TypeError" in error.message
        assert "it was not sent anywhere" in error.message
        assert not sent_anywhere(fake, model) and not fake.entries_for("fc/same")
        assert_refused_in_journal(gateway, model, "internal_error", status=500)
        assert "Addon error" not in gateway.output()
    finally:
        gateway.stop()
