"""Scope: intercept TLS only for the providers in the rules; tunnel everything else untouched.

mitmproxy matches `allow_hosts` with an unanchored re.search over `host:port`, so each pattern is
anchored (research/mitmproxy.md §4): `openrouter\\.ai` alone would also match openrouter.ai.evil.com.
"""

from __future__ import annotations

import logging
import re

from mitmproxy import ctx

from addons.rulebook import Rulebook
from addons.rules import Rules

logger = logging.getLogger(__name__)


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

    def configure(self, updated):
        if "connection_strategy" in updated and ctx.options.connection_strategy != "lazy":
            # eager connects upstream at CONNECT time; flows re-pointed at the engine need lazy
            logger.info("clutch sets connection_strategy=lazy (was %s)", ctx.options.connection_strategy)
            ctx.options.connection_strategy = "lazy"
        if not self._listening:
            self._listening = True
            self._rulebook.on_change(self._apply)
        elif "clutch_scope" in updated:
            self._apply(self._rulebook.rules)

    def _apply(self, rules: Rules) -> None:
        if not ctx.options.clutch_scope:
            return
        patterns = intercept_patterns(rules)
        if list(ctx.options.allow_hosts) != patterns:
            ctx.options.update(allow_hosts=patterns)
            logger.info("intercepting TLS for %s", ", ".join(patterns))
