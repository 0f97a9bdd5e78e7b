"""The engine through a real gateway: official SDKs via HTTPS_PROXY + the project's CA, as agents do."""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import threading
import time

import anthropic
import httpx
import openai
import pytest
from harness import trust

from addons.certs import ca_files
from addons.wire.identity import Identity, username_for
from launcher.recipe import agent_environment


def route_through(gateway, monkeypatch) -> None:
    """The recipe's environment, as `./clutch env --agent opencode` prints it."""
    url = gateway.proxy_url(username_for(Identity(agent="opencode", session="t1")))
    for name, value in agent_environment(url, ca_files(gateway.confdir)).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


@pytest.fixture
def routed(gateway, monkeypatch):
    route_through(gateway, monkeypatch)


@pytest.fixture(scope="module")
def impatient(tmp_path_factory, fake, pki):
    """A gateway that gives up at once: 0.7 s for the first byte, and no retry, so a 429's Retry-After
    (2 s from the fake) is passed on rather than waited out."""
    from harness import Gateway
    gateway = Gateway(tmp_path_factory.mktemp("impatient"), fake.port, pki.ca_cert,
                      "--set", "clutch_first_byte_timeout_ms=700", "--set", "clutch_retries=0")
    yield gateway
    gateway.stop()


@pytest.fixture
def routed_impatient(impatient, monkeypatch):
    route_through(impatient, monkeypatch)


def engine_entry(fake, model):
    return fake.wait_for(lambda e: e.get("model") == model and "x-clutch-flow" in e["headers"])


def test_openai_sdk_streams_through_openrouter(routed, fake):
    client = openai.OpenAI(base_url="https://openrouter.ai/api/v1", api_key="sk-or-v1-test")
    stream = client.chat.completions.create(
        model="engine/stream-1", stream=True, messages=[{"role": "user", "content": "hi"}])
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "pong from the fake upstream"
    entry = engine_entry(fake, "engine/stream-1")
    assert entry["host"] == "openrouter.ai"
    assert entry["headers"]["authorization"] == "Bearer sk-or-v1-test"  # the agent's own key, untouched
    assert "proxy-authorization" not in entry["headers"]


