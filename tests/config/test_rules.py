"""The rules file: schema, defaults, and errors that name file, line and field."""

from __future__ import annotations

import textwrap

import pytest

from addons.config.rules import DEFAULT_RULES_PATH, RulesError, load_rules, parse_rules

from addons.wire.dialects import Dialect

PROVIDER = """\
version: 1
providers:
  openrouter:
    base_url: https://openrouter.ai/api/v1
    dialects: [openai_chat]
    hosts: [openrouter.ai]
"""


def test_default_rules_are_valid_and_need_no_key():
    rules = load_rules(DEFAULT_RULES_PATH)
    assert {"openrouter", "anthropic", "openai", "gemini"} <= set(rules.providers)
    assert rules.provider_at("openrouter.ai", 443)[0] == "openrouter"
    assert rules.provider_at("api.anthropic.com", 443)[0] == "anthropic"
    assert rules.provider_at("api.anthropic.com", 8443) is None
    assert rules.provider_at("example.com", 443) is None
    assert Dialect.ANTHROPIC in rules.providers["openrouter"].dialects
    # no routing by default: the launch tiers, which apply to xx launches that ask for them, and Qwen
    # Code's placeholder model name, which no provider but Qwen's own OAuth service knows
    assert {loc[0] for loc, _ in rules.targets()} == {"launch_tiers", "aliases"}
    assert rules.aliases == {"coder-model": "openrouter:qwen/qwen3-coder"}


def test_later_sections_have_their_schema():
    rules = parse_rules(PROVIDER + textwrap.dedent("""\
        tiers: {big: "openrouter:moonshotai/kimi-k2.6", small: "openrouter:qwen/qwen3-next-80b:free"}
        aliases: {coder-model: "openrouter:qwen/qwen3-coder"}
        routes: {background: "openrouter:x/small", long_context_threshold: 90000}
        cascades: {"openrouter:a/b": ["openrouter:c/d:free", "openrouter:e/f"]}
        quotas: {openrouter: {rpm: 20, rpd: 50}}
        fallback: {method: cascade, sort: price}
        profiles:
          claude: {tiers: {big: "openrouter:a/b"}}
          "3": {routes: {default: "openrouter:c/d"}}
        """), "r.yaml")
    assert rules.tiers.big == "openrouter:moonshotai/kimi-k2.6"
    assert rules.routes.long_context_threshold == 90000
    assert rules.quotas["openrouter"].rpd == 50
    assert rules.profiles["claude"].tiers.big == "openrouter:a/b"
    assert ("cascades", "openrouter:a/b", 1) in [loc for loc, _ in rules.targets()]


@pytest.mark.parametrize("extra,line,field,message", [
    ("    key_env: 9X\n", 7, "providers.openrouter.key_env", "not an environment variable name"),
    ("    bogus: 1\n", 7, "providers.openrouter.bogus", "unknown field"),
    ("tiers:\n  big: nowhere:model\n", 8, "tiers.big", "names provider 'nowhere'"),
    ("tiers:\n  big: no-colon\n", 8, "tiers.big", "not a target"),
    ("routes:\n  long_context_threshold: -5\n", 8, "routes.long_context_threshold", "greater than 0"),
    ("cascades:\n  openrouter:a/b:\n    - openrouter:c\n    - ghost:d\n", 10, "cascades.openrouter:a/b.1",
     "names provider 'ghost'"),
    ("profiles:\n  robot: {}\n", 8, "profiles.robot", "name an agent"),
    ("  Open_Router:\n    base_url: https://x.test\n    dialects: [anthropic]\n", 7, "providers.Open_Router", "lower-case"),
    ("fallback:\n  method: sometimes\n", 8, "fallback.method", "Input should be"),
])
def test_errors_name_file_line_and_field(tmp_path, extra, line, field, message):
    path = tmp_path / "mine.yaml"
    path.write_text(PROVIDER + extra)
    with pytest.raises(RulesError) as raised:
        load_rules(path)
    error = raised.value
    assert (error.file, error.line, error.field) == (str(path), line, field)
    assert message in error.message
    assert str(error).startswith(f"{path}:{line}: {field}: ")


def test_bad_urls_and_hosts_are_named():
    with pytest.raises(RulesError, match=r"r.yaml:4: providers.openrouter.base_url: must be an http"):
        parse_rules(PROVIDER.replace("https://openrouter.ai/api/v1", "openrouter.ai"), "r.yaml")
    with pytest.raises(RulesError, match=r"r.yaml:6: providers.openrouter.hosts: 'openrouter.ai:443' is not"):
        parse_rules(PROVIDER.replace("[openrouter.ai]", "[openrouter.ai:443]"), "r.yaml")


def test_yaml_syntax_errors_have_a_line():
    with pytest.raises(RulesError) as raised:
        parse_rules(PROVIDER + "tiers: [unclosed\n", "r.yaml")
    assert raised.value.line == 8 and "YAML syntax" in raised.value.message


def test_a_host_claimed_twice_is_refused():
    doubled = PROVIDER + "  other:\n    base_url: https://x.test\n    dialects: [anthropic]\n    hosts: [openrouter.ai]\n"
    with pytest.raises(RulesError, match="openrouter.ai:443 belongs to both 'openrouter' and 'other'"):
        parse_rules(doubled, "r.yaml")


def test_missing_file_and_wrong_top_level():
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules("/nonexistent/rules.yaml")
    with pytest.raises(RulesError, match="must be a mapping"):
        parse_rules("- a\n- b\n", "r.yaml")
    with pytest.raises(RulesError, match="providers: Field required"):
        parse_rules("version: 1\n", "r.yaml")


def test_the_commented_example_is_valid_and_complete():
    from addons.config.rules import ModelTarget
    from pathlib import Path
    rules = load_rules(Path(DEFAULT_RULES_PATH).with_name("example.yaml"))
    assert set(rules.routes.model_fields_set) == set(type(rules.routes).model_fields)  # every route shown
    assert rules.custom_router_path(rules.routes.custom).name == "example_router.py"
    assert set(rules.launch_tiers) == {"d", "n", "k", "q"}
    assert ModelTarget.parse(rules.tiers.small) == ModelTarget("ollama", "qwen3:4b")


def test_a_missing_custom_router_is_named_with_its_line(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(PROVIDER + "routes:\n  custom: nowhere.py\n")
    with pytest.raises(RulesError) as error:
        load_rules(path)
    assert (error.value.line, error.value.field) == (8, "routes.custom")
    assert "nowhere.py" in error.value.message


def test_launch_tier_letters_are_checked():
    with pytest.raises(RulesError, match="launch_tiers"):
        parse_rules(PROVIDER + "launch_tiers: {z: 'openrouter:x'}\n", "r.yaml")


def test_the_docs_show_the_example_rules_file_verbatim():
    from pathlib import Path
    root = Path(DEFAULT_RULES_PATH).parent.parent
    example = (root / "rules" / "example.yaml").read_text()
    assert f"```yaml\n{example}```" in (root / "docs" / "rules.md").read_text()
