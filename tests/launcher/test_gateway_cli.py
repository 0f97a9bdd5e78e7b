"""`./clutch`: the bootstrap script and the gateway commands (start, env, paths, addon-path)."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from harness import ROOT, stop, wait_until
from typer.testing import CliRunner

from launcher import gateway as cli
from launcher.recipe import ENVIRONMENT_NAMES, LOOPBACK


def test_start_arguments_bind_loopback_with_the_project_ca():
    args = cli.mitm_arguments(8780, None, ["https://openrouter.ai@8790"], ["--set", "x=1"])
    assert args[:2] == ["-s", str(ROOT / "addons" / "clutch.py")]
    assert "--listen-host" in args and args[args.index("--listen-host") + 1] == "127.0.0.1"
    assert "regular@8780" in args
    assert "reverse:https://openrouter.ai@127.0.0.1:8790" in args
    assert f"confdir={ROOT / 'certs'}" in args
    assert args[-2:] == ["--set", "x=1"]


def _options_set(args: list[str]) -> dict:
    """The options mitmweb ends up with from the `--set` arguments of a command line (its own parser)."""
    from mitmproxy import optmanager
    from mitmproxy.tools.web.webaddons import WebAddon
    options = optmanager.OptManager()
    WebAddon().load(options)
    options.add_option("store_streamed_bodies", bool, False, "")
    sets = [args[i + 1] for i, arg in enumerate(args) if arg == "--set"]
    options.set(*[spec for spec in sets if spec.split("=", 1)[0] in options.keys()])
    return {name: getattr(options, name) for name in options.keys()}


def test_web_asks_mitmweb_for_columns_it_has():
    """mitmweb's web_columns is a list: one `--set web_columns=NAME` per column, each one its page knows
    (a comma-joined value is one unknown column, and the flow list renders nothing)."""
    from mitmproxy.tools.web.web_columns import AVAILABLE_WEB_COLUMNS
    args = cli.web_arguments(8780, None, None, [], None, 8781)
    assert args[args.index("--web-port") + 1] == "8781"
    assert args[args.index("--web-host") + 1] == "127.0.0.1"
    options = _options_set(args)
    assert options["web_columns"] == list(cli.WEB_COLUMNS)
    assert set(cli.WEB_COLUMNS) <= set(AVAILABLE_WEB_COLUMNS) and "comment" in cli.WEB_COLUMNS
    assert options["store_streamed_bodies"] is True
    mine = cli.web_arguments(8780, None, None, ["--set", "web_columns=index", "--set", "web_columns=path"], None, 8781)
    assert _options_set(mine)["web_columns"] == ["index", "path"]  # the user's columns replace Clutch's


def test_reverse_needs_a_port():
    with pytest.raises(Exception, match="URL@PORT"):
        cli.mitm_arguments(8780, None, ["https://openrouter.ai"], [])


def test_env_prints_the_recipe(tmp_path, monkeypatch):
    result = CliRunner().invoke(cli.app, ["env", "--agent", "c", "--port", "9999", "--session", "s1",
                                          "--confdir", str(tmp_path / "certs")])
    assert result.exit_code == 0, result.output
    exports = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1)
                   for line in result.output.splitlines() if line.startswith("export "))
    assert exports["HTTPS_PROXY"].startswith("http://xx-claude.s-s1:")
    assert exports["HTTPS_PROXY"].endswith("@127.0.0.1:9999")
    assert exports["NODE_EXTRA_CA_CERTS"] == str(tmp_path / "certs" / "mitmproxy-ca-cert.pem")
    assert exports["SSL_CERT_FILE"] == exports["REQUESTS_CA_BUNDLE"] == str(tmp_path / "certs" / "clutch-ca-bundle.pem")
    assert exports["NO_PROXY"] == LOOPBACK
    assert (tmp_path / "certs" / "clutch-ca-bundle.pem").exists()
    assert "sk-" not in result.output


def test_env_refuses_unknown_agents():
    result = CliRunner().invoke(cli.app, ["env", "--agent", "robot"])
    assert result.exit_code != 0 and "unknown agent" in result.output


def test_bootstrap_explains_a_missing_python(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYENV_ROOT": str(tmp_path / "no-pyenv"),
           "CLUTCH_VENV": str(tmp_path / "venv"), "CLUTCH_PYTHON": "/nonexistent/python"}
    if any(os.path.exists(f"/usr/bin/python3.{minor}") for minor in range(12, 20)):
        pytest.skip("this machine has a system Python >= 3.12")
    result = subprocess.run([str(ROOT / "clutch"), "start"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no Python >= 3.12 found" in result.stderr
    assert "CLUTCH_PYTHON=" in result.stderr
    assert not (tmp_path / "venv").exists()


@pytest.mark.gateway  # `./clutch start` runs a real mitmdump
def test_clutch_start_serves_health_on_loopback(tmp_path):
    """The README's first command, on the installed .venv: starts on the embedded default rules."""
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "start.log", "w")
    process = subprocess.Popen([str(ROOT / "clutch"), "start", "--port", str(port), "--confdir",
                                str(tmp_path / "certs")], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "HOME": str(tmp_path)})
    try:
        health = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and health is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False, timeout=2).json()
            except httpx.HTTPError:
                time.sleep(0.2)
        assert health is not None, (tmp_path / "start.log").read_text()
        assert health["rules"]["path"] == str(ROOT / "rules" / "default.yaml")
        assert health["listen"] == [f"regular 127.0.0.1:{port}"]
        assert health["ca_cert"] == str(tmp_path / "certs" / "mitmproxy-ca-cert.pem")
        # the banner, in the terminal of `./clutch start`: the way back to this gateway from a shell
        assert wait_until(lambda: "route a shell through Clutch" in (tmp_path / "start.log").read_text(), timeout=10)
        logged = (tmp_path / "start.log").read_text()
        assert logged.count(" is ready (pid ") == 1
        shell = logged.split("route a shell through Clutch:\n", 1)[1].split(')"')[0].replace(" \\\n", " ").split()
        assert shell[:5] == ["eval", '"$(./clutch', "env", "--port", str(port)]
        assert shell[5:] == ["--confdir", str(tmp_path / "certs")]
    finally:
        stop(process)
        log.close()


