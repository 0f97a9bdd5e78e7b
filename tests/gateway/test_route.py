"""Routing and translation through a real gateway: the official SDKs call one provider, the rules
send the request to another, in another dialect, and the answer comes back in the SDK's own."""

from __future__ import annotations

import json
import textwrap

import anthropic
import httpx2 as httpx
import openai
import pytest
from harness import Gateway, gateway_on_rules, trust

from addons.wire.identity import Identity, username_for

RULES = textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
                   key_env: OPENROUTER_API_KEY}
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
                  key_env: ANTHROPIC_API_KEY}
      openai: {base_url: "https://api.openai.com/v1", dialects: [openai_chat, openai_responses],
               hosts: [api.openai.com], key_env: OPENAI_API_KEY}
      keyless: {base_url: "https://generativelanguage.googleapis.com/v1", dialects: [openai_chat],
                key_env: CLUTCH_TEST_NEVER_SET}
      gemini: null  # the defaults' provider at keyless's host
    tiers: {big: "openrouter:routed/big"}
    aliases:
      coder-model: "openrouter:qwen/qwen3-coder"
      to-claude: "anthropic:routed/claude"
      needs-key: "keyless:some/model"
      limited: "openrouter:routed/fail-429"
      broken: "anthropic:routed/fail-500"
      bad-index: "anthropic:routed/index-not-a-number"
    routes: {think: "anthropic:routed/thinker"}
""")
ROUTER_KEY, ANTHROPIC_KEY = "sk-or-v1-from-the-rules", "sk-ant-api03-from-the-rules"
TOOLS_A = [{"name": "get_weather", "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
TOOLS_CHAT = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                                "parameters": TOOLS_A[0]["input_schema"]}}]


@pytest.fixture(scope="module")
def routing(tmp_path_factory, fake, pki):
    # no retry: a 429's Retry-After (2 s from the fake) reaches the agent instead of being waited out
    gateway = gateway_on_rules(tmp_path_factory.mktemp("routing"), fake, pki, RULES, "--set", "clutch_retries=0",
                               env={"OPENROUTER_API_KEY": ROUTER_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
                                    "BIG_MODEL": "", "CLUTCH_TEST_NEVER_SET": ""})
    yield gateway
    gateway.stop()


def http_client(gateway, identity=Identity(agent="claude", session="route")):
    return httpx.Client(proxy=gateway.proxy_url(username_for(identity)), verify=trust(gateway.ca_cert), timeout=30)


def claude(gateway, **kw):
    return anthropic.Anthropic(api_key="sk-ant-api03-agent-own", http_client=http_client(gateway, **kw), max_retries=0)


def openai_client(gateway, base_url=None, key="sk-agent-own"):
    return openai.OpenAI(api_key=key, base_url=base_url, max_retries=0,
                         http_client=http_client(gateway, Identity(agent="opencode", session="route")))


def last_entry(fake, model):
    return fake.wait_for(lambda e: e.get("model") == model and e.get("status") is not None
                         and "x-clutch-flow" in e["headers"], newest=True)


def test_claude_tier_routed_to_an_openai_chat_provider_streaming(routing, fake):
    client = claude(routing)
    with client.messages.stream(model="claude-opus-4-8", max_tokens=512, system="Be brief.",
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        header = stream.response.headers["x-clutch-route"]
    assert text == "pong from the fake upstream"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    assert header.startswith("tier:big; openrouter:routed/big, translated anthropic->openai_chat")
    entry = last_entry(fake, "routed/big")
    assert entry["path"] == "/api/v1/chat/completions" and entry["host"] == "openrouter.ai"
    assert entry["headers"]["authorization"] == f"Bearer {ROUTER_KEY}"  # the target's key, from the rules
    assert "x-api-key" not in entry["headers"]
    sent = entry["request_json"]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["stream_options"] == {"include_usage": True}


def test_claude_non_stream_translated(routing, fake):
    message = claude(routing).messages.create(model="claude-opus-4-5-20990101", max_tokens=64,
                                              messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "pong from the fake upstream"
    assert message.usage.input_tokens > 0 and message.usage.cache_read_input_tokens > 0


def test_tool_call_round_trip_anthropic_client_chat_provider(routing, fake):
    client = claude(routing)
    messages = [{"role": "user", "content": "use-tool please"}]
    with client.messages.stream(model="claude-opus-4-8", max_tokens=512, tools=TOOLS_A, messages=messages) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    call = next(block for block in final.content if block.type == "tool_use")
    assert (call.id, call.name) == ("call_fake_1", "get_weather")
    messages += [{"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in final.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}]
    with client.messages.stream(model="claude-opus-4-8", max_tokens=512, tools=TOOLS_A, messages=messages) as stream:
        answer = "".join(stream.text_stream)
    assert answer == "pong from the fake upstream"
    follow_up = fake.wait_for(lambda e: e.get("model") == "routed/big" and e.get("request_json", {}).get("messages", [{}])[-1].get("role") == "tool")
    sent = follow_up["request_json"]["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == "call_fake_1"
    assert sent[-1] == {"role": "tool", "tool_call_id": "call_fake_1", "content": "sunny"}


def test_tool_call_round_trip_openai_client_anthropic_provider(routing, fake):
    client = openai_client(routing)
    messages = [{"role": "user", "content": "use-tool now"}]
    stream = client.chat.completions.create(model="to-claude", stream=True, tools=TOOLS_CHAT, messages=messages)
    calls, finish = {}, None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
                entry["id"] = delta.id or entry["id"]
                if delta.function:
                    entry["name"] = delta.function.name or entry["name"]
                    entry["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert calls == {0: {"id": "toolu_fake_1", "name": "get_weather", "arguments": "{}"}}
    entry = last_entry(fake, "routed/claude")
    assert entry["path"] == "/v1/messages" and entry["headers"]["x-api-key"] == ANTHROPIC_KEY
    assert entry["request_json"]["tools"][0]["input_schema"] == TOOLS_A[0]["input_schema"]
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "toolu_fake_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_fake_1", "content": "rainy"}]
    completion = client.chat.completions.create(model="to-claude", tools=TOOLS_CHAT, messages=messages)
    assert completion.choices[0].message.content == "pong from the fake upstream"
    assert completion.choices[0].finish_reason == "stop"
    sent = fake.wait_for(lambda e: e.get("model") == "routed/claude" and not e["request_json"].get("stream"))
    last = sent["request_json"]["messages"][-1]
    assert last["role"] == "user"
    assert last["content"][0]["type"] == "tool_result" and last["content"][0]["tool_use_id"] == "toolu_fake_1"


def test_anthropic_stream_whose_block_index_is_not_a_number_still_translates(routing, fake):
    """An Anthropic server that gives a tool_use block's `index` as [0] (a broken or hostile one): the
    chat client still gets the tool call. The translator used the index as a dict key: a list there
    raised TypeError, and the client got Clutch's internal error instead of the call."""
    stream = openai_client(routing).chat.completions.create(
        model="bad-index", stream=True, tools=TOOLS_CHAT, messages=[{"role": "user", "content": "use-tool now"}])
    calls, finish = {}, None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
                entry["id"] = delta.id or entry["id"]
                if delta.function:
                    entry["name"] = delta.function.name or entry["name"]
                    entry["arguments"] += delta.function.arguments or ""
    assert last_entry(fake, "routed/index-not-a-number")["status"] == 200
    assert finish == "tool_calls"
    assert calls == {0: {"id": "toolu_fake_1", "name": "get_weather", "arguments": "{}"}}


