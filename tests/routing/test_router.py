"""The routing decision: every trigger, their priority, family tiers, aliases, profiles and launch options."""

from __future__ import annotations

import textwrap

import pytest

from addons.wire.identity import Identity
from addons.routing.router import RouteRequest, decide, layer_for, needs_token_count
from addons.config.rules import ModelTarget, parse_rules
from addons.wire.dialects import Dialect

A, CHAT, RESP, GEM = Dialect.ANTHROPIC, Dialect.OPENAI_CHAT, Dialect.OPENAI_RESPONSES, Dialect.GEMINI

RULES = textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai]}
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com]}
      ollama: {base_url: "http://127.0.0.1:11434/v1", dialects: [openai_chat]}
    tiers: {big: "openrouter:big/model", middle: "openrouter:middle/model", small: "ollama:small"}
    aliases: {coder-model: "openrouter:qwen/qwen3-coder", "gpt-*": "openrouter:openai/gpt-x"}
    routes:
      default: "openrouter:default/model"
      background: "ollama:qwen3:4b"
      think: "openrouter:deepseek/r1"
      long_context: "openrouter:google/gemini-long"
      long_context_threshold: 1000
      web_search: "openrouter:perplexity/sonar"
      image: "openrouter:vision/model"
      toolcall: "openrouter:tools/model"
    profiles:
      qwen: {routes: {default: "openrouter:qwen/qwen3-coder-plus"}}
      "3": {tiers: {big: "anthropic:claude-opus-9"}, routes: {think: "anthropic:claude-thinker"}}
    launch_tiers: {k: "openrouter:moonshotai/kimi-k2.6"}