def test_openai_sdk_non_stream_to_openai(routed, fake):
    client = openai.OpenAI(api_key="sk-test")
    completion = client.chat.completions.create(
        model="engine/plain-1", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "pong from the fake upstream"
    assert completion.usage.total_tokens > 0
    assert engine_entry(fake, "engine/plain-1")["host"] == "api.openai.com"


def test_anthropic_sdk_stream_and_non_stream(routed, fake):
    client = anthropic.Anthropic(api_key="sk-ant-api03-test")
    with client.messages.stream(model="engine/claude-1", max_tokens=64,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "pong from the fake upstream"
    assert final.usage.output_tokens > 0
    message = client.messages.create(model="engine/claude-2", max_tokens=64,
                                     messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "pong from the fake upstream"
    sent = engine_entry(fake, "engine/claude-1")["headers"]
    assert "sk-ant-api03-test" in (sent.get("x-api-key"), sent.get("authorization", "").removeprefix("Bearer "))
    engine_entry(fake, "engine/claude-2")


def test_responses_api_stream(routed, fake):
    client = openai.OpenAI(api_key="sk-test")
    events = list(client.responses.create(model="engine/responses-1", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == \
        "pong from the fake upstream"
    engine_entry(fake, "engine/responses-1")


def test_stream_reaches_the_agent_incrementally(routed, fake):
    """`slow` sends 10 chunks 0.2 s apart: the first must arrive long before the last is produced."""
    client = openai.OpenAI(base_url="https://openrouter.ai/api/v1", api_key="sk-or-v1-test")
    started = time.monotonic()
    arrivals = []
    for chunk in client.chat.completions.create(model="engine/slow", stream=True,
                                                messages=[{"role": "user", "content": "hi"}]):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 10
    assert arrivals[-1] - arrivals[0] > 1.5  # spread out as produced, not delivered in one piece
    assert arrivals[0] < arrivals[-1] / 2


def test_upstream_errors_reach_the_agent_unchanged(routed_impatient, fake):
    client = openai.OpenAI(base_url="https://openrouter.ai/api/v1", api_key="sk-or-v1-test", max_retries=0)
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="engine/fail-429", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.response.headers["retry-after"] == "2"
    assert "Rate limit exceeded" in raised.value.message
    claude = anthropic.Anthropic(api_key="sk-ant-api03-test", max_retries=0)
    with pytest.raises(anthropic.InternalServerError) as raised:
        claude.messages.create(model="engine/fail-529", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert raised.value.status_code == 529
    assert raised.value.body["error"]["type"] == "overloaded_error"


def test_gzip_request_body_is_forwarded_and_read(routed, fake, gateway):
    body = json.dumps({"model": "engine/gzip-1", "messages": [{"role": "user", "content": "hi"}]}).encode()
    with httpx.Client(proxy=gateway.proxy_url(), verify=trust(gateway.bundle)) as client:
        response = client.post("https://api.openai.com/v1/chat/completions", content=gzip.compress(body),
                               headers={"content-encoding": "gzip", "content-type": "application/json",
                                        "authorization": "Bearer sk-test"})
    assert response.status_code == 200
    entry = engine_entry(fake, "engine/gzip-1")
    assert entry["headers"]["content-encoding"] == "gzip"
    assert entry["body_bytes"] == len(gzip.compress(body)) == int(entry["headers"]["content-length"])


def test_http2_client_streams(fake, gateway):
    body = json.dumps({"model": "engine/h2", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    result = subprocess.run(
        ["curl", "-sS", "--http2", "-x", gateway.proxy_url(), "--cacert", str(gateway.ca_cert),
         "-H", "content-type: application/json", "-H", "authorization: Bearer sk-or-v1-test",
         "-w", "\n%{http_version}", "-d", body, "https://openrouter.ai/api/v1/chat/completions"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("\n2")
    assert "data: [DONE]" in result.stdout
    engine_entry(fake, "engine/h2")


def test_unreachable_provider_is_an_error_in_the_agents_dialect(tmp_path, pki):
    """Nothing listens on the resolved port: the agent gets a 502 its SDK parses."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    from harness import Gateway
    gateway = Gateway(tmp_path, dead_port, pki.ca_cert)
    try:
        with httpx.Client(proxy=gateway.proxy_url(), verify=trust(gateway.ca_cert)) as client:
            response = client.post("https://api.anthropic.com/v1/messages",
                                   json={"model": "m", "max_tokens": 8, "messages": []},
                                   headers={"x-api-key": "sk-ant-api03-test"})
        assert response.status_code == 502
        assert response.json()["type"] == "error"
        assert response.json()["error"]["type"] == "api_error"
        assert response.headers["x-clutch-error"] == "connect"
        assert "sk-ant-api03-test" not in gateway.output()
    finally:
        gateway.stop()


def test_hanging_provider_times_out_with_504(impatient, fake):
    gateway = impatient
    started = time.monotonic()
    with httpx.Client(proxy=gateway.proxy_url(), verify=trust(gateway.ca_cert), timeout=20) as client:
        response = client.post("https://openrouter.ai/api/v1/chat/completions",
                               json={"model": "engine/hang", "messages": []})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout"
    assert time.monotonic() - started < 5
    fake.wait_for(lambda e: e.get("model") == "engine/hang" and e["outcome"] in ("aborted", "fault:hang"))


def test_agent_cancel_stops_the_upstream_generation(gateway, fake):
    """An agent closing a stream early aborts the provider's stream too (no paid tokens wasted)."""
    with httpx.Client(proxy=gateway.proxy_url(), verify=trust(gateway.ca_cert), timeout=20) as client:
        with client.stream("POST", "https://openrouter.ai/api/v1/chat/completions",
                           json={"model": "engine/slow-cancel", "stream": True, "messages": []}) as response:
            for _ in response.iter_raw():
                break
    entry = fake.wait_for(lambda e: e.get("model") == "engine/slow-cancel")
    assert entry["outcome"] == "aborted"
    assert entry["chunks_sent"] < 10


def test_large_agent_request_arrives_byte_for_byte(routed, fake):
    """A 300 KB request, as coding agents send late in a session, reaches the provider intact."""
    history = [{"role": "user" if i % 2 else "assistant", "content": f"{i} " + "x" * 3000} for i in range(100)]
    client = openai.OpenAI(base_url="https://openrouter.ai/api/v1", api_key="sk-or-v1-test")
    completion = client.chat.completions.create(model="engine/large", messages=history)
    assert completion.choices[0].message.content == "pong from the fake upstream"
    entry = engine_entry(fake, "engine/large")
    assert entry["request_json"]["messages"] == history
    assert entry["body_bytes"] > 300_000


def test_concurrent_streams_do_not_mix(routed, fake):
    client = openai.OpenAI(base_url="https://openrouter.ai/api/v1", api_key="sk-or-v1-test")
    results: dict[int, str] = {}

    def run(i: int) -> None:
        stream = client.chat.completions.create(model=f"engine/concurrent-{i}", stream=True,
                                                messages=[{"role": "user", "content": "hi"}])
        results[i] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {i: "pong from the fake upstream" for i in range(8)}


def test_gemini_stream_is_recognised_and_passed_through(gateway, fake):
    with httpx.Client(proxy=gateway.proxy_url(), verify=trust(gateway.ca_cert)) as client:
        response = client.post(
            "https://generativelanguage.googleapis.com/v1beta/models/engine-gemini:streamGenerateContent?alt=sse",
            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
            headers={"x-goog-api-key": "gemini-test-key"})
    assert response.status_code == 200
    assert response.text.count("data: ") >= 2 and "usageMetadata" in response.text
    entry = fake.wait_for(lambda e: e.get("model") == "engine-gemini")
    assert "x-clutch-flow" in entry["headers"] and entry["headers"]["x-goog-api-key"] == "gemini-test-key"


def test_gemini_json_array_stream_is_not_buffered(gateway, fake):
    """streamGenerateContent without alt=sse streams a JSON array; it must reach the agent piece by piece."""
    arrivals = []
    started = time.monotonic()
    with httpx.Client(proxy=gateway.proxy_url(), verify=trust(gateway.ca_cert), timeout=30) as client:
        with client.stream("POST", "https://generativelanguage.googleapis.com/v1beta/models/"
                                   "engine-gemini-slow:streamGenerateContent",
                           json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}) as response:
            assert response.status_code == 200
            body = b""
            for piece in response.iter_raw():
                arrivals.append(time.monotonic() - started)
                body += piece
    assert json.loads(body)[0]["candidates"]
    assert arrivals[-1] - arrivals[0] > 1.0  # spread over the 0.2 s pauses, not one buffered piece


def test_silent_stream_is_cut_at_the_idle_timeout(tmp_path, fake, pki):
    """Silence after the headers, before any content: the attempt fails at the idle timeout (retried
    once), and the agent gets a well-formed 504 instead of a stream that never ends."""
    from harness import Gateway
    gateway = Gateway(tmp_path, fake.port, pki.ca_cert, "--set", "clutch_idle_timeout_ms=700")
    try:
        started = time.monotonic()
        before = len(fake.entries_for("engine/hang-after-headers"))
        with httpx.Client(proxy=gateway.proxy_url(), verify=trust(gateway.ca_cert), timeout=20) as client:
            response = client.post("https://openrouter.ai/api/v1/chat/completions",
                                   json={"model": "engine/hang-after-headers", "stream": True, "messages": []})
        assert response.status_code == 504 and response.headers["x-clutch-error"] == "timeout_idle"
        assert "sent nothing for 0.7 s" in response.json()["error"]["message"]
        assert time.monotonic() - started < 5
        fake.wait_for(lambda e: e.get("model") == "engine/hang-after-headers" and e["outcome"] == "aborted")
        time.sleep(0.3)
        assert len(fake.entries_for("engine/hang-after-headers")) - before == 2  # one retry, then the error
    finally:
        gateway.stop()


def test_the_flow_comment_tells_what_compression_did():
    """mitmweb shows the comment: the mode, tokens before and after, and the cuts by kind."""
    from mitmproxy.test import tflow

    from addons.engine import _compression_note
    from addons.flows.meta import COMPRESSION
    flow = tflow.tflow()
    assert _compression_note(flow) == ""  # compression off: nothing to say
    flow.metadata[COMPRESSION] = {"mode": "cache_safe", "cuts": {}, "rewrites": 0, "ms": 0.4}
    assert _compression_note(flow) == "; compression cache_safe: nothing to cut"
    flow.metadata[COMPRESSION] = {"mode": "max", "cuts": {"stale_read": 2, "shrunk": 1}, "rewrites": 2, "ms": 3.1}
    assert _compression_note(flow) == "; compression max: tokens not counted yet, 1 shrunk, 2 stale_read"
    flow.metadata[COMPRESSION].update(tokens_before=12_000, tokens_after=9_000, tokens_saved=3_000)
    assert _compression_note(flow) == "; compression max: 12,000 -> 9,000 tokens (-25.0%), 1 shrunk, 2 stale_read"