def test_alias_on_the_same_provider_keeps_the_agents_key(routing, fake):
    client = openai_client(routing, "https://openrouter.ai/api/v1", key="sk-or-v1-agent-own")
    raw = client.chat.completions.with_raw_response.create(model="coder-model",
                                                           messages=[{"role": "user", "content": "hi"}])
    completion = raw.parse()
    assert raw.headers["x-clutch-route"] == "alias:coder-model; openrouter:qwen/qwen3-coder"
    assert completion.choices[0].message.content == "pong from the fake upstream"
    entry = last_entry(fake, "qwen/qwen3-coder")
    assert entry["headers"]["authorization"] == "Bearer sk-or-v1-agent-own"


def test_think_route_rewrites_the_model_on_the_agents_own_provider(routing, fake):
    message = claude(routing).messages.create(
        model="claude-sonnet-5", max_tokens=32000, thinking={"type": "enabled", "budget_tokens": 20000},
        messages=[{"role": "user", "content": "hi"}])
    assert message.content[-1].text == "pong from the fake upstream"
    entry = last_entry(fake, "routed/thinker")
    sent = entry["headers"]  # this SDK sends its key as a Bearer token
    assert "sk-ant-api03-agent-own" in (sent.get("x-api-key"), sent.get("authorization", "").removeprefix("Bearer "))
    assert entry["request_json"]["thinking"] == {"type": "enabled", "budget_tokens": 20000}


