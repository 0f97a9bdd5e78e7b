"""BrowserGate: refuse what a web page could send (browser_guard.py decides), before anything else looks
at the request.

A reverse entry's Host is rewritten to the provider's by mitmproxy before the first hook, which would
hide a DNS rebinding page's own name; so Clutch turns `keep_host_header` on, reads the Host the
client sent, and then rewrites it itself exactly as mitmproxy would have (unless the user asked for
`keep_host_header` themselves).
"""

from __future__ import annotations

import json
import logging

from mitmproxy import ctx, http
from mitmproxy.net.http import url
from mitmproxy.proxy.mode_specs import ReverseMode

from addons.endpoints import listen_addresses
from addons.flows.meta import set_call
from addons.guard import browser_guard
from addons.rulebook import Rulebook
from addons.wire import dialects
from addons.wire.dialects import Dialect, LLMCall

logger = logging.getLogger(__name__)

ERROR_KIND = "browser"  # x-clutch-error of a refused request


class BrowserGate:
    def __init__(self, rulebook: Rulebook):
        self._rulebook = rulebook
        self._rewrite_host = False  # Clutch turned keep_host_header on, and rewrites reverse Hosts itself

    def configure(self, updated):
        if "keep_host_header" in updated and not ctx.options.keep_host_header:
            self._rewrite_host = True
            ctx.options.keep_host_header = True

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        mode = flow.client_conn.proxy_mode
        reverse = isinstance(mode, ReverseMode)
        sent_host = request.host_header
        if isinstance(mode, ReverseMode) and self._rewrite_host:
            request.host_header = url.hostport("https" if mode.scheme in ("https", "http3", "tls") else "http",
                                               *mode.address)
            if flow.server_conn.sni is None and mode.scheme in ("https", "http3", "tls"):
                flow.server_conn.sni = mode.address[0]  # what mitmproxy sets without keep_host_header
        if flow.response:
            return
        rules = self._rulebook.rules
        owner = rules.provider_at(request.host, request.port)
        dialect = dialects.recognise(request.method, request.path) if owner else None
        websocket = owner is not None and dialects.is_responses_websocket(request.method, request.path,
                                                                          request.headers)
        clutch_host = ctx.options.clutch_host
        listen = [(host, port) for _, host, port in listen_addresses()]
        if browser_guard.local_path(request.path, request.host, request.port, clutch_host, listen) is not None:
            kind = browser_guard.LOCAL
        elif dialect is not None or websocket:
            kind = browser_guard.LLM
        else:
            kind = browser_guard.OTHER
        entry = flow.client_conn.sockname or ("", 0)
        arrival = browser_guard.Arrival(kind, reverse, sent_host, request.host, request.port,
                                        (str(entry[0]), int(entry[1])), clutch_host)
        why = browser_guard.refusal(arrival, request.headers)
        if why is None:
            return
        logger.warning("refused %s %s on the %s entry %s:%s: %s", request.method,
                       request.path.split("?", 1)[0][:120], "reverse" if reverse else "proxy", *arrival.entry, why)
        message = f"Clutch refused a request a web page could have sent: {why}"
        headers = {"content-type": "application/json", "cache-control": "no-store", "x-clutch-error": ERROR_KIND}
        if kind == browser_guard.LLM and owner is not None:  # (an LLM request's host has an owner)
            dialect = dialect or Dialect.OPENAI_RESPONSES
            set_call(flow, LLMCall(dialect, owner[0], None, False, None, "refused before it was read"))
            body = dialects.error_body(dialect, 403, message)
        elif kind == browser_guard.LOCAL:
            body = json.dumps({"error": message}).encode()
        else:  # anything else on a reverse entry: a provider's API, OpenAI's error shape
            body = dialects.error_body(None, 403, message)
        flow.response = http.Response.make(403, body, headers)
        flow.comment = f"clutch: refused: {why}"

