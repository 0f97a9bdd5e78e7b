"""FlowKeys: saved flows hold no API keys (key_mask.py says which values, and how).

mitmweb shows a flow from its request headers on, before any addon could mask them: a flow in flight
shows its keys in the (local) web UI until the hooks below have run; a finished or saved one does not.

A flow's credentials are masked as soon as nothing needs them any more, and before mitmproxy's Save
addon (after every script) writes the flow:

* an LLM request the engine sends: in the `request` hook after the Engine's, which copied the
  headers for its upstream requests; `responseheaders` again, once the Engine has put the agent's
  URL back (Gemini's `?key=`);
* a request mitmproxy forwards itself (other paths on a provider host, a WebSocket upgrade): at
  `responseheaders`, when it has gone upstream, or at `error`;
* one answered locally: at `response`;
* a flow still open when the gateway stops (Save writes those too): at `done`.

`clutch_keep_keys_in_flows` keeps them (debugging one's own traffic on one's own machine).
"""

from __future__ import annotations

import weakref

from mitmproxy import ctx, http

from addons.engine import Engine
from addons.guard.key_mask import masked, masked_header, secret_headers, secret_params


class FlowKeys:
    def __init__(self, engine: Engine):
        self._engine = engine
        self._open: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()

    def load(self, loader):
        loader.add_option("clutch_keep_keys_in_flows", bool, False,
                          "Keep the agents' API keys (authorization, x-api-key, api-key, x-goog-api-key, "
                          "?key=, proxy credentials, cookies) in flows, as mitmweb shows them and "
                          "mitmdump -w saves them. Off: only their last 4 characters are kept.")

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._mask(flow)  # the tunnel's proxy credentials: Identify has read them

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._open.add(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or self._engine.took(flow):
            self._mask(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._mask(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self._mask(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._mask(flow)

    def done(self) -> None:
        for flow in list(self._open):
            self._mask(flow)

    def _mask(self, flow: http.HTTPFlow) -> None:
        self._open.discard(flow)
        if ctx.options.clutch_keep_keys_in_flows:
            return
        headers = flow.request.headers
        for name in secret_headers(headers.keys()):
            headers.set_all(name, [masked_header(name, value) for value in headers.get_all(name)])
        query = flow.request.query
        for name in secret_params(query.keys()):
            query.set_all(name, [masked(value) for value in query.get_all(name)])
