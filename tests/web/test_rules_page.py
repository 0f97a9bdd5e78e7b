"""The rules page's decisions (addons/web/rules_page.py): what it shows (never a key), what a save
writes (only what differs from the defaults, checked by the gateway's loader, atomically, with a
backup), and who may save (browser_guard.write_refusal and the token)."""

from __future__ import annotations

import json
import os
import stat
import textwrap
import typing

import pytest
import yaml

from addons.config.keyfile import ProviderKeys
from addons.config.layering import RulesSource, load_layered
from addons.config.rules import DEFAULT_RULES_PATH, Budgets, Fallback, Limit, Quota, Routes, Rules, Tiers
from addons.web import rules_page
from addons.web.rules_page import FORMS, Save, SaveRefused, parse_save, save, save_refusal, user_layer

ENV_KEY = "sk-or-v1-from-the-environment-0123456789"
FILE_KEY = "sk-ant-from-the-keys-file-0123456789"
TOKEN = "t" * 43
USER = textwrap.dedent("""\
    # my comment: kimi for opus
    version: 1
    tiers:
      big: openrouter:moonshotai/kimi-k2.6
    cascades:
      openrouter:moonshotai/kimi-k2.6: [openrouter:deepseek/deepseek-v4-flash]
""")


def state_of(target, rules: Rules | None = None) -> dict:
    rules = rules or load_layered(RulesSource(target, True))
    keys = ProviderKeys({"ANTHROPIC_API_KEY": FILE_KEY}, target.parent / "keys.env",
                        {"OPENROUTER_API_KEY": ENV_KEY, "PATH": "/bin"})
    return rules_page.page_state(target, rules, keys, target.parent / "keys.env", None, {})


def test_the_state_marks_your_sections_and_names_key_variables_never_values(tmp_path):
    target = tmp_path / "rules.yaml"
    target.write_text(USER)
    state = state_of(target)
    text = json.dumps(state)
    assert ENV_KEY not in text and FILE_KEY not in text
    providers = {p["name"]: p for p in state["providers"]}
    assert providers["openrouter"]["key_variable"] == "OPENROUTER_API_KEY"
    assert (providers["openrouter"]["key_set"], providers["openrouter"]["key_in"]) == (True, "environment")
    assert (providers["anthropic"]["key_set"], providers["anthropic"]["key_in"]) == (True, "keys file")
    assert (providers["openai"]["key_set"], providers["ollama"]["key_variable"]) == (False, None)
    tiers = state["sections"]["tiers"]
    assert tiers["value"] == {"big": "openrouter:moonshotai/kimi-k2.6"} == tiers["yours"]
    aliases = state["sections"]["aliases"]
    assert aliases["yours"] is None and aliases["value"] == aliases["defaults"] == {"coder-model": "openrouter:qwen/qwen3-coder"}
    assert state["path"] == str(target) and state["exists"] and state["yaml"] == USER
    assert state["base"] == rules_page.digest(USER)


def literals(annotation) -> set:
    """The values of a Literal[...], also inside Optional[...]."""
    found = set()
    for arg in typing.get_args(annotation):
        found |= {arg} if isinstance(arg, str) else literals(arg)
    return found


def test_the_forms_name_fields_the_schema_has():
    """A form field the schema does not have would be refused on every save."""
    def check(spec, model):
        for name, sub in spec["fields"].items():
            assert name in model.model_fields, (model, name)
            if isinstance(sub, dict) and isinstance(sub.get("table"), dict):
                assert set(sub["table"]["fields"]) <= set(Limit.model_fields)
            if isinstance(sub, list):
                assert set(sub) - {""} == literals(model.model_fields[name].annotation)
    for section, model in (("tiers", Tiers), ("routes", Routes), ("fallback", Fallback), ("budgets", Budgets)):
        check(FORMS[section], model)
    assert set(FORMS["quotas"]["table"]["fields"]) == set(Quota.model_fields)
    assert set(FORMS) <= set(Rules.model_fields)


