"""Responses <-> Chat translation through a real gateway: the official `openai` SDK calls the Responses
API (as Codex does) and the rules send it to a provider that speaks only Chat Completions, or to one
that speaks only Anthropic Messages; the Chat SDK is sent to a provider that speaks only Responses. Tool
calls make the round trip with their call ids; what cannot be translated is refused in the SDK's dialect.
"""

from __future__ import annotations

import json
import textwrap

import httpx2 as httpx
import openai
import pytest
from harness import gateway_on_rules, trust

from addons.wire.identity import Identity, username_for

RULES = textwrap.dedent("""\
    version: 1
    providers:
      openai: {base_url: "https://api.openai.com/v1", dialects: [openai_responses], hosts: [api.openai.com],
               key_env: OPENAI_API_KEY}
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
                   key_env: OPENROUTER_API_KEY}
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
                  key_env: ANTHROPIC_API_KEY}
      gemini: {base_url: "https://generativelanguage.googleapis.com", dialects: [gemini],
               hosts: [generativelanguage.googleapis.com], key_env: GEMINI_API_KEY}
    aliases:
      gpt-routed: "openrouter:resp/chat-model"
      gpt-broken: "openrouter:resp/midstream-error-delay-150"  # the error comes after the commit point
      gpt-limited: "openrouter:resp/fail-429"
      gpt-claude: "anthropic:resp/claude"
      to-responses: "openai:resp/responses-model"
      gpt-cascade: "openrouter:resp/fail-503"
    cascades:
      "openrouter:resp/fail-503": ["gemini:resp/gemini-only", "openrouter:resp/after-skip"]
    fallback: {method: cascade}
""")
ROUTER_KEY, ANTHROPIC_KEY, OPENAI_KEY = "sk-or-v1-resp-rules", "sk-ant-api03-resp-rules", "sk-proj-resp-rules"
ANSWER = "pong from the fake upstream"
GET_WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
APPLY_PATCH = {"type": "custom", "name": "apply_patch", "description": "Edit files. A FREEFORM tool.",
               "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"}}
PATCH = "*** Begin Patch\n*** Add File: a.txt\n+a\n*** End Patch\n"


@pytest.fixture(scope="module")
def routing(tmp_path_factory, fake, pki):
    # no retry: a 429's Retry-After (2 s from the fake) reaches the agent instead of being waited out
    gateway = gateway_on_rules(tmp_path_factory.mktemp("route-responses"), fake, pki, RULES,
                               "--set", "clutch_retries=0",
                               env={"OPENROUTER_API_KEY": ROUTER_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
                                    "OPENAI_API_KEY": OPENAI_KEY})
    yield gateway
    gateway.stop()


def client(gateway, agent="codex", base_url="https://api.openai.com/v1"):
    http = httpx.Client(proxy=gateway.proxy_url(username_for(Identity(agent=agent, session="route-responses"))),
                        verify=trust(gateway.ca_cert), timeout=30)
    return openai.OpenAI(api_key="sk-agent-own", base_url=base_url, max_retries=0, http_client=http)


def entry_where(fake, model, predicate=lambda e: True):
    return fake.wait_for(lambda e: e.get("model") == model and e.get("status") is not None
                         and "x-clutch-flow" in e["headers"] and predicate(e), newest=True)


def last_message(role):
    return lambda e: (e["request_json"].get("messages") or [{}])[-1].get("role") == role


