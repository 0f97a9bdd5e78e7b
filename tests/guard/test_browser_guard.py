"""No web page can spend the user's keys or read Clutch's endpoints (addons/guard/browser_guard.py, the
Guard addon), through a real gateway with two reverse (base-URL) entries and the fake provider.

What a page can make a browser send: a cross-site POST with `Content-Type: text/plain` and an
`Origin` (no preflight), any request with `Sec-Fetch-Site: cross-site`, and, after rebinding its own
DNS name to 127.0.0.1, same-origin requests whose Host is its own name. Raw sockets send exactly
those bytes; the last test has headless Chromium send them itself. Real SDKs keep working.
"""

from __future__ import annotations

import http.server
import json
import socket
import textwrap
import threading
import time

import anthropic
import httpx
import openai
import pytest
import webdriver
from harness import free_port, gateway_on_rules, trust

from addons import __version__
from addons.guard.browser_guard import LLM, LOCAL, OTHER, Arrival, refusal

KEY = "sk-or-v1-guard-rules-key-0123456789"
RULES = textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat, openai_responses],
                   hosts: [openrouter.ai], key_env: OPENROUTER_API_KEY}
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com]}
""")
CHAT = "/api/v1/chat/completions"


# ------------------------------------------------------------------ pure

def arrival(kind=LLM, reverse=True, host_header="127.0.0.1:8790", host="openrouter.ai", port=443,
            entry=("127.0.0.1", 8790)) -> Arrival:
    return Arrival(kind, reverse, host_header, host, port, entry, "clutch.local")


@pytest.mark.parametrize("seen,headers", [
    (arrival(), {"origin": "https://evil.example", "content-type": "application/json"}),
    (arrival(), {"sec-fetch-site": "cross-site", "content-type": "application/json"}),
    (arrival(), {"sec-fetch-site": "same-site"}),
    (arrival(), {"content-type": "text/plain;charset=UTF-8"}),
    (arrival(), {"content-type": "application/x-www-form-urlencoded"}),
    (arrival(), {"content-type": "multipart/form-data; boundary=x"}),
    (arrival(host_header="evil.example:8790"), {"content-type": "application/json"}),
    (arrival(kind=OTHER, host_header="evil.example:8790"), {}),
    (arrival(kind=LLM, reverse=False), {"origin": "null"}),
    (arrival(kind=LOCAL, reverse=False, host="evil.example", port=8780, entry=("127.0.0.1", 8780)), {}),
    (arrival(kind=OTHER, reverse=False, host="evil.example", port=8780, entry=("127.0.0.1", 8780)), {}),
    (arrival(kind=LOCAL, reverse=False, host="clutch.local", port=8780, entry=("127.0.0.1", 8780)), {}),
    (arrival(kind=LOCAL, reverse=False, host="api.openai.com", port=443, entry=("127.0.0.1", 8780)), {}),
    (arrival(kind=LOCAL, reverse=False, host="127.0.0.1", port=8780, entry=("127.0.0.1", 8780)),
     {"sec-fetch-site": "cross-site"}),
    # Clutch's own origin is only http://<loopback Host> on the port the client connected to
    (arrival(kind=LOCAL, reverse=False, host_header="127.0.0.1:8780", host="127.0.0.1", port=8780,
             entry=("127.0.0.1", 8780)), {"origin": "http://127.0.0.1:8781"}),
    (arrival(kind=LOCAL, reverse=False, host_header="127.0.0.1:8780", host="127.0.0.1", port=8780,
             entry=("127.0.0.1", 8780)), {"origin": "http://localhost:8780"}),
    (arrival(kind=LOCAL, reverse=True, host_header="127.0.0.1:8790"), {"origin": "http://127.0.0.1:8790"}),
    (arrival(kind=LOCAL, reverse=False, host_header="clutch.local", host="clutch.local", port=80,
             entry=("127.0.0.1", 8780)), {"origin": "http://clutch.local"}),
    (arrival(kind=LLM, reverse=False, host_header="127.0.0.1:8780"), {"origin": "http://127.0.0.1:8780"}),
])
def test_what_a_web_page_can_send_is_refused(seen, headers):
    assert refusal(seen, headers)


@pytest.mark.parametrize("seen,headers", [
    (arrival(), {"content-type": "application/json", "sec-fetch-mode": "cors"}),  # Node's fetch
    (arrival(), {}),  # a JSON body with no content type
    (arrival(host_header="localhost:8790"), {"content-type": "application/json; charset=utf-8"}),
    (arrival(host_header="[::1]:8790", entry=("::1", 8790)), {"content-type": "application/vnd.api+json"}),
    (arrival(kind=LOCAL, host_header="127.0.0.1:8790"), {"sec-fetch-site": "same-origin"}),
    (arrival(kind=LLM, reverse=False), {"content-type": "text/plain"}),  # the forward entry: only Origin
    (arrival(kind=OTHER, reverse=False, host="example.com", port=80), {"origin": "https://example.com"}),
    (arrival(kind=LOCAL, reverse=False, host="clutch.local", port=80, entry=("127.0.0.1", 8780)),
     {"sec-fetch-site": "same-origin"}),
    (arrival(kind=LOCAL, reverse=False, host="127.0.0.1", port=8780, entry=("127.0.0.1", 8780)),
     {"sec-fetch-site": "none"}),
    # Clutch's own page (the rules page's save sends Origin, as every POST does)
    (arrival(kind=LOCAL, reverse=False, host_header="127.0.0.1:8780", host="127.0.0.1", port=8780,
             entry=("127.0.0.1", 8780)), {"origin": "http://127.0.0.1:8780", "sec-fetch-site": "same-origin"}),
])
def test_what_agents_and_the_user_send_goes_ahead(seen, headers):
    assert refusal(seen, headers) is None


# ------------------------------------------------------------------ through a real gateway

@pytest.fixture(scope="module")
def gw(tmp_path_factory, fake, pki):
    """(gateway, openrouter reverse port, anthropic reverse port)"""
    workdir = tmp_path_factory.mktemp("guard")
    openrouter_port, anthropic_port = free_port(), free_port()
    gateway = gateway_on_rules(workdir, fake, pki, RULES, "--mode", "regular",
                               "--mode", f"reverse:https://openrouter.ai@127.0.0.1:{openrouter_port}",
                               "--mode", f"reverse:https://api.anthropic.com@127.0.0.1:{anthropic_port}",
                               "--set", "clutch_retries=0", "--set", f"clutch_state_dir={workdir / 'state'}",
                               env={"OPENROUTER_API_KEY": KEY})
    wait_listening(openrouter_port)
    wait_listening(anthropic_port)
    yield gateway, openrouter_port, anthropic_port
    gateway.stop()
    assert KEY not in gateway.output()


def wait_listening(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def raw(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request as exactly these bytes (`connection: close`); the answer's status, headers, body."""
    data = head.replace("\n", "\r\n").encode() + (b"content-length: %d\r\n" % len(body) if body else b"") + \
        b"connection: close\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(data)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head_bytes, _, rest = answer.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, rest