""")
BARE = "version: 1\nproviders:\n  openrouter: {base_url: 'https://openrouter.ai/api/v1', dialects: [openai_chat]}\n"


@pytest.fixture(scope="module")
def rules():
    return parse_rules(RULES, "rules.yaml")


def ask(rules, body, dialect=A, identity=Identity(agent="claude"), provider="anthropic", **kw):
    request = RouteRequest(dialect, provider, body.get("model"), body, len(str(body)), identity)
    return decide(request, rules, **kw)


def image_msg(dialect):
    if dialect is A:
        return {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                          "data": "iVBOR"}}]}
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]}


TOOL_RESULT = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}
WEB_TOOL = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
THINKING = {"type": "enabled", "budget_tokens": 20000}  # high: more than Claude Code's default medium


def test_each_trigger_fires_alone(rules):
    base = {"model": "claude-sonnet-4-5", "max_tokens": 8000, "messages": [{"role": "user", "content": "hi"}]}
    cases = {
        "image": {**base, "messages": [image_msg(A)]},
        "web_search": {**base, "tools": [WEB_TOOL]},
        "think": {**base, "thinking": THINKING},
        "toolcall": {**base, "messages": [{"role": "user", "content": "x"}, TOOL_RESULT]},
        "background": {**base, "max_tokens": 200},
    }
    for rule, body in cases.items():
        decision = ask(rules, body)
        assert decision.rule == rule, (rule, decision)
        assert decision.target == ModelTarget.parse(rules.routes.model_dump()[rule])
    long_body = {**base, "messages": [{"role": "user", "content": "word " * 3000}]}
    decision = ask(rules, long_body, tokens=3001)
    assert (decision.rule, decision.tokens) == ("long_context", 3001)
    assert "3001 tokens > 1000" in decision.reason


def test_priority_order(rules):
    """image > web_search > long_context > think > toolcall > background: remove the winner's trigger,
    and the next one wins."""
    body = {"model": "claude-haiku-4-5", "max_tokens": 100, "thinking": THINKING, "tools": [WEB_TOOL],
            "messages": [image_msg(A), {"role": "assistant", "content": "x"}, TOOL_RESULT]}
    tokens = 5000
    removers = {
        "image": lambda: body["messages"].__setitem__(0, {"role": "user", "content": "no image"}),
        "web_search": lambda: body.__setitem__("tools", []),
        "long_context": lambda: None,
        "think": lambda: body.pop("thinking"),
        "toolcall": lambda: body.__setitem__("messages", body["messages"][:1]),
        "background": lambda: None,
    }
    order = []
    for _ in removers:
        decision = ask(rules, body, tokens=tokens)
        order.append(decision.rule)
        removers[decision.rule]()
        if decision.rule == "long_context":
            tokens = 10
    assert order == ["image", "web_search", "long_context", "think", "toolcall", "background"]


def test_all_signals_listed_even_when_a_higher_rule_wins(rules):
    body = {"model": "claude-haiku-4-5", "max_tokens": 100, "thinking": THINKING, "tools": [WEB_TOOL],
            "messages": [image_msg(A), {"role": "assistant", "content": "x"}, TOOL_RESULT]}
    decision = ask(rules, body, tokens=5000)
    assert decision.signals == ["image", "web_search", "long_context", "think", "toolcall", "background"]


@pytest.mark.parametrize("model,tier", [
    ("claude-opus-4-8", "big"), ("claude-opus-5-20270101", "big"), ("anthropic/claude-opus-4.5", "big"),
    ("claude-sonnet-5", "middle"), ("claude-3-7-sonnet-latest", "middle"), ("claude-sonnet-9-1m", "middle"),
    ("claude-haiku-7", "small"),
])
def test_family_tiers_survive_new_version_names(model, tier):
    rules = parse_rules(BARE + "tiers: {big: 'openrouter:b', middle: 'openrouter:m', small: 'openrouter:s'}\n", "r.yaml")
    decision = ask(rules, {"model": model, "max_tokens": 8000, "messages": []})
    assert decision.rule == f"tier:{tier}"
    assert decision.target.model == tier[0]


def test_aliases_exact_and_glob(rules):
    decision = ask(rules, {"model": "coder-model", "messages": [{"role": "user", "content": "hi"}]},
                   dialect=CHAT, provider="openrouter", identity=Identity(agent="codex"))
    assert (decision.rule, str(decision.target)) == ("alias:coder-model", "openrouter:qwen/qwen3-coder")
    decision = ask(rules, {"model": "gpt-6.1-sol", "input": "hi"}, dialect=RESP, provider="openrouter",
                   identity=Identity(agent="codex"))
    assert decision.rule == "alias:gpt-*"


def test_default_route_catches_everything_else(rules):
    decision = ask(rules, {"model": "mystery", "messages": [{"role": "user", "content": "hi"}]}, dialect=CHAT,
                   provider="openrouter", identity=Identity(agent="opencode"))
    assert (decision.rule, str(decision.target)) == ("default", "openrouter:default/model")


def test_nothing_configured_means_unchanged():
    rules = parse_rules(BARE, "r.yaml")
    body = {"model": "claude-opus-4", "thinking": THINKING, "messages": [image_msg(A), TOOL_RESULT]}
    decision = ask(rules, body)
    assert (decision.rule, decision.target) == ("unchanged", None)
    assert decision.signals == ["think", "toolcall"]  # explained, though nothing fires
    # the costly image search runs only for an image route, or when explaining
    assert ask(rules, body, explain=True).signals == ["image", "think", "toolcall"]


def test_agent_profile_overrides_only_what_it_sets(rules):
    qwen = Identity(agent="qwen")
    body = {"model": "qwen3", "messages": [{"role": "user", "content": "hi"}]}
    assert str(ask(rules, body, CHAT, qwen, "openrouter").target) == "openrouter:qwen/qwen3-coder-plus"
    # its profile sets no think route: the rules' one still applies
    decision = ask(rules, {**body, "reasoning_effort": "high"}, CHAT, qwen, "openrouter")
    assert (decision.rule, str(decision.target)) == ("think", "openrouter:deepseek/r1")
    assert decision.layer == ("rules", "profile qwen")


def test_launch_profile_digit_layers_on_top(rules):
    identity = Identity(agent="claude", launch_code="cip3", route="p", tier="3")
    decision = ask(rules, {"model": "claude-opus-4-8", "max_tokens": 9000, "messages": []}, identity=identity)
    assert str(decision.target) == "anthropic:claude-opus-9"
    decision = ask(rules, {"model": "x", "thinking": THINKING, "messages": []}, identity=identity)
    assert str(decision.target) == "anthropic:claude-thinker"
    assert decision.layer == ("rules", "profile 3")


def test_launch_options_win(rules):
    body = {"model": "claude-opus-4-8", "thinking": THINKING, "messages": [image_msg(A)]}
    bypass = ask(rules, body, identity=Identity(agent="claude", route="b"))
    assert (bypass.rule, bypass.target) == ("bypass", None)
    pinned = ask(rules, body, identity=Identity(agent="claude", model="openrouter:z-ai/glm-5"))
    assert (pinned.rule, str(pinned.target)) == ("launch:model", "openrouter:z-ai/glm-5")
    tier = ask(rules, body, identity=Identity(agent="claude", route="p", tier="k"))
    assert (tier.rule, str(tier.target)) == ("launch:tier-k", "openrouter:moonshotai/kimi-k2.6")
    unknown = ask(rules, body, identity=Identity(agent="claude", route="p", tier="f"))
    assert unknown.rule == "image"
    assert "launch tier 'f' has no model" in unknown.notes[0]
    bad = ask(rules, body, identity=Identity(agent="claude", model="nowhere:model"))
    assert bad.rule == "image" and "not in the rules" in bad.notes[0]


def test_subagent_tags_both_forms(rules):
    for tag in ("<CLUTCH-MODEL>openrouter:z-ai/glm-5</CLUTCH-MODEL>",
                "<CCR-SUBAGENT-MODEL>openrouter,z-ai/glm-5</CCR-SUBAGENT-MODEL>"):
        body = {"model": "claude-sonnet-4-5", "thinking": THINKING, "messages": [image_msg(A)],
                "system": [{"type": "text", "text": "You are Claude Code."}, {"type": "text", "text": tag + "Explore."}]}
        decision = ask(rules, body)
        assert (decision.rule, str(decision.target)) == ("subagent", "openrouter:z-ai/glm-5")
        assert decision.subagent_tag
    chat = {"model": "m", "messages": [{"role": "system", "content": "<CLUTCH-MODEL>ollama:qwen3</CLUTCH-MODEL>hi"}]}
    assert str(ask(rules, chat, CHAT, Identity(agent="opencode"), "openrouter").target) == "ollama:qwen3"


def test_custom_router_result_and_bad_results(rules):
    body = {"model": "claude-sonnet-4-5", "thinking": THINKING, "messages": []}
    assert str(ask(rules, body, custom_result="openrouter,x/y").target) == "openrouter:x/y"
    assert ask(rules, body, custom_result="openrouter:x/y").rule == "custom"
    wrong = ask(rules, body, custom_result="nope")
    assert wrong.rule == "think" and "not provider:model" in wrong.notes[0]


def test_explicit_provider_model_from_the_agent(rules):
    decision = ask(rules, {"model": "openrouter,qwen/qwen3-coder", "messages": []})
    assert (decision.rule, str(decision.target)) == ("explicit", "openrouter:qwen/qwen3-coder")
    # an OpenRouter variant suffix is not a provider
    decision = ask(rules, {"model": "qwen/qwen3-coder:free", "messages": []}, CHAT, Identity(agent="pi"), "openrouter")
    assert decision.rule == "default"


@pytest.mark.parametrize("dialect,body", [
    (CHAT, {"model": "m", "messages": [image_msg(CHAT)]}),
    (RESP, {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:x"}]}]}),
    (GEM, {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "x"}}]}]}),
])
def test_image_in_every_dialect(rules, dialect, body):
    assert ask(rules, body, dialect, Identity(agent="pi"), "openrouter").rule == "image"


def test_token_count_only_when_it_can_matter(rules):
    layer = layer_for(rules, "claude")
    small = RouteRequest(A, "anthropic", "m", {"messages": []}, 999, Identity())
    big = RouteRequest(A, "anthropic", "m", {"messages": []}, 1001, Identity())
    assert not needs_token_count(small, layer) and needs_token_count(big, layer)
    no_route = layer_for(parse_rules(BARE, "r.yaml"), "claude")
    assert not needs_token_count(big, no_route)


def test_launch_tiers_m_and_f_take_the_model_scans_pick_unless_pinned(rules):
    from addons.models.ranking import TierPick

    picks = {"m": TierPick("m", ModelTarget("openrouter", "qwen/qwen3-coder"), "tier m chosen at launch: the model "
                           "scan's best-ranked model (rank 1, ...)", {}),
             "f": TierPick("f", ModelTarget("nowhere", "x:free"), "r", {})}
    body = {"model": "claude-opus-4-8", "messages": [{"role": "user", "content": "hi"}]}
    m = ask(rules, body, identity=Identity(agent="claude", route="p", tier="m"), ranked=picks.get)
    assert (m.rule, str(m.target)) == ("launch:tier-m", "openrouter:qwen/qwen3-coder")
    assert m.reason.startswith("tier m chosen at launch: the model scan's best-ranked model")
    # a pick whose provider the rules do not have is ignored, with a note
    f = ask(rules, body, identity=Identity(agent="claude", route="p", tier="f"), ranked=picks.get)
    assert f.rule == "tier:big" and "provider 'nowhere' is not in the rules" in f.notes[0]
    assert "launch tier 'f' has no model in rules launch_tiers and the model scan ranked none" in f.notes[1]
    # no ranking: routing as usual, saying how to get one
    none = ask(rules, body, identity=Identity(agent="claude", route="p", tier="m"), ranked=lambda letter: None)
    assert none.rule == "tier:big" and "run `xx scan`" in none.notes[0]
    # launch_tiers pins win over the ranking; other letters never ask it
    pinned = parse_rules(RULES.replace('launch_tiers: {k: "openrouter:moonshotai/kimi-k2.6"}',
                                       'launch_tiers: {k: "openrouter:moonshotai/kimi-k2.6", m: "openrouter:pin/m"}'),
                         "rules.yaml")
    asked = []
    assert str(ask(pinned, body, identity=Identity(agent="claude", route="p", tier="m"),
                   ranked=lambda letter: asked.append(letter)).target) == "openrouter:pin/m"
    ask(pinned, body, identity=Identity(agent="claude", route="p", tier="d"),
        ranked=lambda letter: asked.append(letter))
    assert asked == []
    unloaded = ask(rules, body, identity=Identity(agent="claude", route="p", tier="m"))
    assert "no model ranking is loaded here" in unloaded.notes[0]
    # route b keeps the agent's model whatever the tier
    bypass = ask(rules, body, identity=Identity(agent="claude", route="b", tier="m"), ranked=picks.get)
    assert bypass.rule == "bypass"
