"""Identify: which agent sent each flow, from the credentials in its proxy URL.

CONNECT carries `Proxy-Authorization` once per tunnel, so the identity is kept per client
connection; plain-HTTP proxy requests carry it themselves. The header is removed before anything
goes upstream, and the password is never kept.
"""

from __future__ import annotations

from mitmproxy import connection, http

from addons.flows.meta import set_identity
from addons.wire.identity import UNKNOWN, Identity, identity_from_basic_auth


class Identify:
    def __init__(self) -> None:
        self._by_connection: dict[str, Identity] = {}

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._by_connection[flow.client_conn.id] = identity_from_basic_auth(
            flow.request.headers.get("proxy-authorization"))

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        credentials = flow.request.headers.get("proxy-authorization")
        if credentials is not None:
            identity = identity_from_basic_auth(credentials)
            del flow.request.headers["proxy-authorization"]
        else:
            identity = self._by_connection.get(flow.client_conn.id, UNKNOWN)
        set_identity(flow, identity)

    def client_disconnected(self, client: connection.Client) -> None:
        self._by_connection.pop(client.id, None)
