"""`xx doctor`: each check on prepared folders, and the command's verdict."""

from __future__ import annotations

import os
import re

from addons.certs import prepare
from launcher import doctor
from xx_rig import fake_agents, run_xx, xx_env


def by_name(rows):
    return {row.name: row for row in rows}


def test_ca_permissions_are_checked(tmp_path):
    folder = tmp_path / "certs"
    assert doctor.check_ca(folder)[0].status == doctor.WARN  # not created yet
    files = prepare(folder)
    rows = by_name(doctor.check_ca(folder))
    assert rows["CA folder permissions"].status == rows["CA key permissions"].status == doctor.OK
    os.chmod(files.ca_key, 0o644)
    os.chmod(folder, 0o755)
    rows = by_name(doctor.check_ca(folder))
    assert rows["CA key permissions"].status == doctor.FAIL and "chmod 600" in rows["CA key permissions"].detail
    assert rows["CA folder permissions"].status == doctor.FAIL and "chmod 700" in rows["CA folder permissions"].detail


def test_rules_and_config_problems_are_failures(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nproviders:\n  ghost: {base_url: nope, dialects: [openai_chat]}\n")
    row = doctor.check_rules(doctor.XXConfig(rules=str(rules)), {"HOME": str(tmp_path)})[0]
    assert row.status == doctor.FAIL and f"{rules}:3: providers.ghost.base_url" in row.detail
    (tmp_path / ".xx").mkdir()
    (tmp_path / ".xx" / "config.json").write_text('{"gateway": 1}')
    rows, _ = doctor.check_config({"HOME": str(tmp_path)})
    assert rows[0].status == doctor.FAIL and "config.json:1: gateway" in rows[0].detail


def test_agents_and_versions(tmp_path):
    folder = fake_agents(tmp_path / "bin", ["claude", "pi"])
    rows = by_name(doctor.check_agents({"PATH": f"{folder}:/usr/bin:/bin"}))
    assert rows["agent claude"].status == doctor.OK and "fake claude 1.2.3" in rows["agent claude"].detail
    assert rows["agent codex"].status == doctor.WARN and "npm install -g @openai/codex" in rows["agent codex"].detail


def test_the_command(tmp_path):
    home = tmp_path / "home"
    (home / ".xx").mkdir(parents=True)
    (home / ".xx" / "config.json").write_text(f'{{"gateway": "127.0.0.1:9", "confdir": "{home / "certs"}"}}')
    prepare(home / "certs")
    result = run_xx(xx_env(home, fake_agents(tmp_path / "bin", ["claude"])), "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    agent claude" in result.stdout and "fake claude 1.2.3" in result.stdout
    assert "ok    gateway" in result.stdout and "not running; port 9 is free" in result.stdout
    assert "0 problem(s)" in result.stdout
    os.chmod(home / "certs" / "mitmproxy-ca.pem", 0o644)
    result = run_xx(xx_env(home), "doctor")
    assert result.returncode == 1 and "1 problem(s)" in result.stdout


# ---- provider keys: each provider of the effective rules ----

KEY = "sk-or-v1-0123456789abcdef0123456789abcdef"
RULES = """version: 1
providers:
  openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat],
               key_env: OPENROUTER_API_KEY}
  anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], key_env: ANTHROPIC_API_KEY}
  openai: {base_url: "https://api.openai.com/v1", dialects: [openai_chat], key_env: OPENAI_API_KEY}
  ollama: {base_url: "http://127.0.0.1:11434/v1", dialects: [openai_chat]}
tiers: {big: "anthropic:claude-opus-4-8"}
launch_tiers: {d: "openrouter:deepseek/deepseek-v4-flash", k: "openrouter:moonshotai/kimi-k2.6"}
"""


def test_provider_keys_are_checked_and_never_shown(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    keys_file = tmp_path / ".config" / "clutch" / "keys.env"
    environ = {"HOME": str(tmp_path), "OPENROUTER_API_KEY": KEY}
    rows = by_name(doctor.check_provider_keys(doctor.XXConfig(rules=str(rules)), environ, None))
    assert rows["provider keys"].detail == ("read in this shell's environment, which a gateway xx starts gets, "
                                            f"then {keys_file}")
    assert rows["keys file"].detail == f"none at {keys_file} (optional: NAME=value lines, chmod 600)"
    assert rows["key openrouter"].status == doctor.OK
    assert rows["key openrouter"].detail == "OPENROUTER_API_KEY set (sk-or-…, 41 characters)"
    assert rows["key anthropic"].status == doctor.WARN  # tiers.big sends requests there
    assert rows["key anthropic"].detail == ('ANTHROPIC_API_KEY not set: what the rules send to anthropic (tiers.big) '
                                            'fails with "missing key"; set it in the environment before the gateway '
                                            f'starts, or as ANTHROPIC_API_KEY=... in {keys_file}')
    assert rows["key openai"].status == doctor.OK and "no rule sends requests to openai" in rows["key openai"].detail
    assert rows["key ollama"].detail == "no key in the rules: requests sent there carry no key"
    short = by_name(doctor.check_provider_keys(doctor.XXConfig(rules=str(rules)),
                                               {**environ, "OPENROUTER_API_KEY": "abcdefg"}, None))
    assert short["key openrouter"].detail == "OPENROUTER_API_KEY set (a…, 7 characters)"  # a quarter at most
    rules.write_text("version: 1\nproviders:\n  ghost: {base_url: nope, dialects: [openai_chat]}\n")
    broken = doctor.check_provider_keys(doctor.XXConfig(rules=str(rules)), environ, None)
    assert [(row.status, row.name) for row in broken] == [(doctor.WARN, "provider keys")]


def test_the_running_gateways_own_keys_count(xx_home, tmp_path, fake, pki):
    """A running gateway keeps the environment it started with: a key exported later in this shell
    does not reach it, and one this shell lacks may be there. The doctor reads the gateway's."""
    from xx_rig import write_config
    home, config = xx_home
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    write_config(home, fake.port, pki.ca_cert, gateway=config["gateway"], rules=str(rules))
    started = run_xx(xx_env(home, OPENROUTER_API_KEY=KEY), "start")
    assert started.returncode == 0, started.stderr
    pid = int((home / ".xx" / "gateway.pid").read_text())
    result = run_xx(xx_env(home, ANTHROPIC_API_KEY="sk-ant-api03-only-in-this-shell"), "doctor")
    rows = {name: (status, detail) for status, name, detail in
            (re.split(r"\s{2,}", line, maxsplit=2) for line in result.stdout.splitlines()[:-2] if line)}
    assert rows["provider keys"] == ("ok", f"read in the running gateway's environment (pid {pid}), "
                                           f"then {home / '.config' / 'clutch' / 'keys.env'}")
    assert rows["key openrouter"] == ("ok", "OPENROUTER_API_KEY set (sk-or-…, 41 characters)")
    assert rows["key anthropic"][0] == "warn" and rows["key anthropic"][1].endswith(
        f"set it in the environment and run `xx restart`, or as ANTHROPIC_API_KEY=... in "
        f"{home / '.config' / 'clutch' / 'keys.env'}")
    assert KEY not in result.stdout + result.stderr and "only-in-this-shell" not in result.stdout + result.stderr