def anthropic_sdk(monkeypatch, base_url: str, **options) -> anthropic.Anthropic:
    """Anthropic's SDK (its own httpx fork, which reads the proxy environment: none here)."""
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return anthropic.Anthropic(base_url=base_url, api_key="sk-ant-guard", max_retries=0, **options)


def chat_body(model: str) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "spend the user's key"}]}).encode()


def assert_refused_in_openai_dialect(status: int, headers: dict, body: bytes, why: str) -> None:
    assert status == 403 and headers["x-clutch-error"] == "browser"
    error = json.loads(body)["error"]
    assert error["type"] == "permission_error" and why in error["message"], error


def nothing_reached(fake, model: str) -> bool:
    return fake.entries_for(model) == []


def test_a_cross_site_text_plain_post_to_a_reverse_port_never_reaches_the_provider(gw, fake):
    gateway, port, _ = gw
    model = "guard/xsite-text-plain"
    status, headers, body = raw(port, f"POST {CHAT} HTTP/1.1\nHost: 127.0.0.1:{port}\n"
                                      "Origin: https://evil.example\ncontent-type: text/plain;charset=UTF-8\n",
                                chat_body(model))
    assert_refused_in_openai_dialect(status, headers, body, "Origin")
    # visible in /requests and in the log, once, without the key
    entry = gateway.journal(None, timeout=5)
    assert any(e["error"] == "browser" and e["status"] == 403 and e["provider"] == "openrouter" for e in entry)
    assert gateway.output().count("refused POST /api/v1/chat/completions on the reverse entry") >= 1
    # a page does not need the Origin: a form post or a text/plain fetch without one is refused too
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b"):
        status, headers, body = raw(port, f"POST {CHAT} HTTP/1.1\nHost: 127.0.0.1:{port}\n"
                                          f"content-type: {content_type}\n", chat_body(model))
        assert_refused_in_openai_dialect(status, headers, body, "application/json")
    # the fake provider's log is written when a response ends: a request sent after the refused ones
    # and answered proves they would be there by now
    ok = raw(port, f"POST {CHAT} HTTP/1.1\nHost: 127.0.0.1:{port}\ncontent-type: application/json\n",
             chat_body("guard/after-xsite"))
    assert ok[0] == 200
    fake.wait_for(lambda e: e.get("model") == "guard/after-xsite")
    assert nothing_reached(fake, model)


