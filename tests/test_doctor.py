"""`xx doctor`: each check on prepared folders, and the command's verdict."""

from __future__ import annotations

import os

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
    rules.write_text("version: 1\nproviders: {}\n")
    row = doctor.check_rules(doctor.XXConfig(rules=str(rules)))[0]
    assert row.status == doctor.FAIL and f"{rules}:2: providers" in row.detail
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