def test_paths_names_every_file_of_a_checkout_within_80_columns(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "a-config-folder-whose-name-is-long" / ("x" * 60)))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.delenv("CLUTCH_CONFDIR", raising=False)
    (tmp_path / ".local" / "state" / "clutch").mkdir(parents=True)
    found = json.loads(CliRunner().invoke(cli.app, ["paths", "--json"]).output)
    assert found["installed"] is False and found["root"] == str(ROOT)
    assert found["ca_folder"] == str(ROOT / "certs")  # a checkout keeps its CA in certs/
    assert found["trust_bundle"] == str(ROOT / "certs" / "clutch-ca-bundle.pem")
    assert found["state"] == str(tmp_path / ".local" / "state" / "clutch")
    assert found["addon"] == str(ROOT / "addons" / "clutch.py") == str(cli.SCRIPT)
    assert found["default_rules"] == str(ROOT / "rules" / "default.yaml")
    lines = CliRunner().invoke(cli.app, ["paths"]).output.splitlines()
    assert lines[0].startswith("Clutch, a checkout:")
    assert max(map(len, lines)) <= 80
    assert "  state         ~/.local/state/clutch" in lines  # there: no "(absent)"
    assert "  usage db      ~/.local/state/clutch/usage.db  (absent)" in lines
    assert "  rules (absent):" in lines  # too long for one line: the path follows, broken after a /
    after = lines[lines.index("  rules (absent):") + 1:]
    pieces = after[:next(i for i, line in enumerate(after) if not line.startswith("    "))]
    assert len(pieces) > 1 and "".join(piece.strip() for piece in pieces) == found["rules"].replace(str(tmp_path), "~")
    elsewhere = json.loads(CliRunner().invoke(cli.app, ["paths", "--json", "--confdir", str(tmp_path / "ca")]).output)
    assert elsewhere["ca_cert"] == str(tmp_path / "ca" / "mitmproxy-ca-cert.pem")


def test_addon_path_prints_the_script_mitmproxy_loads():
    result = CliRunner().invoke(cli.app, ["addon-path"])
    assert result.exit_code == 0 and result.output == f"{ROOT / 'addons' / 'clutch.py'}\n"


