"""Classify: recognise LLM requests to configured providers and attach an LLMCall to the flow.

Everything else on a provider host (model lists, OAuth, Claude Code's /api/claude_code/*,
/api/hello) is left alone, so mitmproxy passes it through untouched. An LLM request Clutch cannot
carry (headers past dialects.MAX_HEADERS_BYTES, a model that is no usable name) is answered here, in
the agent's dialect, before anything routes or counts it.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from addons import dialects
from addons.meta import WEBSOCKET, set_call
from addons.rulebook import Rulebook
from addons.rules import Dialect

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
        if why := dialects.headers_too_large(request.headers.fields):
            set_call(flow, dialects.LLMCall(dialect, owner[0], None, False, None, "not read"))
            _refuse(flow, dialect, 431, why, "headers_too_large")
            return
        try:
            content = request.content
        except ValueError as e:  # an encoding mitmproxy cannot decode: forward the bytes unread
            content = None
            logger.warning("cannot decode %s request body (%s); forwarding it unread", request.host, e)
        call = dialects.read_call(dialect, owner[0], request.path, content)
        set_call(flow, call)
        if call.invalid:
            _refuse(flow, dialect, 400, call.invalid, "invalid_model")


def _refuse(flow: http.HTTPFlow, dialect: Dialect, status: int, why: str, kind: str) -> None:
    logger.warning("refused %s %s with %d: %s", flow.request.method, flow.request.path.split("?", 1)[0][:120],
                   status, why)
    flow.response = http.Response.make(status, dialects.error_body(dialect, status, f"Clutch: {why}"),
                                       {"content-type": "application/json", "x-clutch-error": kind})
    flow.comment = f"clutch: refused with {status}: {why}"
