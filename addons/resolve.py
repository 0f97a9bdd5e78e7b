"""Resolve: send connections for chosen host:port pairs to another address, like curl --resolve.

For a local mirror of a provider, and for the test suite's fake provider. Applies to the engine's
client and to the connections mitmproxy makes itself (non-LLM requests it passes through); the TLS
server name and certificate check stay those of the original host.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mitmproxy import connection, ctx, exceptions, http
from mitmproxy.proxy import server_hooks

logger = logging.getLogger(__name__)

Address = tuple[str, int]


def parse_resolve(specs: Sequence[str]) -> dict[Address, Address]:
    """`host:port=ip:port` entries into a mapping; ValueError names the bad entry."""
    overrides: dict[Address, Address] = {}
    for spec in specs:
        source, sep, destination = spec.partition("=")
        try:
            if not sep:
                raise ValueError("expected host:port=ip:port")
            overrides[_address(source)] = _address(destination)
        except ValueError as e:
            raise ValueError(f"{spec!r}: {e}") from e
    return overrides


def _address(text: str) -> Address:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return host.strip("[]").lower(), int(port)


ORIGINAL = "clutch.resolve.original"  # flow.metadata: the (host, port) before the override


class Resolve:
    """Runs after the Engine: flows it re-pointed are the engine's business (its client resolves
    the same overrides); what is left is mitmproxy's own pass-through."""

    def __init__(self) -> None:
        self.overrides: dict[Address, Address] = {}
        self._server_names: dict[tuple[str, Address], str] = {}

    def load(self, loader):
        loader.add_option("clutch_resolve", Sequence[str], [],
                          "Connect to another address for a host: host:port=ip:port (repeatable).")

    def configure(self, updated):
        if "clutch_resolve" in updated:
            try:
                self.overrides = parse_resolve(ctx.options.clutch_resolve)
            except ValueError as e:
                raise exceptions.OptionsError(f"Cannot parse clutch_resolve {e}") from e

    def lookup(self, host: str, port: int) -> Address | None:
        return self.overrides.get((host.lower(), port))

    def request(self, flow: http.HTTPFlow) -> None:
        # Rewrite the request's address, not the connection's: mitmproxy reuses an upstream
        # connection only for the same request address, and a connection-level rewrite opened a
        # new one per request until its per-client limit (5) made the next request wait forever.
        if flow.response or flow.error or not flow.live:
            return
        data = flow.request.data
        target = self.lookup(data.host, data.port)
        if target is None:
            return
        flow.metadata[ORIGINAL] = (data.host, data.port)
        self._server_names[(flow.client_conn.id, target)] = data.host
        data.host, data.port = target  # the Host header still names the original host

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._restore(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._restore(flow)

    @staticmethod
    def _restore(flow: http.HTTPFlow) -> None:
        original = flow.metadata.pop(ORIGINAL, None)
        if original is not None:
            flow.request.data.host, flow.request.data.port = original

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        address = data.server.address
        if address is None:
            return
        name = self._server_names.get((data.client.id, address))
        if name is not None:
            data.server.sni = name  # TLS name and certificate check stay the original host's
            return
        target = self.lookup(str(address[0]), address[1])
        if target is not None:  # a tunnelled (not intercepted) connection: no request to rewrite
            if data.server.sni is None:
                data.server.sni = str(address[0])
            data.server.address = target

    def client_disconnected(self, client: connection.Client) -> None:
        for key in [key for key in self._server_names if key[0] == client.id]:
            del self._server_names[key]
