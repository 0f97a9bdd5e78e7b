"""Clutch's local endpoints, the front page and the start-up banner, the reverse-proxy entry, and what
mitmweb shows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import httpx
import openai
import pytest
from harness import MITMWEB, ROOT, Gateway, free_port, gateway_on_rules, trust

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


LINKS = ("dashboard", "rules", "health", "usage", "metrics", "requests", "resilience", "ca.pem", "docs")
_STAMP = re.compile(r"^\[\d\d:\d\d:\d\d\.\d{3}\] ")  # mitmdump's time stamp before each log record


def banner_lines(output: str) -> list[str]:
    """The banner's lines as printed (the first with its time stamp): up to the next log record."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if f"Clutch {__version__} is ready" in line)
    end = next((i for i in range(start + 1, len(lines)) if _STAMP.match(lines[i])), len(lines))
    return lines[start:end]


def test_the_banner_is_logged_once_after_the_proxy_listens(tmp_path_factory, fake, pki):
    """Where everything is, once the port really listens: the proxy's real address, the CA and the bundle,
    the dashboard, and the line that routes a shell, which works as printed (run by bash, from the
    checkout) and fits 80 columns, time stamp included."""
    workdir = tmp_path_factory.mktemp("b")  # short paths: the CA's fit a line
    reverse = free_port()
    gateway = Gateway(workdir, fake.port, pki.ca_cert, "--mode", "regular",
                      "--mode", f"reverse:https://openrouter.ai@127.0.0.1:{reverse}")
    try:
        assert wait_until_logged(gateway, "is ready")
        output = gateway.output()
        assert output.count(f"Clutch {__version__} is ready") == 1
        assert output.index(f"HTTP(S) proxy listening at 127.0.0.1:{gateway.port}") < output.index("is ready")
        assert output.index(f"reverse proxy to https://openrouter.ai listening at 127.0.0.1:{reverse}") \
            < output.index("is ready")
        lines = banner_lines(output)
        assert lines[0].endswith(f"Clutch {__version__} is ready (pid {gateway.process.pid})")
        assert [len(line) for line in lines if len(line) > 80] == []
        origin = f"http://127.0.0.1:{gateway.port}"
        rows = dict(re.match(r"  (proxy|base URL|CA cert|trust bundle|dashboard|more) +(.+)$", line).groups()
                    for line in lines[1:lines.index("  route a shell through Clutch:")])
        assert rows == {"proxy": origin, "base URL": f"http://127.0.0.1:{reverse} for https://openrouter.ai",
                        "CA cert": str(gateway.ca_cert), "trust bundle": str(gateway.bundle),
                        "dashboard": f"{origin}/dashboard", "more": f"{origin}/ (health, usage, docs, ...)"}
        shell = "\n".join(lines[lines.index("  route a shell through Clutch:") + 1:])
        assert shell.replace(" \\\n", " ").split() == \
            ["eval", '"$(./clutch', "env", "--port", str(gateway.port), "--confdir", f'{gateway.confdir})"']
        # the line as a user pastes it, in the checkout: the shell now goes through this gateway
        exports = subprocess.run(["bash", "-c", f"set -e\n{shell}\nenv"], cwd=ROOT, capture_output=True, text=True,
                                 timeout=120, env={**os.environ, "HOME": str(gateway.home)})
        assert exports.returncode == 0, exports.stderr
        found = dict(line.split("=", 1) for line in exports.stdout.splitlines() if "=" in line)
        assert found["HTTPS_PROXY"].endswith(f"@127.0.0.1:{gateway.port}")
        assert found["SSL_CERT_FILE"] == str(gateway.bundle) and found["NODE_EXTRA_CA_CERTS"] == str(gateway.ca_cert)
        assert httpx.get(f"{origin}/health", trust_env=False).json()["status"] == "ok"  # it does listen
    finally:
        gateway.stop()
    assert gateway.output().count("is ready") == 1


