"""claude-code-proxy's environment variables override the rules file."""

from __future__ import annotations

import pytest

from addons.config.overrides import apply_overrides
from addons.config.rules import DEFAULT_RULES_PATH, RulesError, load_rules


@pytest.fixture
def rules():
    return load_rules(DEFAULT_RULES_PATH)


def test_every_variable_lands_where_it_should(rules, tmp_path):
    router = tmp_path / "router.py"
    router.write_text("def route(request, context):\n    return None\n")
    env = {
        "BIG_MODEL": "anthropic/claude-opus-4.5", "MIDDLE_MODEL": "openrouter:z-ai/glm-5",
        "SMALL_MODEL": "ollama:qwen3:4b", "TOOLCALL_MODELS": "qwen/qwen3-coder, moonshotai/kimi-k2.6",
        "OPENROUTER_FALLBACK_MODELS": "a/b:free,c/d", "FALLBACK_METHOD": "cascade",
        "ROUTER_DEFAULT": "x/default", "ROUTER_BACKGROUND": "x/bg", "ROUTER_THINK": "x/think",
        "ROUTER_LONG_CONTEXT": "x/long", "ROUTER_LONG_CONTEXT_THRESHOLD": "90000", "ROUTER_WEB_SEARCH": "x/web",
        "ROUTER_IMAGE": "x/img", "ROUTER_CUSTOM_PATH": str(router), "UNRELATED": "ignored",
    }
    updated, in_force = apply_overrides(rules, env)
    assert set(in_force) == set(env) - {"UNRELATED"}
    assert updated.tiers.big == "openrouter:anthropic/claude-opus-4.5"  # a bare model means OpenRouter
    assert updated.tiers.middle == "openrouter:z-ai/glm-5"
    assert updated.tiers.small == "ollama:qwen3:4b"
    assert updated.routes.toolcall == "openrouter:qwen/qwen3-coder"
    assert updated.cascades["openrouter:qwen/qwen3-coder"] == ["openrouter:moonshotai/kimi-k2.6"]
    assert updated.fallback.models == ["openrouter:a/b:free", "openrouter:c/d"]
    assert updated.fallback.method == "cascade"
    assert (updated.routes.default, updated.routes.long_context_threshold) == ("openrouter:x/default", 90000)
    assert updated.custom_router_path(updated.routes.custom) == router.resolve()
    assert rules.tiers.big is None  # the loaded rules themselves are not changed


def test_nothing_set_changes_nothing(rules):
    assert apply_overrides(rules, {}) == (rules, {})


@pytest.mark.parametrize("name,value,message", [
    ("ROUTER_LONG_CONTEXT_THRESHOLD", "lots", "not a whole number"),
    ("FALLBACK_METHOD", "sometimes", "cascade"),
    ("ROUTER_CUSTOM_PATH", "/nonexistent/router.py", "does not exist"),
])
def test_bad_values_name_the_variable(rules, name, value, message):
    with pytest.raises(RulesError) as error:
        apply_overrides(rules, {name: value})
    assert error.value.field == name and error.value.file == "environment"
    assert message in str(error.value)


def test_an_agents_profile_keeps_the_override(tmp_path):
    """A profile that sets nothing about a tier must not hide the variable's tier: overriding rebuilds the
    rules from what the file set, not from a dump of every field."""
    from addons.routing.router import layer_for
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\nproviders:\n  openrouter: {base_url: \"https://openrouter.ai/api/v1\", "
                    "dialects: [openai_chat], hosts: [openrouter.ai]}\n"
                    "profiles:\n  claude: {routes: {think: \"openrouter:x/think\"}}\n")
    updated, _ = apply_overrides(load_rules(path), {"BIG_MODEL": "openrouter:x/big"})
    layer = layer_for(updated, "claude")
    assert layer.tiers["big"] == "openrouter:x/big" and layer.routes["think"] == "openrouter:x/think"
