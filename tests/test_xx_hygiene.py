"""Launch hygiene through the real `xx` entry (issue 14, point 10): every agent's self-updater is off
in what xx launches.

The agents are the rig's fake executables (tests/xx_rig.py), which record argv and environment; on
route p they run behind the real gateway `xx` starts. The real agents' own view of these switches is
in test_e2e_xx.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from xx_rig import gateway_pid, recorded, run_xx, write_config, xx_env

from addons.identity import AGENT_LETTERS
from launcher import updaters

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
