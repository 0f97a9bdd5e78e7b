"""A fresh start for targets: what a reset covers and who may ask for one (pure), then through a real
gateway: a rules reload (and a restart on changed rules) that redefines a provider clears its
breakers and 429 cooldowns, POST /breakers/reset refuses anything a web page could send, and the
real `xx breakers reset` clears what it names and prints it."""

from __future__ import annotations

import json
import textwrap

import httpx
import pytest
from harness import gateway_on_rules, save, trust, wait_until
from xx_rig import run_xx, xx_env

from addons.web.breaker_reset import changed_providers, check_target, parse_body, reset_refusal, selector

JSON = {"content-type": "application/json"}


# ------------------------------------------------------------------ pure


def test_a_selector_covers_all_a_provider_or_one_target():
    keys = ["openrouter:a/b", "openrouter:a/b:free", "openrouter", "openrouterx:c", "ollama:qwen3:4b"]
    assert [k for k in keys if selector(None)(k)] == keys
    assert [k for k in keys if selector("openrouter")(k)] == ["openrouter:a/b", "openrouter:a/b:free", "openrouter"]
    assert [k for k in keys if selector("openrouter:a/b")(k)] == ["openrouter:a/b"]
    assert [k for k in keys if selector("ollama:qwen3:4b")(k)] == ["ollama:qwen3:4b"]


@pytest.mark.parametrize("target", ["Openrouter", "open router:x", "openrouter:", "openrouter:\n", ":x", 7, "a" * 301])
def test_bad_targets_are_refused(target):
    with pytest.raises(ValueError):
        check_target(target)


def test_changed_providers_names_what_changed():
    before = {"a": {"base_url": "https://a", "dialects": ["openai_chat"], "hosts": [], "key_env": "A"},
              "b": {"base_url": "https://b", "dialects": ["anthropic"], "hosts": [], "key_env": None},
              "c": {"base_url": "https://c", "dialects": ["anthropic"], "hosts": [], "key_env": None}}
    after = {"a": {**before["a"], "key_env": "A2", "base_url": "https://a2"}, "c": before["c"],
             "d": before["c"]}
    assert changed_providers(before, after) == {"a": "base_url, key_env changed", "b": "removed"}


@pytest.mark.parametrize("method,host,headers,loopback,status", [
    ("GET", "127.0.0.1:8780", JSON, True, 405),
    ("POST", "127.0.0.1:8780", JSON, False, 403),
    ("POST", "evil.example:8780", JSON, True, 403),  # DNS rebinding: the page's own name
    ("POST", "clutch.local", JSON, True, 403),
    ("POST", None, JSON, True, 403),
    ("POST", "127.0.0.1:8780", {**JSON, "origin": "null"}, True, 403),
    ("POST", "127.0.0.1:8780", {**JSON, "sec-fetch-site": "cross-site"}, True, 403),
    ("POST", "127.0.0.1:8780", {**JSON, "sec-fetch-site": "same-site"}, True, 403),
    ("POST", "127.0.0.1:8780", {"content-type": "text/plain"}, True, 403),
    ("POST", "127.0.0.1:8780", {}, True, 403),
])
def test_refusals(method, host, headers, loopback, status):
    assert reset_refusal(method, host, headers, loopback)[0] == status


@pytest.mark.parametrize("host,headers", [
    ("127.0.0.1:8780", JSON), ("localhost", {"content-type": "application/json; charset=utf-8"}),
    ("[::1]:8780", {**JSON, "sec-fetch-site": "none"}), ("127.0.0.2", {**JSON, "sec-fetch-site": "same-origin"}),
])
def test_what_a_local_tool_sends_goes_ahead(host, headers):
    assert reset_refusal("POST", host, headers, True) is None


def test_the_body_names_the_target():
    assert parse_body(b"") is None and parse_body(b"{}") is None and parse_body(b'{"target": null}') is None
    assert parse_body(b'{"target": "openrouter:x/y"}') == "openrouter:x/y"
    for bad in (b"[1]", b"{", b'{"target": "x", "more": 1}', b'{"target": 3}', b" " * 5000):
        with pytest.raises(ValueError):
            parse_body(bad)


# ------------------------------------------------------------------ through a real gateway

PROVIDERS = {
    "openrouter": '{base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai], '
                  'key_env: OPENROUTER_API_KEY}',
    "anthropic": '{base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com]}',
}


def rules_text(**changed: str) -> str:
    providers = {**PROVIDERS, **changed}
    return "version: 1\nproviders:\n" + "".join(f"  {name}: {value}\n" for name, value in providers.items()) + \
        textwrap.dedent("""\
        quotas:
          openrouter: {cooldown_after_429_s: 300}
        """)


def start(workdir, fake, pki, text):
    # one failure opens a breaker, and no retry doubles it: each failing request trips its model
    return gateway_on_rules(workdir, fake, pki, text, "--set", "clutch_breaker_failures=1",
                            "--set", "clutch_retries=0", "--set", f"clutch_state_dir={workdir / 'state'}")


