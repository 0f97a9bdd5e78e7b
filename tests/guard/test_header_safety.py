"""What Clutch writes into headers, and what it will not carry, through a real gateway and the fake
provider: a model name with a line break never adds headers to the agent's response (raw bytes read
off the socket), a 70 KB header gets an error the SDKs parse instead of an HTML 502, a non-string
model gets a 400, and the breaker table stays bounded whatever model names agents send."""

from __future__ import annotations

import asyncio
import base64
import json

import anthropic
import httpx
import openai
import pytest
from harness import free_port, gateway_on_rules, trust
from test_browser_guard import CHAT, RULES, anthropic_sdk, raw, wait_listening

from addons.fallback.breakers import OPEN, BreakerBoard
from addons.wire.header_values import encode

INJECTED = "Injected: yes"
TARGETS = 40  # clutch_breaker_targets of this file's gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fake, pki):
    """(gateway, openrouter reverse port, anthropic reverse port)"""
    workdir = tmp_path_factory.mktemp("headers")
    openrouter_port, anthropic_port = free_port(), free_port()
    gateway = gateway_on_rules(workdir, fake, pki, RULES, "--mode", "regular",
                               "--mode", f"reverse:https://openrouter.ai@127.0.0.1:{openrouter_port}",
                               "--mode", f"reverse:https://api.anthropic.com@127.0.0.1:{anthropic_port}",
                               "--set", "clutch_retries=0", "--set", "clutch_breaker_failures=2",
                               "--set", f"clutch_breaker_targets={TARGETS}",
                               "--set", f"clutch_state_dir={workdir / 'state'}")
    wait_listening(openrouter_port)
    wait_listening(anthropic_port)
    yield gateway, openrouter_port, anthropic_port
    gateway.stop()


def lines_of(headers: dict) -> set[str]:
    return {name.lower() for name in headers}