def test_mitmdump_is_the_one_of_this_environment():
    found = cli.mitmproxy_tool("mitmdump")
    assert os.access(found, os.X_OK) and "from mitmproxy.tools.main import mitmdump" in found.read_text()
    with pytest.raises(FileNotFoundError, match="not installed beside this Python"):
        cli.mitmproxy_tool("mitmdump-that-is-not-there")
# ------------------------------------------------------------------ what `./clutch test` installs, and when

FAKE_TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CLUTCH_CALLS"
[ "$(basename "$0") $1" = "npm install" ] && mkdir -p node_modules
exit 0
"""
# The venv's python: pip and pytest only say they were asked; anything else (the version check) is real
FAKE_PYTHON = """#!/bin/sh
if [ "$1" = "-m" ] && { [ "$2" = "pip" ] || [ "$2" = "pytest" ]; }; then
    echo "python $*" >> "$CLUTCH_CALLS"
    exit 0
fi
exec PYTHON "$@"
"""


def sha(*paths) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()


@pytest.fixture
def checkout(tmp_path):
    """A copy of ./clutch with the lock files and tests/agents/ beside it: the agent CLIs and Chromium
    missing, Hermes installed, the venv's packages up to date unless a test changes that; `npm`,
    `apt-get` and pip record what they were asked (in calls.log) and install nothing."""
    root = tmp_path / "checkout"
    (root / "tests" / "agents" / "node24").mkdir(parents=True)
    for name in ("clutch", "requirements.lock", "requirements-test.lock", "tests/agents/package.json",
                 "tests/agents/hermes-requirements.txt", "tests/agents/node24/package.json"):
        shutil.copy2(ROOT / name, root / name)
    hermes = root / "tests" / "agents" / "hermes-venv"
    hermes.mkdir()
    (hermes / ".clutch-installed").write_text(sha(root / "tests/agents/hermes-requirements.txt") + "\n")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(FAKE_PYTHON.replace("PYTHON", sys.executable))
    (venv / "bin" / "python").chmod(0o755)
    for lock in ("requirements.lock", "requirements-test.lock"):
        (venv / f".installed-{lock}").write_text(sha(root / lock, root / "requirements.lock") + "\n")
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("npm", "apt-get"):
        (tools / tool).write_text(FAKE_TOOL)
        (tools / tool).chmod(0o755)
    calls = tmp_path / "calls.log"
    env = {"PATH": f"{tools}:/usr/bin:/bin", "HOME": str(tmp_path), "CLUTCH_VENV": str(venv),
           "CLUTCH_CALLS": str(calls), "CLUTCH_CHROMIUM": str(tmp_path / "no-chromium"),
           "CLUTCH_REDIS_SERVER": str(tmp_path / "no-redis-server"), "LANG": "C.UTF-8"}
    return root, env, calls


def clutch_test(root, env, *args, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run([str(root / "clutch"), "test", *args], env=env, stdin=stdin, capture_output=True,
                          text=True, timeout=60, cwd=root.parent)


def unfolded(said: str) -> str:
    """./clutch's messages with its wrapping undone (it folds them at 80 columns, indenting the rest)."""
    assert all(len(line) <= 80 for line in said.splitlines()), said
    return said.replace("\n  ", "")


def called(calls) -> str:
    return calls.read_text() if calls.exists() else ""


def test_clutch_test_says_what_it_installs_and_takes_no_system_package_without_consent(checkout):
    root, env, calls = checkout
    result = clutch_test(root, env, "-q")
    assert result.returncode == 0, result.stderr
    said = unfolded(result.stderr)
    assert "about 2.4 GB under tests/agents/" in said
    assert "system packages (chromium chromium-driver redis-server; Chromium is about 400 MB)" in said
    assert "./clutch test --fast" in said  # the way to need none of it
    assert said.index("about 2.4 GB") < said.index("into tests/agents/node_modules/")  # said before it starts
    assert "not installing chromium chromium-driver redis-server (no consent)" in said
    assert "`CLUTCH_INSTALL_SYSTEM=1 ./clutch test`" in said
    assert "apt-get" not in called(calls)  # no system package without consent
    assert "npm install" in called(calls) and "python -m pytest -q" in called(calls)  # the rest goes on