def trip(gateway, models: list[str]) -> None:
    """One failing request per model ("provider:model"): each opens its breaker (a 429 also rests it)."""
    with httpx.Client(proxy=gateway.proxy_url("xx-qip"), verify=trust(gateway.ca_cert), trust_env=False,
                      timeout=30) as client:
        for model in models:
            provider, _, name = model.partition(":")
            if provider == "anthropic":
                answer = client.post("https://api.anthropic.com/v1/messages", headers={"x-api-key": "sk-ant-t"},
                                     json={"model": name, "max_tokens": 8, "messages": [{"role": "user",
                                                                                         "content": "x"}]})
            else:
                answer = client.post("https://openrouter.ai/api/v1/chat/completions",
                                     headers={"authorization": "Bearer sk-or-v1-t"},
                                     json={"model": name, "messages": [{"role": "user", "content": "x"}]})
            assert answer.status_code >= 400


def state(gateway) -> dict:
    return httpx.get(f"http://127.0.0.1:{gateway.port}/resilience", trust_env=False).json()


def open_breakers(gateway) -> set[str]:
    return {key for key, b in state(gateway)["breakers"].items() if b["state"] != "closed"}


def cooldowns(gateway) -> set[str]:
    return {key for key, q in state(gateway)["quotas"].items() if isinstance(q, dict) and q.get("cooldown_until")}


def reloads(gateway) -> int:
    return gateway.output().count("rules reloaded from")


TRIPPED = ["openrouter:fr1/fail-500", "openrouter:fr1/fail-429", "anthropic:fr1/fail-500"]


def test_a_provider_the_rules_redefine_starts_fresh_on_reload_and_on_restart(tmp_path, fake, pki):
    gateway = start(tmp_path, fake, pki, rules_text())
    try:
        trip(gateway, TRIPPED)
        assert open_breakers(gateway) == set(TRIPPED)
        assert cooldowns(gateway) == {"openrouter:fr1/fail-429"}
        sent = len(fake.entries_for("fr1/fail-500"))
        trip(gateway, ["openrouter:fr1/fail-500"])  # the open breaker answers: nothing goes upstream
        assert len(fake.entries_for("fr1/fail-500")) == sent

        before = reloads(gateway)  # the user fixes openrouter's key variable
        save(tmp_path / "rules.yaml", rules_text(openrouter=PROVIDERS["openrouter"].replace(
            "OPENROUTER_API_KEY", "OPENROUTER_KEY_FIXED")))
        assert wait_until(lambda: reloads(gateway) > before)
        assert open_breakers(gateway) == {"anthropic:fr1/fail-500"}  # only the redefined provider's
        assert cooldowns(gateway) == set()
        assert "provider openrouter: key_env changed in the reloaded rules; its targets start fresh, cleared " \
               "breaker openrouter:fr1/fail-500 (open), breaker openrouter:fr1/fail-429 (open), " \
               "429 cooldown openrouter:fr1/fail-429" in gateway.output()
        trip(gateway, ["openrouter:fr1/fail-500"])  # asked upstream again (and trips again)
        assert len(fake.entries_for("fr1/fail-500")) == sent + 1
    finally:
        gateway.stop()

    # stopped; anthropic gets a key variable; the restart must not bring its breaker back
    gateway = start(tmp_path, fake, pki, rules_text(
        openrouter=PROVIDERS["openrouter"].replace("OPENROUTER_API_KEY", "OPENROUTER_KEY_FIXED"),
        anthropic=PROVIDERS["anthropic"].replace("]}", "], key_env: ANTHROPIC_API_KEY}")))
    try:
        assert open_breakers(gateway) == {"openrouter:fr1/fail-500"}  # kept: its provider is as it was
        assert "provider anthropic: key_env changed since the state was saved; its targets start fresh, " \
               "cleared breaker anthropic:fr1/fail-500 (open)" in gateway.output()
    finally:
        gateway.stop()


