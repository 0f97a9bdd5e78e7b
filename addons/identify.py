"""Identify: which agent sent each flow, from the credentials in its proxy URL.

CONNECT carries `Proxy-Authorization` once per tunnel, so the identity is kept per client
connection; plain-HTTP proxy requests carry it themselves. The header is removed before anything
goes upstream, and the password is never kept.

A base-URL (reverse) entry gets no proxy credentials, so there the identity is read from the path's
first segment (`/xx-claude.s-1/api/v1/chat/completions`, taken out of the path before anything routes
or forwards it) or from the `x-clutch-agent` header (identity.py), and per-agent rules apply there too.
That header is Clutch's own: it is removed from every request, whatever the entry.

On a team gateway the user comes from Credentials, which checked the token in the proxy password.
"""

from __future__ import annotations

import dataclasses

from mitmproxy import connection, http
from mitmproxy.proxy.mode_specs import ReverseMode

from addons.credentials import Credentials
from addons.flows.meta import set_identity
from addons.wire.identity import (
    AGENT_HEADER,
    UNKNOWN,
    Identity,
    identity_from_agent_header,
    identity_from_basic_auth,
    identity_in_path,
)


class Identify:
    def __init__(self, credentials: Credentials | None = None) -> None:
        self._by_connection: dict[str, Identity] = {}
        self._credentials = credentials

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._by_connection[flow.client_conn.id] = identity_from_basic_auth(
            flow.request.headers.get("proxy-authorization"))

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        credentials = request.headers.get("proxy-authorization")
        named = request.headers.get(AGENT_HEADER)
        if named is not None:
            del request.headers[AGENT_HEADER]
        in_path = identity_in_path(request.path) if isinstance(flow.client_conn.proxy_mode, ReverseMode) else None
        if in_path is not None:
            request.path = in_path[1]  # the provider's path, whoever the request turns out to be from
        if credentials is not None:
            identity = identity_from_basic_auth(credentials)
            del request.headers["proxy-authorization"]
        elif in_path is not None:
            identity = in_path[0]
        elif named is not None and isinstance(flow.client_conn.proxy_mode, ReverseMode):
            identity = identity_from_agent_header(named)
        else:
            identity = self._by_connection.get(flow.client_conn.id, UNKNOWN)
        user = self._credentials.user_of(flow) if self._credentials is not None else None
        if user is not None:  # a team gateway's user, known by the token in the proxy password
            identity = dataclasses.replace(identity, user=user)
        set_identity(flow, identity)

    def client_disconnected(self, client: connection.Client) -> None:
        self._by_connection.pop(client.id, None)
