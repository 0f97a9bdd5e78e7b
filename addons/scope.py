"""Scope: intercept TLS only for the providers in the rules; tunnel everything else untouched.

mitmproxy matches `allow_hosts` case-insensitively with an unanchored re.search over `host:port`
(the CONNECT target, the peer address, the TLS SNI and the Host header), so each pattern is
anchored: `openrouter\\.ai` alone would also match openrouter.ai.evil.com.
"""

from __future__ import annotations

import ipaddress
import logging
import re

from mitmproxy import ctx, http

from addons.config.rules import Rules
from addons.rulebook import Rulebook

logger = logging.getLogger(__name__)


def is_loopback(peername) -> bool:
    if not peername:
        return True  # not a network peer (e.g. a flow built in-process)
    try:
        return ipaddress.ip_address(str(peername[0]).removeprefix("::ffff:")).is_loopback
    except ValueError:
        return False


def intercept_patterns(rules: Rules) -> list[str]:
    endpoints = {endpoint for provider in rules.providers.values() for endpoint in provider.endpoints()}
    return sorted(f"^{re.escape(host)}:{port}$" for host, port in endpoints)


class Scope:
    def __init__(self, rulebook: Rulebook):
        self._rulebook = rulebook
        self._listening = False

    def load(self, loader):
        loader.add_option("clutch_scope", bool, True,
                          "Set allow_hosts from the providers in the rules, so only their TLS is intercepted.")
        loader.add_option("clutch_allow_remote", bool, False,
                          "Serve clients on other machines too; only with clutch_users (a team gateway "
                          "that checks every agent's token). Off: only loopback clients are served, "
                          "because the gateway carries the keys.")

    def configure(self, updated):
        if "listen_host" in updated and ctx.options.listen_host == "" and not ctx.options.clutch_allow_remote:
            # mitmproxy binds every interface by default and sets up its servers before a script
            # could change that; Clutch refuses non-loopback clients instead (see requestheaders)
            logger.warning("listening on all interfaces; Clutch answers loopback clients only "
                           "(start it with --listen-host 127.0.0.1, or set clutch_allow_remote)")
        if "connection_strategy" in updated and ctx.options.connection_strategy != "lazy":
            # eager connects upstream at CONNECT time; flows re-pointed at the engine need lazy
            logger.info("clutch sets connection_strategy=lazy (was %s)", ctx.options.connection_strategy)
            ctx.options.connection_strategy = "lazy"
        if not self._listening:
            self._listening = True
            self._rulebook.on_change(self._apply)
        elif "clutch_scope" in updated:
            self._apply(self._rulebook.rules)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._refuse_remote(flow)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._refuse_remote(flow)

    @staticmethod
    def _refuse_remote(flow: http.HTTPFlow) -> None:
        if flow.response or ctx.options.clutch_allow_remote or is_loopback(flow.client_conn.peername):
            return
        flow.response = http.Response.make(403, b"Clutch serves loopback clients only (clutch_allow_remote).\n",
                                           {"content-type": "text/plain"})

    def _apply(self, rules: Rules) -> None:
        if not ctx.options.clutch_scope:
            return
        patterns = intercept_patterns(rules)
        if list(ctx.options.allow_hosts) != patterns:
            ctx.options.update(allow_hosts=patterns)
            logger.info("intercepting TLS for %s", ", ".join(patterns))
