"""launcher/keys.py's decisions: which of Claude Code's requests a launch sends away from Anthropic,
what xx says and sets then, and how keys are shown. Through `xx` and a real gateway in
test_xx_hygiene.py (the rig) and test_e2e_xx.py (the real Claude Code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from addons.config.rules import parse_rules
from launcher import keys
from launcher.codes import parse_code

DEFAULT = (Path(__file__).resolve().parents[2] / "rules" / "default.yaml").read_text()


def routing(extra: str = "", agent: str = "claude", digit: str | None = None, base: str = DEFAULT) -> keys.Routing:
    text = base.replace("tiers: {}\n", "").replace("routes: {}\n", "").replace("profiles: {}\n", "")
    return keys.routing_for(parse_rules(text + extra, "rules.yaml"), "rules.yaml", agent, digit)


def away(extra: str = "", code: str = "cnp", pin: str | None = None, ranked: str | None = None,
         digit: str | None = None) -> keys.Away | None:
    return keys.claude_away(routing(extra, digit=digit), parse_code(code), pin, ranked)


def test_launch_options_send_every_request_or_none():
    assert away(code="cnpd") == keys.Away(True, (("launch_tiers.d", "openrouter:deepseek/deepseek-v4-flash"),))
    assert away(pin="openrouter:qwen/qwen3-coder").every
    assert away(code="cnpm", ranked="openrouter:z-ai/glm-4.6").targets == (
        ("tier m (the model scan)", "openrouter:z-ai/glm-4.6"),)
    assert away(code="cnpm") is None  # no ranking: the gateway routes as usual, and the rules keep Anthropic
    assert away(pin="anthropic:claude-opus-4-8") is None  # pinned, but to Claude Code's own provider
    for code in ("cnbd", "cndd", "xnpd"):  # route b never changes the model; d skips Clutch; not Claude Code
        assert away(code=code) is None


def test_the_agents_layer_decides_some_or_every():
    assert away() is None  # the default rules keep Claude Code on Anthropic
    some = away("tiers:\n  small: openrouter:qwen/qwen3-coder\n")
    assert some == keys.Away(False, (("tiers.small", "openrouter:qwen/qwen3-coder"),))
    assert away("routes:\n  default: openrouter:qwen/qwen3-coder\n").every  # nothing left for Anthropic
    back = away("routes:\n  default: openrouter:qwen/qwen3-coder\ntiers:\n  big: anthropic:claude-opus-4-8\n")
    assert back is not None and not back.every  # opus stays on Anthropic
    # a custom router (any existing file will do here) may send anything anywhere, Anthropic too
    assert not away(f"routes:\n  default: openrouter:x/y\n  custom: {Path(__file__)}\n").every


def test_profiles_and_aliases_for_claude_only():
    profiles = ("profiles:\n  claude:\n    routes:\n      think: openrouter:moonshotai/kimi-k2.6\n"
                "  codex:\n    tiers:\n      big: openrouter:x/y\n"
                '  "3":\n    tiers:\n      big: openrouter:z-ai/glm-4.6\n')
    assert away(profiles).targets == (("routes.think", "openrouter:moonshotai/kimi-k2.6"),)
    assert dict(away(profiles, code="cnp3", digit="3").targets) == {
        "routes.think": "openrouter:moonshotai/kimi-k2.6", "tiers.big": "openrouter:z-ai/glm-4.6"}
    aliases = DEFAULT.replace("aliases:\n", "aliases:\n  claude-*: openrouter:x/y\n  sonnet-ish: openrouter:a/b\n")
    found = keys.claude_away(routing(base=aliases), parse_code("cnp"), None, None)
    assert dict(found.targets) == {"aliases.claude-*": "openrouter:x/y", "aliases.sonnet-ish": "openrouter:a/b"}
    # coder-model (Qwen Code's name) is no name Claude Code sends
    assert "aliases.coder-model" not in routing().fields


def test_no_provider_for_claude_codes_host_means_nothing_is_routed():
    text = DEFAULT.replace("  anthropic:\n    base_url: https://api.anthropic.com\n    dialects: [anthropic]\n"
                           "    hosts: [api.anthropic.com]\n    key_env: ANTHROPIC_API_KEY\n", "")
    rules = parse_rules(text, "rules.yaml")
    assert keys.claude_away(keys.routing_for(rules, "r", "claude", None), parse_code("cnpd"), None, None) is None


def test_summary_of_a_gateway_whose_file_cannot_be_read():
    summary = {"providers": ["anthropic", "openrouter"], "tiers": {"big": "openrouter:x/y"}, "routes": {},
               "launch_tiers": {"d": "openrouter:deepseek/deepseek-v4-flash"}}
    seen = keys.routing_from_summary(summary, "the gateway's rules")
    assert seen.partial and seen.home == "anthropic"
    assert keys.claude_away(seen, parse_code("cnp"), None, None).targets == (("tiers.big", "openrouter:x/y"),)
    assert keys.claude_away(seen, parse_code("cnpd"), None, None).every


EVERY = keys.Away(True, (("launch_tiers.d", "openrouter:d"),))
SOME = keys.Away(False, (("tiers.big", "openrouter:b"),))


def test_advice():
    placed = keys.advise(EVERY, {}, False, "rules.yaml")
    assert placed.env == {"ANTHROPIC_AUTH_TOKEN": keys.PLACEHOLDER}
    assert placed.note.startswith("every request of this launch leaves Anthropic (launch_tiers.d -> openrouter:d; "
                                  "rules: rules.yaml)")
    told = keys.advise(SOME, {}, False, "rules.yaml")
    assert told.env == {} and "some of its requests go to other providers (tiers.big -> openrouter:b" in told.note
    unknown = keys.advise(EVERY, {}, None, "rules.yaml")  # `claude auth status` could not tell: no placeholder
    assert unknown.env == {} and "could not be told" in unknown.note and "its requests go" in unknown.note
    assert keys.advise(EVERY, {}, True, "r") is None  # a login of its own (OAuth, apiKeyHelper...)
    assert keys.advise(EVERY, {"ANTHROPIC_API_KEY": "sk-ant-api03-x"}, None, "r") is None
    assert keys.advise(EVERY, {"ANTHROPIC_AUTH_TOKEN": "t"}, None, "r") is None
    assert keys.advise(None, {}, False, "r") is None
    assert keys.advise(EVERY, {"ANTHROPIC_API_KEY": "  "}, False, "r").env  # blank is unset


@pytest.mark.parametrize("value,shown", [("sk-or-v1-0123456789abcdef0123456789abcdef", "sk-or-…, 41 characters"),
                                         ("abcdefgh", "ab…, 8 characters"), ("abc", "…, 3 characters")])
def test_mask_shows_at_most_a_quarter(value, shown):
    assert keys.mask(value) == shown


def test_logged_in_reads_claude_auth_status(tmp_path):
    fake = tmp_path / "claude"
    fake.write_text('#!/bin/sh\n[ "$1 $2" = "auth status" ] && echo "$ANSWER"\nexit 1\n')
    fake.chmod(0o755)
    assert keys.logged_in(str(fake), {"ANSWER": '{"loggedIn": true}'}) is True
    assert keys.logged_in(str(fake), {"ANSWER": '{"loggedIn": false}'}) is False
    assert keys.logged_in(str(fake), {"ANSWER": "Usage: claude [options]"}) is None  # an older claude
    assert keys.logged_in(str(tmp_path / "missing"), {}) is None


def test_a_summary_of_the_wrong_shape_is_read_as_far_as_it_goes():
    odd = {"providers": "anthropic", "tiers": ["big"], "routes": {"think": 3, "default": "openrouter:x/y"},
           "launch_tiers": None}
    seen = keys.routing_from_summary(odd, "the gateway's rules")
    assert seen.home is None and seen.fields == {"routes.default": "openrouter:x/y"} and seen.launch_tiers == {}


def test_a_pin_on_a_provider_the_rules_lack_is_ignored_as_the_gateway_does():
    assert away(pin="nowhere:some-model") is None  # the gateway notes it and routes as usual
    big = away("tiers:\n  big: openrouter:x/y\n", pin="nowhere:some-model")
    assert big.targets == (("tiers.big", "openrouter:x/y"),)
    tier = away(code="cnpk", pin="nowhere:some-model")  # then the tier letter, as in the gateway's router
    assert tier.targets == (("launch_tiers.k", "openrouter:moonshotai/kimi-k2.6"),)
