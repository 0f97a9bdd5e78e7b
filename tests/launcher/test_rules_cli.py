"""`./clutch init`, `./clutch rules check`, and the launcher's one view of the rules in force: `xx codes`
and `xx cnpk` agree, `xx doctor` names a missing key's variable and the keys file."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from xx_rig import run_xx, xx_env

from addons.config.layering import RulesSource, load_layered
from addons.config.rules import DEFAULT_RULES_PATH, load_rules, parse_rules

ROOT = Path(__file__).resolve().parents[2]
FIVE_LINES = """\
tiers:
  big: openrouter:moonshotai/kimi-k2.6
cascades:
  openrouter:moonshotai/kimi-k2.6: [openrouter:deepseek/deepseek-v4-flash]
"""


def clutch(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`./clutch ARGS` after its bootstrap, in a HOME of its own (no key variable set)."""
    environ = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "launcher.gateway", *args], env=environ, capture_output=True,
                          text=True, timeout=60, cwd=str(home))


def test_init_writes_a_starter_that_changes_nothing_and_refuses_to_overwrite(tmp_path):
    rules, keys = tmp_path / ".config" / "clutch" / "rules.yaml", tmp_path / ".config" / "clutch" / "keys.env"
    first = clutch(tmp_path, "init")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == f"clutch: wrote {rules}"
    assert rules.read_text() == (ROOT / "rules" / "starter.yaml").read_text() and not keys.exists()
    assert stat.S_IMODE(rules.parent.stat().st_mode) == 0o700
    assert load_layered(RulesSource(rules, True)).model_dump() == load_rules(DEFAULT_RULES_PATH).model_dump()

    rules.write_text("tiers: {big: 'openrouter:mine'}\n")
    again = clutch(tmp_path, "init")
    assert (again.returncode, again.stderr) == (1, f"clutch init: {rules} exists; --force replaces it\n")
    assert rules.read_text() == "tiers: {big: 'openrouter:mine'}\n"

    forced = clutch(tmp_path, "init", "--force", "--keys")
    assert forced.returncode == 0 and rules.read_text() == (ROOT / "rules" / "starter.yaml").read_text()
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600 and f"wrote {keys} (0600)" in forced.stdout
    keys.write_text("OPENROUTER_API_KEY=sk-or-v1-mine\n")
    kept = clutch(tmp_path, "init", "--force", "--keys")  # a keys file is never replaced
    assert f"{keys} exists; left as it is" in kept.stdout and keys.read_text() == "OPENROUTER_API_KEY=sk-or-v1-mine\n"


def test_each_block_of_the_starter_is_valid_once_uncommented(tmp_path):
    text = (ROOT / "rules" / "starter.yaml").read_text()
    blocks = [block for block in re.split(r"\n\s*\n", text) if re.search(r"^# [a-z_]+:$", block, re.M)]
    assert len(blocks) == 3
    for block in blocks:
        uncommented = "\n".join(line[2:] for line in block.splitlines() if re.match(r"# +[a-z_]+:( |$)", line))
        path = tmp_path / "block.yaml"
        path.write_text(uncommented)
        load_layered(RulesSource(path, True))


def test_rules_check_prints_the_rules_in_force_and_each_chain(tmp_path):
    rules = tmp_path / ".config" / "clutch" / "rules.yaml"
    rules.parent.mkdir(parents=True)
    rules.write_text(FIVE_LINES)
    result = clutch(tmp_path, "rules", "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"# The rules in force: {rules} over the embedded defaults"
    # the output is itself a rules file: the defaults and the five lines, whole
    printed = parse_rules(result.stdout, "printed.yaml")
    assert printed.model_dump() == load_layered(RulesSource(rules, True)).model_dump()
    assert set(printed.providers) == {"openrouter", "anthropic", "openai", "gemini", "ollama"}
    chains = [line.split() for line in result.stdout.splitlines() if line.startswith("#   ")]
    assert ["#", "tiers.big", "openrouter:moonshotai/kimi-k2.6", "->", "openrouter:deepseek/deepseek-v4-flash"] \
        in chains
    assert ["#", "launch_tiers.k", "openrouter:moonshotai/kimi-k2.6", "->",
            "openrouter:deepseek/deepseek-v4-flash"] in chains  # the cascade follows the model, whatever names it
    assert ["#", "launch_tiers.d", "openrouter:deepseek/deepseek-v4-flash"] in chains
    keys = tmp_path / ".config" / "clutch" / "keys.env"
    assert result.stderr.startswith(f"clutch: warning: provider openrouter has no key: OPENROUTER_API_KEY is set "
                                    f"neither in the environment nor in {keys}; what the rules send there "
                                    "(tiers.big, aliases.coder-model, launch_tiers.d and ")

    keys.write_text("OPENROUTER_API_KEY='sk-or-v1-0123456789'\n")
    keys.chmod(0o600)
    keyed = clutch(tmp_path, "rules", "check")
    assert keyed.returncode == 0 and keyed.stderr == "" and "sk-or-v1-0123456789" not in keyed.stdout


def test_rules_check_of_a_broken_file_is_one_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("# mine\ntiers:\n  big: nowhere:model\n")
    result = clutch(tmp_path, "rules", "check", str(broken))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"{broken}:3: tiers.big: target 'nowhere:model' names provider 'nowhere', which is not "
                             "in providers\n")
    via_variable = clutch(tmp_path, "rules", "check", CLUTCH_RULES=str(broken))
    assert via_variable.stderr == result.stderr


