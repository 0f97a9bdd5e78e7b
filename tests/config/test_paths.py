"""Where Clutch keeps its files: XDG folders, a checkout's certs/, an installed package's data folder."""

from pathlib import Path

from addons.config.paths import ROOT, is_checkout, places


def test_xdg_variables_are_followed(tmp_path):
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
           "XDG_STATE_HOME": str(tmp_path / "st"), "XDG_DATA_HOME": str(tmp_path / "data")}
    found = places(env, root=tmp_path / "site-packages" / "clutch")
    assert found.rules == tmp_path / "cfg" / "clutch" / "rules.yaml"
    assert found.keys == tmp_path / "cfg" / "clutch" / "keys.env"
    assert found.usage_db == tmp_path / "st" / "clutch" / "usage.db"
    assert found.ca == tmp_path / "data" / "clutch" / "ca"  # installed: no pyproject.toml beside addons/


def test_unset_or_relative_xdg_falls_back_to_the_home_folders(tmp_path):
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": "relative/cfg"}
    found = places(env, root=tmp_path / "pkg")
    assert (found.config, found.state) == (tmp_path / ".config" / "clutch", tmp_path / ".local" / "state" / "clutch")
    assert found.ca == tmp_path / ".local" / "share" / "clutch" / "ca"


def test_a_checkout_keeps_its_ca_in_certs(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    assert is_checkout(tmp_path) and places({"HOME": str(tmp_path)}, root=tmp_path).ca == tmp_path / "certs"
    assert is_checkout(ROOT) and places({"HOME": "/nowhere"}).ca == Path(ROOT) / "certs"
