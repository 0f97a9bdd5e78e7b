"""The user's rules layered over the embedded defaults: what stays, what replaces, what null removes,
and errors that still point at the user's file."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from addons.config.layering import RulesSource, load_layered, merge, rules_source
from addons.config.rules import DEFAULT_RULES_PATH, RulesError, load_rules

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = load_rules(DEFAULT_RULES_PATH)


def layered(tmp_path: Path, text: str):
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(text))
    return load_layered(RulesSource(path, True)), path


def test_a_short_file_keeps_every_default_it_does_not_mention(tmp_path):
    rules, _ = layered(tmp_path, """\
        tiers:
          big: openrouter:moonshotai/kimi-k2.6
        """)
    assert rules.tiers.big == "openrouter:moonshotai/kimi-k2.6"
    # what the file did not name: every provider and its hosts, the launch tiers, Qwen's alias
    assert rules.providers == DEFAULTS.providers
    assert rules.provider_at("api.anthropic.com", 443)[0] == "anthropic"
    assert rules.launch_tiers == DEFAULTS.launch_tiers and set(rules.launch_tiers) == {"d", "n", "k", "q"}
    assert rules.aliases == {"coder-model": "openrouter:qwen/qwen3-coder"}
    assert rules.compression == DEFAULTS.compression and rules.fallback == DEFAULTS.fallback


def test_sections_merge_field_by_field_and_lists_replace(tmp_path):
    rules, _ = layered(tmp_path, """\
        fallback: {sort: price, models: ["openrouter:a/b"]}
        compression: {log_tokens: 900}
        aliases: {"gpt-4*": "openai:gpt-5-mini"}
        launch_tiers: {d: "openrouter:x/y"}
        """)
    assert (rules.fallback.method, rules.fallback.sort, rules.fallback.models) == ("both", "price", ["openrouter:a/b"])
    assert (rules.compression.mode, rules.compression.log_tokens) == ("cache_safe", 900)
    assert rules.aliases == {"coder-model": "openrouter:qwen/qwen3-coder", "gpt-4*": "openai:gpt-5-mini"}
    assert rules.launch_tiers["d"] == "openrouter:x/y" and rules.launch_tiers["k"] == DEFAULTS.launch_tiers["k"]


def test_a_provider_named_is_replaced_whole(tmp_path):
    """A mirror's base_url must not inherit OpenRouter's hosts and key: the key would go to a host the
    user never named with it."""
    rules, _ = layered(tmp_path, """\
        providers:
          openrouter:
            base_url: https://mirror.example/api/v1
            dialects: [openai_chat]
        """)
    mirror = rules.providers["openrouter"]
    assert (mirror.base_url, mirror.dialects, mirror.hosts, mirror.key_variable) == \
        ("https://mirror.example/api/v1", ["openai_chat"], [], None)
    assert rules.provider_at("openrouter.ai", 443) is None  # no longer intercepted as OpenRouter
    assert rules.providers["anthropic"] == DEFAULTS.providers["anthropic"]


def test_a_partial_provider_entry_says_it_replaces_the_default(tmp_path):
    with pytest.raises(RulesError) as raised:
        layered(tmp_path, """\
            providers:
              openrouter:
                api_key: ${MY_OPENROUTER_KEY}
            """)
    assert str(raised.value).startswith(f"{tmp_path / 'rules.yaml'}:2: providers.openrouter.base_url: Field required "
                                        "(a provider named here replaces the defaults' openrouter whole")


def test_null_removes_a_default(tmp_path):
    rules, _ = layered(tmp_path, """\
        providers:
          gemini: null
        aliases:
          coder-model: null
        launch_tiers:
          k: null
        compression: null
        """)
    assert "gemini" not in rules.providers and rules.provider_at("generativelanguage.googleapis.com", 443) is None
    assert rules.aliases == {} and set(rules.launch_tiers) == {"d", "n", "q"}
    assert rules.compression.mode == "cache_safe"  # the schema's own default


def test_null_where_the_defaults_set_nothing_keeps_its_meaning(tmp_path):
    """In a profile, `big: null` unsets the tier for that agent (router.layer_for reads the fields a
    profile sets): layering must not drop it."""
    rules, _ = layered(tmp_path, """\
        tiers: {big: "openrouter:a/b"}
        profiles:
          claude: {tiers: {big: null}}
        """)
    assert "big" in rules.profiles["claude"].tiers.model_fields_set


def test_errors_point_at_the_users_file_and_line(tmp_path):
    with pytest.raises(RulesError) as raised:
        layered(tmp_path, """\
            # a comment
            tiers:
              big: nowhere:model
            """)
    error = raised.value
    assert (error.file, error.line, error.field) == (str(tmp_path / "rules.yaml"), 3, "tiers.big")
    assert "names provider 'nowhere'" in error.message


def test_a_default_left_dangling_names_the_users_file_and_where_the_defaults_set_it(tmp_path):
    with pytest.raises(RulesError) as raised:
        layered(tmp_path, "providers:\n  openrouter: null\n")
    error = raised.value
    line = next(i for i, text in enumerate(DEFAULT_RULES_PATH.read_text().splitlines(), 1)
                if text.strip().startswith("coder-model:"))
    assert (error.file, error.line, error.field) == (str(tmp_path / "rules.yaml"), None, "aliases.coder-model")
    assert error.message.endswith(f"which is not in providers (set by the embedded defaults, default.yaml:{line}; "
                                  "`null` here removes it)")


def test_a_host_a_default_provider_owns_says_how_to_remove_it(tmp_path):
    with pytest.raises(RulesError, match=re.escape(
            "rules.yaml:2: providers.google: generativelanguage.googleapis.com:443 belongs to both 'gemini' and "
            "'google'; keep one (`gemini: null` removes a provider of the defaults)")):
        layered(tmp_path, "providers:\n  google: {base_url: 'https://generativelanguage.googleapis.com/v1', "
                          "dialects: [openai_chat]}\n")


def test_an_empty_or_all_comment_file_is_the_defaults(tmp_path):
    defaults = DEFAULTS.model_dump()
    assert layered(tmp_path, "")[0].model_dump() == defaults
    assert layered(tmp_path, "# nothing yet\n")[0].model_dump() == defaults
    assert load_layered(RulesSource(ROOT / "rules" / "starter.yaml", True)).model_dump() == defaults


def test_what_a_file_is_not(tmp_path):
    with pytest.raises(RulesError, match="must be a mapping"):
        layered(tmp_path, "- a list\n")
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_layered(RulesSource(tmp_path / "missing.yaml", True))
    (tmp_path / "huge.yaml").write_text("#" * (1024 * 1024 + 1))
    with pytest.raises(RulesError, match="larger than 1024 KB"):
        load_layered(RulesSource(tmp_path / "huge.yaml", True))


def test_where_the_users_file_is(tmp_path):
    env = {"HOME": str(tmp_path)}
    found = rules_source(None, env)
    assert found == RulesSource(tmp_path / ".config" / "clutch" / "rules.yaml", False)
    assert found.present is None and found.shown == DEFAULT_RULES_PATH  # none there yet: the defaults alone
    found.user.parent.mkdir(parents=True)
    found.user.write_text("tiers: {big: 'openrouter:a/b'}\n")
    assert found.present == found.user and load_layered(found).tiers.big == "openrouter:a/b"
    assert rules_source(None, {**env, "XDG_CONFIG_HOME": str(tmp_path / "x")}).user == tmp_path / "x/clutch/rules.yaml"
    # an option names the file (and must exist); naming the defaults themselves is no user file
    assert rules_source(str(tmp_path / "mine.yaml"), env) == RulesSource(tmp_path / "mine.yaml", True)
    assert rules_source(str(DEFAULT_RULES_PATH), env) == RulesSource(None, True)


def test_merge_by_itself():
    base = {"providers": {"a": {"x": 1, "y": 2}, "b": {"x": 3}}, "tiers": {"big": "a:1"}, "fallback": {"models": [1]}}
    over = {"providers": {"a": {"x": 9}, "b": None, "c": {"x": 4}}, "tiers": {"small": "a:2", "middle": None},
            "fallback": {"models": [2, 3]}}
    assert merge(base, over) == {"providers": {"a": {"x": 9}, "c": {"x": 4}},
                                 "tiers": {"big": "a:1", "small": "a:2", "middle": None},
                                 "fallback": {"models": [2, 3]}}


def test_the_docs_five_line_example_is_valid_and_does_what_it_says(tmp_path):
    """docs/rules.md's short example (opus to Kimi on OpenRouter, falling back to DeepSeek): at most 5
    lines, valid over the defaults, and the cascade it describes."""
    from addons.fallback.cascade import chain
    from addons.config.rules import ModelTarget
    text = (ROOT / "docs" / "rules.md").read_text()
    block = re.search(r"<!-- five-line example -->\n```yaml\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 5
    rules, _ = layered(tmp_path, block)
    assert rules.tiers.big == "openrouter:moonshotai/kimi-k2.6"
    assert [str(t) for t in chain(ModelTarget.parse(rules.tiers.big), rules)] == \
        ["openrouter:moonshotai/kimi-k2.6", "openrouter:deepseek/deepseek-v4-flash"]
    assert rules.providers == DEFAULTS.providers
