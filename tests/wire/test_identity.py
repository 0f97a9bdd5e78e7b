import base64

import pytest

from addons.wire.identity import (UNKNOWN, Identity, identity_from_agent_header, identity_from_basic_auth,
                                  identity_from_username, identity_in_path, same_identity_username, username_for)


def basic(user: str, password: str = "secret-token") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("identity", [
    Identity(agent="claude", from_credentials=True),
    Identity(agent="hermes", session="9f1c-22", route="b", tier="f", from_credentials=True),
    Identity(agent="opencode", model="openrouter:moonshotai/kimi-k2.6:free", from_credentials=True),
    Identity(agent="codex", session="s1", tier="3", from_credentials=True),
])
def test_round_trip_through_the_proxy_url(identity):
    username = username_for(identity)
    assert all(c.isalnum() or c in "-._" for c in username)  # nothing a client must percent-encode
    assert identity_from_basic_auth(basic(username)) == identity


def test_launch_codes_carry_agent_route_and_tier():
    assert identity_from_username("xx-cip") == Identity(agent="claude", route="p", launch_code="cip",
                                                        from_credentials=True)
    hermes = identity_from_username("xx-hcbf.s-abc")
    assert (hermes.agent, hermes.route, hermes.tier, hermes.session) == ("hermes", "b", "f", "abc")
    assert identity_from_username("xx-wnp").agent == "openclaw"


@pytest.mark.parametrize("header", [None, "", "Bearer abc", "Basic !!!", basic("alice"), basic("xx-robot")])
def test_anything_else_is_unknown(header):
    identity = identity_from_basic_auth(header)
    assert identity.agent == "unknown"
    assert identity.session is None


def test_password_is_never_kept():
    identity = identity_from_basic_auth(basic("xx-pi.s-1", "sk-super-secret"))
    assert "sk-super-secret" not in repr(identity)
    assert identity.describe() == "pi session=1"
    assert UNKNOWN.describe() == "unknown"


def test_bad_pairs_are_ignored_not_fatal():
    identity = identity_from_username("xx-claude.r-z.t-!!.s-ok.q-1.m-%%%")
    assert (identity.agent, identity.route, identity.tier, identity.session) == ("claude", None, None, "ok")


@pytest.mark.parametrize("username", [
    "xx-claude", "xx-cip", "xx-cip.s-4f1c", "xx-hcbf.s-abc", "xx-xnp.t-k", "xx-cip3.r-b.t-q",
    "xx-codex.s-e2e.m-" + base64.urlsafe_b64encode(b"openrouter:qwen/qwen3-coder").decode().rstrip("="),
    "xx-unknown", "alice", "xx-robot.s-1",
])
def test_the_same_identity_for_requests_clutch_sends_for_an_agent(username):
    """A WebSocket's turns reach the gateway's proxy port with a user name that reads back as the
    agent's identity, whatever the agent's own spelling (a launch code whose tier a .t- overrides)."""
    identity = identity_from_username(username)
    again = same_identity_username(identity)
    if again is None:  # a name that is not Clutch's reads as no credentials at all
        assert identity == UNKNOWN == identity_from_basic_auth(None)
        return
    assert identity_from_basic_auth(basic(again, "another-token")) == identity
    assert all(c.isalnum() or c in "-._" for c in again)


def test_no_credentials_no_user_name():
    assert same_identity_username(UNKNOWN) is None


@pytest.mark.parametrize("path,agent,session,rest", [
    ("/xx-claude.s-rev1/api/v1/chat/completions", "claude", "rev1", "/api/v1/chat/completions"),
    ("/xx-cip/v1/messages?beta=true", "claude", None, "/v1/messages?beta=true"),
    ("/xx-codex?x=1", "codex", None, "/?x=1"),
    ("/xx-robot/v1/messages", "unknown", None, "/v1/messages"),  # named no agent: still taken out
])
def test_a_base_url_path_carries_the_identity(path, agent, session, rest):
    identity, stripped = identity_in_path(path)
    assert (identity.agent, identity.session, stripped) == (agent, session, rest)


def test_a_path_without_the_prefix_names_nobody():
    assert identity_in_path("/api/v1/chat/completions") is None
    assert identity_in_path("/v1/xx-claude/messages") is None


def test_the_agent_header_takes_a_name_or_a_user_name():
    assert identity_from_agent_header("claude").agent == "claude"
    assert identity_from_agent_header(" xx-qnp.s-h1 ") == identity_from_username("xx-qnp.s-h1")
    assert identity_from_agent_header("x" * 100_000).agent == "unknown"
