"""Tests of the fake LLM upstream itself (no proxy involved).

Everything talks TLS to the fake using a certificate from ``tests/pki.py`` and
verifies it against the test CA.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import pathlib
import signal
import ssl
import subprocess
import sys
import time
import zlib

import aiohttp
import httpx
import pytest
import pytest_asyncio

try:
    from tests.fake_upstream import FAULTS, MODEL_IDS, FakeUpstream, parse_fault, parse_tool_trigger, split_answer
    from tests.pki import CA_COMMON_NAME, TestPKI, make_test_pki
except ImportError:  # tests/ is not a package and /work/main is not on sys.path
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from fake_upstream import (  # type: ignore
        FAULTS, MODEL_IDS, FakeUpstream, parse_fault, parse_tool_trigger, split_answer)
    from pki import CA_COMMON_NAME, TestPKI, make_test_pki  # type: ignore

HOSTS = ["openrouter.ai", "api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com"]
FAKE_SCRIPT = pathlib.Path(__file__).resolve().parent / "fake_upstream.py"
ANSWER = "pong from the fake upstream"
MSGS = [{"role": "user", "content": "ping"}]
TOOL_MSGS = [{"role": "user", "content": "please use-tool now"}]
OPENAI_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
ANTHROPIC_TOOLS = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --------------------------------------------------------------------------- fixtures / helpers
@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> TestPKI:
    return make_test_pki(tmp_path_factory.mktemp("pki"), HOSTS)


@pytest.fixture(scope="module")
def client_ctx(pki: TestPKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_cert))


@pytest_asyncio.fixture
async def fake(pki: TestPKI, tmp_path):
    f = FakeUpstream(log_path=tmp_path / "fake.jsonl")
    await f.start(ssl_context=pki.server_ssl_context())
    try:
        yield f
    finally:
        await f.stop()


@pytest_asyncio.fixture
async def http(client_ctx):
    async with httpx.AsyncClient(verify=client_ctx, timeout=10) as c:
        yield c


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    """Minimal SSE parser: list of (event, data) for each event with data."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event, data = None, []
        for line in block.split("\n"):
            if line.startswith(":") or not line:
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
        if data:
            out.append((event, "\n".join(data)))
    return out


def json_events(text: str) -> list[tuple[str | None, dict]]:
    return [(e, json.loads(d)) for e, d in parse_sse(text) if d != "[DONE]"]


async def wait_for(pred, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def _sdk_httpx_module(sdk_module_name: str):
    """The httpx flavour an SDK expects for ``http_client`` (httpx or httpx2)."""
    import importlib

    base = importlib.import_module(f"{sdk_module_name}._base_client")
    return getattr(base, "httpx2", None) or base.httpx


# --------------------------------------------------------------------------- pki
def test_pki_files_and_reuse(tmp_path):
    d = tmp_path / "p"
    p = make_test_pki(d, HOSTS)
    assert p.ca_cert == d / "ca.pem" and p.cert == d / "leaf.pem" and p.key == d / "leaf-key.pem"
    assert (p.key.stat().st_mode & 0o777) == 0o600
    from cryptography import x509

    ca = x509.load_pem_x509_certificate(p.ca_cert.read_bytes())
    leaf = x509.load_pem_x509_certificate(p.cert.read_bytes())
    from cryptography.x509.oid import NameOID

    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CA_COMMON_NAME
    assert leaf.issuer == ca.subject
    leaf.verify_directly_issued_by(ca)
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3649
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == set(HOSTS)
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]

    before = {f: (d / f).read_bytes() for f in ("ca.pem", "leaf.pem", "leaf-key.pem")}
    again = make_test_pki(d, list(reversed(HOSTS)))
    assert again == p
    assert {f: (d / f).read_bytes() for f in before} == before  # reused untouched

    make_test_pki(d, HOSTS + ["extra.example"])  # new host: new leaf, same CA
    assert (d / "ca.pem").read_bytes() == before["ca.pem"]
    assert (d / "leaf.pem").read_bytes() != before["leaf.pem"]
    p.server_ssl_context()


@pytest.mark.asyncio
async def test_tls_sni_each_host_verified_by_test_ca(fake, client_ctx):
    async with aiohttp.ClientSession() as s:
        for host in HOSTS:
            async with s.get(f"{fake.url}/api/hello", ssl=client_ctx, server_hostname=host,
                             headers={"Host": host}) as r:
                assert r.status == 200
                assert await r.json() == {"message": "hello"}
        # a name that is not in the certificate is rejected
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await s.get(f"{fake.url}/api/hello", ssl=client_ctx, server_hostname="evil.example")
        # and the system trust store does not know the test CA
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await s.get(f"{fake.url}/api/hello", ssl=ssl.create_default_context(), server_hostname=HOSTS[0])
    assert [e["host"] for e in fake.log[:4]] == HOSTS


# --------------------------------------------------------------------------- unit helpers
def test_parse_fault_and_split():
    assert parse_fault("openrouter/fake-fail-429:free") == ("fail-429", None)
    assert parse_fault("fail-429") == ("fail-429", None)
    assert parse_fault("x/hang-after-headers") == ("hang-after-headers", None)
    assert parse_fault("x/hang") == ("hang", None)
    assert parse_fault("fake/chunks-200") == ("chunks-200", 200)
    assert parse_fault("fake/good") == (None, None)
    assert parse_fault(None) == (None, None)
    for n in (1, 3, 4, 27, 200):
        parts = split_answer(ANSWER, n)
        assert len(parts) == n and all(parts)
    assert "".join(split_answer(ANSWER, 4)) == ANSWER
    assert all(f"fake/{f}" in MODEL_IDS for f in FAULTS)
    assert "fake/good" in MODEL_IDS and "openrouter/free" in MODEL_IDS and "fake/fail-429" in MODEL_IDS


