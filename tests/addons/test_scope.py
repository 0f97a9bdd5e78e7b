"""Interception scope: only provider hosts are intercepted; everything else passes untouched."""

from __future__ import annotations

import http.server
import re
import ssl
import threading

import httpx
import pytest
from harness import peer_issuer, trust
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons

from addons.rulebook import Rulebook
from addons.config.rules import DEFAULT_RULES_PATH, load_rules
from addons.scope import Scope, intercept_patterns


def test_patterns_are_anchored_per_provider_endpoint():
    patterns = intercept_patterns(load_rules(DEFAULT_RULES_PATH))
    assert r"^openrouter\.ai:443$" in patterns
    assert r"^api\.anthropic\.com:443$" in patterns
    assert all(p.startswith("^") and p.endswith("$") for p in patterns)
    assert not any(re.search(p, "openrouter.ai.evil.com:443") for p in patterns)
    assert not any(re.search(p, "openrouter.ai:8443") for p in patterns)


def test_scope_sets_allow_hosts_and_lazy_connections():
    rulebook = Rulebook()
    scope = Scope(rulebook)
    with taddons.context(Proxyserver(), rulebook, scope) as tctx:
        tctx.configure(scope, connection_strategy="eager")
        assert tctx.options.connection_strategy == "lazy"
        assert r"^openrouter\.ai:443$" in tctx.options.allow_hosts


@pytest.fixture
def tls_server(pki):
    """A non-provider HTTPS server with its own certificate (issued by the test CA)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    context = pki.server_ssl_context()
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = repr(sorted((k.lower(), v) for k, v in self.headers.items())).encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("x-origin", "echo")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_other_hosts_are_tunnelled_with_their_own_certificate(gateway, tls_server, pki):
    assert "Clutch Test Upstream CA" in peer_issuer(gateway.port, "127.0.0.1", tls_server)
    # and a client that trusts only the real CA talks to the real server through the tunnel
    with httpx.Client(proxy=gateway.proxy_url(), verify=ssl.create_default_context(cafile=str(pki.ca_cert))) as c:
        assert c.get(f"https://127.0.0.1:{tls_server}/x").headers["x-origin"] == "echo"


def test_provider_hosts_are_intercepted_with_the_clutch_ca(gateway):
    assert "mitmproxy" in peer_issuer(gateway.port, "openrouter.ai", 443)


def test_plain_http_to_other_hosts_passes_unchanged(gateway):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with httpx.Client(proxy=gateway.proxy_url("xx-pi"), trust_env=False) as client:
            response = client.get(f"http://127.0.0.1:{server.server_address[1]}/plain",
                                  headers={"x-custom": "kept", "authorization": "Bearer sk-keep"})
        assert response.status_code == 200 and response.headers["x-origin"] == "echo"
        seen = dict(eval(response.text))  # the headers the origin received
        assert seen["x-custom"] == "kept" and seen["authorization"] == "Bearer sk-keep"
        assert "proxy-authorization" not in seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("host,path", [
    ("api.anthropic.com", "/api/hello"),
    ("api.anthropic.com", "/api/claude_code/policy_limits"),
    ("openrouter.ai", "/api/v1/models"),
])
def test_non_llm_requests_on_provider_hosts_pass_through_untouched(gateway, fake, host, path):
    with httpx.Client(proxy=gateway.proxy_url(), verify=trust(gateway.ca_cert)) as client:
        response = client.get(f"https://{host}{path}", headers={"x-probe": path})
    assert response.status_code == 200  # the fake's real answer, not one made up by Clutch
    entry = fake.wait_for(lambda e: e["headers"].get("x-probe") == path)
    assert entry["host"] == host
    assert "x-clutch-flow" not in entry["headers"]  # mitmproxy's own pass-through, not the engine


def test_remote_clients_are_refused_unless_allowed():
    from mitmproxy.test import tflow

    rulebook = Rulebook()
    scope = Scope(rulebook)
    with taddons.context(Proxyserver(), rulebook, scope) as tctx:
        remote = tflow.tflow()
        remote.client_conn.peername = ("10.1.2.3", 50000)
        scope.requestheaders(remote)
        assert remote.response.status_code == 403
        local = tflow.tflow()
        local.client_conn.peername = ("::ffff:127.0.0.1", 50000)
        scope.requestheaders(local)
        assert local.response is None
        tctx.configure(scope, clutch_allow_remote=True)
        allowed = tflow.tflow()
        allowed.client_conn.peername = ("10.1.2.3", 50000)
        scope.http_connect(allowed)
        assert allowed.response is None


def test_pass_through_requests_reuse_one_upstream_connection(gateway, fake):
    """Ten keep-alive requests on one agent connection: none may wait for a free upstream slot."""
    with httpx.Client(proxy=gateway.proxy_url(), verify=trust(gateway.ca_cert), timeout=10) as client:
        for i in range(10):
            assert client.get("https://openrouter.ai/api/v1/models", headers={"x-probe": f"reuse-{i}"}).status_code == 200
    peers = {fake.wait_for(lambda e, i=i: e["headers"].get("x-probe") == f"reuse-{i}")["t"] for i in range(10)}
    assert len(peers) == 10
