"""The environment that routes an agent through Clutch and makes it trust Clutch's CA.

Verified for Claude Code, Codex, OpenCode, Qwen Code, Pi, OpenClaw and Hermes by running the real
CLIs through mitmproxy: every one reads HTTPS_PROXY itself; Node tools
need NODE_EXTRA_CA_CERTS; Rust, Python and Bun tools need SSL_CERT_FILE / REQUESTS_CA_BUNDLE, which
replace the trust store, hence the combined bundle.
"""

from __future__ import annotations

import secrets

from addons.certs import CAFiles
from addons.wire.identity import Identity, username_for

LOOPBACK = "localhost,127.0.0.1,::1"


# Every variable agent_environment sets, in its order: what `clutch env --unset` unsets.
ENVIRONMENT_NAMES = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "NO_PROXY", "no_proxy",
                     "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO",
                     "CODEX_CA_CERTIFICATE", "NODE_USE_ENV_PROXY")


def proxy_url(host: str, port: int, identity: Identity | None = None, token: str | None = None) -> str:
    if identity is None:
        return f"http://{host}:{port}"
    return f"http://{username_for(identity)}:{token or secrets.token_urlsafe(9)}@{host}:{port}"


def agent_environment(url: str, files: CAFiles) -> dict[str, str]:
    ca, bundle = str(files.ca_cert), str(files.bundle)
    environment = {
        "HTTPS_PROXY": url,
        "HTTP_PROXY": url,
        "https_proxy": url,  # curl reads only the lower-case http_proxy; set both cases everywhere
        "http_proxy": url,
        "NO_PROXY": LOOPBACK,
        "no_proxy": LOOPBACK,
        "NODE_EXTRA_CA_CERTS": ca,  # adds to Node's roots: the CA alone is right
        "SSL_CERT_FILE": bundle,  # replaces the roots: system roots + CA
        "REQUESTS_CA_BUNDLE": bundle,
        "CURL_CA_BUNDLE": bundle,
        "GIT_SSL_CAINFO": bundle,
        "CODEX_CA_CERTIFICATE": bundle,
        "NODE_USE_ENV_PROXY": "1",  # makes plain Node >= 24 fetch obey the proxy; harmless elsewhere
    }
    assert tuple(environment) == ENVIRONMENT_NAMES  # a new variable is added to both
    return environment
