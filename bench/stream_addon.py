"""The benchmark's reference proxy: bare mitmdump plus the two things it needs to be comparable.

* `responseheaders`: stream `text/event-stream` responses (stock mitmdump buffers them whole).
* `server_connect`: send openrouter.ai:443 to the fake provider, keeping the TLS server name, like
  Clutch's addons/resolve.py, so both proxies intercept TLS and verify the upstream's certificate.

Run: mitmdump -s bench/stream_addon.py --set bench_resolve=openrouter.ai:443=127.0.0.1:PORT
"""

from __future__ import annotations

from collections.abc import Sequence

from mitmproxy import ctx, http
from mitmproxy.proxy import server_hooks


class BenchStream:
    def __init__(self) -> None:
        self.overrides: dict[tuple[str, int], tuple[str, int]] = {}

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

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        address = data.server.address
        if address is None:
            return
        target = self.overrides.get((str(address[0]).lower(), address[1]))
        if target is not None:
            if data.server.sni is None:
                data.server.sni = str(address[0])
            data.server.address = target

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if "text/event-stream" in flow.response.headers.get("content-type", ""):
            flow.response.stream = True


addons = [BenchStream()]
