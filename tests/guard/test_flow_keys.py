"""Saved flows hold no keys: a real `mitmdump -w` gateway, requests from the openai and anthropic SDKs
(streamed and not), Gemini's `?key=`, a path mitmproxy forwards itself and a locally answered one;
the flow file is read raw (no key anywhere in its bytes) and with mitmproxy's FlowReader (each key's
masked form is where the key was). The provider still gets every key whole."""

from __future__ import annotations

import anthropic
import httpx
import httpx2
import openai
import pytest
from harness import Gateway, trust
from mitmproxy import io

from addons.wire.identity import Identity, username_for
from addons.guard.key_mask import masked, masked_header

OPENAI_KEY = "sk-proj-openai0123456789abcdefQRST"
OPENROUTER_KEY = "sk-or-v1-0123456789abcdef0123456789UVWX"
ANTHROPIC_KEY = "sk-ant-api03-0123456789abcdef-abcdYZab"
GEMINI_KEY = "AIzaSyD0123456789abcdefghijklmnopGEMI"
GEMINI_HEADER_KEY = "AIzaSyHEADER0123456789abcdefghijHDRK"
AZURE_KEY = "azure0123456789abcdef0123456789AZUR"
COOKIE = "sessionsecret0123456789abcdefCOOK"
PROXY_PASSWORD = "proxy-password-0123456789PXPW"
KEYS = [OPENAI_KEY, OPENROUTER_KEY, ANTHROPIC_KEY, GEMINI_KEY, GEMINI_HEADER_KEY, AZURE_KEY, COOKIE,
        PROXY_PASSWORD]


def traffic(gateway: Gateway) -> None:
    """One of each kind of flow, each carrying keys."""
    proxy = gateway.proxy_url(username_for(Identity(agent="opencode", session="keys")))
    verify = trust(gateway.ca_cert)
    chat = openai.OpenAI(api_key=OPENAI_KEY, max_retries=0, http_client=httpx2.Client(proxy=proxy, verify=verify))
    assert chat.chat.completions.create(model="keys-chat", messages=[{"role": "user", "content": "hi"}]) \
        .choices[0].message.content == "pong from the fake upstream"
    router = openai.OpenAI(base_url="https://openrouter.ai/api/v1", api_key=OPENROUTER_KEY, max_retries=0,
                           http_client=httpx2.Client(proxy=proxy, verify=verify))
    text = "".join(c.choices[0].delta.content or "" for c in router.chat.completions.create(
        model="keys-stream", stream=True, messages=[{"role": "user", "content": "hi"}]) if c.choices)
    assert text == "pong from the fake upstream"
    claude = anthropic.Anthropic(api_key=ANTHROPIC_KEY, max_retries=0,
                                 http_client=httpx2.Client(proxy=proxy, verify=verify))
    with claude.messages.stream(model="keys-claude", max_tokens=64,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        assert stream.get_final_text() == "pong from the fake upstream"
    with httpx.Client(proxy=proxy, verify=verify, timeout=30) as client:
        gemini = client.post("https://generativelanguage.googleapis.com/v1beta/models/keys-gemini:"
                             f"streamGenerateContent?alt=sse&key={GEMINI_KEY}",
                             json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
                             headers={"x-goog-api-key": GEMINI_HEADER_KEY, "cookie": f"session={COOKIE}"})
        assert gemini.status_code == 200 and "usageMetadata" in gemini.text
        # not an LLM call: mitmproxy forwards it itself
        models = client.get("https://api.openai.com/v1/models", headers={"authorization": f"Bearer {OPENAI_KEY}",
                                                                          "api-key": AZURE_KEY})
        assert models.status_code == 200
    # plain-HTTP proxying carries the proxy credentials on the request itself; answered locally
    with httpx.Client(proxy=f"http://opencode:{PROXY_PASSWORD}@127.0.0.1:{gateway.port}", timeout=10) as client:
        assert client.get("http://clutch.local/health", headers={"x-api-key": ANTHROPIC_KEY}).status_code == 200


def saved(tmp_path, fake, pki, *options: str) -> tuple[bytes, list]:
    flows = tmp_path / "flows.mitm"
    gateway = Gateway(tmp_path, fake.port, pki.ca_cert, "-w", str(flows),
                      "--set", f"clutch_state_dir={tmp_path / 'state'}", *options)
    try:
        traffic(gateway)
    finally:
        assert gateway.stop() == 0
    raw = flows.read_bytes()
    with open(flows, "rb") as file:
        return raw, list(io.FlowReader(file).stream())


def _requests(flows, host: str):
    return [f.request for f in flows if getattr(f, "request", None) is not None and f.request.pretty_host == host]


def test_saved_flows_hold_no_key(tmp_path, fake, pki):
    raw, flows = saved(tmp_path, fake, pki)
    for key in KEYS:
        assert key.encode() not in raw, f"{key} is in the saved flows"
    [chat, listing] = sorted(_requests(flows, "api.openai.com"), key=lambda r: r.path)
    assert chat.headers["authorization"] == f"Bearer {masked(OPENAI_KEY)}" == "Bearer sk-...QRST"
    assert listing.path == "/v1/models" and listing.headers["authorization"] == "Bearer sk-...QRST"
    assert listing.headers["api-key"] == "azu...AZUR"
    [router] = _requests(flows, "openrouter.ai")
    assert router.headers["authorization"] == "Bearer sk-...UVWX"
    [claude] = _requests(flows, "api.anthropic.com")
    # this SDK sends its key as x-api-key or as a Bearer token, depending on its version
    assert "sk-...YZab" in (claude.headers.get("x-api-key"), claude.headers.get("authorization", "")[7:])
    [gemini] = _requests(flows, "generativelanguage.googleapis.com")
    assert gemini.query["key"] == "AIz...GEMI" and gemini.query["alt"] == "sse"
    assert gemini.headers["x-goog-api-key"] == "AIz...HDRK"
    assert gemini.headers["cookie"] == masked_header("cookie", f"session={COOKIE}") == "session=ses...COOK"
    [health] = _requests(flows, "clutch.local")
    assert "proxy-authorization" not in health.headers  # Identify takes the proxy credentials away
    assert health.headers["x-api-key"] == "sk-...YZab"
    # the providers got every key whole
    sent = {e["model"]: e for e in fake.entries() if (e.get("model") or "").startswith("keys-")}
    assert sent["keys-chat"]["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    claude_sent = sent["keys-claude"]["headers"]
    assert ANTHROPIC_KEY in (claude_sent.get("x-api-key"), claude_sent.get("authorization", "")[7:])
    assert f"key={GEMINI_KEY}" in sent["keys-gemini"]["path"]


def test_the_option_keeps_them(tmp_path, fake, pki):
    raw, _ = saved(tmp_path, fake, pki, "--set", "clutch_keep_keys_in_flows=true")
    for key in (OPENAI_KEY, OPENROUTER_KEY, ANTHROPIC_KEY, GEMINI_KEY, GEMINI_HEADER_KEY, AZURE_KEY, COOKIE):
        assert key.encode() in raw


@pytest.mark.parametrize("value, shown", [
    ("sk-proj-openai0123456789abcdefQRST", "sk-...QRST"),
    ("short", "..."),
    ("twelve-chars", "...hars"),
    ("sk-...QRST", "sk-...QRST"),  # masked once only
])
def test_masked(value, shown):
    assert masked(value) == shown