# --------------------------------------------------------------------------- OpenAI / OpenRouter chat
@pytest.mark.asyncio
async def test_openai_chat_nonstream(fake, http):
    r = await http.post(f"{fake.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": MSGS})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-request-id"]
    b = r.json()
    assert b["object"] == "chat.completion" and b["id"].startswith("chatcmpl-") and b["model"] == "gpt-4o"
    assert b["choices"][0]["message"] == {"role": "assistant", "content": ANSWER, "refusal": None, "annotations": []}
    assert b["choices"][0]["finish_reason"] == "stop"
    u = b["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert "cost" not in u and "provider" not in b
    e = fake.log[-1]
    assert e["method"] == "POST" and e["path"] == "/v1/chat/completions" and e["model"] == "gpt-4o"
    assert e["stream"] is False and e["status"] == 200 and e["outcome"] == "ok" and e["chunks_sent"] == 0
    assert e["body_bytes"] == len(r.request.content) and e["headers"]["content-type"] == "application/json"


@pytest.mark.asyncio
async def test_openai_chat_stream_with_and_without_usage(fake, http):
    for include_usage in (False, True):
        body = {"model": "gpt-4o", "messages": MSGS, "stream": True}
        if include_usage:
            body["stream_options"] = {"include_usage": True}
        r = await http.post(f"{fake.url}/v1/chat/completions", json=body)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.text.endswith("data: [DONE]\n\n")
        assert all(block.startswith("data: ") for block in r.text.strip().split("\n\n"))
        ev = json_events(r.text)
        chunks = [d for _, d in ev]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:] if c["choices"] and c["choices"][0]["delta"].get("content")]
        assert len(contents) == 4 and "".join(contents) == ANSWER
        finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
        assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "stop"
        usage_chunks = [c for c in chunks if c.get("usage")]
        if include_usage:
            assert len(usage_chunks) == 1 and usage_chunks[0]["choices"] == [] and chunks[-1] is usage_chunks[0]
        else:
            assert usage_chunks == []
        e = fake.log[-1]
        assert e["stream"] is True and e["outcome"] == "ok" and e["chunks_sent"] == len(parse_sse(r.text))


@pytest.mark.asyncio
async def test_openrouter_chat_stream_and_nonstream(fake, http):
    url = f"{fake.url}/api/v1/chat/completions"
    r = await http.post(url, json={"model": "openrouter/free", "messages": MSGS, "stream": True})
    assert r.status_code == 200 and r.text.startswith(": OPENROUTER PROCESSING\n\n")
    chunks = [d for _, d in json_events(r.text)]
    assert all(c["provider"] == "FakeProvider" for c in chunks)
    last = chunks[-1]
    assert last["choices"] == []
    u = last["usage"]
    assert isinstance(u["cost"], float) and u["cost"] > 0
    assert "cached_tokens" in u["prompt_tokens_details"] and "reasoning_tokens" in u["completion_tokens_details"]
    assert r.headers["x-generation-id"] == chunks[0]["id"]
    r = await http.post(url, json={"model": "openrouter/free", "messages": MSGS})
    b = r.json()
    assert b["provider"] == "FakeProvider" and b["usage"]["cost"] > 0 and b["id"].startswith("gen-")
    assert b["choices"][0]["message"]["content"] == ANSWER
    assert fake.log[-1]["dialect"] == "openrouter"


