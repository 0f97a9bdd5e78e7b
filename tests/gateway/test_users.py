"""A team gateway's users (`clutch_users`, `clutch users add`), on a real gateway and a real PostgreSQL:
no token or a wrong one gets 407 before anything reaches a provider; a user's token is the proxy
password, the user is in the usage rows, `xx usage --by user` and /requests; the provider gets the
gateway's key, never the agent's; a removed user's token stops; a base-URL entry is refused; and the
options that would expose the gateway without tokens stop it at start."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import openai
import pytest
from harness import ROOT, free_port, gateway_on_rules, trust
from test_relay import ENV, OPTIONS, calls, start
from xx_rig import run_xx, xx_env

from addons.wire.identity import Identity, username_for

RULES = """\
version: 1
providers:
  openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
               key_env: OPENROUTER_API_KEY}
  anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
              key_env: TEAM_ANTHROPIC_KEY_NOT_SET}
"""


def users(*args: str, db: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher.gateway", "users", *args, "--db", db],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def token_of(added: subprocess.CompletedProcess) -> str:
    assert added.returncode == 0, added.stderr
    return next(word for word in added.stdout.split() if word.startswith("clutch_"))


@pytest.fixture(scope="module")
def team(tmp_path_factory, fake, pki, postgres):
    """A team gateway with a proxy entry and a base-URL entry (gateway.reverse_port)."""
    reverse = free_port()
    options = {**OPTIONS, "clutch_users": "true", "clutch_usage_db": postgres.url}
    gateway = gateway_on_rules(tmp_path_factory.mktemp("users"), fake, pki, RULES, "--mode", "regular",
                               "--mode", f"reverse:https://openrouter.ai@127.0.0.1:{reverse}",
                               *[arg for name, value in options.items() for arg in ("--set", f"{name}={value}")],
                               env=ENV)
    gateway.reverse_port = reverse
    yield gateway
    gateway.stop()


def agent(gateway, token: str | None, session: str = "u1", key: str = "sk-or-v1-agents-own") -> openai.OpenAI:
    user = username_for(Identity(agent="claude", session=session))
    proxy = f"http://{user}:{token}@127.0.0.1:{gateway.port}" if token else f"http://127.0.0.1:{gateway.port}"
    http = httpx.Client(proxy=proxy, verify=trust(gateway.ca_cert), timeout=30)
    return openai.OpenAI(base_url="https://openrouter.ai/api/v1", api_key=key, http_client=http, max_retries=0)


def ask(client: openai.OpenAI, model: str) -> str:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}]) \
        .choices[0].message.content


def test_without_a_working_token_the_agent_gets_407_and_nothing_reaches_a_provider(team, fake):
    for token in (None, "not-a-token", "clutch_" + "A" * 43):
        with pytest.raises(openai.APIConnectionError) as refused:
            ask(agent(team, token), "usr1/chunks-2")
        assert "407 Proxy Authentication Required" in str(refused.value.__cause__)
    assert calls(fake, "usr1/") == []
    with httpx.Client(proxy=f"http://127.0.0.1:{team.port}", timeout=10) as plain:  # a plain-HTTP proxy request
        answer = plain.get("http://openrouter.ai/api/v1/models")
    assert answer.status_code == 407 and answer.headers["proxy-authenticate"] == 'Basic realm="Clutch"'
    assert "user token" in answer.text


def test_a_users_token_serves_it_and_its_rows_requests_and_report_name_it(team, fake, postgres, tmp_path):
    token = token_of(users("add", "ana", "--budget", "5", db=postgres.url))
    assert ask(agent(team, token), "usr2/chunks-2") == "pong from the fake upstream"
    [call] = calls(fake, "usr2/")
    assert call["headers"]["authorization"] == "Bearer sk-or-v1-rules"  # the gateway's key, never the agent's
    bearer = {"authorization": f"Bearer {token}"}  # a team gateway's endpoints need a token
    journal = httpx.get(f"http://127.0.0.1:{team.port}/requests", headers=bearer, timeout=10, trust_env=False)
    assert journal.json()["requests"][-1]["user"] == "ana"
    httpx.get(f"http://127.0.0.1:{team.port}/usage", headers=bearer, timeout=10, trust_env=False)  # flushes
    report = json.loads(run_xx(xx_env(tmp_path), "usage", "--by", "user", "--json", "--db", postgres.url).stdout)
    assert {row["key"]: row["requests"] for row in report["rows"]}["ana"] == 1
    listed = users("list", "--json", db=postgres.url)
    assert [(u["name"], u["budget_usd_day"]) for u in json.loads(listed.stdout)] == [("ana", 5.0)]
    assert token not in listed.stdout and token not in team.output()
    with pytest.raises(openai.APIConnectionError):  # one character off
        ask(agent(team, token[:-1] + ("A" if token[-1] != "A" else "B")), "usr2/chunks-2")


def test_a_provider_whose_key_the_gateway_lacks_is_refused_in_the_agents_dialect(team, fake, postgres):
    import anthropic
    import httpx2

    token = token_of(users("add", "cy", db=postgres.url))
    user = username_for(Identity(agent="claude", session="cy-1"))
    http = httpx2.Client(proxy=f"http://{user}:{token}@127.0.0.1:{team.port}", verify=trust(team.ca_cert),
                         timeout=30)
    client = anthropic.Anthropic(api_key="sk-ant-agents-own", http_client=http, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as refused:
        client.messages.create(model="usr5/chunks-2", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 502
    assert "no key for provider anthropic ($TEAM_ANTHROPIC_KEY_NOT_SET" in refused.value.message
    assert calls(fake, "usr5/") == []


def test_a_removed_users_token_stops_even_on_its_open_connection(team, fake, postgres):
    """A replica reads the tokens every 30 s, and at once (at most every 2 s) when it meets one it does
    not know: an unknown token after the removal makes it read them again. Bo's open connection then
    gets 403 in its dialect, and a new one 407. A user's name is never given twice."""
    import time

    token = token_of(users("add", "bo", db=postgres.url))
    kept = agent(team, token, session="bo-1")  # one keep-alive connection: one CONNECT
    assert ask(kept, "usr3/chunks-2") == "pong from the fake upstream"
    assert users("add", "bo", db=postgres.url).returncode == 2
    removed = users("remove", "bo", db=postgres.url)
    assert removed.returncode == 0, removed.stderr
    deadline = time.monotonic() + 15
    while True:
        with pytest.raises(openai.APIConnectionError):
            ask(agent(team, "clutch_" + "Z" * 43, session="probe"), "usr3/chunks-2")
        try:
            ask(kept, "usr3/chunks-2")
        except openai.PermissionDeniedError as e:
            assert "no longer works" in e.message
            break
        assert time.monotonic() < deadline, "a removed user's open connection still works"
        time.sleep(0.25)  # the next read of the tokens may be 2 s after the last: nothing to wait on here
    with pytest.raises(openai.APIConnectionError):
        ask(agent(team, token, session="bo-2"), "usr3/chunks-2")
    assert users("remove", "nobody", db=postgres.url).returncode == 2
    assert len(calls(fake, "usr3/")) >= 1