def test_the_users_layer_is_only_what_differs_from_the_defaults():
    defaults = yaml.safe_load(DEFAULT_RULES_PATH.read_text())
    # a changed tier, the default alias kept: only the tier is written
    assert user_layer(defaults["tiers"], {"big": "openrouter:x/y"}, ("tiers",)) == {"big": "openrouter:x/y"}
    assert user_layer(defaults["aliases"], dict(defaults["aliases"]), ("aliases",)) is rules_page._SAME
    # a default entry dropped from a named table is removed with null; a changed one is written whole
    edited = {"d": "openrouter:deepseek/other", "k": defaults["launch_tiers"]["k"], "q": defaults["launch_tiers"]["q"]}
    assert user_layer(defaults["launch_tiers"], edited, ("launch_tiers",)) == {"d": "openrouter:deepseek/other", "n": None}
    # a section merged field by field: an unchanged field left out, a blanked one nulled (its default back)
    assert user_layer(defaults["fallback"], {"method": "cascade", "sort": "throughput"}, ("fallback",)) == {"method": "cascade"}
    assert user_layer(defaults["fallback"], {"sort": "throughput"}, ("fallback",)) == {"method": None}
    # a section the defaults do not have: all of it
    assert user_layer(None, {"over": "free"}, ("budgets",)) == {"over": "free"}


def test_a_form_save_writes_only_the_difference_keeps_a_backup_and_loads(tmp_path):
    target = tmp_path / "rules.yaml"
    target.write_text(USER)
    value = {"big": "openrouter:z-ai/glm-5", "middle": "", "small": None}
    rules = save(target, Save(rules_page.digest(USER), section="tiers", value=value))
    assert rules.tiers.big == "openrouter:z-ai/glm-5" and rules.tiers.middle is None
    data = yaml.safe_load(target.read_text())
    assert data == {"version": 1, "tiers": {"big": "openrouter:z-ai/glm-5"},
                    "cascades": {"openrouter:moonshotai/kimi-k2.6": ["openrouter:deepseek/deepseek-v4-flash"]}}
    assert target.read_text().startswith("# Written by Clutch's rules page")
    assert (tmp_path / "rules.yaml.bak").read_text() == USER  # the comments live on in the backup
    assert load_layered(RulesSource(target, True)).tiers.big == "openrouter:z-ai/glm-5"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    # the aliases form sent back unchanged: no aliases section at all
    state = state_of(target)
    save(target, Save(state["base"], section="aliases", value=state["sections"]["aliases"]["value"]))
    assert "aliases" not in yaml.safe_load(target.read_text())


def test_the_yaml_editor_keeps_comments(tmp_path):
    target = tmp_path / "rules.yaml"
    target.write_text(USER)
    text = USER + "# and a comment at the end\nlaunch_tiers: {k: null}\n"
    rules = save(target, Save(rules_page.digest(USER), text=text))
    assert target.read_text() == text and "k" not in rules.launch_tiers


@pytest.mark.parametrize("section,value,field", [
    ("tiers", {"big": "nowhere:model"}, "tiers.big"),
    ("quotas", {"openrouter": {"rpm": "many"}}, "quotas.openrouter.rpm"),
    ("cascades", {"openrouter:a/b": ["openrouter:c/d", "bad target"]}, "cascades.openrouter:a/b.1"),
    ("fallback", {"method": "sideways"}, "fallback.method"),
    ("budgets", {"agents": {"claude": {"usd_per_day": -1}}}, "budgets.agents.claude.usd_per_day"),
])
def test_an_invalid_edit_names_its_field_and_writes_nothing(tmp_path, section, value, field):
    target = tmp_path / "rules.yaml"
    target.write_text(USER)
    with pytest.raises(SaveRefused) as caught:
        save(target, Save(rules_page.digest(USER), section=section, value=value))
    assert caught.value.status == 422 and caught.value.field == field
    assert caught.value.message.startswith(str(target)) and ".tmp" not in caught.value.message
    assert target.read_text() == USER and not (tmp_path / "rules.yaml.bak").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rules.yaml"]


