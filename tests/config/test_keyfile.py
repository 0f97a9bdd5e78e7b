"""Provider keys: `${VAR}` in the rules, the keys file (format, permissions), the environment first,
and which providers the rules route to without a key."""

from __future__ import annotations

import os
import textwrap

import pytest

from addons.config.keyfile import ProviderKeys, missing_keys, parse_keys, read_keys_file
from addons.config.rules import RulesError, parse_rules

SECRET = "sk-or-v1-this-must-never-appear-in-a-message"


def test_the_keys_file_format():
    text = textwrap.dedent("""\
        # provider keys
        OPENROUTER_API_KEY=sk-or-v1-plain   # an inline comment
        export ANTHROPIC_API_KEY = 'sk-ant-single # not a comment'
        OPENAI_API_KEY="sk-\\"quoted\\" \\\\ ok"  # after the quotes

        GEMINI_API_KEY=first
        GEMINI_API_KEY=last
        EMPTY=
        """)
    assert parse_keys(text, "keys.env") == {
        "OPENROUTER_API_KEY": "sk-or-v1-plain", "ANTHROPIC_API_KEY": "sk-ant-single # not a comment",
        "OPENAI_API_KEY": 'sk-"quoted" \\ ok', "GEMINI_API_KEY": "last", "EMPTY": ""}


@pytest.mark.parametrize("line", [SECRET, f"1BAD={SECRET}", f"KEY='{SECRET}", f'KEY="{SECRET}" trailing'])
def test_a_bad_line_is_named_by_its_number_never_its_text(line):
    with pytest.raises(RulesError) as raised:
        parse_keys(f"# first\nOK=1\n{line}\n", "/x/keys.env")
    assert str(raised.value) == "/x/keys.env:3: not a NAME=value line (a key, a # comment or nothing)"
    assert SECRET not in str(raised.value)


def test_a_keys_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "keys.env"
    assert read_keys_file(path) == {}  # none: nothing to read
    path.write_text(f"OPENROUTER_API_KEY={SECRET}\n")
    os.chmod(path, 0o644)
    with pytest.raises(RulesError) as raised:
        read_keys_file(path)
    assert str(raised.value) == (f"{path}: group or others may read the keys file (mode 0644); Clutch does not use "
                                 f"it until `chmod 600 {path}`")
    os.chmod(path, 0o600)
    assert read_keys_file(path) == {"OPENROUTER_API_KEY": SECRET}


def test_the_environment_wins_and_a_blank_variable_is_unset(tmp_path):
    keys = ProviderKeys({"A": "from-file", "B": "from-file"}, tmp_path / "keys.env", {"A": "from-env", "B": "  "})
    assert (keys.get("A"), keys.get("B"), keys.get("C")) == ("from-env", "from-file", None)
    assert (keys.source_of("A"), keys.source_of("B"), keys.source_of("C")) == \
        ("environment", str(tmp_path / "keys.env"), None)


RULES = """\
providers:
  openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], api_key: "${OR_KEY}"}
  anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], key_env: ANT_KEY}
  local: {base_url: "http://127.0.0.1:11434/v1", dialects: [openai_chat]}
tiers: {big: "openrouter:a/b", small: "local:tiny"}
launch_tiers: {d: "openrouter:c/d"}
"""


def test_keys_are_named_as_variables():
    rules = parse_rules(RULES, "r.yaml")
    assert rules.providers["openrouter"].key_variable == "OR_KEY"
    assert rules.providers["anthropic"].key_variable == "ANT_KEY"
    assert rules.providers["local"].key_variable is None


def test_a_key_written_into_the_rules_is_refused_without_repeating_it():
    with pytest.raises(RulesError) as raised:
        parse_rules(RULES.replace("${OR_KEY}", SECRET), "r.yaml")
    assert str(raised.value).startswith("r.yaml:2: providers.openrouter.api_key: write ${VARIABLE}, the name of")
    assert SECRET not in str(raised.value)
    with pytest.raises(RulesError, match="name two variables"):
        parse_rules(RULES.replace("key_env: ANT_KEY", "key_env: ANT_KEY, api_key: '${OTHER}'"), "r.yaml")


def test_missing_keys_are_those_of_providers_the_rules_route_to():
    rules = parse_rules(RULES, "r.yaml")
    [missing] = missing_keys(rules, {"ANT_KEY": "x"})
    assert (missing.provider, missing.variable, missing.used_by) == ("openrouter", "OR_KEY",
                                                                     ["tiers.big", "launch_tiers.d"])
    assert missing.describe(None) == ("provider openrouter has no key: OR_KEY is not set in the environment; what "
                                      "the rules send there (tiers.big, launch_tiers.d) fails with 502 missing_key")
    # anthropic: nothing routes there (an agent calling it sends its own key); local: no key to have
    assert missing_keys(rules, {"OR_KEY": "x"}) == []