def test_only_model_calls_over_tls_reach_a_provider_and_codex_websocket_gets_426(team, fake, postgres):
    token = token_of(users("add", "di", db=postgres.url))
    user = username_for(Identity(agent="codex", session="di-1"))
    proxy = f"http://{user}:{token}@127.0.0.1:{team.port}"
    with httpx.Client(proxy=proxy, verify=trust(team.ca_cert), timeout=15) as client:
        files = client.get("https://openrouter.ai/api/v1/files/usr6-secret")
        upgrade = client.get("https://openrouter.ai/api/v1/responses",
                             headers={"upgrade": "websocket", "connection": "upgrade", "sec-websocket-version": "13",
                                      "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="})
        listing = client.get("https://openrouter.ai/api/v1/models")
    assert files.status_code == 403 and "model calls only" in files.json()["error"]["message"]
    assert upgrade.status_code == 426
    assert listing.status_code == 200
    with httpx.Client(proxy=proxy, timeout=15) as plain:  # the key would cross the network in clear
        assert plain.get("http://openrouter.ai/api/v1/models").status_code == 403
    assert not [e for e in fake.entries() if "usr6" in e.get("path", "") or "files" in e.get("path", "")]


def test_the_gateways_own_endpoints_need_a_token_and_never_take_a_write(team, postgres):
    """Behind HAProxy on the same host every client is 127.0.0.1: a team gateway trusts no loopback."""
    token = token_of(users("add", "ed", db=postgres.url))
    base = f"http://127.0.0.1:{team.port}"
    bearer = {"authorization": f"Bearer {token}"}
    with httpx.Client(timeout=10, trust_env=False) as client:
        assert client.get(f"{base}/health").status_code == 200  # HAProxy's check
        assert client.get(f"{base}/usage").status_code == 401
        assert client.get(f"{base}/__clutch/rules/state", headers={"host": "localhost"}).status_code == 401
        assert client.get(f"{base}/usage", headers=bearer).status_code == 200
        assert client.post(f"{base}/breakers/reset", json={}, headers=bearer).status_code == 403
        assert client.post(f"{base}/__clutch/rules", json={}, headers={**bearer, "host": "localhost"}).status_code \
            == 403
    user = username_for(Identity(agent="claude", session="ed-1"))
    with httpx.Client(proxy=f"http://{user}:{token}@127.0.0.1:{team.port}", verify=trust(team.ca_cert),
                      timeout=10) as tunnel:  # Clutch's path prefix, inside a provider's tunnel
        assert tunnel.post("https://openrouter.ai/__clutch/breakers/reset", json={}).status_code == 403