@pytest.mark.asyncio
async def test_chat_tool_call_wire(fake, http):
    body = {"model": "gpt-4o", "messages": TOOL_MSGS, "tools": OPENAI_TOOLS, "stream": True}
    r = await http.post(f"{fake.url}/v1/chat/completions", json=body)
    chunks = [d for _, d in json_events(r.text)]
    tc0 = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert tc0["id"] == "call_fake_1" and tc0["function"]["name"] == "get_weather"
    arg_deltas = [c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                  for c in chunks[1:] if c["choices"] and c["choices"][0]["delta"].get("tool_calls")]
    assert arg_deltas == ["{", "}"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # "use-tool" without tools -> normal answer
    r = await http.post(f"{fake.url}/v1/chat/completions", json={"model": "m", "messages": TOOL_MSGS})
    assert r.json()["choices"][0]["message"]["content"] == ANSWER


def test_parse_tool_trigger():
    assert parse_tool_trigger("no trigger here") is None
    assert parse_tool_trigger("please use-tool now") == (None, {})
    assert parse_tool_trigger("use-tool: with a space") == (None, {})
    assert parse_tool_trigger("use-tool:mcp__x.y-z now") == ("mcp__x.y-z", {})
    assert parse_tool_trigger('run use-tool:Bash:{"command":"echo {hi}","n":[1,{"a":2}]} then stop') == (
        "Bash", {"command": "echo {hi}", "n": [1, {"a": 2}]})
    for bad in ("use-tool:Bash:", "use-tool:Bash:{nope", 'use-tool:Bash:["a"]'):
        with pytest.raises(ValueError):
            parse_tool_trigger(bad)


NAMED_TRIGGER = 'use-tool:Bash:{"command":"echo clutch-e2e-tool-ran"}'
NAMED_ARGS = {"command": "echo clutch-e2e-tool-ran"}


@pytest.mark.asyncio
async def test_named_tool_trigger_in_every_dialect(fake, http):
    """``use-tool:NAME:{json}`` calls NAME with those arguments (streamed in >= 2 deltas); a tool
    result as the last message gets the normal text."""
    prompt = [{"role": "user", "content": f"please {NAMED_TRIGGER} and report"}]
    args_json = json.dumps(NAMED_ARGS, separators=(",", ":"))
    for path in ("/v1/chat/completions", "/api/v1/chat/completions"):
        body = {"model": "m", "messages": prompt, "tools": OPENAI_TOOLS}
        tc = (await http.post(fake.url + path, json=body)).json()["choices"][0]["message"]["tool_calls"][0]
        assert (tc["id"], tc["function"]["name"], json.loads(tc["function"]["arguments"])) == (
            "call_fake_1", "Bash", NAMED_ARGS)
        chunks = [d for _, d in json_events((await http.post(fake.url + path, json={**body, "stream": True})).text)]
        deltas = [c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                  for c in chunks if c.get("choices") and c["choices"][0]["delta"].get("tool_calls")]
        assert deltas[0] == "" and len(deltas[1:]) >= 2 and "".join(deltas) == args_json
        assert chunks[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "Bash"
        followup = [*prompt, {"role": "assistant", "content": None, "tool_calls": [tc]},
                    {"role": "tool", "tool_call_id": "call_fake_1", "content": "clutch-e2e-tool-ran"}]
        r = await http.post(fake.url + path, json={**body, "messages": followup})
        assert r.json()["choices"][0]["message"]["content"] == ANSWER

    body = {"model": "claude", "max_tokens": 64, "messages": prompt, "tools": ANTHROPIC_TOOLS}
    b = (await http.post(f"{fake.url}/v1/messages", json=body)).json()
    assert b["stop_reason"] == "tool_use"
    assert b["content"] == [{"type": "tool_use", "id": "toolu_fake_1", "name": "Bash", "input": NAMED_ARGS}]
    events = json_events((await http.post(f"{fake.url}/v1/messages", json={**body, "stream": True})).text)
    partial = [d["delta"]["partial_json"] for e, d in events if e == "content_block_delta"]
    assert len(partial) >= 2 and json.loads("".join(partial)) == NAMED_ARGS
    followup = [*prompt, {"role": "assistant", "content": b["content"]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_fake_1",
                                              "content": "clutch-e2e-tool-ran\n"}]}]
    b = (await http.post(f"{fake.url}/v1/messages", json={**body, "messages": followup})).json()
    assert b["content"] == [{"type": "text", "text": ANSWER}] and b["stop_reason"] == "end_turn"
    # a system message after the prompt (Claude Code 2.1.330) does not hide the trigger
    with_system = [*prompt, {"role": "system", "content": [{"type": "text", "text": "# Environment"}]}]
    b = (await http.post(f"{fake.url}/v1/messages", json={**body, "messages": with_system})).json()
    assert b["content"][0]["name"] == "Bash" and b["content"][0]["input"] == NAMED_ARGS

    tools = [{"type": "function", "name": "get_weather", "parameters": {}}]
    body = {"model": "gpt-5", "input": [{"role": "user", "content": NAMED_TRIGGER}], "tools": tools}
    out = (await http.post(f"{fake.url}/v1/responses", json=body)).json()["output"][0]
    assert (out["type"], out["name"], json.loads(out["arguments"])) == ("function_call", "Bash", NAMED_ARGS)
    events = json_events((await http.post(f"{fake.url}/v1/responses", json={**body, "stream": True})).text)
    deltas = [d["delta"] for e, d in events if e == "response.function_call_arguments.delta"]
    done = [d for e, d in events if e == "response.function_call_arguments.done"][0]
    assert len(deltas) >= 2 and "".join(deltas) == done["arguments"] == args_json and done["name"] == "Bash"
    followup = [*body["input"], out, {"type": "function_call_output", "call_id": "call_fake_1",
                                      "output": "clutch-e2e-tool-ran"}]
    out = (await http.post(f"{fake.url}/v1/responses", json={**body, "input": followup})).json()["output"][0]
    assert out["type"] == "message" and out["content"][0]["text"] == ANSWER

    base = f"{fake.url}/v1beta/models/gemini-2.5-flash"
    body = {"contents": [{"role": "user", "parts": [{"text": NAMED_TRIGGER}]}],
            "tools": [{"functionDeclarations": [{"name": "get_weather"}]}]}
    ev = [json.loads(d) for _, d in parse_sse((await http.post(f"{base}:streamGenerateContent?alt=sse", json=body)).text)]
    assert ev[-1]["candidates"][0]["content"]["parts"][0]["functionCall"] == {"name": "Bash", "args": NAMED_ARGS}
    followup = [*body["contents"], {"role": "model", "parts": [{"functionCall": {"name": "Bash", "args": NAMED_ARGS}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "Bash",
                                                                 "response": {"output": "clutch-e2e-tool-ran"}}}]}]
    b = (await http.post(f"{base}:generateContent", json={**body, "contents": followup})).json()
    assert b["candidates"][0]["content"]["parts"][0]["text"] == ANSWER

    # a named trigger whose arguments are not a JSON object: a 400 in the dialect's shape
    r = await http.post(f"{fake.url}/v1/messages", json={**body, "model": "claude", "max_tokens": 64,
                                                        "messages": [{"role": "user", "content": "use-tool:Bash:{oops"}],
                                                        "tools": ANTHROPIC_TOOLS})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


