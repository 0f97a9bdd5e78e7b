"""The user's rules file found where Clutch looks for it ($XDG_CONFIG_HOME/clutch/rules.yaml), layered
over the embedded defaults, with its keys in the keys file, through a real mitmdump."""

from __future__ import annotations

import os
import time

import anthropic
import httpx2 as httpx
from harness import ROOT, Gateway, first_content, peer_issuer, save, trust, wait_until

from addons.wire.identity import Identity, username_for

FILE_KEY = "sk-or-v1-from-the-keys-file-0123456789"
AGENT_KEY = "sk-ant-api03-the-agents-own"
# what the user writes: one provider replaced whole (its key named as ${VAR}), a tier, a route to a
# provider whose key is set nowhere, and a default launch tier removed; nothing about Anthropic
USER_RULES = """\
providers:
  openrouter:
    base_url: https://openrouter.ai/api/v1
    dialects: [openai_chat, anthropic]
    hosts: [openrouter.ai]
    api_key: ${LAYERED_ROUTER_KEY}
tiers:
  big: openrouter:layered/big
routes:
  think: openai:layered/thinker
launch_tiers:
  k: null
"""


def claude(gateway: Gateway) -> anthropic.Anthropic:
    proxy = gateway.proxy_url(username_for(Identity(agent="claude", session="layered")))
    return anthropic.Anthropic(api_key=AGENT_KEY, max_retries=0,
                               http_client=httpx.Client(proxy=proxy, verify=trust(gateway.ca_cert), timeout=30))


def ask(gateway: Gateway, model: str) -> None:
    answer = claude(gateway).messages.create(model=model, max_tokens=32,
                                             messages=[{"role": "user", "content": f"hello {model}"}])
    assert answer.content


def test_the_users_file_adds_a_tier_and_the_defaults_stay(tmp_path, fake, pki):
    config = tmp_path / "home" / ".config"
    rules, keys = config / "clutch" / "rules.yaml", config / "clutch" / "keys.env"
    rules.parent.mkdir(parents=True)
    rules.write_text(USER_RULES)
    keys.write_text(f'# test keys\nLAYERED_ROUTER_KEY="{FILE_KEY}"\n')
    os.chmod(keys, 0o600)
    # no clutch_rules: the gateway finds the file itself; the variables are blank, so the file's key counts
    gateway = Gateway(tmp_path, fake.port, pki.ca_cert, env={
        "XDG_CONFIG_HOME": str(config), "LAYERED_ROUTER_KEY": "", "OPENAI_API_KEY": ""})
    try:
        health = gateway.health()["rules"]
        assert health["path"] == str(rules)
        assert health["layers"] == [str(ROOT / "rules" / "default.yaml"), str(rules)]
        assert health["keys_file"] == str(keys)
        assert health["providers"] == ["anthropic", "gemini", "ollama", "openai", "openrouter"]
        assert sorted(health["launch_tiers"]) == ["d", "n", "q"]

        # Anthropic, which the file never names, is still intercepted (the defaults' provider) ...
        assert "mitmproxy" in peer_issuer(gateway.port, "api.anthropic.com", 443)
        ask(gateway, "claude-sonnet-4-6")
        kept = fake.wait_for(lambda e: first_content(e) == "hello claude-sonnet-4-6")
        assert (kept["host"], kept["model"]) == ("api.anthropic.com", "claude-sonnet-4-6")
        assert AGENT_KEY in " ".join(kept["headers"].values())  # the agent's own key, as it came
        # ... while the file's tier sends opus to OpenRouter, with the keys file's key for ${LAYERED_ROUTER_KEY}
        ask(gateway, "claude-opus-4-8")
        routed = fake.wait_for(lambda e: e.get("model") == "layered/big")
        assert (routed["host"], routed["path"]) == ("openrouter.ai", "/api/v1/messages")
        assert routed["headers"]["authorization"] == f"Bearer {FILE_KEY}"
        assert AGENT_KEY not in str(routed["headers"])

        # the provider the rules route to without a key: one warning, naming the variable and the keys file
        output = gateway.output()
        warning = (f"provider openai has no key: OPENAI_API_KEY is set neither in the environment nor in {keys}; "
                   "what the rules send there (routes.think) fails with 502 missing_key")
        assert output.count(warning) == 1, output
        assert "provider openrouter has no key" not in output and FILE_KEY not in output

        # hot reload follows the user's file
        loaded = gateway.health()["rules"]["loaded_at"]
        time.sleep(1.1)  # loaded_at has one-second resolution
        save(rules, USER_RULES.replace("layered/big", "layered/bigger"))
        assert wait_until(lambda: gateway.health()["rules"]["loaded_at"] != loaded)
        ask(gateway, "claude-opus-4-8")
        assert fake.wait_for(lambda e: e.get("model") == "layered/bigger")["headers"]["authorization"] == \
            f"Bearer {FILE_KEY}"
        assert gateway.output().count(warning) == 1  # once per provider, not once per load
    finally:
        gateway.stop()
