"""Resolve: send connections for chosen host:port pairs to another address, like curl --resolve.

For a local mirror of a provider, and for the test suite's fake provider. Applies to the engine's
client and to the connections mitmproxy makes itself (non-LLM requests it passes through); the TLS
server name and certificate check stay those of the original host.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mitmproxy import ctx, exceptions
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


class Resolve:
    def __init__(self) -> None:
        self.overrides: dict[Address, Address] = {}

    def load(self, loader):
        loader.add_option("clutch_resolve", Sequence[str], [],
                          "Connect to another address for a host: host:port=ip:port (repeatable).")

    def configure(self, updated):
        if "clutch_resolve" in updated:
            try:
                self.overrides = parse_resolve(ctx.options.clutch_resolve)
            except ValueError as e:
                raise exceptions.OptionsError(f"Cannot parse clutch_resolve {e}") from e

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        address = data.server.address
        if address is None:
            return
        target = self.overrides.get((str(address[0]).lower(), address[1]))
        if target is not None:
            if data.server.sni is None:
                data.server.sni = str(address[0])
            data.server.address = target
