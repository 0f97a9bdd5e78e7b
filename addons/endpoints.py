"""Endpoints: Clutch's own small HTTP API, answered locally and never forwarded.

Reachable three ways: directly on the listen port (`curl http://127.0.0.1:8780/health`), through
the proxy at a reserved host (`http://clutch.local/health`), and under `/__clutch/` on any entry,
reverse-proxy ports included (there the Host header is already the target's, research §6).
"""

from __future__ import annotations

import json
import logging
import os
import time

from mitmproxy import ctx, http

from addons import __version__
from addons.certs import Certs
from addons.journal import Journal
from addons.resilience import Resilience
from addons.rulebook import Rulebook

logger = logging.getLogger(__name__)

PREFIX = "/__clutch"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class Endpoints:
    def __init__(self, rulebook: Rulebook, certs: Certs, resilience: Resilience | None = None,
                 journal: Journal | None = None):
        self._rulebook = rulebook
        self._certs = certs
        self._resilience = resilience
        self._journal = journal
        self._started = time.time()

    def load(self, loader):
        loader.add_option("clutch_host", str, "clutch.local",
                          "Reserved host name that reaches Clutch's endpoints through the proxy.")

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        path = self._local_path(flow)
        if path is None:
            return
        if path in ("/health", "/health/"):
            flow.response = _json(200, self.health())
        elif path in ("/resilience", "/resilience/") and self._resilience is not None:
            flow.response = _json(200, self._resilience.snapshot())
        elif path in ("/requests", "/requests/") and self._journal is not None:
            after = flow.request.query.get("after", "0")
            flow.response = _json(200, self._journal.since(int(after) if after.isdigit() else 0))
        elif path == "/ca.pem" and self._certs.files is not None:
            flow.response = http.Response.make(200, self._certs.files.ca_cert.read_bytes(),
                                               {"content-type": "application/x-pem-file"})
        else:
            flow.response = _json(404, {"error": f"no Clutch endpoint at {path}",
                                        "endpoints": ["/health", "/resilience", "/requests", "/ca.pem"]})
        flow.comment = f"clutch: answered {path} locally"

    def _local_path(self, flow: http.HTTPFlow) -> str | None:
        request = flow.request
        path = request.path.split("?", 1)[0]
        if path == PREFIX or path.startswith(PREFIX + "/"):
            return path[len(PREFIX):] or "/"
        if request.host.lower() == ctx.options.clutch_host.lower():
            return path
        if self._is_listen_address(request.host, request.port):
            return path
        return None

    def health(self) -> dict:
        rulebook = self._rulebook
        return {
            "status": "ok",
            "version": __version__,
            "rules": {
                "path": str(rulebook.path),
                "loaded_at": _iso(rulebook.loaded_at),
                "last_reload_error": rulebook.last_error,
                "providers": sorted(rulebook.rules.providers),
                # claude-code-proxy variables (BIG_MODEL, ROUTER_THINK, ...) that override the file
                "overrides": dict(rulebook.overrides),
                "tiers": rulebook.rules.tiers.model_dump(exclude_none=True),
                "routes": rulebook.rules.routes.model_dump(exclude_none=True),
                "profiles": sorted(rulebook.rules.profiles),
                "launch_tiers": dict(rulebook.rules.launch_tiers),
            },
            "started_at": _iso(self._started),
            "uptime_s": round(time.time() - self._started, 3),
            "listen": [f"{mode} {host}:{port}" for mode, host, port in _listen_addresses()],
            "ca_cert": str(self._certs.files.ca_cert) if self._certs.files else None,
            "ca_bundle": str(self._certs.files.bundle) if self._certs.files else None,
            "pid": os.getpid(),
        }

    @staticmethod
    def _is_listen_address(host: str, port: int) -> bool:
        for _, listen_host, listen_port in _listen_addresses():
            if port == listen_port and (host == listen_host or host in _LOOPBACK):
                return True
        return False


def _listen_addresses() -> list[tuple[str, str, int]]:
    proxyserver = ctx.master.addons.get("proxyserver")
    found = []
    for server in getattr(proxyserver, "servers", []):
        for address in server.listen_addrs:
            found.append((server.mode.type_name, str(address[0]), int(address[1])))
    return found


def _json(status: int, payload: dict) -> http.Response:
    return http.Response.make(status, json.dumps(payload, indent=2).encode() + b"\n",
                              {"content-type": "application/json", "cache-control": "no-store"})


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
