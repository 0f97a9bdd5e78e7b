"""Clutch as an installed package: the wheel, and the `clutch` and `xx` it installs (docs/install.md).

The wheel is built from the checkout's files offline (`pip wheel --no-deps --no-build-isolation`, with
the test venv's setuptools from requirements-test.lock) and installed with `--no-deps` into a fresh
venv in tmp. Its dependencies come from the test venv through a `.pth` file, so nothing is downloaded;
then the commands run as a user runs them: from the fresh venv's bin/, with a temporary HOME and XDG
folders, the working folder outside the checkout, and no PYTHONPATH, so only the installed tree can
answer.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest
from harness import MITMDUMP, ROOT, free_port, stop, wait_until

# What the build never needs: VCS, environments, tests, caches, and certs/ (a checkout's CA key).
_NOT_BUILT = {".git", ".venv", "tests", "bench", "certs", "build", "dist", "__pycache__", ".mypy_cache",
              ".ruff_cache", ".pytest_cache", ".cache"}


def test_every_package_folder_of_the_checkout_is_in_the_wheel():
    """pyproject.toml lists the packages by hand (setuptools cannot discover them under another name):
    a new folder of addons/ or launcher/ must be added there, or installs would lack it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"clutch.addons": "addons", "clutch.launcher": "launcher",
                                     "clutch.rules": "rules"}
    folders = {"clutch." + ".".join(init.parent.relative_to(ROOT).parts)
               for top in ("addons", "launcher") for init in (ROOT / top).rglob("__init__.py")}
    assert set(config["packages"]) == folders | {"clutch.rules"}
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"clutch": "clutch.launcher.entry:clutch_command", "xx": "clutch.launcher.entry:xx_command"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the checkout: pip builds in the source tree (build/,
    clutch.egg-info), which must not happen in a checkout other runs are reading."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, symlinks=True,
                    ignore=lambda folder, names: [n for n in names if n in _NOT_BUILT or n.endswith(".egg-info")])
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--disable-pip-version-check", "-w", str(work / "dist"), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    [found] = (work / "dist").glob("clutch-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict[str, Path]:
    """A fresh venv holding only the wheel; the test venv's packages reach it through a .pth file."""
    work = tmp_path_factory.mktemp("installed")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; "
                                   "print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # addsitedir, not a plain path line: the test venv's own .pth files are read too
    (purelib / "zz-test-venv.pth").write_text(f"import site; [site.addsitedir(p) for p in {site.getsitepackages()!r}]\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                           "--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)],
                          # the checkout off the path: a clutch.egg-info a build left there reads as installed
                          capture_output=True, text=True, timeout=300, cwd=work,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stdout + done.stderr
    home = work / "home"
    (home / "project").mkdir(parents=True)
    return {"venv": venv, "site": purelib, "home": home}


def _env(installed: dict[str, Path], **more: str) -> dict[str, str]:
    """A user's shell with only the fresh venv's bin/ added: no PYTHONPATH, no checkout anywhere."""
    home = installed["home"]
    return {"PATH": f"{installed['venv'] / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "XDG_CONFIG_HOME": str(home / "cfg"), "XDG_DATA_HOME": str(home / "data"),
            "XDG_STATE_HOME": str(home / "state"), **more}


def _run(installed: dict[str, Path], *argv: str, **more: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), env=_env(installed, **more), cwd=installed["home"] / "project",
                          capture_output=True, text=True, timeout=120)


@pytest.mark.gateway
def test_the_wheel_installs_one_top_level_name_with_its_data_files(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"clutch", wheel.name.split("-py3")[0] + ".dist-info"}
    for data in ("clutch/rules/default.yaml", "clutch/addons/web/dashboard.html", "clutch/addons/clutch.py",
                 "clutch/launcher/qwen-system-defaults.json", "clutch/launcher/entry.py"):
        assert data in names
    assert not [name for name in names if "/certs/" in name or name.startswith("clutch/tests/")]