@pytest.mark.parametrize("consent", [{"CLUTCH_INSTALL_SYSTEM": "1"}, {"CLUTCH_REQUIRE_E2E": "1"}],
                         ids=["CLUTCH_INSTALL_SYSTEM", "CI"])
def test_consent_or_ci_installs_chromium_and_redis_without_asking(checkout, consent):
    root, env, calls = checkout
    result = clutch_test(root, {**env, **consent})
    assert result.returncode == 0, result.stderr
    assert "apt-get install -y -qq --no-install-recommends chromium chromium-driver redis-server" in called(calls)
    said = unfolded(result.stderr)
    assert "[y/N]" not in said and "installing chromium chromium-driver redis-server (apt-get" in said


@pytest.mark.parametrize("answer,installs", [("y\n", True), ("\n", False)], ids=["yes", "no"])
def test_on_a_terminal_it_asks_before_installing_system_packages(checkout, answer, installs):
    root, env, calls = checkout
    leader, follower = pty.openpty()
    try:
        os.write(leader, answer.encode())
        result = clutch_test(root, env, stdin=follower)
    finally:
        os.close(leader)
        os.close(follower)
    assert result.returncode == 0, result.stderr
    assert "install chromium chromium-driver redis-server now with apt-get (system packages)? [y/N]" in result.stderr
    assert ("apt-get install" in called(calls)) is installs


def test_the_fast_loop_installs_nothing_and_says_nothing(checkout):
    root, env, calls = checkout
    result = clutch_test(root, env, "--fast")
    assert result.returncode == 0 and result.stderr == ""
    assert called(calls) == "python -m pytest --fast\n"


def test_pip_says_how_many_packages_how_big_and_where(checkout):
    root, env, calls = checkout
    (Path(env["CLUTCH_VENV"]) / ".installed-requirements-test.lock").unlink()
    result = clutch_test(root, env, "--fast")
    pinned = {line for name in ("requirements.lock", "requirements-test.lock")
              for line in (root / name).read_text().splitlines() if "==" in line}
    assert unfolded(result.stderr) == (f"clutch: installing {len(pinned)} pinned Python packages (about 300 MB, pip) "
                                       f"from requirements-test.lock into {env['CLUTCH_VENV']} ...\n")
    assert called(calls).startswith("python -m pip install")


def test_without_chromium_the_browser_tests_skip_and_say_how_to_install_it(monkeypatch, tmp_path):
    import webdriver

    monkeypatch.setattr(webdriver, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("CLUTCH_REQUIRE_E2E", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"`CLUTCH_INSTALL_SYSTEM=1 \./clutch test` installs Chromium"):
        webdriver.need_browser()
    monkeypatch.setenv("CLUTCH_REQUIRE_E2E", "1")  # in CI they must run
    with pytest.raises(pytest.fail.Exception, match="no-chromium is missing"):
        webdriver.need_browser()


def test_env_unset_undoes_env_in_a_real_shell(tmp_path):
    """`clutch env` says how to undo it, and `clutch env --unset` does: no variable it set is left."""
    clutch = f"{sys.executable} -m launcher.gateway"
    exported = CliRunner().invoke(cli.app, ["env", "--confdir", str(tmp_path / "certs")]).output
    assert "While the gateway is stopped" in exported and 'eval "$(./clutch env --unset)"' in exported
    assert all(len(line) <= 80 for line in exported.splitlines() if line.startswith(("# While", "# (conn")))
    script = (f'eval "$({clutch} env --confdir {shlex.quote(str(tmp_path / "certs"))})"; env -0 > {tmp_path}/set; '
              f'eval "$({clutch} env --unset)"; env -0 > {tmp_path}/unset')
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr

    def names(file):
        return {item.split("=", 1)[0] for item in (tmp_path / file).read_text().split("\0") if item}

    assert {"HTTPS_PROXY", "https_proxy", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"} <= names("set")
    assert not names("unset") & set(ENVIRONMENT_NAMES)
    unset = subprocess.run([sys.executable, "-m", "launcher.gateway", "env", "--unset"], capture_output=True,
                           text=True, timeout=60, env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}).stdout
    assert all(len(line) <= 80 for line in unset.splitlines())
    assert names("set") - set(ENVIRONMENT_NAMES) - {"_"} == names("unset") - {"_"}  # nothing else was touched