@pytest.mark.parametrize("effort, routed", [("medium", False), ("high", True)])
def test_claude_codes_default_thinking_is_not_a_think_request(routing, fake, effort, routed):
    """Claude Code sends adaptive thinking at effort medium on every request (its default): the think
    route fires only when its user asks for more."""
    raw = claude(routing).messages.with_raw_response.create(
        model="claude-sonnet-5", max_tokens=32000, thinking={"type": "adaptive"},
        extra_body={"output_config": {"effort": effort}}, messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().content[-1].text == "pong from the fake upstream"
    assert raw.headers["x-clutch-route"].startswith("think;") is routed
    last_entry(fake, "routed/thinker" if routed else "claude-sonnet-5")


def test_codexs_default_effort_is_not_a_think_request(routing, fake):
    client = openai.OpenAI(api_key="sk-agent-own", max_retries=0, http_client=http_client(
        routing, Identity(agent="codex", session="think")))
    for effort, rule in (("medium", "unchanged"), ("high", "think")):
        raw = client.responses.with_raw_response.create(model="gpt-5.5", input="hi", reasoning={"effort": effort})
        assert raw.headers["x-clutch-route"].split(";")[0] == rule


def test_bypass_launch_keeps_the_model(routing, fake):
    client = claude(routing, identity=Identity(agent="claude", launch_code="cib"))
    raw = client.messages.with_raw_response.create(model="claude-opus-4-8", max_tokens=64,
                                                   messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().content[0].text == "pong from the fake upstream"
    # the prompt-cache breakpoints Clutch adds change the body, not the route
    assert raw.headers["x-clutch-route"] == "bypass; unchanged"
    entry = last_entry(fake, "claude-opus-4-8")  # the tier rule would have sent it to routed/big
    assert (entry["host"], entry["path"]) == ("api.anthropic.com", "/v1/messages")
    assert entry["request_json"]["messages"][0]["content"][-1]["cache_control"] == {"type": "ephemeral"}


def test_missing_target_key_is_a_clear_error_in_the_agents_dialect(routing):
    with pytest.raises(openai.APIStatusError) as error:
        openai_client(routing).chat.completions.create(model="needs-key", messages=[{"role": "user", "content": "x"}])
    assert error.value.status_code == 502
    assert "$CLUTCH_TEST_NEVER_SET" in error.value.message
    assert error.value.response.headers["x-clutch-error"] == "missing_key"
    assert ROUTER_KEY not in error.value.response.text


def test_upstream_errors_reach_the_agent_in_its_own_dialect(routing):
    client = claude(routing)
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model="limited", max_tokens=64, messages=[{"role": "user", "content": "x"}])
    assert limited.value.body["error"]["type"] == "rate_limit_error"
    assert limited.value.response.headers["retry-after"] == "2"
    with pytest.raises(openai.InternalServerError) as broken:
        openai_client(routing).chat.completions.create(model="broken", messages=[{"role": "user", "content": "x"}])
    assert broken.value.status_code == 500
    assert broken.value.body["type"] in ("server_error", "api_error")


def test_decision_is_explained_in_the_flow_comment_and_metadata(tmp_path, fake, pki):
    saved = tmp_path / "flows.mitm"
    gateway = gateway_on_rules(tmp_path, fake, pki, RULES, "-w", str(saved), env={"OPENROUTER_API_KEY": ROUTER_KEY})
    try:
        claude(gateway).messages.create(model="claude-opus-4-8", max_tokens=64,
                                        messages=[{"role": "user", "content": "x"}])
    finally:
        gateway.stop()
    from mitmproxy import io
    with open(saved, "rb") as f:
        flows = [flow for flow in io.FlowReader(f).stream() if flow.type == "http"]
    flow = next(f for f in flows if f.request.path.startswith("/v1/messages"))
    assert flow.request.host == "api.anthropic.com"  # mitmweb shows what the agent called
    assert ("route tier:big (opus family -> BIG) -> openrouter:routed/big, translated anthropic->openai_chat, "
            "key from $OPENROUTER_API_KEY; attempts: routed/big 200, committed in ") in flow.comment
    route = flow.metadata["clutch.route"]
    assert (route["rule"], route["target"], route["url"]) == (
        "tier:big", "openrouter:routed/big", "https://openrouter.ai/api/v1/chat/completions")
    assert ROUTER_KEY not in json.dumps(flow.metadata) and ROUTER_KEY not in gateway.output()


def test_health_lists_environment_overrides(tmp_path, fake, pki):
    gateway = Gateway(tmp_path, fake.port, pki.ca_cert, env={"BIG_MODEL": "moonshotai/kimi-k2.6",
                                                             "ROUTER_THINK": "anthropic:claude-thinker"})
    try:
        rules = gateway.health()["rules"]
        assert rules["overrides"] == {"BIG_MODEL": "moonshotai/kimi-k2.6", "ROUTER_THINK": "anthropic:claude-thinker"}
        assert rules["tiers"] == {"big": "openrouter:moonshotai/kimi-k2.6"}
    finally:
        gateway.stop()