def test_xx_codes_and_a_launch_read_the_same_rules(tmp_path):
    home = tmp_path / "home"
    (home / ".xx").mkdir(parents=True)
    (home / ".xx" / "config.json").write_text('{"gateway": "127.0.0.1:9", "auto_start": false}')
    codes = run_xx(xx_env(home), "codes")
    assert "       k openrouter:moonshotai/kimi-k2.6" in codes.stdout.splitlines()
    rules = home / ".config" / "clutch" / "rules.yaml"
    rules.parent.mkdir(parents=True)
    rules.write_text("launch_tiers:\n  k: null\n  d: openrouter:mine/d\n")
    codes = run_xx(xx_env(home), "codes").stdout.splitlines()
    assert "       k none: the gateway routes as usual" in codes
    assert "       d openrouter:mine/d" in codes and "       q openrouter:qwen/qwen3-next-80b-a3b-instruct" in codes
    launch = run_xx(xx_env(home), "cnpk", "--dry-run", "-p", "hi")
    assert f"tier k has no model in launch_tiers of {rules} over the embedded defaults" in launch.stdout
    launch = run_xx(xx_env(home), "cnpq", "--dry-run", "-p", "hi")  # the defaults' q, which the file kept
    assert "tier q: every request goes to openrouter:qwen/qwen3-next-80b-a3b-instruct" in launch.stdout


def test_xx_doctor_names_a_missing_key_and_the_keys_file(tmp_path):
    home = tmp_path / "home"
    (home / ".xx").mkdir(parents=True)
    (home / ".xx" / "config.json").write_text('{"gateway": "127.0.0.1:9", "auto_start": false}')
    folder = home / ".config" / "clutch"
    folder.mkdir(parents=True)
    (folder / "rules.yaml").write_text(FIVE_LINES)
    keys = folder / "keys.env"

    def rows() -> dict[str, tuple[str, str]]:
        result = run_xx(xx_env(home), "doctor")
        return {name: (status, detail) for status, name, detail in
                (re.split(r"\s{2,}", line, maxsplit=2) for line in result.stdout.splitlines()
                 if re.match(r"(ok|warn|FAIL) ", line))}

    found = rows()
    assert found["rules"][1].startswith(f"{folder / 'rules.yaml'} over the embedded defaults: providers ")
    assert found["key openrouter"][0] == "warn"
    assert found["key openrouter"][1].startswith("OPENROUTER_API_KEY not set: what the rules send to openrouter "
                                                 "(tiers.big, aliases.coder-model, launch_tiers.d and ")
    assert found["key openrouter"][1].endswith(f"or as OPENROUTER_API_KEY=... in {keys}")
    keys.write_text("OPENROUTER_API_KEY=sk-or-v1-0123456789abcdef\n")
    keys.chmod(0o644)
    found = rows()
    assert found["keys file"] == ("FAIL", f"{keys}: group or others may read the keys file (mode 0644); Clutch does "
                                          f"not use it until `chmod 600 {keys}`")
    keys.chmod(0o600)
    found = rows()
    assert found["keys file"] == ("ok", f"{keys}: 1 variable(s), readable by you alone")
    assert found["key openrouter"] == ("ok", f"OPENROUTER_API_KEY set (sk-or-…, 25 characters) in {keys}")

