"""The cascade's policy: candidate order, what breakers, quotas and stickiness leave out, OpenRouter's
native fallback list, and the backoff."""

from __future__ import annotations

import random
import textwrap

from addons.fallback import cascade
from addons.fallback.breakers import BreakerBoard
from addons.fallback.quotas import QuotaBook
from addons.config.rules import ModelTarget, parse_rules
from addons.fallback.sticky import StickyTable

RULES = parse_rules(textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai]}
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com]}
    cascades:
      "openrouter:a/one:free": ["openrouter:b/two:free", "anthropic:claude-x", "openrouter:c/three", "openrouter:b/two:free"]
    quotas:
      "openrouter:c/three": {rpm: 1}
    fallback: {models: ["openrouter:d/last"]}
"""), "rules.yaml")
PRIMARY = ModelTarget("openrouter", "a/one:free")


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


def boards(clock):
    quotas = QuotaBook(clock=clock)
    quotas.configure(RULES.quotas)
    return BreakerBoard(clock=clock), quotas, StickyTable(clock=clock)


def names(targets):
    return [str(t) for t in targets]


def test_chain_is_primary_cascade_then_global_fallbacks_each_once():
    assert names(cascade.chain(PRIMARY, RULES)) == [
        "openrouter:a/one:free", "openrouter:b/two:free", "anthropic:claude-x", "openrouter:c/three",
        "openrouter:d/last"]
    assert names(cascade.chain(ModelTarget("openrouter", "unknown"), RULES)) == ["openrouter:unknown",
                                                                                "openrouter:d/last"]


def test_open_breakers_and_used_quotas_are_left_out():
    clock = Clock()
    breakers, quotas, sticky = boards(clock)
    for _ in range(3):
        breakers.failure("openrouter:b/two:free")
    quotas.consume("openrouter:c/three")
    chosen = cascade.order(PRIMARY, RULES, breakers=breakers, quotas=quotas, sticky=sticky, session=None)
    assert names(chosen.order) == ["openrouter:a/one:free", "anthropic:claude-x", "openrouter:d/last"]
    assert [(str(t), why.split(" (")[0]) for t, why in chosen.skipped] == [
        ("openrouter:b/two:free", "breaker open"), ("openrouter:c/three", "over quota")]
    clock.now += 61  # the rpm window has passed; the breaker's cooldown too: one probe
    chosen = cascade.order(PRIMARY, RULES, breakers=breakers, quotas=quotas, sticky=sticky, session=None)
    assert "openrouter:b/two:free" in names(chosen.order) and "openrouter:c/three" in names(chosen.order)


def test_everything_over_quota_gives_the_shortest_wait():
    clock = Clock()
    breakers, quotas, sticky = boards(clock)
    target = ModelTarget("openrouter", "c/three")
    quotas.consume(str(target))
    chosen = cascade.order(target, RULES, breakers=breakers, quotas=quotas, sticky=sticky, session=None)
    assert names(chosen.order) == ["openrouter:d/last"]
    solo = parse_rules(textwrap.dedent("""\
        version: 1
        providers: {openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat]}}
        quotas: {"openrouter:c/three": {rpm: 1}}
    """), "r.yaml")
    quotas.configure(solo.quotas)
    chosen = cascade.order(target, solo, breakers=breakers, quotas=quotas, sticky=sticky, session=None)
    assert chosen.order == [] and 59 <= chosen.wait_s <= 60


def test_sticky_target_goes_first_for_its_session_only():
    clock = Clock()
    breakers, quotas, sticky = boards(clock)
    sticky.set("claude:s1", str(PRIMARY), "anthropic:claude-x")
    chosen = cascade.order(PRIMARY, RULES, breakers=breakers, quotas=quotas, sticky=sticky, session="claude:s1")
    assert names(chosen.order)[:2] == ["anthropic:claude-x", "openrouter:a/one:free"]
    assert str(chosen.sticky) == "anthropic:claude-x"
    other = cascade.order(PRIMARY, RULES, breakers=breakers, quotas=quotas, sticky=sticky, session="claude:s2")
    assert names(other.order)[0] == "openrouter:a/one:free" and other.sticky is None


def test_native_mode_makes_one_attempt():
    rules = RULES.model_copy(update={"fallback": RULES.fallback.model_copy(update={"method": "openrouter_native"})})
    clock = Clock()
    breakers, quotas, sticky = boards(clock)
    chosen = cascade.order(PRIMARY, rules, breakers=breakers, quotas=quotas, sticky=sticky, session=None)
    assert names(chosen.order) == ["openrouter:a/one:free"]


def test_native_models_list_is_same_provider_and_at_most_three():
    order = [ModelTarget("openrouter", m) for m in ("p", "q", "r", "s")]
    order.insert(1, ModelTarget("anthropic", "claude-x"))
    assert cascade.native_models(order, order[0]) == ["p", "q", "r"]
    assert cascade.native_models(order, order[3]) == ["r", "s"]
    assert cascade.native_models(order, ModelTarget("openrouter", "elsewhere")) == ["elsewhere"]


def test_inject_openrouter_merges_the_agents_provider_preferences():
    body = {"model": "p", "messages": [], "tools": [{"type": "function"}],
            "provider": {"order": ["groq"], "data_collection": "deny"}}
    out = cascade.inject_openrouter(body, ["p", "q", "r", "s"], "throughput", None)
    assert out["models"] == ["p", "q", "r"]
    assert out["provider"] == {"order": ["groq"], "data_collection": "deny", "require_parameters": True}
    assert body["provider"] == {"order": ["groq"], "data_collection": "deny"}  # the agent's body is not changed
    plain = cascade.inject_openrouter({"model": "p"}, ["p", "q"], "price", None)
    assert plain["provider"] == {"sort": "price"} and "partition" not in str(plain)
    asked = cascade.inject_openrouter({"model": "p"}, ["p", "q"], "latency", "none")
    assert asked["provider"]["sort"] == {"by": "latency", "partition": "none"}
    assert "models" not in cascade.inject_openrouter({"model": "p"}, ["p"], "price", None)


def test_backoff_honours_retry_after_and_caps():
    assert cascade.backoff_s(2.0, 0) == 2.0
    assert cascade.backoff_s(120.0, 0) is None  # not worth holding the agent
    rng = random.Random(7)
    waits = [cascade.backoff_s(None, n, rng) for n in range(8)]
    assert all(0 <= w <= min(30.0, 2 ** n) for n, w in enumerate(waits))
    assert max(cascade.backoff_s(None, 20, random.Random(i)) for i in range(50)) <= 30.0


def test_ranked_replacements_only_when_every_model_of_the_chain_has_an_open_breaker():
    clock = Clock()
    breakers, quotas, sticky = boards(clock)
    chain = cascade.chain(PRIMARY, RULES)
    ranked = [ModelTarget("openrouter", "b/two:free"), ModelTarget("openrouter", "r/open"),
              ModelTarget("openrouter", "r/one"), ModelTarget("openrouter", "r/two")]
    asked = []

    def ranking(of_chain):
        asked.append(names(of_chain))
        return ranked

    # a chain with a model left: the ranking is not touched (not even asked)
    chosen = cascade.order(PRIMARY, RULES, breakers=breakers, quotas=quotas, sticky=sticky, session=None,
                           ranked=ranking)
    assert names(chosen.order) == names(chain) and chosen.replacements == [] and asked == []
    for target in [*chain, ranked[1]]:
        for _ in range(3):
            breakers.failure(str(target))
    chosen = cascade.order(PRIMARY, RULES, breakers=breakers, quotas=quotas, sticky=sticky, session=None,
                           ranked=ranking)
    assert asked == [names(chain)]  # asked for replacements of the whole chain
    # the chain's own models (b/two:free) and open ones (r/open) are not drawn again
    assert names(chosen.order) == names(chosen.replacements) == ["openrouter:r/one", "openrouter:r/two"]
    assert len(chosen.skipped) == len(chain) and chosen.wait_s is None
    # without a ranking: nothing to try (the agent gets its 503)
    bare = cascade.order(PRIMARY, RULES, breakers=breakers, quotas=quotas, sticky=sticky, session=None)
    assert bare.order == [] and bare.replacements == []


def test_a_used_quota_is_the_users_limit_not_a_reason_to_replace():
    clock = Clock()
    breakers, quotas, sticky = boards(clock)
    solo = parse_rules(textwrap.dedent("""\
        version: 1
        providers: {openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat]}}
        quotas: {"openrouter:c/three": {rpm: 1}, "openrouter:r/capped": {rpm: 1}}
        cascades: {"openrouter:c/three": ["openrouter:c/four"]}
    """), "r.yaml")
    quotas.configure(solo.quotas)
    target = ModelTarget("openrouter", "c/three")
    quotas.consume(str(target))
    for _ in range(3):
        breakers.failure("openrouter:c/four")
    ranked = [ModelTarget("openrouter", "r/one")]
    chosen = cascade.order(target, solo, breakers=breakers, quotas=quotas, sticky=sticky, session=None,
                           ranked=lambda _: ranked)
    assert chosen.order == [] and chosen.wait_s is not None  # 429 with the wait, as without a ranking
    # replacements over their own quota are left out too
    quotas.consume("openrouter:r/capped")
    breakers_only = parse_rules(textwrap.dedent("""\
        version: 1
        providers: {openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat]}}
        quotas: {"openrouter:r/capped": {rpm: 1}}
    """), "r.yaml")
    for _ in range(3):
        breakers.failure("openrouter:c/three")
    chosen = cascade.order(target, breakers_only, breakers=breakers, quotas=quotas, sticky=sticky, session=None,
                           ranked=lambda _: [ModelTarget("openrouter", "r/capped"), *ranked])
    assert names(chosen.order) == ["openrouter:r/one"]
