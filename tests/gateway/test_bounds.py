"""Bounds on what untrusted bytes can cost the gateway (issue 15): through a real gateway, with the
official SDKs or httpx, against the fake provider.

Nothing an agent (or any local process) sends may hang a request or take the gateway's memory with
it: a text the tokenizer cannot take whole is counted in windows or estimated, a body over
`clutch_max_body_mb` (announced, chunked, or a decompression bomb) gets a 413 in the agent's dialect,
and a provider's answer that never ends (a huge JSON body, an SSE event without its blank line) ends
in an error in the agent's dialect. After each, a normal request still works.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import textwrap
import zlib

import anthropic
import httpx
import openai
import pytest
from harness import gateway_on_rules, trust

KEYS = {"anthropic": "sk-ant-api03-bounds-secret-7Qx", "openai": "sk-proj-bounds-secret-2Lm"}
RULES = textwrap.dedent("""\
    version: 1
    providers:
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
                  key_env: ANTHROPIC_API_KEY}
      openai: {base_url: "https://api.openai.com/v1", dialects: [openai_chat, openai_responses],
               hosts: [api.openai.com], key_env: OPENAI_API_KEY}
""")
LIMIT_MB = 8  # the gateways' clutch_max_body_mb: a few MB past it is over, not 32


def _start(tmp_path_factory, fake, pki, name: str, *extra: str):
    workdir = tmp_path_factory.mktemp(name)
    return gateway_on_rules(workdir, fake, pki, RULES, "--set", "clutch_retries=0",
                            "--set", f"clutch_state_dir={workdir / 'state'}",
                            "--set", f"clutch_max_body_mb={LIMIT_MB}", *extra)


@pytest.fixture(scope="module", params=["max", "cache_safe"])
def gateway(request, tmp_path_factory, fake, pki):
    process = _start(tmp_path_factory, fake, pki, f"bounds-{request.param}",
                     "--set", f"clutch_compression={request.param}")
    yield process
    process.stop()


def client(gateway, flavour=httpx, timeout: float = 60) -> httpx.Client:
    return flavour.Client(proxy=gateway.proxy_url("claude"), verify=trust(gateway.bundle), trust_env=False,
                          timeout=timeout)


def sdk_client(sdk, gateway):
    import importlib
    base = importlib.import_module(f"{sdk.__name__}._base_client")
    return client(gateway, getattr(base, "httpx2", None) or base.httpx)


def anthropic_sdk(gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url="https://api.anthropic.com", api_key=KEYS["anthropic"], max_retries=0, timeout=60,
                               http_client=sdk_client(anthropic, gateway))


def openai_sdk(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url="https://api.openai.com/v1", api_key=KEYS["openai"], max_retries=0, timeout=60,
                         http_client=sdk_client(openai, gateway))


def tool_output_messages(output: str) -> list[dict]:
    """Claude Code's history after a Bash call whose output is `output`."""
    return [{"role": "user", "content": [{"type": "text", "text": "Run the build."}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "Bash",
                                               "input": {"command": "make"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": output},
                                         {"type": "text", "text": "What failed?"}]}]


def assert_normal_request_works(gateway, model: str) -> None:
    answer = anthropic_sdk(gateway).messages.create(model=model, max_tokens=32,
                                                    messages=[{"role": "user", "content": "hi"}])
    assert answer.content[0].text


def anthropic_post(gateway, raw: bytes, headers: dict | None = None) -> httpx.Response:
    with client(gateway) as http:
        return http.post("https://api.anthropic.com/v1/messages", content=raw,
                         headers={"content-type": "application/json", "x-api-key": KEYS["anthropic"],
                                  "anthropic-version": "2023-06-01", **(headers or {})})


def rss_kb(gateway, field: str = "VmHWM") -> int:
    for line in open(f"/proc/{gateway.process.pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


# ---------------------------------------------------------------- 1. untrusted text never hangs a request

def test_a_million_spaces_in_a_tool_output_is_answered_and_counted(gateway, fake):
    model = f"fake/good-spaces-{gateway.port}"
    answer = anthropic_sdk(gateway).messages.create(model=model, max_tokens=32,
                                                    messages=tool_output_messages(" " * 1_000_000 + "done"))
    assert answer.content[0].text
    entry = gateway.journal(model)[0]
    assert entry["outcome"] == "success"
    assert entry["compression"] in ("max", "cache_safe")
    assert entry["tokens_after"] is not None and entry["tokens_after"] > 1000, entry


def test_a_text_past_the_tokenizer_budget_is_counted_by_estimate(gateway, fake):
    """5,000,000 characters of one letter (the slowest text for the tokenizer) is more than one request
    may put through it: the rest is estimated, the request answered, and the journal says so."""
    model = f"fake/good-budget-{gateway.port}"
    answer = anthropic_sdk(gateway).messages.create(model=model, max_tokens=32,
                                                    messages=tool_output_messages("a" * 5_000_000))
    assert answer.content[0].text
    entry = gateway.journal(model)[0]
    assert entry["outcome"] == "success"
    assert "counted by estimate" in (entry["compression_note"] or ""), entry
    assert entry["tokens_after"] > 1_000_000 // 4  # an estimate, of the right size


# ---------------------------------------------------------------- 2. bodies over the limit: 413 in the dialect

def test_a_body_over_the_limit_gets_413_in_anthropic_dialect(gateway, fake):
    model = f"fake/good-big-anthropic-{gateway.port}"
    with pytest.raises(anthropic.APIStatusError) as caught:
        anthropic_sdk(gateway).messages.create(model=model, max_tokens=32,
                                               messages=tool_output_messages("x" * (LIMIT_MB << 20)))
    assert caught.value.status_code == 413
    assert caught.value.body["error"]["type"] == "request_too_large"
    assert "clutch_max_body_mb" in caught.value.message and f"{LIMIT_MB} MB" in caught.value.message
    assert fake.entries_for(model) == []  # nothing reached the provider
    assert_normal_request_works(gateway, f"fake/good-after-big-{gateway.port}")


def test_a_body_over_the_limit_gets_413_in_openai_dialect(gateway, fake):
    model = f"fake/good-big-openai-{gateway.port}"
    with pytest.raises(openai.APIStatusError) as caught:
        openai_sdk(gateway).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x" * (LIMIT_MB << 20)}])
    assert caught.value.status_code == 413
    assert caught.value.body["type"] == "invalid_request_error"  # the SDK hands over body["error"]
    assert "clutch_max_body_mb" in caught.value.message
    assert fake.entries_for(model) == []
    answer = openai_sdk(gateway).chat.completions.create(model=f"fake/good-after-openai-{gateway.port}",
                                                         messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content


def test_a_gzip_bomb_gets_413_and_the_gateway_stays_small(gateway, fake):
    """256 KB of gzip that inflates to 256 MB: refused after inflating the limit and no more."""
    model = f"fake/good-bomb-{gateway.port}"
    head = json.dumps({"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": ""}]})
    inflated_mb = 256
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(head[:-4].encode())]
    block = b" " * (1 << 20)
    for _ in range(inflated_mb):
        parts.append(packer.compress(block))
    parts += [packer.compress(b'"}]}'), packer.flush()]
    bomb = b"".join(parts)
    assert len(bomb) < 512 << 10
    before = rss_kb(gateway)
    response = anthropic_post(gateway, bomb, {"content-encoding": "gzip"})
    assert response.status_code == 413, response.text[:300]
    assert response.json()["error"]["type"] == "request_too_large"
    assert "clutch_max_body_mb" in response.json()["error"]["message"]
    grown_mb = (rss_kb(gateway) - before) / 1024
    assert grown_mb < 64, f"the gateway's peak RSS grew by {grown_mb:.0f} MB"
    assert fake.entries_for(model) == []
    assert_normal_request_works(gateway, f"fake/good-after-bomb-{gateway.port}")