def sentinel(port: int, fake, model: str) -> None:
    """A request answered after the ones under test: the fake logs each request when its answer
    ends, so whatever reached it before is in its log by now."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]}).encode()
    assert raw(port, f"POST {CHAT} HTTP/1.1\nHost: 127.0.0.1:{port}\ncontent-type: application/json\n", body)[0] == 200
    fake.wait_for(lambda e: e.get("model") == model)


# ------------------------------------------------------------------ model names

BAD = "guard/crlf\r\n" + INJECTED


@pytest.mark.parametrize("dialect,path,body", [
    ("anthropic", "/v1/messages", {"model": BAD, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}),
    ("openai_chat", CHAT, {"model": BAD, "messages": [{"role": "user", "content": "x"}]}),
    ("openai_responses", "/api/v1/responses", {"model": BAD, "input": "x"}),
])
def test_a_model_name_with_a_line_break_is_refused_in_the_agents_dialect(gw, fake, dialect, path, body):
    gateway, openrouter_port, anthropic_port = gw
    port = anthropic_port if dialect == "anthropic" else openrouter_port
    for stream in (False, True):
        status, headers, answer = raw(port, f"POST {path} HTTP/1.1\nHost: 127.0.0.1:{port}\n"
                                            "content-type: application/json\n",
                                      json.dumps({**body, "stream": stream}).encode())
        assert status == 400 and "injected" not in lines_of(headers), headers
        error = json.loads(answer)
        if dialect == "anthropic":
            assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
            message = error["error"]["message"]
        else:
            assert error["error"]["type"] == "invalid_request_error"
            message = error["error"]["message"]
        assert "control character" in message and headers["x-clutch-error"] == "invalid_model"
    sentinel(openrouter_port, fake, f"guard/after-line-break-{dialect}")
    assert not [e for e in fake.entries() if "crlf" in str(e.get("model"))]


def test_the_openai_sdk_reads_the_refusal_of_a_control_character(gw):
    _, port, _ = gw
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/api/v1", api_key="sk-or-v1-agent",
                           http_client=httpx.Client(trust_env=False), max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="guard/tab\tname", messages=[{"role": "user", "content": "x"}])
    assert "control character" in refused.value.message


def test_a_model_from_the_proxy_user_name_or_a_subagent_tag_adds_no_header(gw, fake):
    gateway, port, _ = gw
    # `.m-` carries a model as base64url: it can hold any byte
    smuggled = base64.urlsafe_b64encode(f"openrouter:guard/m-override\r\n{INJECTED}".encode()).decode().rstrip("=")
    with httpx.Client(proxy=gateway.proxy_url(f"xx-claude.m-{smuggled}"), verify=trust(gateway.bundle),
                      trust_env=False, timeout=30) as client:
        answer = client.post("https://openrouter.ai/api/v1/chat/completions",
                             json={"model": "guard/m-agent", "messages": [{"role": "user", "content": "x"}]})
    assert answer.status_code == 200 and "injected" not in lines_of(answer.headers)
    assert "\n" not in answer.headers["x-clutch-model"] and "\r" not in answer.headers["x-clutch-model"]
    # a subagent tag in the system prompt names the target
    body = {"model": "guard/tag-agent", "messages": [
        {"role": "system", "content": f"<CLUTCH-MODEL>openrouter:guard/tag\r\n{INJECTED}</CLUTCH-MODEL> be brief"},
        {"role": "user", "content": "x"}]}
    status, headers, _ = raw(port, f"POST {CHAT} HTTP/1.1\nHost: 127.0.0.1:{port}\ncontent-type: application/json\n",
                             json.dumps(body).encode())
    assert status == 200 and "injected" not in lines_of(headers), headers
    assert not [e for e in fake.entries() if "\n" in str(e.get("model"))]


def test_header_values_are_encoded_on_their_way_out():
    assert encode("openrouter:a\r\nX: y\x00\x7f") == b"openrouter:a%0D%0AX: y%00%7F"
    assert encode("kimi-k2.6 \u00e9") == "kimi-k2.6 \u00e9".encode()


@pytest.mark.parametrize("model", [5, ["guard/a"], {"id": "guard/a"}, True])
def test_a_non_string_model_gets_a_400_naming_the_field(gw, fake, model):
    gateway, port, anthropic_port = gw
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]}).encode()
    status, headers, answer = raw(port, f"POST {CHAT} HTTP/1.1\nHost: 127.0.0.1:{port}\n"
                                        "content-type: application/json\n", body)
    assert status == 400 and "the model field must be a string" in json.loads(answer)["error"]["message"]
    body = json.dumps({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}).encode()
    status, _, answer = raw(anthropic_port, f"POST /v1/messages HTTP/1.1\nHost: 127.0.0.1:{anthropic_port}\n"
                                            "content-type: application/json\n", body)
    error = json.loads(answer)
    assert status == 400 and error["type"] == "error" and "model field must be a string" in error["error"]["message"]
    sentinel(port, fake, f"guard/after-non-string-{type(model).__name__}")
    assert not [e for e in fake.entries() if not isinstance(e.get("model"), str | None)]
    assert not any(key.endswith(":") for key in gateway.local("/resilience")["breakers"])


# ------------------------------------------------------------------ large headers

def test_a_70_kb_header_gets_an_error_the_sdks_parse(gw, fake, monkeypatch):
    gateway, port, anthropic_port = gw
    big = {"x-big": "b" * 70_000}
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/api/v1", api_key="sk-or-v1-agent",
                           http_client=httpx.Client(trust_env=False), max_retries=0, default_headers=big)
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="guard/big-header", messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 431 and "request headers are" in refused.value.message
    sdk = anthropic_sdk(monkeypatch, f"http://127.0.0.1:{anthropic_port}", default_headers=big)
    with pytest.raises(anthropic.APIStatusError) as refused:
        sdk.messages.create(model="guard/big-header", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 431 and refused.value.body["type"] == "error"
    # through the forward proxy too
    with httpx.Client(proxy=gateway.proxy_url("xx-codex"), verify=trust(gateway.bundle), trust_env=False,
                      timeout=30) as proxied:
        answer = proxied.post("https://openrouter.ai/api/v1/chat/completions", headers=big,
                              json={"model": "guard/big-header", "messages": [{"role": "user", "content": "x"}]})
    assert answer.status_code == 431 and answer.json()["error"]["type"] == "invalid_request_error"
    # large headers under the limit still go through (the fake, an aiohttp server, takes 8 KB a field)
    spread = {f"x-big-{i}": "s" * 6_000 for i in range(9)}
    small = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/api/v1", api_key="sk-or-v1-agent", max_retries=0,
                          http_client=httpx.Client(trust_env=False), default_headers=spread)
    assert small.chat.completions.create(model="guard/just-under", messages=[{"role": "user", "content": "x"}])
    assert fake.wait_for(lambda e: e.get("model") == "guard/just-under")
    assert fake.entries_for("guard/big-header") == []


# ------------------------------------------------------------------ the breaker table

def test_the_breaker_table_stays_bounded_and_keeps_open_breakers(gw):
    gateway, port, _ = gw
    kept = "guard/kept-fail-500"

    async def ask(client: httpx.AsyncClient, model: str) -> int:
        answer = await client.post(f"http://127.0.0.1:{port}{CHAT}",
                                   json={"model": model, "messages": [{"role": "user", "content": "x"}]})
        return answer.status_code

    async def flood() -> list[int]:
        async with httpx.AsyncClient(trust_env=False, timeout=30,
                                     limits=httpx.Limits(max_connections=8)) as client:
            assert [await ask(client, kept) for _ in range(2)] == [500, 500]  # its breaker opens
            return await asyncio.gather(*(ask(client, f"guard/n{i}-fail-500") for i in range(5 * TARGETS)))

    statuses = asyncio.run(flood())
    assert set(statuses) == {500}
    breakers = gateway.local("/resilience")["breakers"]
    assert len(breakers) <= TARGETS
    assert breakers[f"openrouter:{kept}"]["state"] == "open"
    assert "breaker table full" in gateway.output()


def test_ten_thousand_targets_keep_the_board_bounded():
    now = [1000.0]
    board = BreakerBoard(threshold=2, window_s=60, cooldown_s=60, clock=lambda: now[0])
    board.failure("p:kept")
    board.failure("p:kept")
    for i in range(10_000):
        board.failure(f"p:m{i}")
        now[0] += 0.001
    assert len(board.snapshot()) <= board.max_targets == 4096
    assert board.state("p:kept") == OPEN
    assert board.state("p:m9999") != OPEN and "p:m9999" in board.snapshot()  # the newest are kept