@pytest.mark.gateway
def test_installed_commands_use_the_installed_tree(installed):
    tree = installed["site"] / "clutch"
    home = installed["home"]
    assert not (tree / "pyproject.toml").exists()

    addon = _run(installed, "clutch", "addon-path")
    assert addon.returncode == 0, addon.stderr
    assert addon.stdout.strip() == str(tree / "addons" / "clutch.py")

    listed = _run(installed, "clutch", "paths", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {
        "root": str(tree), "installed": True,
        "rules": str(home / "cfg" / "clutch" / "rules.yaml"),
        "default_rules": str(tree / "rules" / "default.yaml"),
        "keys": str(home / "cfg" / "clutch" / "keys.env"),
        "ca_folder": str(home / "data" / "clutch" / "ca"),
        "ca_cert": str(home / "data" / "clutch" / "ca" / "mitmproxy-ca-cert.pem"),
        "trust_bundle": str(home / "data" / "clutch" / "ca" / "clutch-ca-bundle.pem"),
        "state": str(home / "state" / "clutch"), "usage_db": str(home / "state" / "clutch" / "usage.db"),
        "addon": str(tree / "addons" / "clutch.py")}
    untouched = home / "untouched"
    text = _run(installed, "clutch", "paths", XDG_DATA_HOME=str(untouched)).stdout
    assert text.startswith("Clutch, installed:") and "~/untouched/clutch/ca  (absent)" in text, text
    assert max(map(len, text.splitlines())) <= 80, text
    assert not untouched.exists()  # printing the paths creates nothing

    dry = _run(installed, "xx", "cip", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("run  claude ")
    assert f"NODE_EXTRA_CA_CERTS  = {home / 'data' / 'clutch' / 'ca' / 'mitmproxy-ca-cert.pem'}" in dry.stdout


@pytest.mark.gateway
def test_installed_aliases_call_the_installed_xx(installed):
    """An installed Clutch has no ./clutch script: the alias block's xx() and its aliases run the
    console script this xx was started as, and a real bash runs an alias through it."""
    xx = installed["venv"] / "bin" / "xx"
    shown = _run(installed, str(xx), "aliases", "show")
    assert shown.returncode == 0, shown.stderr
    assert f"xx() {{ {xx} \"$@\"; }}" in shown.stdout, shown.stdout
    assert "/clutch/clutch" not in shown.stdout
    rc = installed["home"] / ".bashrc"
    assert _run(installed, str(xx), "aliases", "install", "--rc", str(rc)).returncode == 0
    ran = _run(installed, "bash", "-c", f"shopt -s expand_aliases; source {rc}; xx cip --dry-run")
    assert ran.returncode == 0 and ran.stdout.startswith("run  claude "), ran.stdout + ran.stderr


@pytest.mark.gateway
def test_installed_commands_complete_in_the_shell(installed):
    script = _run(installed, "clutch", "--show-completion", "bash")
    assert script.returncode == 0 and "_CLUTCH_COMPLETE=complete_bash" in script.stdout, script.stderr
    words = _run(installed, "clutch", _CLUTCH_COMPLETE="complete_bash", COMP_WORDS="clutch pa", COMP_CWORD="1")
    assert words.stdout.split() == ["paths"], words.stderr
    words = _run(installed, "xx", _XX_COMPLETE="complete_bash", COMP_WORDS="xx doc", COMP_CWORD="1")
    assert words.stdout.split() == ["doctor"], words.stderr
    done = _run(installed, "xx", "--install-completion", "bash")
    assert done.returncode == 0, done.stderr
    assert "source" in (installed["home"] / ".bashrc").read_text()


def _health(port: int) -> dict | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False, timeout=2).json()
    except httpx.HTTPError:
        return None


def _serve(installed: dict[str, Path], argv: list[str], port: int, log: Path) -> tuple[subprocess.Popen, dict]:
    """Start a gateway process on `port`; (the process, to stop by PID, and its /health once it answers)."""
    with open(log, "w") as out:
        process = subprocess.Popen(argv, env=_env(installed), cwd=installed["home"] / "project", stdout=out,
                                   stderr=subprocess.STDOUT)
    found: dict = {}
    wait_until(lambda: process.poll() is not None or bool(found.update(_health(port) or {}) or found), timeout=60)
    if not found:
        stop(process)
        pytest.fail(f"no /health on {port}; the gateway's output:\n{log.read_text()}")
    return process, found


@pytest.mark.gateway
def test_installed_clutch_start_serves_with_a_private_ca_in_the_data_folder(installed, tmp_path):
    home = installed["home"]
    port = free_port()
    process, health = _serve(installed, ["clutch", "start", "--port", str(port)], port, tmp_path / "start.log")
    try:
        ca = home / "data" / "clutch" / "ca"
        assert health["status"] == "ok" and health["listen"] == [f"regular 127.0.0.1:{port}"]
        assert health["rules"]["path"] == str(installed["site"] / "clutch" / "rules" / "default.yaml")
        assert health["ca_cert"] == str(ca / "mitmproxy-ca-cert.pem")
        assert health["usage_db"] == str(home / "state" / "clutch" / "usage.db")
        assert stat.S_IMODE(ca.stat().st_mode) == 0o700
        assert stat.S_IMODE((ca / "mitmproxy-ca.pem").stat().st_mode) == 0o600
        # the same environment's mitmdump (the one mitmproxy's installer wrote), loading the installed addons
        command = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert str(installed["site"] / "clutch" / "addons" / "clutch.py").encode() in command
    finally:
        stop(process)


@pytest.mark.gateway
def test_mitmdump_runs_the_installed_addon_path_with_the_data_folder_ca(installed, tmp_path):
    """`mitmdump -s "$(clutch addon-path)"` without a confdir: Certs moves it to the data folder."""
    script = _run(installed, "clutch", "addon-path").stdout.strip()
    port = free_port()
    process, health = _serve(installed, [MITMDUMP, "-s", script, "--listen-host", "127.0.0.1", "--listen-port",
                                         str(port), "--set", "connection_strategy=lazy"], port, tmp_path / "mitmdump.log")
    try:
        assert health["ca_cert"] == str(installed["home"] / "data" / "clutch" / "ca" / "mitmproxy-ca-cert.pem")
        assert health["rules"]["path"] == str(installed["site"] / "clutch" / "rules" / "default.yaml")
    finally:
        stop(process)