def test_a_small_gzip_body_is_still_decoded_and_answered(gateway, fake):
    model = f"fake/good-gzip-{gateway.port}"
    raw = json.dumps({"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]})
    response = anthropic_post(gateway, gzip.compress(raw.encode()), {"content-encoding": "gzip"})
    assert response.status_code == 200, response.text[:300]
    assert response.json()["content"][0]["text"]


def _chunks(raw: bytes, size: int = 256 << 10):
    for start in range(0, len(raw), size):
        yield raw[start:start + size]


def test_a_chunked_body_over_the_limit_gets_413(gateway, fake):
    model = f"fake/good-chunked-big-{gateway.port}"
    raw = json.dumps({"model": model, "max_tokens": 32,
                      "messages": tool_output_messages("y" * ((LIMIT_MB + 1) << 20))}).encode()
    before = rss_kb(gateway)
    response = anthropic_post(gateway, _chunks(raw))  # a generator: httpx sends it chunked
    assert response.status_code == 413, response.text[:300]
    assert response.json()["error"]["type"] == "request_too_large"
    assert "clutch_max_body_mb" in response.json()["error"]["message"]
    assert (rss_kb(gateway) - before) / 1024 < 64
    assert fake.entries_for(model) == []
    assert_normal_request_works(gateway, f"fake/good-after-chunked-{gateway.port}")


def test_a_chunked_body_within_the_limit_is_answered(gateway, fake):
    model = f"fake/good-chunked-{gateway.port}"
    raw = json.dumps({"model": model, "max_tokens": 32,
                      "messages": tool_output_messages("z" * (600 << 10))}).encode()
    response = anthropic_post(gateway, _chunks(raw, 64 << 10))
    assert response.status_code == 200, response.text[:300]
    assert response.json()["content"][0]["text"]
    assert fake.entries_for(model)[0]["status"] == 200


def curl_http2(gateway, raw: bytes) -> tuple[str, dict]:
    """POST `raw` with curl over HTTP/2 through the proxy, streamed from stdin (`-T -`): an HTTP/2
    request with no Content-Length, as a client that streams its body sends it. (version, JSON answer)"""
    done = subprocess.run(
        ["curl", "-sS", "--http2", "-x", gateway.proxy_url("claude"), "--cacert", str(gateway.bundle),
         "-X", "POST", "-T", "-", "-w", "\n%{http_version}", "-H", "content-type: application/json",
         "-H", f"x-api-key: {KEYS['anthropic']}", "-H", "anthropic-version: 2023-06-01",
         "https://api.anthropic.com/v1/messages"],
        input=raw, capture_output=True, timeout=60, env={"PATH": os.environ["PATH"], "HOME": str(gateway.home)})
    body, _, version = done.stdout.decode().rpartition("\n")
    return version, json.loads(body)


def test_an_http2_body_with_no_length_is_served_and_bounded(gateway, fake):
    """HTTP/2 has no chunked framing: a streamed body announces no length and its end comes later. It is
    served once it has all arrived (not answered before, from an empty body), and refused past the limit."""
    model = f"fake/h2-streamed-{gateway.port}"
    raw = json.dumps({"model": model, "max_tokens": 32, "messages": tool_output_messages("z" * (2 << 20))}).encode()
    version, answer = curl_http2(gateway, raw)
    assert version == "2", version
    assert answer["content"][0]["text"], answer
    assert fake.entries_for(model)[0]["body_bytes"] > 2 << 20
    big = json.dumps({"model": f"fake/h2-too-big-{gateway.port}", "max_tokens": 32,
                      "messages": tool_output_messages("z" * ((LIMIT_MB + 1) << 20))}).encode()
    version, answer = curl_http2(gateway, big)
    assert answer["error"]["type"] == "request_too_large", answer
    assert not fake.entries_for(f"fake/h2-too-big-{gateway.port}")


# ---------------------------------------------------------------- provider answers that never end

def test_a_huge_answer_ends_in_an_error_in_the_agents_dialect(gateway, fake):
    model = f"fake/huge-answer-{gateway.port}"
    with pytest.raises(anthropic.APIStatusError) as caught:
        anthropic_sdk(gateway).messages.create(model=model, max_tokens=32,
                                               messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["type"] == "error"
    assert "over 16 MB" in caught.value.message
    assert_normal_request_works(gateway, f"fake/good-after-huge-{gateway.port}")


def test_an_sse_event_that_never_ends_ends_in_an_error_event(gateway, fake):
    model = f"fake/endless-event-{gateway.port}"
    raw = json.dumps({"model": model, "max_tokens": 32, "stream": True,
                      "messages": [{"role": "user", "content": "hi"}]}).encode()
    before = rss_kb(gateway)
    with client(gateway) as http:
        with http.stream("POST", "https://api.anthropic.com/v1/messages", content=raw,
                         headers={"content-type": "application/json", "x-api-key": KEYS["anthropic"],
                                  "anthropic-version": "2023-06-01"}) as response:
            body = b"".join(response.iter_bytes())
    assert response.status_code == 200
    last = body.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b"event: error\ndata: "), last[:200]
    error = json.loads(last.split(b"data: ", 1)[1])
    assert "without ending an event" in error["error"]["message"]
    assert len(body) < 10 << 20  # cut at the bound, not the fake's 12 MB
    assert (rss_kb(gateway) - before) / 1024 < 64
    assert_normal_request_works(gateway, f"fake/good-after-endless-{gateway.port}")
