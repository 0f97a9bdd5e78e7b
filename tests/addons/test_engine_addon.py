"""The Engine addon in-process (tests/addon_rig.py): Clutch's addons under mitmproxy's taddons and the
fake provider in the test's own event loop, for what tests/gateway/test_engine.py checks through a
real mitmdump: a request with no route, a stopping gateway's refusal, a failure of Clutch's own logic
while the engine serves a request."""

from __future__ import annotations

import json
import logging
import textwrap

from addon_rig import llm_flow, provider_options, running

from addons.flows.meta import ATTEMPTS

ANSWER = "pong from the fake upstream"
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


async def test_a_request_with_no_route_goes_out_as_the_agent_sent_it(tmp_path, provider, pki):
    """No Route addon loaded: the engine sends the agent's request to the provider it named, with its
    own key and body, and the flow shows the agent's URL again with the attempt in its comment."""
    body = {"model": "eng/plain", "max_tokens": 16, **CHAT}
    async with running(tmp_path, without=("route",), **provider_options(provider.port, pki.ca_cert)) as rig:
        flow = llm_flow("https://api.anthropic.com/v1/messages", body, user="xx-cip",
                        headers={"x-api-key": "sk-ant-api03-agent-own"})
        answer = json.loads(await rig.send(flow))
    assert flow.response.status_code == 200 and answer["content"][0]["text"] == ANSWER
    sent = provider.log[-1]
    assert (sent["host"], sent["path"], sent["model"]) == ("api.anthropic.com", "/v1/messages", "eng/plain")
    assert sent["headers"]["x-api-key"] == "sk-ant-api03-agent-own" and sent["request_json"] == body
    assert "proxy-authorization" not in sent["headers"]
    assert flow.request.pretty_url == "https://api.anthropic.com/v1/messages"
    assert json.loads(flow.request.raw_content) == body
    assert "forwarded unchanged" in flow.comment and "attempts: " in flow.comment
    assert [(a["target"], a["status"], a["ended"]) for a in flow.metadata[ATTEMPTS]] == \
        [("anthropic:eng/plain", 200, "complete")]


async def test_a_stream_reaches_the_agent_as_the_provider_sent_it(tmp_path, provider, pki):
    async with running(tmp_path, **provider_options(provider.port, pki.ca_cert)) as rig:
        flow = llm_flow("https://openrouter.ai/api/v1/chat/completions",
                        {"model": "eng/stream", "stream": True, **CHAT}, user="xx-ocp")
        streamed = (await rig.send(flow)).decode()
    assert flow.response.stream and flow.response.headers["content-type"].startswith("text/event-stream")
    pieces = [json.loads(line[6:]) for line in streamed.splitlines()
              if line.startswith("data: {")]
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in pieces if p["choices"]) == ANSWER
    assert streamed.rstrip().endswith("data: [DONE]")
    assert provider.log[-1]["chunks_sent"] == streamed.count("data: ")


async def test_a_stopping_gateway_refuses_new_requests_in_the_agents_dialect(tmp_path, provider, pki):
    """Once Shutdown's `done` began, the engine answers a new LLM request itself: a 503 the agent's
    SDK reads, and nothing reaches the provider."""
    async with running(tmp_path, **provider_options(provider.port, pki.ca_cert)) as rig:
        await rig.addon("shutdown").done()
        chat = llm_flow("https://openrouter.ai/api/v1/chat/completions", {"model": "eng/late", **CHAT},
                        user="xx-ocp")
        refused = json.loads(await rig.send(chat))
        claude = llm_flow("https://api.anthropic.com/v1/messages", {"model": "eng/late", "max_tokens": 8, **CHAT},
                          user="xx-cip")
        refused_too = json.loads(await rig.send(claude))
    assert chat.response.status_code == 503 and chat.response.headers["x-clutch-error"] == "shutting_down"
    assert refused["error"]["message"].startswith("Clutch is shutting down")
    assert refused["error"]["type"] == "server_error"  # OpenAI's shape: the SDK raises InternalServerError
    assert claude.response.status_code == 503 and claude.response.headers["x-clutch-error"] == "shutting_down"
    assert (refused_too["type"], refused_too["error"]["type"]) == ("error", "api_error")  # Anthropic's shape
    assert refused_too["error"]["message"].startswith("Clutch is shutting down")
    assert provider.log == []


ROUTER = """\
def route(request, context):
    # leaves the request unsendable to any other model (a set is not JSON); routes nothing itself
    request["metadata"] = {"seen": {1, 2}}
    return None
"""


async def test_a_failure_of_clutchs_own_logic_while_serving_fails_closed(tmp_path, provider, pki, caplog):
    """The first model fails; planning the request for the cascade's next one raises (the user's router
    left a body no JSON encoder takes): the agent gets a 500 in its dialect that says so, the next model
    is never asked, and the flow is not left to mitmproxy's "Addon error"."""
    (tmp_path / "router.py").write_text(ROUTER)
    rules = textwrap.dedent("""\
        version: 1
        providers:
          anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com]}
        routes: {custom: router.py}
        cascades:
          "anthropic:eng/fail-500": ["anthropic:eng/next"]
        fallback: {method: cascade}
        compression: {breakpoints: "off"}  # else Route re-serialises the first model's body already
    """)
    caplog.set_level(logging.WARNING)
    async with running(tmp_path, rules, clutch_retries=0, **provider_options(provider.port, pki.ca_cert)) as rig:
        flow = llm_flow("https://api.anthropic.com/v1/messages",
                        {"model": "eng/fail-500", "max_tokens": 8, **CHAT}, user="xx-cip")
        answer = json.loads(await rig.send(flow))
    assert flow.response.status_code == 500 and flow.response.headers["x-clutch-error"] == "internal_error"
    assert answer["type"] == "error" and "internal error while relaying this request (TypeError)" \
        in answer["error"]["message"]
    assert [e["model"] for e in provider.log] == ["eng/fail-500"]  # the next model never got it
    attempts = flow.metadata[ATTEMPTS]
    assert [(a["target"], a["status"]) for a in attempts] == [("anthropic:eng/fail-500", 500)]
    assert "Addon error" not in caplog.text
