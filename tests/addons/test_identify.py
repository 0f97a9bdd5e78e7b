"""Identify: the agent behind each flow, kept per connection from CONNECT's proxy credentials."""

import base64

from mitmproxy.test import taddons, tflow

from addons.identify import Identify
from addons.flows.meta import IDENTITY, identity_of


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:tok".encode()).decode()


def test_connect_credentials_apply_to_every_flow_in_the_tunnel():
    identify = Identify()
    with taddons.context(identify):
        connect = tflow.tflow()
        connect.request.method = "CONNECT"
        connect.request.headers["proxy-authorization"] = basic("xx-claude.s-77")
        identify.http_connect(connect)
        inner = tflow.tflow()
        inner.client_conn = connect.client_conn
        identify.requestheaders(inner)
        assert (identity_of(inner).agent, identity_of(inner).session) == ("claude", "77")
        assert inner.metadata[IDENTITY] == {"agent": "claude", "session": "77", "from_credentials": True}
        identify.client_disconnected(connect.client_conn)
        after = tflow.tflow()
        after.client_conn = connect.client_conn
        identify.requestheaders(after)
        assert identity_of(after).agent == "unknown"


def test_plain_http_requests_carry_and_lose_their_credentials():
    identify = Identify()
    with taddons.context(identify):
        flow = tflow.tflow()
        flow.request.headers["proxy-authorization"] = basic("xx-hermes")
        identify.requestheaders(flow)
        assert identity_of(flow).agent == "hermes"
        assert "proxy-authorization" not in flow.request.headers


def test_no_credentials_is_unknown():
    identify = Identify()
    with taddons.context(identify):
        flow = tflow.tflow()
        identify.requestheaders(flow)
        assert identity_of(flow).agent == "unknown"
