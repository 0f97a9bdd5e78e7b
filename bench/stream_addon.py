"""The benchmark's reference proxy: bare mitmdump plus the two things it needs to be comparable.

* `responseheaders`: stream `text/event-stream` responses (stock mitmdump buffers them whole).
* Resolve openrouter.ai:443 to the fake provider, keeping the TLS server name and the Host header,
  so both proxies intercept TLS and verify the upstream's certificate for openrouter.ai.

The address is rewritten on the request (`requestheaders`), not in `server_connect` as Clutch's
addons/resolve.py does: mitmproxy reuses an upstream connection only when the request's address
equals the connection's, so a `server_connect` rewrite opens a new upstream connection for every
request and keeps the old ones until the client leaves; mitmproxy allows 5 connections per address
and client connection (proxy/server.py `max_conns`), so the 6th keep-alive request hangs forever.
`server_connect` only puts the original name back as SNI.

Run: mitmdump -s bench/stream_addon.py --set bench_resolve=openrouter.ai:443=127.0.0.1:PORT
"""

from __future__ import annotations

from collections.abc import Sequence

from mitmproxy import ctx, http
from mitmproxy.proxy import server_hooks


class BenchStream:
    def __init__(self) -> None:
        self.overrides: dict[tuple[str, int], tuple[str, int]] = {}
        self.names: dict[tuple[str, int], str] = {}

    def load(self, loader):
        loader.add_option("bench_resolve", Sequence[str], [], "host:port=ip:port (repeatable)")

    def configure(self, updated):
        if "bench_resolve" in updated:
            self.overrides = {}
            for spec in ctx.options.bench_resolve:
                source, _, destination = spec.partition("=")
                host, _, port = source.rpartition(":")
                ip, _, to_port = destination.rpartition(":")
                self.overrides[(host.lower(), int(port))] = (ip, int(to_port))

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        request = flow.request.data
        target = self.overrides.get((request.host.lower(), request.port))
        if target is not None:
            self.names[target] = request.host
            request.host, request.port = target  # Host header untouched: the fake sees openrouter.ai

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        name = self.names.get(data.server.address) if data.server.address else None
        if name is not None:
            data.server.sni = name  # verify the fake's certificate for openrouter.ai, as Clutch does

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if "text/event-stream" in flow.response.headers.get("content-type", ""):
            flow.response.stream = True


addons = [BenchStream()]