# --------------------------------------------------------------------------- Anthropic
@pytest.mark.asyncio
async def test_anthropic_wire(fake, http):
    url = f"{fake.url}/v1/messages?beta=true"
    body = {"model": "claude-sonnet-4", "max_tokens": 64, "messages": MSGS}
    r = await http.post(url, json=body, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 200 and r.headers["request-id"].startswith("req_")
    b = r.json()
    assert b["type"] == "message" and b["content"] == [{"type": "text", "text": ANSWER}]
    assert b["stop_reason"] == "end_turn"
    assert {"input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"} <= set(b["usage"])
    assert fake.log[-1]["path"] == "/v1/messages?beta=true"

    r = await http.post(url, json={**body, "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    ev = json_events(r.text)
    types = [e for e, _ in ev]
    assert types == ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 4 + [
        "content_block_stop", "message_delta", "message_stop"]
    assert all(e == d["type"] for e, d in ev)
    assert "".join(d["delta"]["text"] for e, d in ev if e == "content_block_delta") == ANSWER
    md = [d for e, d in ev if e == "message_delta"][0]
    assert md["delta"]["stop_reason"] == "end_turn" and md["usage"]["output_tokens"] > 0


# --------------------------------------------------------------------------- Responses
@pytest.mark.asyncio
async def test_responses_wire(fake, http):
    url = f"{fake.url}/v1/responses"
    r = await http.post(url, json={"model": "gpt-5", "input": "ping"})
    b = r.json()
    assert b["object"] == "response" and b["status"] == "completed"
    assert b["output"][0]["content"][0]["text"] == ANSWER
    r = await http.post(url, json={"model": "gpt-5", "input": "ping", "stream": True})
    ev = json_events(r.text)
    types = [e for e, _ in ev]
    assert types == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * 4, "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert [d["sequence_number"] for _, d in ev] == list(range(len(ev)))
    u = ev[-1][1]["response"]["usage"]
    assert {"input_tokens", "output_tokens"} <= set(u)
    assert "cached_tokens" in u["input_tokens_details"] and "reasoning_tokens" in u["output_tokens_details"]
    # a plain GET is not a Responses call
    r = await http.get(url)
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.asyncio
async def test_responses_over_websocket(fake, client_ctx):
    """Codex's WebSocket mode: response.create in, the stream's events out as text messages."""
    import aiohttp
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{fake.url.replace('https', 'wss')}/v1/responses", ssl=client_ctx) as ws:
            await ws.send_str(json.dumps({"type": "response.create", "model": "fake/good", "input": "hi"}))
            events = []
            while not events or events[-1]["type"] != "response.completed":
                events.append(json.loads((await ws.receive()).data))
    assert [e["type"] for e in events] == ["response.created", "response.output_text.delta", "response.completed"]
    assert events[1]["delta"] == fake.expected_answer()
    usage = events[-1]["response"]["usage"]
    assert usage["output_tokens"] == 3 and usage["input_tokens_details"]["cached_tokens"] == usage["input_tokens"] // 2


# --------------------------------------------------------------------------- Gemini
@pytest.mark.asyncio
async def test_gemini_wire(fake, http):
    base = f"{fake.url}/v1beta/models/gemini-2.5-flash"
    body = {"contents": [{"role": "user", "parts": [{"text": "ping"}]}]}
    r = await http.post(f"{base}:streamGenerateContent?alt=sse", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.startswith("data: ") and r.text.endswith("\r\n\r\n")
    ev = [json.loads(d) for _, d in parse_sse(r.text)]
    assert "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in ev) == ANSWER
    assert "usageMetadata" in ev[-1] and all("usageMetadata" not in e for e in ev[:-1])
    assert ev[-1]["candidates"][0]["finishReason"] == "STOP"
    assert fake.log[-1]["model"] == "gemini-2.5-flash" and fake.log[-1]["stream"] is True
    r = await http.post(f"{base}:generateContent", json=body)
    b = r.json()
    assert b["candidates"][0]["content"]["parts"][0]["text"] == ANSWER and b["usageMetadata"]["totalTokenCount"] > 0
    assert fake.log[-1]["stream"] is False
    r = await http.post(f"{base}:streamGenerateContent", json=body)  # JSON-array streaming
    arr = r.json()
    assert isinstance(arr, list) and "".join(x["candidates"][0]["content"]["parts"][0]["text"] for x in arr) == ANSWER
    tool_body = {"contents": [{"role": "user", "parts": [{"text": "use-tool"}]}],
                 "tools": [{"functionDeclarations": [{"name": "get_weather"}]}]}
    r = await http.post(f"{base}:streamGenerateContent?alt=sse", json=tool_body)
    ev = [json.loads(d) for _, d in parse_sse(r.text)]
    assert ev[-1]["candidates"][0]["content"]["parts"][0]["functionCall"] == {"name": "get_weather", "args": {}}
    r = await http.post(f"{fake.url}/v1beta/models/fake-fail-429:generateContent", json=body)
    assert r.status_code == 429 and r.json()["error"]["status"] == "RESOURCE_EXHAUSTED"


# --------------------------------------------------------------------------- misc endpoints
@pytest.mark.asyncio
async def test_models_and_misc_endpoints(fake, http):
    r = await http.get(f"{fake.url}/api/v1/models")
    ids = [m["id"] for m in r.json()["data"]]
    assert {"fake/good", "fake/fail-429", "openrouter/free"} <= set(ids)
    assert "pricing" in r.json()["data"][0]
    r = await http.get(f"{fake.url}/v1/models")
    assert r.json()["object"] == "list" and r.json()["data"][0]["object"] == "model"
    r = await http.get(f"{fake.url}/api/claude_code/policy_limits")
    assert r.status_code == 200 and r.json() == {"restrictions": {}}
    r = await http.get(f"{fake.url}/api/hello")
    assert r.status_code == 200 and r.json() == {"message": "hello"}
    r = await http.get(f"{fake.url}/nope", headers={"Host": "api.anthropic.com"})
    assert r.status_code == 404 and r.json()["type"] == "error" and r.json()["error"]["type"] == "not_found_error"
    r = await http.post(f"{fake.url}/v1/nope", headers={"Host": "api.openai.com"}, json={})
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    assert [e["status"] for e in fake.log] == [200, 200, 200, 200, 404, 404]


# --------------------------------------------------------------------------- official SDKs
@pytest.mark.asyncio
async def test_openai_sdk(fake, client_ctx):
    import openai

    async with httpx.AsyncClient(verify=client_ctx) as hc:
        for base in ("/v1", "/api/v1"):
            client = openai.AsyncOpenAI(base_url=fake.url + base, api_key="sk-test", http_client=hc, max_retries=0)
            c = await client.chat.completions.create(model="gpt-4o", messages=MSGS)
            assert c.choices[0].message.content == ANSWER and c.usage.total_tokens > 0
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=MSGS, stream=True, stream_options={"include_usage": True})
            text, usage = "", None
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
                usage = chunk.usage or usage
            assert text == ANSWER and usage is not None and usage.prompt_tokens_details.cached_tokens >= 0

            # tool call, non-stream and stream (accumulated with the SDK helper)
            c = await client.chat.completions.create(model="gpt-4o", messages=TOOL_MSGS, tools=OPENAI_TOOLS)
            tc = c.choices[0].message.tool_calls[0]
            assert (tc.id, tc.function.name, tc.function.arguments) == ("call_fake_1", "get_weather", "{}")
            async with client.chat.completions.stream(model="gpt-4o", messages=TOOL_MSGS, tools=OPENAI_TOOLS) as s:
                async for _ in s:
                    pass
                final = await s.get_final_completion()
            tc = final.choices[0].message.tool_calls[0]
            assert final.choices[0].finish_reason == "tool_calls"
            assert (tc.id, tc.function.name, tc.function.arguments) == ("call_fake_1", "get_weather", "{}")

            with pytest.raises(openai.RateLimitError) as ei:
                await client.chat.completions.create(model="openrouter/fake-fail-429:free", messages=MSGS)
            assert ei.value.status_code == 429 and ei.value.response.headers["retry-after"] == "2"
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(model="fake/fail-401", messages=MSGS)
            with pytest.raises(openai.APIError):
                stream = await client.chat.completions.create(model="fake/midstream-error", messages=MSGS, stream=True)
                async for _ in stream:
                    pass

        client = openai.AsyncOpenAI(base_url=fake.url + "/v1", api_key="sk-test", http_client=hc, max_retries=0)
        r = await client.responses.create(model="gpt-5", input="ping")
        assert r.output_text == ANSWER and r.usage.input_tokens_details.cached_tokens >= 0
        async with client.responses.stream(model="gpt-5", input="ping") as s:
            deltas = [e.delta async for e in s if e.type == "response.output_text.delta"]
            final = await s.get_final_response()
        assert "".join(deltas) == ANSWER and final.output_text == ANSWER
        r = await client.responses.create(model="gpt-5", input=[{"role": "user", "content": "use-tool"}],
                                          tools=[{"type": "function", "name": "get_weather", "parameters": {}}])
        assert r.output[0].type == "function_call" and r.output[0].call_id == "call_fake_1"
        async with client.responses.stream(model="gpt-5", input=[{"role": "user", "content": "use-tool"}],
                                           tools=[{"type": "function", "name": "get_weather", "parameters": {}}]) as s:
            arg_deltas = [e.delta async for e in s if e.type == "response.function_call_arguments.delta"]
            final = await s.get_final_response()
        assert arg_deltas == ["{", "}"]
        assert final.output[0].type == "function_call" and final.output[0].name == "get_weather"
        assert final.output[0].arguments == "{}"


@pytest.mark.asyncio
async def test_anthropic_sdk(fake, client_ctx):
    import anthropic

    hx = _sdk_httpx_module("anthropic")
    async with hx.AsyncClient(verify=client_ctx) as hc:
        client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="sk-ant-test", http_client=hc, max_retries=0)
        m = await client.messages.create(model="claude-sonnet-4", max_tokens=64, messages=MSGS)
        assert m.content[0].text == ANSWER and m.usage.cache_read_input_tokens is not None
        async with client.messages.stream(model="claude-sonnet-4", max_tokens=64, messages=MSGS) as s:
            text = "".join([t async for t in s.text_stream])
            final = await s.get_final_message()
        assert text == ANSWER and final.stop_reason == "end_turn" and final.usage.output_tokens > 0

        m = await client.messages.create(model="claude", max_tokens=64, messages=TOOL_MSGS, tools=ANTHROPIC_TOOLS)
        assert m.stop_reason == "tool_use" and m.content[0].type == "tool_use" and m.content[0].name == "get_weather"
        async with client.messages.stream(model="claude", max_tokens=64, messages=TOOL_MSGS, tools=ANTHROPIC_TOOLS) as s:
            final = await s.get_final_message()
        assert final.stop_reason == "tool_use"
        assert final.content[0].type == "tool_use" and final.content[0].input == {} and final.content[0].name == "get_weather"

        with pytest.raises(anthropic.RateLimitError) as ei:
            await client.messages.create(model="fake-fail-429", max_tokens=64, messages=MSGS)
        assert ei.value.status_code == 429 and ei.value.body["error"]["type"] == "rate_limit_error"
        with pytest.raises(anthropic.InternalServerError) as ei:
            await client.messages.create(model="fake-fail-529", max_tokens=64, messages=MSGS)
        assert ei.value.status_code == 529 and ei.value.body["error"]["type"] == "overloaded_error"
        with pytest.raises(anthropic.APIStatusError):
            async with client.messages.stream(model="fake-midstream-error", max_tokens=64, messages=MSGS) as s:
                async for _ in s:
                    pass


# --------------------------------------------------------------------------- fault modes
ERROR_CASES = [
    ("fail-429", 429), ("rampup-429", 429), ("fail-500", 500), ("fail-502", 502),
    ("fail-503", 503), ("fail-529", 529), ("fail-401", 401),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("fault,status", ERROR_CASES)
async def test_error_faults_in_each_dialect(fake, http, fault, status):
    targets = {
        "openai": ("/v1/chat/completions", {"model": f"fake/{fault}", "messages": MSGS, "stream": True}),
        "openrouter": ("/api/v1/chat/completions", {"model": f"openrouter/fake-{fault}:free", "messages": MSGS}),
        "anthropic": ("/v1/messages", {"model": f"claude-{fault}", "max_tokens": 5, "messages": MSGS}),
        "responses": ("/v1/responses", {"model": fault, "input": "x"}),
        "gemini": (f"/v1beta/models/g-{fault}:streamGenerateContent?alt=sse", {"contents": []}),
    }
    for dialect, (path, body) in targets.items():
        r = await http.post(fake.url + path, json=body)
        assert r.status_code == status, (dialect, r.text)
        assert r.headers["content-type"].startswith("application/json")
        b = r.json()
        if dialect == "anthropic":
            assert b["type"] == "error" and isinstance(b["error"]["type"], str)
            expected = {429: "rate_limit_error", 401: "authentication_error", 529: "overloaded_error"}.get(status)
            if expected:
                assert b["error"]["type"] == expected
            assert r.headers["request-id"]
        elif dialect == "openrouter":
            assert b["error"]["code"] == status and isinstance(b["error"]["message"], str)
        elif dialect == "gemini":
            assert b["error"]["code"] == status and b["error"]["status"]
        else:
            assert set(b["error"]) >= {"message", "type", "code"}
            if fault == "fail-429":
                assert b["error"]["code"] == "rate_limit_exceeded"
            if status == 401:
                assert b["error"]["code"] == "invalid_api_key"
        if status == 429:
            assert r.headers["retry-after"] == "2"
            assert r.headers["x-ratelimit-remaining"] == "0"
            assert int(r.headers["x-ratelimit-reset"]) > time.time() * 1000  # ms epoch
            assert int(r.headers["x-ratelimit-limit"]) > 0
            if fault == "rampup-429":
                assert "rate increased too quickly" in json.dumps(b)
            elif dialect == "openrouter":
                assert b["error"]["message"] == "Rate limit exceeded: free-models-per-min."
                assert "metadata" in b["error"]
        e = fake.log[-1]
        assert e["outcome"] == f"fault:{fault}" and e["status"] == status and e["fault"] == fault


@pytest.mark.asyncio
async def test_daily_cap_429(fake, http):
    """OpenRouter's free-models-per-day cap: the reset is the next UTC midnight in epoch ms, no retry-after."""
    import datetime
    midnight = datetime.datetime.combine(datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=1),
                                         datetime.time(), datetime.UTC)
    midnight_ms = str(int(midnight.timestamp() * 1000))
    r = await http.post(f"{fake.url}/api/v1/chat/completions",
                        json={"model": "openrouter/fake-daily-cap-429:free", "messages": MSGS, "stream": True})
    assert r.status_code == 429 and r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["code"] == 429
    assert error["message"] == ("Rate limit exceeded: free-models-per-day. "
                                "Add 10 credits to unlock 1000 free model requests per day")
    assert error["metadata"]["headers"] == {"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0",
                                            "X-RateLimit-Reset": midnight_ms}
    assert r.headers["x-ratelimit-reset"] == midnight_ms and r.headers["x-ratelimit-remaining"] == "0"
    assert "retry-after" not in r.headers
    assert fake.log[-1]["outcome"] == "fault:daily-cap-429" and fake.log[-1]["status"] == 429
    for path, body in (("/v1/messages", {"model": "daily-cap-429", "messages": MSGS}),
                       ("/v1/chat/completions", {"model": "daily-cap-429", "messages": MSGS}),
                       ("/v1beta/models/g-daily-cap-429:generateContent", {"contents": []})):
        r = await http.post(fake.url + path, json=body)
        text = json.dumps(r.json())
        assert r.status_code == 429 and ("per day" in text or "daily" in text) and "free-models" not in text, path


@pytest.mark.asyncio
async def test_hang_and_hang_after_headers_record_abort(fake, client_ctx):
    async with aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await s.post(f"{fake.url}/v1/chat/completions", ssl=client_ctx,
                         json={"model": "fake/hang", "messages": MSGS, "stream": True},
                         timeout=aiohttp.ClientTimeout(total=0.3))
        assert time.monotonic() - t0 < 2
    await wait_for(lambda: fake.log[-1]["outcome"] is not None)
    assert fake.log[-1]["outcome"] == "aborted" and fake.log[-1]["fault"] == "hang" and fake.log[-1]["status"] == 0

    async with aiohttp.ClientSession() as s:
        r = await s.post(f"{fake.url}/v1/messages", ssl=client_ctx,
                         json={"model": "claude-hang-after-headers", "messages": MSGS, "stream": True},
                         timeout=aiohttp.ClientTimeout(sock_read=0.3))
        assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
        with pytest.raises(asyncio.TimeoutError):
            await r.content.readany()
        r.close()
    await wait_for(lambda: fake.log[-1]["outcome"] is not None)
    assert fake.log[-1]["outcome"] == "aborted" and fake.log[-1]["fault"] == "hang-after-headers"
    assert fake.log[-1]["status"] == 200 and fake.log[-1]["chunks_sent"] == 0


@pytest.mark.asyncio
async def test_hang_released_by_stop(pki, client_ctx):
    f = FakeUpstream()
    await f.start(ssl_context=pki.server_ssl_context())
    async with aiohttp.ClientSession() as s:
        task = asyncio.ensure_future(s.post(f"{f.url}/v1/chat/completions", ssl=client_ctx,
                                            json={"model": "hang", "messages": MSGS}))
        await wait_for(lambda: len(f.log) == 1 and f.log[0]["model"] == "hang")
        t0 = time.monotonic()
        await f.stop()
        assert time.monotonic() - t0 < 3
        with pytest.raises(aiohttp.ClientError):
            await task
    assert f.log[0]["outcome"] in ("fault:hang", "aborted")


@pytest.mark.asyncio
async def test_empty(fake, http):
    r = await http.post(f"{fake.url}/api/v1/chat/completions", json={"model": "fake/empty", "messages": MSGS, "stream": True})
    chunks = [d for _, d in json_events(r.text)]
    assert r.text.endswith("data: [DONE]\n\n")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert not any(c["choices"] and c["choices"][0]["delta"].get("content") for c in chunks)
    assert any(c["choices"] and c["choices"][0]["finish_reason"] == "stop" for c in chunks)
    assert fake.log[-1]["outcome"] == "fault:empty"
    r = await http.post(f"{fake.url}/v1/chat/completions", json={"model": "fake/empty", "messages": MSGS})
    assert r.json()["choices"][0]["message"]["content"] == ""
    r = await http.post(f"{fake.url}/v1/messages", json={"model": "empty", "messages": MSGS, "stream": True})
    types = [e for e, _ in json_events(r.text)]
    assert types[0] == "message_start" and types[-1] == "message_stop" and "content_block_delta" not in types
    r = await http.post(f"{fake.url}/v1/messages", json={"model": "empty", "messages": MSGS})
    assert r.json()["content"] == []


@pytest.mark.asyncio
async def test_error_200(fake, http):
    url = f"{fake.url}/api/v1/chat/completions"
    r = await http.post(url, json={"model": "fake/error-200", "messages": MSGS})
    assert r.status_code == 200 and r.json()["error"]["code"] == 502 and "choices" not in r.json()
    r = await http.post(url, json={"model": "fake/error-200", "messages": MSGS, "stream": True})
    ev = parse_sse(r.text)
    assert r.status_code == 200 and json.loads(ev[0][1])["error"]["code"] == 502 and ev[1][1] == "[DONE]" and len(ev) == 2
    assert fake.log[-1]["outcome"] == "fault:error-200"
    r = await http.post(f"{fake.url}/v1/messages", json={"model": "error-200", "messages": MSGS})
    assert r.status_code == 200 and r.json()["type"] == "error"


@pytest.mark.asyncio
async def test_midstream_error(fake, http):
    r = await http.post(f"{fake.url}/api/v1/chat/completions",
                        json={"model": "fake/midstream-error", "messages": MSGS, "stream": True})
    chunks = [d for _, d in json_events(r.text)]
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) == 2
    last = chunks[-1]
    assert last["error"]["message"] and last["choices"][0]["finish_reason"] == "error"
    assert "[DONE]" not in r.text
    r = await http.post(f"{fake.url}/v1/messages", json={"model": "midstream-error", "messages": MSGS, "stream": True})
    ev = json_events(r.text)
    assert sum(1 for e, _ in ev if e == "content_block_delta") == 2
    assert ev[-1][0] == "error" and ev[-1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert fake.log[-1]["outcome"] == "fault:midstream-error" and fake.log[-1]["status"] == 200


@pytest.mark.asyncio
async def test_slow_stream_is_incremental(fake, client_ctx):
    arrivals = []
    async with aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        async with s.post(f"{fake.url}/v1/chat/completions", ssl=client_ctx,
                          json={"model": "fake/slow", "messages": MSGS, "stream": True}) as r:
            buf = b""
            async for data in r.content.iter_any():
                buf += data
                arrivals.append(time.monotonic() - t0)
    chunks = [d for _, d in json_events(buf.decode())]
    contents = [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(contents) == 10 and "".join(contents) == fake.expected_answer("fake/slow")
    assert arrivals[0] < 0.5 and arrivals[-1] >= 1.7
    assert len(arrivals) >= 8  # they really arrived one by one
    assert fake.log[-1]["outcome"] == "fault:slow"


@pytest.mark.asyncio
async def test_chunks_n(fake, http):
    r = await http.post(f"{fake.url}/v1/chat/completions", json={"model": "fake/chunks-200", "messages": MSGS, "stream": True})
    chunks = [d for _, d in json_events(r.text)]
    contents = [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(contents) == 200 and "".join(contents) == fake.expected_answer("chunks-200")
    r = await http.post(f"{fake.url}/v1/messages", json={"model": "chunks-7", "messages": MSGS, "stream": True})
    assert sum(1 for e, _ in json_events(r.text) if e == "content_block_delta") == 7


@pytest.mark.asyncio
async def test_token_streaming_one_event_per_token(pki, http):
    """The benchmark's realistic provider (--tokens, --first-token-delay): one word-sized token per
    event in each dialect's chunk shape, usage at the end; fault and chunks-<N> models unchanged."""
    fake = FakeUpstream(tokens=200, first_token_delay=0.01)
    await fake.start(ssl_context=pki.server_ssl_context())
    try:
        body = {"model": "gpt-4o", "messages": MSGS, "stream": True, "stream_options": {"include_usage": True}}
        r = await http.post(f"{fake.url}/v1/chat/completions", json=body)
        chunks = [d for _, d in json_events(r.text)]
        contents = [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
        assert len(contents) == 200 and all(1 <= len(t) <= 12 for t in contents)
        assert 2.5 <= sum(map(len, contents)) / 200 <= 6  # about 4 characters per token, as BPE tokens are
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 200
        r = await http.post(f"{fake.url}/v1/messages", json={"model": "claude-x", "max_tokens": 9, "messages": MSGS,
                                                             "stream": True})
        events = json_events(r.text)
        texts = [d["delta"]["text"] for e, d in events if e == "content_block_delta"]
        assert texts == contents
        assert [d for e, d in events if e == "message_delta"][0]["usage"]["output_tokens"] >= 200
        # the first-token wait: OpenRouter sends one more keep-alive comment before the first chunk
        r = await http.post(f"{fake.url}/api/v1/chat/completions", json={"model": "x/y", "messages": MSGS, "stream": True})
        assert r.text.count(": OPENROUTER PROCESSING") == 2
        r = await http.post(f"{fake.url}/v1/chat/completions", json={"model": "x/chunks-7", "messages": MSGS, "stream": True})
        assert sum(1 for _, d in json_events(r.text) if d["choices"] and d["choices"][0]["delta"].get("content")) == 7
    finally:
        await fake.stop()


@pytest.mark.asyncio
async def test_client_abort_mid_stream(fake, client_ctx):
    async with aiohttp.ClientSession() as s:
        r = await s.post(f"{fake.url}/v1/responses", ssl=client_ctx,
                         json={"model": "slow", "input": "x", "stream": True})
        got = b""
        while got.count(b"response.output_text.delta") < 4:  # event: line + data type
            got += await r.content.readany()
        r.close()  # drop the connection mid-stream
    await wait_for(lambda: fake.log[-1]["outcome"] is not None)
    e = fake.log[-1]
    assert e["outcome"] == "aborted" and e["status"] == 200 and 2 <= e["chunks_sent"] < 16


@pytest.mark.asyncio
async def test_compressed_request_bodies(fake, http):
    import brotli

    raw = json.dumps({"model": "gz-model", "messages": MSGS}).encode()
    encoders = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}
    try:
        from compression import zstd  # type: ignore

        encoders["zstd"] = zstd.compress
    except ImportError:
        try:
            import zstandard

            encoders["zstd"] = zstandard.ZstdCompressor().compress
        except ImportError:
            pass
    for enc, fn in encoders.items():
        data = fn(raw)
        r = await http.post(f"{fake.url}/v1/chat/completions", content=data,
                            headers={"content-encoding": enc, "content-type": "application/json"})
        assert r.status_code == 200, (enc, r.text)
        assert r.json()["choices"][0]["message"]["content"] == ANSWER
        e = fake.log[-1]
        assert e["model"] == "gz-model" and e["body_bytes"] == len(data) and e["headers"]["content-encoding"] == enc
    r = await http.post(f"{fake.url}/v1/messages", content=raw, headers={"content-encoding": "snappy"})
    assert r.status_code == 415 and r.json()["type"] == "error"
    r = await http.post(f"{fake.url}/v1/chat/completions", content=b"not gzip", headers={"content-encoding": "gzip"})
    assert r.status_code == 400


@pytest.mark.asyncio
async def test_jsonl_log(fake, http):
    await http.post(f"{fake.url}/v1/chat/completions", json={"model": "a", "messages": MSGS, "stream": True})
    await http.post(f"{fake.url}/v1/messages", json={"model": "b-fail-500", "messages": MSGS})
    lines = [json.loads(x) for x in fake.log_path.read_text().splitlines()]
    assert [(x["model"], x["status"], x["outcome"]) for x in lines] == [("a", 200, "ok"), ("b-fail-500", 500, "fault:fail-500")]
    assert set(lines[0]) >= {"t", "method", "path", "host", "model", "stream", "headers", "body_bytes", "status",
                             "outcome", "chunks_sent"}


# --------------------------------------------------------------------------- subprocess mode
@pytest.mark.asyncio
async def test_subprocess_mode(pki, client_ctx, tmp_path):
    port_file = tmp_path / "port"
    log_file = tmp_path / "sub.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(FAKE_SCRIPT), "--host", "127.0.0.1", "--port", "0", "--cert", str(pki.cert),
         "--key", str(pki.key), "--port-file", str(port_file), "--log-path", str(log_file),
         "--answer", "hello from the subprocess", "--chunk-delay", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        port = int(port_file.read_text())
        assert proc.stdout.readline().strip() == f"listening {port}"
        async with httpx.AsyncClient(verify=client_ctx) as c:
            r = await c.post(f"https://127.0.0.1:{port}/v1/chat/completions", json={"model": "m", "messages": MSGS})
        assert r.json()["choices"][0]["message"]["content"] == "hello from the subprocess"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
    assert json.loads(log_file.read_text().splitlines()[0])["model"] == "m"
