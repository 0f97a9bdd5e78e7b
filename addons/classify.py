"""Classify: recognise LLM requests to configured providers and attach an LLMCall to the flow.

Everything else on a provider host (model lists, OAuth, Claude Code's /api/claude_code/*,
/api/hello) is left alone, so mitmproxy passes it through untouched.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from addons import dialects
from addons.meta import WEBSOCKET, set_call
from addons.rulebook import Rulebook

logger = logging.getLogger(__name__)


class Classify:
    def __init__(self, rulebook: Rulebook):
        self._rulebook = rulebook

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        request = flow.request
        owner = self._rulebook.rules.provider_at(request.host, request.port)
        if owner is None:
            return
        if dialects.is_responses_websocket(request.method, request.path, request.headers):
            flow.metadata[WEBSOCKET] = True
            return
        dialect = dialects.recognise(request.method, request.path)
        if dialect is None:
            return
        try:
            content = request.content
        except ValueError as e:  # an encoding mitmproxy cannot decode: forward the bytes unread
            content = None
            logger.warning("cannot decode %s request body (%s); forwarding it unread", request.host, e)
        set_call(flow, dialects.read_call(dialect, owner[0], request.path, content))
