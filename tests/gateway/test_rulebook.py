"""Rules at start-up and on hot reload, through a real mitmdump."""

from __future__ import annotations

import time

from harness import Gateway, peer_issuer, save, wait_until

ONLY_OPENROUTER = """\
version: 1
providers:
  openrouter:
    base_url: https://openrouter.ai/api/v1
    dialects: [openai_chat]
"""
WITH_ANTHROPIC = ONLY_OPENROUTER + """\
  anthropic:
    base_url: https://api.anthropic.com
    dialects: [anthropic]
"""


def test_invalid_rules_abort_startup_naming_file_line_and_field(tmp_path):
    """Once, and before the proxy listens: no traceback, no "listening" line (mitmproxy logged both,
    and the error twice, then started on the defaults before it exited)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(ONLY_OPENROUTER + "    key_env: 1BAD\n")
    gateway = Gateway(tmp_path, None, None, rules=rules, expect_start=False)
    try:
        gateway.process.wait(30)
        assert gateway.process.returncode == 1
        error = f"{rules}:6: providers.openrouter.key_env: '1BAD' is not an environment variable name"
        output = gateway.output()
        assert output.count(error) == 1, output
        assert "Traceback" not in output and "listening" not in output
    finally:
        gateway.stop()


def test_hot_reload_applies_good_rules_and_keeps_them_over_bad_ones(tmp_path, fake, pki):
    rules = tmp_path / "rules.yaml"
    rules.write_text(ONLY_OPENROUTER + "  anthropic: null\n")  # removes the defaults' anthropic
    gateway = Gateway(tmp_path, fake.port, pki.ca_cert, rules=rules)
    try:
        # api.anthropic.com is no provider yet: tunnelled, so the client sees the real certificate
        assert "Clutch Test Upstream CA" in peer_issuer(gateway.port, "api.anthropic.com", 443)
        assert gateway.health()["rules"]["providers"] == ["gemini", "ollama", "openai", "openrouter"]
        first_load = gateway.health()["rules"]["loaded_at"]

        time.sleep(1.1)  # loaded_at has one-second resolution
        save(rules, WITH_ANTHROPIC)
        assert wait_until(lambda: gateway.health()["rules"]["loaded_at"] != first_load)
        assert "mitmproxy" in peer_issuer(gateway.port, "api.anthropic.com", 443)
        assert gateway.health()["rules"]["providers"] == ["anthropic", "gemini", "ollama", "openai", "openrouter"]

        save(rules, WITH_ANTHROPIC + "    hosts: [not a host]\n")
        assert wait_until(lambda: gateway.health()["rules"]["last_reload_error"] is not None)
        error = gateway.health()["rules"]["last_reload_error"]
        assert error.startswith(f"{rules}:9: providers.anthropic.hosts: 'not a host' is not a host name")
        assert "the last good rules stay in force" in gateway.output()
        # the last good rules are still in force
        assert gateway.health()["rules"]["providers"] == ["anthropic", "gemini", "ollama", "openai", "openrouter"]
        assert "mitmproxy" in peer_issuer(gateway.port, "api.anthropic.com", 443)
        assert gateway.process.poll() is None
    finally:
        gateway.stop()


def test_a_bad_environment_override_stops_the_start_naming_the_variable(tmp_path):
    gateway = Gateway(tmp_path, None, None, expect_start=False, env={"ROUTER_LONG_CONTEXT_THRESHOLD": "lots"})
    try:
        gateway.process.wait(30)
        assert gateway.process.returncode == 1
        assert "environment: ROUTER_LONG_CONTEXT_THRESHOLD: 'lots' is not a whole number" in gateway.output()
    finally:
        gateway.stop()
