"""The xx config: ~/.xx/config.json or .yaml, defaults, and errors that name file, line and field."""

import pytest

from launcher.config import ConfigError, LaunchProfile, XXConfig, config_path, load_config, parse_config


def test_missing_file_means_defaults(tmp_path):
    config, path = load_config({"HOME": str(tmp_path)})
    assert path is None and config == XXConfig()
    assert (config.host, config.port, config.auto_start, config.yolo, config.tmux) == ("127.0.0.1", 8780, True,
                                                                                       True, False)


def test_json_and_yaml_are_found_in_that_order(tmp_path):
    folder = tmp_path / ".xx"
    folder.mkdir()
    (folder / "config.yaml").write_text("gateway: 127.0.0.1:9000\n")
    assert config_path({"HOME": str(tmp_path)}) == folder / "config.yaml"
    assert load_config({"HOME": str(tmp_path)})[0].port == 9000
    (folder / "config.json").write_text('{"gateway": "127.0.0.1:9001"}')
    assert load_config({"HOME": str(tmp_path)})[0].port == 9001
    other = tmp_path / "elsewhere.json"
    other.write_text('{"auto_start": false}')
    config, path = load_config({"HOME": str(tmp_path), "XX_CONFIG": str(other)})
    assert path == other and config.auto_start is False


def test_profiles():
    config = parse_config("""
profiles:
  "3":
    name: kimi everywhere
    model: openrouter:moonshotai/kimi-k2.6
    env: {CLAUDE_CODE_MAX_OUTPUT_TOKENS: "8000"}
    args:
      all: [--verbose]
      claude: [--effort, high]
""", "c.yaml")
    profile = config.profile("3")
    assert profile.name == "kimi everywhere" and profile.model == "openrouter:moonshotai/kimi-k2.6"
    assert profile.args_for("claude") == ["--verbose", "--effort", "high"]
    assert profile.args_for("codex") == ["--verbose"]
    assert config.profile("4") is None and config.profile(None) is None
    assert LaunchProfile().args_for("pi") == []


@pytest.mark.parametrize("text,where", [
    ('{\n  "gateway": "nope"\n}', "c.json:2: gateway: 'nope' is not host:port"),
    ('{"gateway": "127.0.0.1:99999"}', "c.json:1: gateway: '127.0.0.1:99999' is not host:port"),
    ('{\n "profiles": {\n  "12": {}\n }\n}', "c.json:3: profiles.12: profiles are named by one digit, 0-9"),
    ('{\n "profiles": {\n  "3": {\n   "model": "kimi"\n  }\n }\n}',
     "c.json:4: profiles.3.model: 'kimi' is not provider:model"),
    ('{\n "profiles": {"1": {"args": {"bogus": []}}}\n}', "c.json:2: profiles.1.args: 'bogus' is not an agent"),
    ('{\n  "tmux": true,\n  "colour": "red"\n}', "c.json:3: colour: unknown field"),
    ('{\n  "auto_start": "sometimes"\n}', "c.json:2: auto_start: Input should be a valid boolean"),
    ('{"gateway": "127.0.0.1:1",\n  "yolo": [', "c.json:2: YAML syntax:"),
    ("- a list", "c.json:1: the config must be a mapping"),
])
def test_errors_name_file_line_and_field(text, where):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.json")
    assert str(caught.value).startswith(where), str(caught.value)


def test_empty_file_is_defaults():
    assert parse_config("", "c.yaml") == XXConfig()


def test_unreadable_file_is_named(tmp_path):
    folder = tmp_path / "config.json"
    folder.mkdir()  # a folder where the file should be
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config({"HOME": str(tmp_path), "XX_CONFIG": str(folder)})