def test_a_save_over_a_file_changed_since_the_page_read_it_is_refused(tmp_path):
    target = tmp_path / "rules.yaml"
    target.write_text(USER)
    with pytest.raises(SaveRefused) as caught:
        save(target, Save(rules_page.digest("something older"), section="tiers", value={}))
    assert caught.value.status == 409 and target.read_text() == USER


def test_the_first_save_creates_the_file_in_a_private_folder(tmp_path):
    target = tmp_path / "config" / "clutch" / "rules.yaml"
    save(target, Save("", section="tiers", value={"big": "openrouter:x/y"}))
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert yaml.safe_load(target.read_text()) == {"version": 1, "tiers": {"big": "openrouter:x/y"}}
    assert not target.with_name("rules.yaml.bak").exists()


@pytest.mark.parametrize("raw,status", [
    (b"x" * (rules_page.MAX_BODY_BYTES + 1), 413),
    (b"not json", 400),
    (b"[" * 100000, 400),
    (b'{"section": "tiers", "value": {}}', 400),  # no base
    (b'{"base": "", "section": "providers", "value": {}}', 400),  # not a form's section
    (b'{"base": "", "section": "tiers", "value": []}', 400),
    (b'{"base": "", "yaml": 3}', 400),
])
def test_a_malformed_save_is_refused(raw, status):
    with pytest.raises(SaveRefused) as caught:
        parse_save(raw)
    assert caught.value.status == status


JSON = {"content-type": "application/json", "x-clutch-token": TOKEN}


@pytest.mark.parametrize("host,headers,loopback,status", [
    ("127.0.0.1:8780", {"content-type": "application/json"}, True, 403),  # no token
    ("127.0.0.1:8780", {**JSON, "x-clutch-token": "u" * 43}, True, 403),  # a wrong one
    ("127.0.0.1:8780", {**JSON, "origin": "http://evil.example"}, True, 403),
    ("127.0.0.1:8780", {**JSON, "origin": "http://localhost:8780"}, True, 403),  # another origin, same port
    ("127.0.0.1:8780", {**JSON, "origin": "null"}, True, 403),
    ("127.0.0.1:8780", {**JSON, "sec-fetch-site": "cross-site"}, True, 403),
    ("127.0.0.1:8780", {**JSON, "sec-fetch-site": "same-site"}, True, 403),
    ("evil.example:8780", JSON, True, 403),  # DNS rebinding
    ("clutch.local", JSON, True, 403),
    ("127.0.0.1:8780", {**JSON, "content-type": "text/plain"}, True, 403),
    ("127.0.0.1:8780", {**JSON, "content-type": "application/x-www-form-urlencoded"}, True, 403),
    ("127.0.0.1:8780", JSON, False, 403),
])
def test_who_may_not_save(host, headers, loopback, status):
    refused = save_refusal("POST", host, headers, loopback, TOKEN)
    assert refused is not None and refused[0] == status
    assert TOKEN not in refused[1] and "u" * 43 not in refused[1]


@pytest.mark.parametrize("host,headers", [
    ("127.0.0.1:8780", JSON),  # a local client
    ("127.0.0.1:8780", {**JSON, "origin": "http://127.0.0.1:8780", "sec-fetch-site": "same-origin"}),  # the page
    ("localhost:8780", {**JSON, "origin": "http://localhost:8780", "sec-fetch-site": "same-origin"}),
    ("[::1]:8780", {**JSON, "origin": "http://[::1]:8780"}),
])
def test_who_may_save(host, headers):
    assert save_refusal("POST", host, headers, True, TOKEN) is None
    assert save_refusal("GET", host, headers, True, TOKEN)[0] == 405


def test_the_page_runs_only_its_own_script():
    headers = rules_page.headers()
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert policy.count("'sha256-") == 1 and "frame-ancestors 'none'" in policy
    assert b" src=" not in rules_page.rules_html() and b"https://" not in rules_page.rules_html()
    assert os.path.getsize(rules_page.PAGE) < 64 * 1024
