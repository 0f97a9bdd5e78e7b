"""`xx aliases`: the marked block in a shell rc file (idempotent, removable, backed up), and a real
bash that sources it and runs an alias through xx (dry run)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ROOT

from launcher import aliases
from launcher.codes import parse_code

CLUTCH = ROOT / "clutch"
USER_RC = "# my settings\nexport EDITOR=vi\nalias ll='ls -l'\n"


def backups(rc: Path) -> list[Path]:
    return sorted(rc.parent.glob(rc.name + ".xx-backup-*"))


def test_install_is_idempotent_and_backs_up(tmp_path):
    rc = tmp_path / ".bashrc"
    rc.write_text(USER_RC)
    rc.chmod(0o600)
    changed, backup = aliases.install(rc, CLUTCH)
    assert changed and backup is not None and backup.read_text() == USER_RC
    text = rc.read_text()
    assert text.startswith(USER_RC) and text.count(aliases.BEGIN) == 1 and text.count(aliases.END) == 1
    assert oct(rc.stat().st_mode & 0o777) == "0o600"  # the user's mode is kept
    assert aliases.install(rc, CLUTCH) == (False, None)  # a second install changes nothing
    assert rc.read_text() == text and len(backups(rc)) == 1


def test_install_replaces_an_old_block_in_place(tmp_path):
    rc = tmp_path / ".zshrc"
    rc.write_text(USER_RC + f"{aliases.BEGIN}\nalias cc='old'\n{aliases.END}\n# after the block\n")
    aliases.install(rc, CLUTCH)
    text = rc.read_text()
    assert "alias cc='old'" not in text and "alias cc='xx cip'" in text
    assert text.startswith(USER_RC) and text.endswith("# after the block\n")


def test_remove_takes_out_only_the_block(tmp_path):
    rc = tmp_path / ".bashrc"
    rc.write_text(USER_RC)
    aliases.install(rc, CLUTCH)
    changed, backup = aliases.remove(rc)
    assert changed and backup is not None and aliases.BEGIN in backup.read_text()
    assert rc.read_text() == USER_RC + "\n"  # the blank line that separated the block stays
    assert aliases.remove(rc) == (False, None)


def test_missing_end_marker_is_refused_without_writing(tmp_path):
    rc = tmp_path / ".bashrc"
    broken = USER_RC + aliases.BEGIN + "\nalias cc='x'\n"
    rc.write_text(broken)
    with pytest.raises(ValueError, match="end marker"):
        aliases.remove(rc)
    with pytest.raises(ValueError, match="end marker"):
        aliases.install(rc, CLUTCH)
    assert rc.read_text() == broken and not backups(rc)


def test_a_symlinked_rc_stays_a_symlink(tmp_path):
    real = tmp_path / "dotfiles" / "bashrc"
    real.parent.mkdir()
    real.write_text(USER_RC)
    rc = tmp_path / ".bashrc"
    rc.symlink_to(real)
    aliases.install(rc, CLUTCH)
    assert rc.is_symlink() and aliases.BEGIN in real.read_text()


def test_default_rc_follows_the_shell(tmp_path):
    assert aliases.default_rc({"HOME": str(tmp_path), "SHELL": "/usr/bin/zsh"}) == tmp_path / ".zshrc"
    assert aliases.default_rc({"HOME": str(tmp_path), "SHELL": "/bin/bash"}) == tmp_path / ".bashrc"


def test_every_alias_is_a_valid_launch_code():
    for name, (arguments, _) in aliases.ALIASES.items():
        parse_code(arguments.split()[0])
    for classic in ("cc", "ccc", "cc-debug", "cc-ds", "hsi", "hsr", "hsi-bp", "psi", "psi-c", "psi-ds",
                    "codex-run", "codex-res", "qw", "antigravity", "ante", "oc"):
        assert classic in aliases.ALIASES


@pytest.mark.parametrize("line,expected_run", [
    ("cc", "run  claude --dangerously-skip-permissions"),
    ("cc-debug", "run  claude --dangerously-skip-permissions --debug"),
    ("hsr 20260101_abc", "run  hermes -r 20260101_abc --yolo"),
    ("codex-run 'fix the test'", "run  codex exec --skip-git-repo-check -c check_for_update_on_startup=false "
                                 "--dangerously-bypass-approvals-and-sandbox 'fix the test'"),
])
def test_bash_runs_the_aliases_through_xx(tmp_path, line, expected_run):
    rc = tmp_path / ".bashrc"
    aliases.install(rc, CLUTCH)
    home = tmp_path / "home"
    home.mkdir()
    # the dry run needs no gateway: point xx at a port nothing listens on, and keep it from starting one
    (home / ".xx").mkdir()
    (home / ".xx" / "config.json").write_text('{"gateway": "127.0.0.1:9", "auto_start": false}')
    script = f"shopt -s expand_aliases\nsource {rc}\n{line}\n"
    # XX_DRY_RUN: an alias that ends in `-- args` would pass a trailing --dry-run to the agent
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "XX_DRY_RUN": "1"}
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == expected_run


# ------------------------------------------------------------------ names the user already has

FAKE_COMMAND = "#!/bin/sh\necho \"the real $(basename \"$0\") $*\"\n"


@pytest.fixture
def user_shell(tmp_path):
    """A HOME whose PATH has `cc` and `ccr` commands (the C compiler, claude-code-router), a .bashrc
    that defines an alias `qw` and a function `oc` and sources ~/.bash_aliases, which defines `claw`."""
    home = tmp_path / "home"
    home.mkdir()
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    for name in ("cc", "ccr"):
        (bin_folder / name).write_text(FAKE_COMMAND)
        (bin_folder / name).chmod(0o755)
    (home / ".bashrc").write_text("# my settings\nalias qw='echo my qw'\noc() { echo my oc; }\n"
                                  "if [ -f ~/.bash_aliases ]; then . ~/.bash_aliases; fi\n")
    (home / ".bash_aliases").write_text("alias ll='ls -l' claw='echo my claw'\n")
    (home / ".xx").mkdir()  # the dry run needs no gateway (see test_bash_runs_the_aliases_through_xx)
    (home / ".xx" / "config.json").write_text('{"gateway": "127.0.0.1:9", "auto_start": false}')
    env = {"PATH": f"{bin_folder}:{os.environ['PATH']}", "HOME": str(home), "LANG": "C.UTF-8",
           "PYTHONPATH": str(ROOT), "SHELL": "/bin/bash", "COLUMNS": "100"}
    return home, env


def xx_aliases(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher.xx", "aliases", *args], env=env, capture_output=True,
                          text=True, timeout=60, cwd=env["HOME"])


def in_bash(env, home, line) -> str:
    script = f"shopt -s expand_aliases\nsource {home / '.bashrc'}\n{line}\n"
    result = subprocess.run(["bash", "-c", script], env={**env, "XX_DRY_RUN": "1"}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_taken_finds_commands_builtins_and_the_users_aliases_and_functions(user_shell):
    home, env = user_shell
    found = aliases.taken(["cc", "ccr", "qw", "oc", "claw", "ll", "cd", "if", "ccc"], home / ".bashrc", env,
                          CLUTCH)
    assert found["cc"] == f"a command on PATH ({env['PATH'].split(':')[0]}/cc)"
    assert found["qw"] == "your alias in ~/.bashrc:2" and found["oc"] == "your function in ~/.bashrc:3"
    assert found["claw"] == found["ll"] == "your alias in ~/.bash_aliases:1"  # a file the rc sources
    assert found["cd"] == found["if"] == "a bash builtin"
    assert "ccc" not in found


def test_install_leaves_out_what_the_user_has_and_says_which_and_why(user_shell):
    home, env = user_shell
    result = xx_aliases(env, "install")
    assert result.returncode == 0, result.stderr
    said = result.stderr
    assert "left out 5 name(s) you already have" in said and "--force NAME" in said
    for name, why in (("cc", "a command on PATH"), ("ccr", "a command on PATH"), ("qw", "your alias in ~/.bashrc:2"),
                      ("oc", "your function in ~/.bashrc:3"), ("claw", "your alias in ~/.bash_aliases:1")):
        assert any(line.split()[:1] == [name] and why in line for line in said.splitlines()), (name, said)
    text = (home / ".bashrc").read_text()
    written = text[text.index(aliases.BEGIN):]
    assert "alias cc=" not in written and "alias ccr=" not in written and "alias qw=" not in written
    assert "alias ccc='xx ccp'" in written and "#   cc: a command on PATH" in written
    # in a real bash: the user's commands, alias and function still answer, the rest go through xx
    assert in_bash(env, home, "cc -c x.c") == "the real cc -c x.c\n"
    assert in_bash(env, home, "qw; oc; claw") == "my qw\nmy oc\nmy claw\n"
    assert in_bash(env, home, "ccc").splitlines()[0] == "run  claude --continue --dangerously-skip-permissions"


def test_force_and_all_take_names_anyway(user_shell):
    home, env = user_shell
    result = xx_aliases(env, "install", "--force", "cc", "--force", "qw,oc")
    assert result.returncode == 0, result.stderr
    assert "taking cc anyway, shadowing a command on PATH" in result.stderr
    text = (home / ".bashrc").read_text()
    assert "alias cc='xx cip'" in text and "alias qw='xx qip'" in text and "alias oc='xx oip'" in text
    assert "alias ccr=" not in text
    assert in_bash(env, home, "cc").splitlines()[0] == "run  claude --dangerously-skip-permissions"
    assert xx_aliases(env, "install", "--all").returncode == 0
    assert all(f"alias {name}=" in (home / ".bashrc").read_text() for name in aliases.ALIASES)
    refused = xx_aliases(env, "install", "--force", "gcc")
    assert refused.returncode == 2 and "not a name of the block" in refused.stderr


def test_someone_elses_xx_on_path_is_not_shadowed(user_shell, tmp_path):
    home, env = user_shell
    (tmp_path / "bin" / "xx").write_text(FAKE_COMMAND)
    (tmp_path / "bin" / "xx").chmod(0o755)
    assert xx_aliases(env, "install").returncode == 0
    text = (home / ".bashrc").read_text()
    assert "xx() {" not in text and f"alias ccc='{CLUTCH} xx ccp'" in text
    assert in_bash(env, home, "xx hi") == "the real xx hi\n"
    assert in_bash(env, home, "ccc").splitlines()[0] == "run  claude --continue --dangerously-skip-permissions"
