"""Clutch's local endpoints, the reverse-proxy entry, and what mitmweb shows."""

from __future__ import annotations

import json
import time

import httpx
import openai
from harness import MITMWEB, ROOT, Gateway, free_port, trust

from addons import __version__


def test_health_directly_on_the_listen_port(gateway):
    health = gateway.health()
    assert health["status"] == "ok"
    assert health["version"] == __version__
    assert health["rules"]["path"] == str(ROOT / "rules" / "default.yaml")
    assert health["rules"]["last_reload_error"] is None
    assert health["uptime_s"] >= 0
    assert f"regular 127.0.0.1:{gateway.port}" in health["listen"]


def test_health_through_the_proxy_at_the_reserved_host(gateway):
    with httpx.Client(proxy=gateway.proxy_url(), trust_env=False) as client:
        response = client.get("http://clutch.local/health")
        assert response.json()["status"] == "ok"
        assert client.get("http://clutch.local/__clutch/health").json()["status"] == "ok"
        missing = client.get("http://clutch.local/nope")
        assert missing.status_code == 404 and "/health" in missing.json()["endpoints"]
        ca = client.get("http://clutch.local/ca.pem")
    assert ca.content == gateway.ca_cert.read_bytes()


def test_reverse_entry_needs_no_ca(tmp_path, fake, pki):
    """A tool that accepts a base URL talks plain HTTP to a reverse entry; Clutch still does the rest."""
    reverse_port = free_port()
    gateway = Gateway(tmp_path, fake.port, pki.ca_cert, "--mode", "regular",
                      "--mode", f"reverse:https://openrouter.ai@127.0.0.1:{reverse_port}")
    try:
        base = f"http://127.0.0.1:{reverse_port}"
        client = openai.OpenAI(base_url=f"{base}/api/v1", api_key="sk-or-v1-test",
                               http_client=httpx.Client(trust_env=False))
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="reverse/stream", stream=True, messages=[{"role": "user", "content": "hi"}]) if c.choices)
        assert text == "pong from the fake upstream"
        assert fake.wait_for(lambda e: e.get("model") == "reverse/stream")["host"] == "openrouter.ai"
        health = httpx.get(f"{base}/__clutch/health", trust_env=False).json()
        assert f"reverse 127.0.0.1:{reverse_port}" in health["listen"]
    finally:
        gateway.stop()


def test_mitmweb_shows_the_flow_with_clutchs_comment(tmp_path, fake, pki):
    web_port = free_port()
    gateway = Gateway(tmp_path, fake.port, pki.ca_cert, "--web-host", "127.0.0.1", "--web-port", str(web_port),
                      "--set", "web_password=test-web-token", "--set", "web_open_browser=false",
                      "--set", "store_streamed_bodies=true",
                      tool=MITMWEB)
    try:
        with httpx.Client(proxy=gateway.proxy_url("xx-opencode.s-web1"), verify=trust(gateway.ca_cert)) as c:
            response = c.post("https://openrouter.ai/api/v1/chat/completions",
                              json={"model": "web/stream", "stream": True,
                                    "messages": [{"role": "user", "content": "hi"}]})
            assert response.status_code == 200
        flows = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(f.get("comment") for f in flows):
            flows = httpx.get(f"http://127.0.0.1:{web_port}/flows?token=test-web-token", trust_env=False).json()
            time.sleep(0.1)
        flow = next(f for f in flows if f["request"]["path"] == "/api/v1/chat/completions")
        assert flow["request"]["host"] == "openrouter.ai"  # the provider, not the engine's loopback
        assert flow["request"]["scheme"] == "https"
        assert "clutch: opencode session=web1 openai_chat stream model=web/stream via openrouter" in flow["comment"]
        assert "no rule applies, forwarded unchanged; attempts: web/stream 200, committed in " in flow["comment"]
        assert ", 8 SSE events" in flow["comment"]  # the fake's OpenRouter stream: role, 4 deltas, stop, usage, [DONE]
        body = httpx.get(f"http://127.0.0.1:{web_port}/flows/{flow['id']}/response/content.data"
                         f"?token=test-web-token", trust_env=False)
        assert "data: [DONE]" in body.text
        request_body = httpx.get(f"http://127.0.0.1:{web_port}/flows/{flow['id']}/request/content.data"
                                 f"?token=test-web-token", trust_env=False)
        assert json.loads(request_body.text)["model"] == "web/stream"
    finally:
        gateway.stop()


def test_flows_can_be_saved_and_read_back(tmp_path, fake, pki):
    """`mitmdump -w` (and mitmweb's save) serialise flows: Clutch's metadata must be plain values."""
    from mitmproxy import io

    saved = tmp_path / "flows.mitm"
    gateway = Gateway(tmp_path, fake.port, pki.ca_cert, "-w", str(saved))
    try:
        with httpx.Client(proxy=gateway.proxy_url("xx-claude.s-save1"), verify=trust(gateway.ca_cert)) as c:
            assert c.post("https://api.anthropic.com/v1/messages", headers={"x-api-key": "sk-ant-api03-t"},
                          json={"model": "save/one", "max_tokens": 8, "stream": True,
                                "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    finally:
        gateway.stop()
    assert "Traceback" not in gateway.output()
    with open(saved, "rb") as f:
        flows = list(io.FlowReader(f).stream())
    flow = next(f for f in flows if f.request.path == "/v1/messages")
    assert flow.request.host == "api.anthropic.com"
    assert flow.metadata["clutch.identity"] == {"agent": "claude", "session": "save1", "from_credentials": True}
    assert flow.metadata["clutch.call"]["model"] == "save/one"