def test_the_reset_endpoint_clears_what_it_names_and_refuses_what_a_web_page_could_send(tmp_path, fake, pki):
    gateway = start(tmp_path, fake, pki, rules_text())
    try:
        trip(gateway, TRIPPED)
        assert open_breakers(gateway) == set(TRIPPED)
        url = f"http://127.0.0.1:{gateway.port}/breakers/reset"
        with httpx.Client(trust_env=False) as direct:
            refused = [
                direct.get(url),
                direct.post(url, json={}, headers={"origin": "https://evil.example"}),
                direct.post(url, json={}, headers={"sec-fetch-site": "cross-site"}),
                direct.post(url, content=b'{}', headers={"content-type": "text/plain"}),  # sent without preflight
                direct.post(url, content=b"target=x", headers={"content-type": "application/x-www-form-urlencoded"}),
                # DNS rebinding: a page whose name now resolves to 127.0.0.1 still sends that name
                direct.post(f"http://127.0.0.1:{gateway.port}/__clutch/breakers/reset", json={},
                            headers={"host": f"rebound.example:{gateway.port}"}),
            ]
            assert [r.status_code for r in refused] == [405, 403, 403, 403, 403, 403]
            assert refused[0].headers["allow"] == "POST"
            assert "Origin" in refused[1].json()["error"] and "loopback" in refused[5].json()["error"]
        with httpx.Client(proxy=gateway.proxy_url(), trust_env=False) as proxied:  # a proxied browser page
            assert proxied.post("http://clutch.local/breakers/reset", json={}).status_code == 403
        assert open_breakers(gateway) == set(TRIPPED)  # nothing was cleared by any of them

        with httpx.Client(trust_env=False) as direct:
            bad = direct.post(url, json={"target": "no such:thing here"})
            assert bad.status_code == 400 and "provider name" in bad.json()["error"]
            one = direct.post(url, json={"target": "openrouter:fr1/fail-500"}).json()
            assert list(one["cleared"]["breakers"]) == ["openrouter:fr1/fail-500"]
            assert one["cleared"]["breakers"]["openrouter:fr1/fail-500"]["state"] == "open"
            assert open_breakers(gateway) == set(TRIPPED) - {"openrouter:fr1/fail-500"}
            provider = direct.post(f"http://127.0.0.1:{gateway.port}/__clutch/breakers/reset",
                                   json={"target": "openrouter"}).json()
            assert list(provider["cleared"]["breakers"]) == ["openrouter:fr1/fail-429"]
            assert list(provider["cleared"]["cooldowns"]) == ["openrouter:fr1/fail-429"]
            unknown = direct.post(url, json={"target": "nowhere"}).json()
            assert unknown["note"] == "'nowhere' is not a provider in the rules in force"
            every = direct.post(url, content=b"", headers=JSON).json()
            assert list(every["cleared"]["breakers"]) == ["anthropic:fr1/fail-500"]
        assert open_breakers(gateway) == set() and cooldowns(gateway) == set()
        saved = json.loads((tmp_path / "state" / "breakers.json").read_text())  # saved at once
        # every provider in force, the defaults' the rules file did not name too
        assert saved["breakers"] == {} and set(saved["providers"]) == {"openrouter", "anthropic", "gemini", "ollama",
                                                                        "openai"}
        assert "breakers reset by hand (every target): cleared breaker anthropic:fr1/fail-500 (open)" \
            in gateway.output()
    finally:
        gateway.stop()


def test_xx_breakers_reset_clears_and_prints_what_it_cleared(xx_home, fake):
    home, config = xx_home
    settings = json.loads((home / ".xx" / "config.json").read_text())
    settings["gateway_args"] += ["--set", "clutch_breaker_failures=1", "--set", "clutch_retries=0"]
    (home / ".xx" / "config.json").write_text(json.dumps(settings))
    env = xx_env(home)
    started = run_xx(env, "start")
    assert started.returncode == 0, started.stderr
    long_name = "openrouter:xxr/" + "a-very-long-model-name-" * 3 + "fail-500"
    proxy = f"http://xx-qnp:tok@{config['gateway']}"
    trusted = trust(home / "certs" / "clutch-ca-bundle.pem")
    with httpx.Client(proxy=proxy, verify=trusted, trust_env=False, timeout=30) as client:
        for model in ("xxr/fail-500", long_name.partition(":")[2]):
            assert client.post("https://openrouter.ai/api/v1/chat/completions",
                               headers={"authorization": "Bearer sk-or-v1-t"},
                               json={"model": model, "messages": [{"role": "user", "content": "x"}]}).status_code >= 500
    one = run_xx(env, "breakers", "reset", "openrouter:xxr/fail-500")
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines() == [
        f"xx: reset openrouter:xxr/fail-500 on {config['gateway']}:",
        one.stdout.splitlines()[1]]
    assert one.stdout.splitlines()[1].startswith("  breaker   openrouter:xxr/fail-500  (was open, ")
    again = run_xx(env, "breakers", "reset", "openrouter:xxr/fail-500")
    assert again.returncode == 0 and again.stdout.startswith("xx: nothing to reset for openrouter:xxr/fail-500")
    every = run_xx(env, "breakers", "reset")
    assert every.returncode == 0, every.stderr
    assert every.stdout.startswith(f"xx: reset every target on {config['gateway']}:")
    assert long_name in every.stdout.replace("\n", "").replace(" ", "")  # wrapped at 80 columns, all there
    assert all(len(line) <= 80 for line in every.stdout.splitlines()), every.stdout
    assert "was open" in every.stdout
    bad = run_xx(env, "breakers", "reset", "Not A Target")
    assert bad.returncode == 1 and "refused the reset (400: 'Not A Target' is not a provider name" in bad.stderr
    assert run_xx(env, "stop").returncode == 0
    down = run_xx(env, "breakers", "reset")
    assert down.returncode == 1 and f"no gateway answers on {config['gateway']}" in down.stderr