def test_responses_stream_with_a_tool_call_round_trip_on_a_chat_only_provider(routing, fake):
    sdk = client(routing)
    prompt = 'Weather? use-tool:get_weather:{"city":"Paris"}'
    with sdk.responses.stream(model="gpt-routed", instructions="Be brief.", input=prompt,
                              tools=[GET_WEATHER]) as stream:
        final = stream.get_final_response()
        header = stream._response.headers["x-clutch-route"]  # the HTTP response the stream reads
    assert header == "alias:gpt-routed; openrouter:resp/chat-model, translated openai_responses->openai_chat, " \
                     "key from $OPENROUTER_API_KEY"
    [call] = final.output
    assert (call.type, call.call_id, call.name, json.loads(call.arguments)) == (
        "function_call", "call_fake_1", "get_weather", {"city": "Paris"})
    assert final.status == "completed" and final.usage.input_tokens > 0
    first = entry_where(fake, "resp/chat-model", last_message("user"))
    assert (first["host"], first["path"]) == ("openrouter.ai", "/api/v1/chat/completions")
    assert first["headers"]["authorization"] == f"Bearer {ROUTER_KEY}" and first["request_json"]["stream"] is True
    assert first["request_json"]["messages"][0] == {"role": "system", "content": "Be brief."}

    # the agent sends the call and its output back: the chat provider gets them paired by the same id
    events = list(sdk.responses.create(model="gpt-routed", tools=[GET_WEATHER], stream=True, input=[
        {"role": "user", "content": prompt}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == ANSWER and events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    second = entry_where(fake, "resp/chat-model", last_message("tool"))["request_json"]["messages"]
    assert second[-2]["tool_calls"][0]["id"] == "call_fake_1"
    assert second[-1] == {"role": "tool", "tool_call_id": "call_fake_1", "content": "sunny"}


def test_responses_without_stream_and_a_custom_tool_round_trip(routing, fake):
    sdk = client(routing)
    prompt = f"Patch it: use-tool:apply_patch:{json.dumps({'input': PATCH})}"
    response = sdk.responses.create(model="gpt-routed", input=prompt, tools=[APPLY_PATCH])
    [call] = response.output
    assert (call.type, call.call_id, call.name, call.input) == ("custom_tool_call", "call_fake_1", "apply_patch", PATCH)
    sent = entry_where(fake, "resp/chat-model", lambda e: "apply_patch" in json.dumps(e["request_json"]))
    assert sent["request_json"]["tools"][0]["function"]["parameters"]["properties"] == {"input": {"type": "string"}}
    answer = sdk.responses.create(model="gpt-routed", tools=[APPLY_PATCH], input=[
        {"role": "user", "content": prompt}, call.model_dump(exclude_none=True),
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Success. Updated: A a.txt"}])
    assert answer.output_text == ANSWER and answer.status == "completed"
    messages = entry_where(fake, "resp/chat-model", last_message("tool"))["request_json"]["messages"]
    assert json.loads(messages[-2]["tool_calls"][0]["function"]["arguments"]) == {"input": PATCH}
    assert messages[-1] == {"role": "tool", "tool_call_id": "call_fake_1", "content": "Success. Updated: A a.txt"}


def test_responses_reach_an_anthropic_only_provider_through_chat(routing, fake):
    with client(routing).responses.stream(model="gpt-claude", input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == ANSWER and final.usage.input_tokens_details.cached_tokens > 0
    entry = entry_where(fake, "resp/claude")
    assert entry["path"] == "/v1/messages" and entry["headers"]["x-api-key"] == ANTHROPIC_KEY
    assert entry["request_json"]["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_a_request_a_chat_provider_cannot_take_is_refused_in_the_responses_dialect(routing, fake):
    before = len(fake.entries())
    with pytest.raises(openai.BadRequestError) as refused:
        client(routing).responses.create(model="gpt-routed", input="and then?", previous_response_id="resp_abc")
    error = refused.value
    assert error.response.headers["x-clutch-error"] == "untranslatable"
    assert error.body["message"] == (
        "Clutch: cannot send this openai_responses request to openrouter:resp/chat-model (openrouter speaks "
        "openai_chat): previous_response_id names a response stored by the agent's provider")
    assert error.body["type"] == "invalid_request_error"
    assert len(fake.entries()) == before  # nothing was sent anywhere


def test_a_cascade_skips_a_candidate_it_cannot_translate_to(routing, fake):
    before = len(fake.entries())
    raw = client(routing).responses.with_raw_response.create(model="gpt-cascade", input="hi")
    assert raw.parse().output_text == ANSWER
    # 503, then the Gemini-only candidate skipped (no translation), then the next one answers; nothing
    # went to the agent's own provider instead
    assert raw.headers["x-clutch-attempts"] == "2" and raw.headers["x-clutch-model"] == "openrouter:resp/after-skip"
    fake.wait_for(lambda e: e.get("model") == "resp/after-skip" and e.get("status") == 200)
    calls = [(e["host"], e["path"], e["model"]) for e in fake.entries()[before:]]
    assert calls == [("openrouter.ai", "/api/v1/chat/completions", "resp/fail-503"),
                     ("openrouter.ai", "/api/v1/chat/completions", "resp/after-skip")]


def test_upstream_errors_reach_a_responses_agent_in_its_dialect(routing):
    sdk = client(routing)
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.responses.create(model="gpt-limited", input="x")
    assert limited.value.response.headers["retry-after"] == "2"
    # after the commit point, a provider's error inside the stream ends it with response.failed
    events = list(sdk.responses.create(model="gpt-broken", input="x", stream=True))
    assert events[-1].type == "response.failed" and events[-1].response.error.code == "server_error"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta")


def test_chat_sdk_on_a_responses_only_provider_with_a_tool_round_trip(routing, fake):
    sdk = client(routing, agent="opencode", base_url="https://openrouter.ai/api/v1")
    tools = [{"type": "function", "function": {k: GET_WEATHER[k] for k in ("name", "description", "parameters")}}]
    messages = [{"role": "user", "content": "use-tool:get_weather:{\"city\":\"Oslo\"}"}]
    stream = sdk.chat.completions.create(model="to-responses", messages=messages, tools=tools, stream=True,
                                         stream_options={"include_usage": True})
    calls, finish, usage = {}, None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
                entry["id"] = delta.id or entry["id"]
                entry["name"] = delta.function.name or entry["name"]
                entry["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls" and usage.prompt_tokens > 0
    assert calls == {0: {"id": "call_fake_1", "name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    first = entry_where(fake, "resp/responses-model")
    assert (first["host"], first["path"]) == ("api.openai.com", "/v1/responses")
    assert first["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert first["request_json"]["tools"] == [GET_WEATHER] and first["request_json"]["store"] is False
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_fake_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_fake_1", "content": "snow"}]
    completion = sdk.chat.completions.create(model="to-responses", messages=messages, tools=tools)
    assert completion.choices[0].message.content == ANSWER and completion.choices[0].finish_reason == "stop"
    items = entry_where(fake, "resp/responses-model",
                        lambda e: not e["request_json"].get("stream"))["request_json"]["input"]
    assert items[-2:] == [
        {"type": "function_call", "call_id": "call_fake_1", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
        {"type": "function_call_output", "call_id": "call_fake_1", "output": "snow"}]
