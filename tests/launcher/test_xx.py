"""`xx` as a user runs it: launch codes, the config, the gateway started on demand, the dry run, errors.

The agents here are fake executables that record argv and environment (tests/xx_rig.py); one of them
makes a real request with curl through the launch's proxy environment, so a launch is shown to reach
the fake provider through the gateway `xx` started. The real agents are in test_e2e_xx.py.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
from harness import first_content
from xx_rig import fake_agents, gateway_pid, recorded, run_xx, write_config, xx_env

from addons.wire.identity import identity_from_username

ANTHROPIC_BODY = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": False,
                             "messages": [{"role": "user", "content": "secret prompt text 7f3a"}]})


@pytest.fixture
def agents_bin(tmp_path):
    return fake_agents(tmp_path / "bin")


def journal(config: dict) -> list[dict]:
    return httpx.get(f"http://{config['gateway']}/requests", timeout=5, trust_env=False).json()["requests"]


def test_launch_starts_the_gateway_and_the_agent_reaches_the_provider_through_it(xx_home, agents_bin, tmp_path,
                                                                                   fake):
    home, config = xx_home
    record = tmp_path / "record"
    env = xx_env(home, agents_bin, XX_RECORD=str(record), ANTHROPIC_API_KEY="sk-ant-api03-xx-test",
                 XX_FAKE_REQUEST="https://api.anthropic.com/v1/messages", XX_FAKE_BODY=ANTHROPIC_BODY)
    assert gateway_pid(home) is None
    result = run_xx(env, "cnp", "-p", "say hi", "-s", "e2e-1")
    assert result.returncode == 0, result.stderr
    assert "starting the gateway" in result.stderr
    assert "pong from the fake upstream" in result.stdout  # curl's output: the fake's answer
    argv, seen_env = recorded(record)
    assert argv == ["--print", "--resume", "e2e-1", "--dangerously-skip-permissions", "say hi"]
    user = seen_env["HTTPS_PROXY"].removeprefix("http://").partition(":")[0]
    identity = identity_from_username(user)
    assert (identity.agent, identity.launch_code, identity.session) == ("claude", "cnp", "e2e-1")
    assert seen_env["NODE_EXTRA_CA_CERTS"] == str(home / "certs" / "mitmproxy-ca-cert.pem")

    entry = fake.wait_for(lambda e: first_content(e) == "secret prompt text 7f3a")
    assert entry["headers"]["x-api-key"] == "sk-ant-api03-xx-test" and "x-clutch-flow" in entry["headers"]
    seen = [e for e in journal(config) if e["launch"] == "cnp"]
    assert len(seen) == 1 and seen[0]["agent"] == "claude" and seen[0]["session"] == "e2e-1"
    assert seen[0]["status"] == 200
    assert "secret prompt" not in json.dumps(journal(config))  # the live view carries no prompt text

    # a second launch finds the gateway up and does not start another
    pid = gateway_pid(home)
    again = run_xx(env, "cnp", "-p", "again")
    assert again.returncode == 0 and "starting the gateway" not in again.stderr
    assert gateway_pid(home) == pid


def test_direct_route_never_touches_the_gateway(xx_home, agents_bin, tmp_path):
    home, _ = xx_home
    record = tmp_path / "record"
    env = xx_env(home, agents_bin, XX_RECORD=str(record), HTTPS_PROXY="http://corp:3128",
                 SSL_CERT_FILE="/corp.pem")
    result = run_xx(env, "xnd", "-p", "go")
    assert result.returncode == 0, result.stderr
    assert gateway_pid(home) is None  # not started
    argv, seen_env = recorded(record)
    assert argv == ["exec", "--skip-git-repo-check", "-c", "check_for_update_on_startup=false",
                    "--dangerously-bypass-approvals-and-sandbox", "go"]
    assert not {"HTTPS_PROXY", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"} & set(seen_env)


def test_dry_run_prints_and_runs_nothing(xx_home, agents_bin, tmp_path):
    home, config = xx_home
    record = tmp_path / "record"
    env = xx_env(home, agents_bin, XX_RECORD=str(record), OPENROUTER_API_KEY="sk-or-v1-very-secret")
    result = run_xx(env, "oip", "-m", "openrouter:moonshotai/kimi-k2.6", "--dry-run", "--", "--title", "x y")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "run  opencode --auto --title 'x y'"  # a Clutch pin is not the agent's own -m
    assert "xx-oip.m-" in result.stdout and ":****@" in result.stdout
    assert "xx would start it" in result.stdout
    assert "sk-or-v1-very-secret" not in result.stdout + result.stderr
    assert gateway_pid(home) is None and not record.with_suffix(".argv").exists()


def test_tier_letter_is_explained_from_the_rules(xx_home, agents_bin):
    home, _ = xx_home
    result = run_xx(xx_env(home, agents_bin), "hcpd", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "tier d: every request goes to openrouter:deepseek/deepseek-v4-flash" in result.stdout
    assert "run  hermes --yolo --continue" in result.stdout
    result = run_xx(xx_env(home, agents_bin), "hcpf", "--dry-run")
    assert "tier f has no model in launch_tiers" in result.stdout and "model scan" in result.stdout


def test_profiles_from_the_config(xx_home, agents_bin, fake, pki):
    home, config = xx_home
    write_config(home, fake.port, pki.ca_cert, gateway=config["gateway"], profiles={
        "3": {"name": "opus", "model": "anthropic:claude-opus-4-8", "env": {"DISABLE_AUTOUPDATER": "1",
                                                                        "MY_API_KEY": "sk-profile-secret"},
              "args": {"claude": ["--effort", "high"]}}})
    result = run_xx(xx_env(home, agents_bin), "cip3", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "run  claude --dangerously-skip-permissions --effort high"
    assert re.search(r"set   DISABLE_AUTOUPDATER +=  ?1\n", result.stdout)
    assert re.search(r"set   MY_API_KEY +=  ?\*\*\*\*\n", result.stdout)
    assert "sk-profile-secret" not in result.stdout
    assert "profile 3 (opus) pins" in result.stdout
    refused = run_xx(xx_env(home, agents_bin), "cip7", "--dry-run")
    assert refused.returncode == 2 and "profile 7 is neither in the xx config" in refused.stderr
    assert "defined: 3" in refused.stderr


def test_wrong_code_shows_the_table_and_the_nearest_code(xx_home):
    home, _ = xx_home
    result = run_xx(xx_env(home), "cpi")
    assert result.returncode == 2
    assert "did you mean `xx cip`?" in result.stderr and "agent  c claude" in result.stderr


def test_mode_an_agent_lacks_is_refused_with_what_it_offers(xx_home, agents_bin):
    home, _ = xx_home
    result = run_xx(xx_env(home, agents_bin), "orp")
    assert result.returncode == 2
    assert "OpenCode (opencode) does not support mode resume picker (r)" in result.stderr
    assert "It offers:" in result.stderr
    missing = run_xx(xx_env(home, agents_bin), "csp")
    assert missing.returncode == 2 and "give its id with -s ID" in missing.stderr


def test_missing_agent_says_how_to_install_it(xx_home, tmp_path):
    home, _ = xx_home
    only_claude = fake_agents(tmp_path / "only", ["claude"])
    result = run_xx(xx_env(home, only_claude), "gnd", "-p", "hi")
    assert result.returncode == 127
    assert "agy is not installed" in result.stderr and "installer" in result.stderr


def test_broken_config_names_file_and_line(xx_home):
    home, _ = xx_home
    (home / ".xx" / "config.json").write_text('{\n  "gateway": "127.0.0.1:8780",\n  "tmux": "often"\n}')
    result = run_xx(xx_env(home), "cip", "--dry-run")
    assert result.returncode == 2
    assert f"{home}/.xx/config.json:3: tmux: Input should be a valid boolean" in result.stderr


def test_auto_start_off_refuses_instead_of_starting(xx_home, agents_bin, fake, pki):
    home, config = xx_home
    write_config(home, fake.port, pki.ca_cert, gateway=config["gateway"], auto_start=False)
    result = run_xx(xx_env(home, agents_bin), "cip")
    assert result.returncode == 1 and "auto_start is off: run `xx start`" in result.stderr
    assert gateway_pid(home) is None