def wait_until_logged(gateway, text: str, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while text not in gateway.output():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_front_page_links_every_endpoint(gateway):
    """`GET /` on the listen port: plain text for curl and httpx, HTML for a browser, JSON when asked;
    each link answers, and under /__clutch/ (any entry) the links keep the prefix."""
    origin = f"http://127.0.0.1:{gateway.port}"
    text = httpx.get(f"{origin}/", trust_env=False, timeout=10)
    assert text.status_code == 200 and text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.text.startswith(f"Clutch {__version__}: ")
    for link in LINKS:
        assert f"{origin}/{link}" in text.text, link
    assert f"  proxy         {origin}\n" in text.text and f"{gateway.ca_cert}" in text.text
    assert 'eval "$(./clutch env --port' in text.text
    assert all(len(line) <= 80 for line in text.text.splitlines() if " " in line.strip())

    curl = subprocess.run(["curl", "-sS", "--noproxy", "*", f"{origin}/"], capture_output=True, text=True, timeout=30)
    assert curl.returncode == 0 and curl.stdout == text.text
    curl_html = subprocess.run(["curl", "-sS", "--noproxy", "*", "-H", "Accept: text/html", "-D", "-", f"{origin}"],
                               capture_output=True, text=True, timeout=30)
    assert "content-type: text/html; charset=utf-8" in curl_html.stdout.lower()
    assert "content-security-policy: default-src 'none'" in curl_html.stdout.lower()

    browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    page = httpx.get(f"{origin}/", headers={"accept": browser_accept, "sec-fetch-site": "none"}, trust_env=False)
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    hrefs = dict(re.findall(r'data-link="([^"]+)" href="([^"]+)"', page.text))
    assert hrefs == {link: f"/{link}" + ("/" if link == "docs" else "") for link in LINKS}
    assert "<script" not in page.text

    links = httpx.get(f"{origin}/", headers={"accept": "application/json"}, trust_env=False).json()["links"]
    assert set(links) == set(LINKS)
    for link, url in links.items():
        answer = httpx.get(url, trust_env=False, timeout=10)
        assert answer.status_code == 200, (link, answer.text[:200])
    assert httpx.get(links["ca.pem"], trust_env=False).content == gateway.ca_cert.read_bytes()
    assert httpx.get(links["docs"], trust_env=False).text == (ROOT / "docs" / "README.md").read_text()
    assert httpx.get(f"{origin}/docs/usage.md", trust_env=False).text == (ROOT / "docs" / "usage.md").read_text()
    for name in ("../README.md", "..%2fREADME.md", "nope.md", "usage.txt"):
        assert httpx.get(f"{origin}/docs/{name}", trust_env=False).status_code == 404, name

    prefixed = httpx.get(f"{origin}/__clutch/", headers={"accept": "application/json"}, trust_env=False).json()
    assert prefixed["links"]["health"] == f"{origin}/__clutch/health"
    with httpx.Client(proxy=gateway.proxy_url(), trust_env=False) as client:  # at clutch.local through the proxy
        assert client.get("http://clutch.local/").text == text.text


@pytest.mark.parametrize("headers", [{"sec-fetch-site": "cross-site"}, {"origin": "http://evil.example"},
                                     {"host": "evil.example"}], ids=["cross-site", "origin", "rebinding"])
def test_a_web_page_cannot_read_the_front_page(gateway, headers):
    """The front page names local paths: a page of another site (or a rebinding one) gets the refusal
    every endpoint gives it, not the page."""
    headers = {"accept": "text/html", **headers}
    if "host" in headers:
        headers["host"] += f":{gateway.port}"
    answer = httpx.get(f"http://127.0.0.1:{gateway.port}/", headers=headers, trust_env=False, timeout=10)
    assert answer.status_code == 403 and answer.headers["x-clutch-error"] == "browser"
    assert "Clutch refused a request a web page could have sent" in answer.text  # (rebinding: as an API error)
    assert str(gateway.ca_cert) not in answer.text and "dashboard" not in answer.text


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


REVERSE_RULES = """\
version: 1
providers:
  openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
               key_env: OPENROUTER_API_KEY}
profiles:
  claude:
    routes: {default: "openrouter:rev/claude-profile"}
"""


def test_a_reverse_entry_learns_the_agent_from_a_path_prefix_or_a_header(tmp_path, fake, pki):
    """A tool on a base URL sends no proxy credentials: `/xx-<agent>...` before the provider's path, or
    `x-clutch-agent`, names it. The journal shows the agent, its profile routes it, and the provider gets
    the path without the prefix and never the header."""
    reverse_port = free_port()
    workdir = tmp_path / "gw"
    workdir.mkdir()
    gateway = gateway_on_rules(workdir, fake, pki, REVERSE_RULES, "--mode", "regular",
                               "--mode", f"reverse:https://openrouter.ai@127.0.0.1:{reverse_port}")
    try:
        def ask(base: str, model: str, **headers: str) -> str:
            client = openai.OpenAI(base_url=base, api_key="sk-or-v1-test", default_headers=headers,
                                   http_client=httpx.Client(trust_env=False))
            return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}]) \
                .choices[0].message.content

        entry = f"http://127.0.0.1:{reverse_port}"
        assert ask(f"{entry}/xx-claude.s-rev1/api/v1", "rev/by-path") == "pong from the fake upstream"
        assert ask(f"{entry}/api/v1", "rev/by-header", **{"x-clutch-agent": "xx-cip.s-rev2"})
        assert ask(f"{entry}/api/v1", "rev/nobody")
        by_path, = gateway.journal("rev/by-path")
        by_header, = gateway.journal("rev/by-header")
        nobody, = gateway.journal("rev/nobody")
        assert (by_path["agent"], by_path["session"]) == ("claude", "rev1")
        assert (by_header["agent"], by_header["launch"], by_header["session"]) == ("claude", "cip", "rev2")
        assert nobody["agent"] == "unknown"
        # Claude's profile routes its requests, and nobody else's
        assert by_path["served_by"] == by_header["served_by"] == "openrouter:rev/claude-profile"
        assert nobody["served_by"] == "openrouter:rev/nobody"
        sent = [e for e in fake.entries() if e.get("model") in ("rev/claude-profile", "rev/nobody")
                and e["t"] >= by_path["time"] - 1]
        assert [e["model"] for e in sent] == ["rev/claude-profile", "rev/claude-profile", "rev/nobody"]
        assert all(e["path"] == "/api/v1/chat/completions" for e in sent)  # the prefix never reached it
        assert all(e["host"] == "openrouter.ai" and "x-clutch-agent" not in e["headers"] for e in sent)
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