def test_sec_fetch_site_cross_site_is_refused_on_reverse_ports_and_the_forward_entry(gw, fake, monkeypatch):
    gateway, port, anthropic_port = gw
    model = "guard/sec-fetch-site"
    status, headers, body = raw(port, f"POST {CHAT} HTTP/1.1\nHost: 127.0.0.1:{port}\n"
                                      "Sec-Fetch-Site: cross-site\ncontent-type: application/json\n",
                                chat_body(model))
    assert_refused_in_openai_dialect(status, headers, body, "Sec-Fetch-Site")
    # Anthropic's entry answers in Anthropic's dialect, and the SDK reads it as a 403
    client = anthropic_sdk(monkeypatch, f"http://127.0.0.1:{anthropic_port}",
                           default_headers={"origin": "https://evil.example"})
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        client.messages.create(model=model, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["type"] == "error" and "Origin" in refused.value.body["error"]["message"]
    # through the forward proxy (a browser pointed at Clutch): the same rule for LLM requests
    with httpx.Client(proxy=gateway.proxy_url("xx-claude"), verify=trust(gateway.bundle), trust_env=False,
                      timeout=30) as proxied:
        answer = proxied.post("https://api.anthropic.com/v1/messages",
                              headers={"x-api-key": "sk-ant-guard", "sec-fetch-site": "cross-site"},
                              json={"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]})
        assert answer.status_code == 403 and answer.json()["error"]["type"] == "permission_error"
        assert proxied.post("https://api.anthropic.com/v1/messages", headers={"x-api-key": "sk-ant-guard"},
                            json={"model": "guard/after-fetch-site", "max_tokens": 8,
                                  "messages": [{"role": "user", "content": "x"}]}).status_code == 200
    fake.wait_for(lambda e: e.get("model") == "guard/after-fetch-site")
    assert nothing_reached(fake, model)


@pytest.mark.parametrize("path", ["/usage", "/requests", "/dashboard", "/__clutch/health", "/__clutch/usage"])
def test_dns_rebinding_cannot_read_the_endpoints(gw, path):
    gateway, port, _ = gw
    for entry in (gateway.port, port):
        if entry == port and not path.startswith("/__clutch"):
            continue  # a reverse port answers only /__clutch/ itself; other paths are the provider's
        status, headers, body = raw(entry, f"GET {path} HTTP/1.1\nHost: evil.example:{entry}\n"
                                           "Sec-Fetch-Site: same-origin\n")
        assert status == 403 and headers["x-clutch-error"] == "browser", (entry, path, body[:200])
        assert b"evil.example" in body and b"rebinding" in body
    if path == "/usage":  # a provider path on the reverse port by the page's name: refused before any key is added
        status, headers, body = raw(port, f"POST {CHAT} HTTP/1.1\nHost: evil.example:{port}\n"
                                          "content-type: application/json\n", chat_body("guard/rebound"))
        assert_refused_in_openai_dialect(status, headers, body, "rebinding")


def test_loopback_names_and_clutch_local_still_serve_the_dashboard(gw):
    gateway, port, _ = gw
    for host in ("127.0.0.1", "localhost", "127.0.0.2"):
        status, headers, body = raw(gateway.port, f"GET /dashboard HTTP/1.1\nHost: {host}:{gateway.port}\n"
                                                  "Sec-Fetch-Site: none\n")
        assert status == 200 and headers["content-type"].startswith("text/html"), host
    status, _, body = raw(port, f"GET /__clutch/requests HTTP/1.1\nHost: 127.0.0.1:{port}\n"
                                "Sec-Fetch-Site: same-origin\n")
    assert status == 200 and "requests" in json.loads(body)
    with httpx.Client(proxy=gateway.proxy_url(), trust_env=False, timeout=10) as proxied:
        page = proxied.get("http://clutch.local/dashboard", headers={"sec-fetch-site": "none"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert proxied.get("http://clutch.local/usage", headers={"sec-fetch-site": "same-origin"}).status_code == 200
        # through the proxy at the provider's own name, /__clutch/ is a web page's reach: refused
        assert proxied.get("http://openrouter.ai/__clutch/usage").status_code == 403


def test_agents_sdks_and_plain_json_clients_still_work(gw, fake, monkeypatch):
    gateway, port, anthropic_port = gw
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/api/v1", api_key="sk-or-v1-agent",
                           http_client=httpx.Client(trust_env=False), max_retries=0)
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="guard/sdk-stream", stream=True, messages=[{"role": "user", "content": "hi"}]) if c.choices)
    assert text == "pong from the fake upstream"
    reply = anthropic_sdk(monkeypatch, f"http://localhost:{anthropic_port}").messages.create(
        model="guard/sdk-anthropic", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert reply.content[0].text
    # a JSON body with no content type (a hand-written client) is not a browser's
    status, _, _ = raw(port, f"POST {CHAT} HTTP/1.1\nHost: 127.0.0.1:{port}\n", chat_body("guard/no-content-type"))
    assert status == 200
    # the provider's own pages on the reverse port are still passed through (not an LLM request)
    status, _, body = raw(port, f"GET /api/v1/models HTTP/1.1\nHost: 127.0.0.1:{port}\n")
    assert status == 200 and b"data" in body
    for model in ("guard/sdk-stream", "guard/sdk-anthropic", "guard/no-content-type"):
        entry = fake.wait_for(lambda e, m=model: e.get("model") == m)
        assert entry["host"] in ("openrouter.ai", "api.anthropic.com")  # the provider's Host, rewritten as before


# ------------------------------------------------------------------ a real browser

class _AttackerPage(http.server.BaseHTTPRequestHandler):
    """The page a user visits at http://evil.example:<port>/: it tries to spend the key of a reverse port."""

    target = 0

    def do_GET(self):  # noqa: N802 (http.server's name)
        page = f"""<!doctype html><title>loading</title><script>
          const body = JSON.stringify({{model: "guard/chromium-xsite", messages: [{{role: "user", content: "x"}}]}});
          Promise.allSettled([
            fetch("http://127.0.0.1:{self.target}{CHAT}", {{method: "POST", mode: "no-cors", body}}),
            fetch("http://127.0.0.1:{self.target}{CHAT}",
                  {{method: "POST", mode: "no-cors", headers: {{"content-type": "text/plain"}}, body}}),
          ]).then(r => document.title = "sent " + r.map(x => x.status).join(","));
        </script>""".encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args):
        pass


def test_chromium_cannot_spend_keys_or_read_endpoints_and_the_dashboard_still_works(gw, fake):
    webdriver.need_browser()
    gateway, port, _ = gw
    _AttackerPage.target = port
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    refused_before = gateway.output().count("refused POST")
    try:
        # evil.example resolves to 127.0.0.1 in this browser, as a rebinding page's name does
        with webdriver.Browser.start(args=("--host-resolver-rules=MAP evil.example 127.0.0.1",
                                                "--disable-features=HttpsUpgrades")) as browser:
            browser.get(f"http://evil.example:{server.server_address[1]}/")
            browser.wait(lambda: browser.script("return document.title").startswith("sent"), message="the page's POSTs")
            deadline = time.monotonic() + 10
            while gateway.output().count("refused POST") < refused_before + 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert gateway.output().count("refused POST") >= refused_before + 2
            # rebinding: the page's own name on the gateway's port and on the reverse port
            for url in (f"http://evil.example:{gateway.port}/dashboard", f"http://evil.example:{port}/__clutch/usage",
                        f"http://evil.example:{gateway.port}/"):
                browser.get(url)
                text = browser.script("return document.body.innerText")
                assert "rebinding" in text and "usage" not in text.split("Host")[0], (url, text[:300])
            # the user's own tab on 127.0.0.1: the front page (HTML), and its link to the dashboard
            browser.get(f"http://127.0.0.1:{gateway.port}/")
            assert browser.script("return document.title") == f"Clutch {__version__}"
            browser.find('a[data-link="dashboard"]').click()
            browser.wait(lambda: browser.script("return document.body.dataset.state") == "ready",
                         message="the dashboard from the front page's link")
            # and reads the dashboard and its endpoints
            browser.get(f"http://127.0.0.1:{gateway.port}/dashboard#1h")
            browser.wait(lambda: browser.script("return document.body.dataset.state") == "ready",
                         message="the dashboard on 127.0.0.1")
            assert browser.script("return window.__clutchErrors") == []
        # and through the proxy at clutch.local, as a browser pointed at Clutch reaches it
        with webdriver.Browser.start(args=(f"--proxy-server=http://127.0.0.1:{gateway.port}",)) as browser:
            browser.get("http://clutch.local/dashboard#1h")
            browser.wait(lambda: browser.script("return document.body.dataset.state") == "ready",
                         message="the dashboard at clutch.local")
            assert browser.script("return window.__clutchErrors") == []
        assert raw(port, f"POST {CHAT} HTTP/1.1\nHost: 127.0.0.1:{port}\ncontent-type: application/json\n",
                   chat_body("guard/after-chromium"))[0] == 200
        fake.wait_for(lambda e: e.get("model") == "guard/after-chromium")
        assert nothing_reached(fake, "guard/chromium-xsite")
    finally:
        server.shutdown()
        server.server_close()