def test_the_dashboard_opens_in_a_browser_given_a_users_token_as_its_password(team, postgres):
    """A browser cannot send a bearer: the 401 asks it for Basic credentials (any name, the token as the
    password), which it then sends with the page's own requests for its data."""
    import webdriver

    token = token_of(users("add", "dash", db=postgres.url))
    base = f"http://127.0.0.1:{team.port}"
    with httpx.Client(timeout=10, trust_env=False) as client:
        challenge = client.get(f"{base}/dashboard")
        assert challenge.status_code == 401 and challenge.headers["www-authenticate"].startswith('Basic realm=')
        assert client.get(f"{base}/usage", auth=("anyone", "clutch_" + "B" * 43)).status_code == 401
        assert client.get(f"{base}/usage", auth=("anyone", token)).status_code == 200
    # a browser that uses the gateway as its proxy (behind HAProxy, say): clutch.local with the proxy password
    with httpx.Client(proxy=f"http://dash:{token}@127.0.0.1:{team.port}", timeout=10, trust_env=False) as proxied:
        assert proxied.get("http://clutch.local/dashboard").status_code == 200
        assert proxied.get("http://clutch.local/usage").status_code == 200
    webdriver.need_browser()
    with webdriver.Browser.start() as browser:
        browser.get(f"http://dash:{token}@127.0.0.1:{team.port}/dashboard#1h")
        browser.wait(lambda: browser.script("return document.body.dataset.state") == "ready",
                     message="the dashboard's data, read with the browser's Basic credentials")
        assert browser.script("return window.__clutchErrors || []") == []


def test_a_base_url_entry_is_refused_on_a_team_gateway(team, fake):
    answer = httpx.post(f"http://127.0.0.1:{team.reverse_port}/xx-claude/api/v1/chat/completions",
                        json={"model": "usr4/chunks-2", "messages": [{"role": "user", "content": "hi"}]},
                        headers={"authorization": "Bearer sk-or-v1-agents-own"}, timeout=10, trust_env=False)
    assert answer.status_code == 403 and "HTTPS_PROXY" in answer.text
    assert calls(fake, "usr4/") == []


@pytest.mark.parametrize("options,message", [
    ({"clutch_users": "true"}, "clutch_users needs clutch_usage_db=postgresql"),
    ({"clutch_allow_remote": "true"}, "clutch_allow_remote serves other machines"),
])
def test_options_that_would_serve_without_tokens_stop_the_gateway(tmp_path, fake, pki, options, message):
    with pytest.raises(RuntimeError, match=message):
        start(tmp_path, fake, pki, RULES, **options)
