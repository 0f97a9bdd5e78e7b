"""Launch hygiene through the real `xx` entry (issue 14, point 10): every agent's self-updater is off
in what xx launches, Claude Code sent away from Anthropic without a key is told so before it starts,
and a misspelled subcommand is named as such instead of becoming a launch code.

The agents are the rig's fake executables (tests/xx_rig.py), which record argv and environment; on
route p they run behind the real gateway `xx` starts. The real agents' own view of these switches is
in test_e2e_xx.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from xx_rig import gateway_pid, recorded, run_xx, write_config, xx_env

from addons.wire.identity import AGENT_LETTERS
from launcher import updaters
from launcher.codes import all_codes, mistyped_command, parse_code
from launcher.xx import COMMANDS

LETTER = {agent: letter for letter, agent in AGENT_LETTERS.items()}
# agent -> the switch each launch must carry: ("env", name, value) or ("args", words); None: the
# agent has no switch (Hermes, Ante: launcher/updaters.py says why)
SWITCH = {
    "claude": ("env", "DISABLE_AUTOUPDATER", "1"),
    "codex": ("args", ["-c", "check_for_update_on_startup=false"]),
    "opencode": ("env", "OPENCODE_DISABLE_AUTOUPDATE", "1"),
    "qwen": ("env", "QWEN_CODE_SYSTEM_DEFAULTS_PATH", None),  # a file: checked below
    "pi": ("env", "PI_SKIP_VERSION_CHECK", "1"),
    "hermes": None,
    "ante": None,
    "antigravity": ("env", "AGY_CLI_DISABLE_AUTO_UPDATE", "true"),
    "openclaw": ("env", "OPENCLAW_NO_AUTO_UPDATE", "1"),
}
EVERY_SWITCH_VARIABLE = {switch[1] for switch in SWITCH.values() if switch and switch[0] == "env"}


@pytest.fixture
def agents_bin(tmp_path):
    from xx_rig import fake_agents
    return fake_agents(tmp_path / "bin")


def assert_switch_on(agent: str, argv: list[str], env: dict[str, str]) -> None:
    switch = SWITCH[agent]
    if switch is None:
        assert not EVERY_SWITCH_VARIABLE & set(env), agent
        return
    if switch[0] == "args":
        assert switch[1] == argv[argv.index("-c"):argv.index("-c") + 2], argv
        return
    _, name, value = switch
    if value is not None:
        assert env[name] == value, (agent, name)
    else:  # Qwen Code: its system-defaults settings layer, turning general.enableAutoUpdate off
        settings = json.loads(Path(env[name]).read_text())
        assert settings["general"] == {"enableAutoUpdate": False} and settings["$version"] == 4


# ---- 1. self-updaters off ----

def test_every_agent_gets_its_self_updater_switch_on_the_proxy_and_direct_routes(xx_home, agents_bin, tmp_path):
    home, config = xx_home
    record = tmp_path / "record"
    env = xx_env(home, agents_bin, XX_RECORD=str(record))
    for agent in SWITCH:
        for route in "pd":
            result = run_xx(env, f"{LETTER[agent]}i{route}")
            assert result.returncode == 0, (agent, route, result.stderr)
            argv, seen = recorded(record)
            assert ("HTTPS_PROXY" in seen) == (route == "p"), (agent, route)
            assert_switch_on(agent, argv, seen)
    assert gateway_pid(home) is not None  # the p launches went through the gateway xx started


def test_the_dry_run_shows_each_switch(xx_home, agents_bin):
    home, _ = xx_home
    for agent, switch in SWITCH.items():
        result = run_xx(xx_env(home, agents_bin), f"{LETTER[agent]}id", "--dry-run")
        assert result.returncode == 0, result.stderr
        line = next(line for line in result.stdout.splitlines() if line.startswith("updates  "))
        if switch is None:
            assert line.startswith("updates  none: "), line
        elif switch[0] == "args":
            assert line.startswith("updates  off by -c check_for_update_on_startup=false: ")
            assert "-c check_for_update_on_startup=false" in result.stdout.splitlines()[0]
        else:
            assert line.startswith(f"updates  off by {switch[1]}="), line
            assert f"  set   {switch[1]} " in result.stdout


def test_the_users_own_setting_wins(xx_home, agents_bin, tmp_path, fake, pki):
    home, config = xx_home
    record = tmp_path / "record"
    env = xx_env(home, agents_bin, XX_RECORD=str(record), DISABLE_AUTOUPDATER="0")
    assert run_xx(env, "cid").returncode == 0
    assert recorded(record)[1]["DISABLE_AUTOUPDATER"] == "0"
    shown = run_xx(env, "cid", "--dry-run").stdout
    assert "updates  yours: DISABLE_AUTOUPDATER=0 decides about Claude Code's auto-updater" in shown
    assert "DISABLE_AUTOUPDATER" not in shown.split("\nupdates")[0]  # not among the changes

    env = xx_env(home, agents_bin, XX_RECORD=str(record))
    assert run_xx(env, "xid", "--", "-c", "check_for_update_on_startup=true").returncode == 0
    argv = recorded(record)[0]
    assert "check_for_update_on_startup=false" not in argv and argv[-2:] == ["-c", "check_for_update_on_startup=true"]

    # a profile's env is the user's too
    write_config(home, fake.port, pki.ca_cert, gateway=config["gateway"],
                 profiles={"4": {"env": {"OPENCODE_DISABLE_AUTOUPDATE": "0"}}})
    assert run_xx(env, "oid4").returncode == 0
    assert recorded(record)[1]["OPENCODE_DISABLE_AUTOUPDATE"] == "0"


def test_qwen_leaves_a_machine_wide_defaults_file_alone(tmp_path):
    """Qwen Code's switch is its system-defaults layer: where the machine has one, xx must not hide
    it (it cannot be created under /etc in a test, hence the injected check)."""
    machine = updaters.UPDATERS["qwen"].unless_files[0]
    switches, line = updaters.env_for("qwen", {}, exists=lambda path: path == machine)
    assert switches == {} and line.startswith(f"as configured: {machine} exists")
    switches, line = updaters.env_for("qwen", {}, exists=lambda path: False)
    assert switches == {"QWEN_CODE_SYSTEM_DEFAULTS_PATH": str(updaters.QWEN_DEFAULTS)}


# ---- 2. Claude Code sent away from Anthropic without a key ----

PLACEHOLDER = "clutch-placeholder-not-an-anthropic-key"


def claude_env(home, agents_bin, record, **more):
    return xx_env(home, agents_bin, XX_RECORD=str(record), OPENROUTER_API_KEY="sk-or-v1-hygiene", **more)


def test_a_pinned_launch_without_key_or_login_gets_a_placeholder_and_says_so(xx_home, agents_bin, tmp_path):
    home, _ = xx_home
    record = tmp_path / "record"
    result = run_xx(claude_env(home, agents_bin, record), "cnpd", "-p", "hi")
    assert result.returncode == 0, result.stderr
    assert ("xx: every request of this launch leaves Anthropic (launch_tiers.d -> "
            "openrouter:deepseek/deepseek-v4-flash; rules: the gateway's rules") in result.stderr
    assert "Claude Code has no key or login: xx sets ANTHROPIC_AUTH_TOKEN to a placeholder" in result.stderr
    assert recorded(record)[1]["ANTHROPIC_AUTH_TOKEN"] == PLACEHOLDER
    assert record.with_suffix(".auth").read_text() == "asked\n"  # `claude auth status` was asked

    # -m provider:model pins the launch too; the dry run shows the same (masked: a *TOKEN variable)
    shown = run_xx(claude_env(home, agents_bin, record), "cip", "-m", "openrouter:qwen/qwen3-coder", "--dry-run")
    assert "set   ANTHROPIC_AUTH_TOKEN = ****" in shown.stdout
    assert "note every request of this launch leaves Anthropic (the launch's pin -> openrouter:qwen/qwen3-coder" \
        in shown.stdout


def test_no_note_with_a_key_a_login_or_a_route_that_keeps_anthropic(xx_home, agents_bin, tmp_path):
    home, _ = xx_home
    record = tmp_path / "record"
    cases = [(("cnpd", "-p", "hi"), {"ANTHROPIC_API_KEY": "sk-ant-api03-own"}, False),
             (("cnpd", "-p", "hi"), {"ANTHROPIC_AUTH_TOKEN": "own-token"}, False),
             (("cnpd", "-p", "hi"), {"XX_FAKE_LOGGED_IN": "1"}, True),  # a login of its own (OAuth...)
             (("cnp", "-p", "hi"), {}, False),  # the default rules keep Claude Code on Anthropic
             (("cnbd", "-p", "hi"), {}, False),  # route b never changes the model
             (("cndd", "-p", "hi"), {}, False)]  # route d does not pass through Clutch
    for args, more, asked in cases:
        record.with_suffix(".auth").unlink(missing_ok=True)
        result = run_xx(claude_env(home, agents_bin, record, **more), *args)
        assert result.returncode == 0, result.stderr
        assert "leaves Anthropic" not in result.stderr and "neither ANTHROPIC_API_KEY" not in result.stderr, args
        seen = recorded(record)[1]
        assert seen.get("ANTHROPIC_AUTH_TOKEN") == more.get("ANTHROPIC_AUTH_TOKEN"), (args, more)
        assert record.with_suffix(".auth").exists() == asked, (args, more)


def test_some_requests_routed_away_get_a_note_and_no_placeholder(xx_home, agents_bin, tmp_path, fake, pki):
    home, config = xx_home
    rules = tmp_path / "rules.yaml"
    default = (Path(__file__).resolve().parents[2] / "rules" / "default.yaml").read_text()
    rules.write_text(default.replace("profiles: {}\n", "") + "\n".join([
        "", "profiles:", "  claude:", "    tiers:", "      small: openrouter:qwen/qwen3-coder",
        '  "5":', "    routes:", "      think: openrouter:moonshotai/kimi-k2.6", ""]))
    write_config(home, fake.port, pki.ca_cert, gateway=config["gateway"], rules=str(rules))
    record = tmp_path / "record"
    for code, away in (("cnp", "tiers.small -> openrouter:qwen/qwen3-coder"),
                       ("cnp5", "tiers.small -> openrouter:qwen/qwen3-coder, routes.think -> "
                                "openrouter:moonshotai/kimi-k2.6")):
        result = run_xx(claude_env(home, agents_bin, record), code, "-p", "hi")
        assert result.returncode == 0, result.stderr
        assert (f"xx: Claude Code has neither ANTHROPIC_API_KEY nor ANTHROPIC_AUTH_TOKEN, and some of its requests "
                f"go to other providers ({away}; rules: ") in result.stderr, result.stderr
        assert 'Claude Code stops with "Not logged in · Please run /login". Set ANTHROPIC_API_KEY' in result.stderr
        assert "ANTHROPIC_AUTH_TOKEN" not in recorded(record)[1]


def test_the_rules_in_force_decide_the_gateways_when_it_runs(xx_home, agents_bin, tmp_path):
    """No gateway: the rules xx would start it on, with the overrides of the environment it would get
    (claude-code-proxy's BIG_MODEL); a running gateway: its own rules, whatever this shell says."""
    home, _ = xx_home
    record = tmp_path / "record"
    big = claude_env(home, agents_bin, record, BIG_MODEL="openrouter:x-ai/grok-4")
    shown = run_xx(big, "cnp", "-p", "hi", "--dry-run")
    assert "some of its requests go to other providers (tiers.big -> openrouter:x-ai/grok-4; rules: " \
        in shown.stdout, shown.stdout
    assert run_xx(claude_env(home, agents_bin, record), "cnp", "-p", "hi").returncode == 0  # starts the gateway
    result = run_xx(big, "cnp", "-p", "hi")
    assert result.returncode == 0 and "other providers" not in result.stderr


# ---- 4. misspelled subcommands ----

@pytest.mark.parametrize("word,command", [("doctr", "doctor"), ("stauts", "status"), ("stpo", "stop"),
                                          ("wacth", "watch"), ("usgae", "usage")])
def test_a_misspelled_subcommand_is_named_and_starts_nothing(xx_home, agents_bin, tmp_path, word, command):
    home, _ = xx_home
    record = tmp_path / "record"
    result = run_xx(xx_env(home, agents_bin, XX_RECORD=str(record)), word)
    assert result.returncode == 2
    assert result.stderr == f"xx: unknown command {word!r}; did you mean `xx {command}`?\n"
    assert result.stdout == ""
    assert gateway_pid(home) is None and not list(tmp_path.glob("record*"))


def test_other_words_keep_the_launch_code_error_and_start_nothing(xx_home, agents_bin, tmp_path):
    home, _ = xx_home
    record = tmp_path / "record"
    for word, nearest in (("cpi", "cip"), ("zzqy", None)):
        result = run_xx(xx_env(home, agents_bin, XX_RECORD=str(record)), word)
        assert result.returncode == 2 and "unknown command" not in result.stderr
        assert f"xx {word!r}: " in result.stderr and "agent  c claude" in result.stderr  # the letters table
        if nearest:
            assert f"did you mean `xx {nearest}`?" in result.stderr  # a suggestion, never run by itself
    assert gateway_pid(home) is None and not list(tmp_path.glob("record*"))
    valid = run_xx(xx_env(home, agents_bin, XX_RECORD=str(record)), "cid")
    assert valid.returncode == 0 and recorded(record)[0] == ["--dangerously-skip-permissions"]


def test_no_valid_launch_code_is_taken_for_a_misspelled_subcommand():
    codes = all_codes()
    assert len(codes) == 9 * 5 * 3 * 17
    for code in codes:
        parse_code(code)
        assert mistyped_command(code, COMMANDS) is None, code
    # ... nor is a subcommand itself, nor an invalid code one edit from a valid one
    assert all(mistyped_command(command, COMMANDS) is None for command in COMMANDS)
    assert mistyped_command("cpi", COMMANDS) is None and mistyped_command("xnpp", COMMANDS) is None
