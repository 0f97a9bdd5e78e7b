"""The Endpoints addon in-process (tests/addon_rig.py): /health, /usage and /requests answered by the
gateway itself, never forwarded, and only to requests that name Clutch (its reserved host through the
proxy, /__clutch/ on a loopback name); what a web page could send is refused first, by BrowserGate
(tests/gateway/test_endpoints.py and tests/guard/test_browser_guard.py check the same through a real
mitmdump, on its real listen port)."""

from __future__ import annotations

import json
import os

import pytest
from addon_rig import llm_flow, local_flow, provider_options, running

from addons import __version__


async def test_health_usage_and_requests_are_answered_in_process(tmp_path, provider, pki):
    async with running(tmp_path, **provider_options(provider.port, pki.ca_cert)) as rig:
        call = llm_flow("https://api.anthropic.com/v1/messages",
                        {"model": "ep/good", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
                        user="xx-cip")
        tokens = json.loads(await rig.send(call))["usage"]["output_tokens"]
        answers = {}
        for path in ("/health", "/usage?by=agent", "/requests"):
            flow = local_flow(path)
            answers[path] = json.loads(await rig.send(flow))
            assert flow.response.status_code == 200 and flow.response.headers["cache-control"] == "no-store"
            assert flow.comment == f"clutch: answered {path.split('?')[0]} locally"
    health = answers["/health"]
    assert (health["status"], health["problems"], health["version"], health["pid"]) == ("ok", [], __version__,
                                                                                       os.getpid())
    assert health["usage_db"] == str(tmp_path / "state" / "usage.db")
    assert health["ca_cert"] == str(tmp_path / "certs" / "mitmproxy-ca-cert.pem")
    assert health["rules"]["last_reload_error"] is None and "anthropic" in health["rules"]["providers"]
    (claude,) = [row for row in answers["/usage?by=agent"]["rows"] if row["key"] == "claude"]
    assert claude["requests"] == 1 and claude["output_tokens"] == tokens  # the writer was flushed first
    (entry,) = answers["/requests"]["requests"]
    assert (entry["agent"], entry["launch"], entry["model"], entry["status"], entry["outcome"]) == \
        ("claude", "cip", "ep/good", 200, "success")
    assert [e["model"] for e in provider.log] == ["ep/good"]  # the endpoints' requests went nowhere


CASES = {  # (host, port, path, headers): the status Clutch answers with, None: not one of its endpoints
    "the reserved host through the proxy": ("clutch.local", 80, "/health", {}, 200),
    "the prefix on a loopback name": ("127.0.0.1", 8780, "/__clutch/health", {}, 200),
    "the prefix on localhost": ("localhost", 8780, "/__clutch/health", {}, 200),
    "an unknown endpoint": ("clutch.local", 80, "/nope", {}, 404),
    "a rebinding page's name on the listen port": ("evil.example", 8780, "/health", {}, 403),
    "the prefix on another site's name": ("evil.example", 80, "/__clutch/health", {}, 403),
    "a page's Origin": ("clutch.local", 80, "/health", {"origin": "https://evil.example"}, 403),
    "a page's Sec-Fetch-Site": ("clutch.local", 80, "/requests", {"sec-fetch-site": "cross-site"}, 403),
    "another site through the proxy": ("example.com", 80, "/health", {}, None),
}


@pytest.mark.parametrize("case", CASES)
async def test_only_requests_that_name_clutch_reach_the_endpoints(tmp_path, case):
    host, port, path, headers, status = CASES[case]
    async with running(tmp_path) as rig:
        flow = local_flow(path, host=host, port=port, headers=headers)
        await rig.request_hooks(flow)
    if status is None:  # mitmproxy forwards it as it came: no addon answered or took it
        assert flow.response is None and not flow.comment
        return
    assert flow.response.status_code == status
    answer = json.loads(flow.response.content)
    if status == 403:
        assert flow.response.headers["x-clutch-error"] == "browser"
        error = answer["error"] if isinstance(answer["error"], str) else answer["error"]["message"]
        assert error.startswith("Clutch refused a request a web page could have sent")
        assert "health" not in answer and "requests" not in answer
    elif status == 404:
        assert "/health" in answer["endpoints"]
    else:
        assert answer["status"] == "ok"
