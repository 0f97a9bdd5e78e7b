"""plan_launch (argv + the full environment) and describe (the dry run, secrets masked)."""

import subprocess

import pytest

from addons.certs import ca_files
from addons.wire.identity import identity_from_username
from launcher.agents import LaunchError
from launcher.codes import parse_code
from launcher.config import LaunchProfile
from launcher.launch import describe_launch, mask_value, plan_launch, split_model

FAKE = """#!/bin/sh
for a in "$@"; do printf '%s\\0' "$a"; done > "$XX_RECORD.argv"
env -0 > "$XX_RECORD.env"
"""
TOKEN = "Zq9-token-value"


@pytest.fixture
def setup(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("claude", "codex", "opencode"):
        (folder / name).write_text(FAKE)
        (folder / name).chmod(0o755)
    record = tmp_path / "record"
    environ = {
        "PATH": f"{folder}:/usr/bin:/bin", "XX_RECORD": str(record), "HOME": str(tmp_path),
        "ANTHROPIC_API_KEY": "sk-ant-api03-secret", "GITHUB_TOKEN": "ghp_secret", "EDITOR": "vi",
        "no_proxy": "corp.example", "Https_Proxy": "http://old:pw@corp:3128", "NODE_EXTRA_CA_CERTS": "/old.pem",
    }
    return environ, record, ca_files(tmp_path / "certs")


def plan(setup, text, **kwargs):
    environ, _, ca = setup
    defaults = dict(session=None, model=None, pin=None, prompt=None, extra=(), environ=environ,
                    gateway="127.0.0.1:8780", ca=ca, token=TOKEN, is_root=False)
    return plan_launch(parse_code(text), **{**defaults, **kwargs})


def run(setup, launch):
    record = setup[1]
    subprocess.run(launch.argv, env=launch.env, check=True, timeout=20)
    argv = [a.decode() for a in record.with_suffix(".argv").read_bytes().split(b"\0")[:-1]]
    env = dict(i.split("=", 1) for i in record.with_suffix(".env").read_bytes().decode().split("\0") if i)
    return argv, env


def test_proxy_route_identity_carries_session_tier_and_pin(setup):
    launch = plan(setup, "cnpk", session="4f1c2a", model="sonnet", pin="openrouter:moonshotai/kimi-k2.6",
                  prompt="hi there", extra=["--verbose"])
    argv, env = run(setup, launch)
    assert argv == ["--print", "--resume", "4f1c2a", "--dangerously-skip-permissions", "--model", "sonnet",
                    "--verbose", "hi there"]
    user, _, rest = env["HTTPS_PROXY"].removeprefix("http://").partition(":")
    assert rest == f"{TOKEN}@127.0.0.1:8780"
    seen = identity_from_username(user)
    assert (seen.agent, seen.launch_code, seen.route, seen.tier, seen.session, seen.model) == (
        "claude", "cnpk", "p", "k", "4f1c2a", "openrouter:moonshotai/kimi-k2.6")


def test_agent_model_alone_does_not_pin_the_gateway(setup):
    launch = plan(setup, "cip", model="sonnet")
    assert launch.argv[-2:] == ["--model", "sonnet"]
    assert identity_from_username(launch.env["HTTPS_PROXY"][7:].partition(":")[0]).model is None


@pytest.mark.parametrize("text,expected", [
    ("openrouter:moonshotai/kimi-k2.6", (None, "openrouter:moonshotai/kimi-k2.6")),
    ("ollama:qwen3:4b", (None, "ollama:qwen3:4b")),
    ("ollama/qwen3:4b", ("ollama/qwen3:4b", None)),  # OpenCode's provider/model, with a tag
    ("qwen3:4b", ("qwen3:4b", None)),  # not a provider of the rules
    ("openrouter/qwen/qwen3-coder:free", ("openrouter/qwen/qwen3-coder:free", None)),
    ("sonnet", ("sonnet", None)),
    (None, (None, None)),
])
def test_split_model(text, expected):
    assert split_model(text, ["openrouter", "ollama", "anthropic"]) == expected


def test_pin_on_direct_route_is_refused(setup):
    with pytest.raises(LaunchError, match=r"route d does not pass through Clutch.*xx cip"):
        plan(setup, "cid", pin="openrouter:x/y")


def test_profile_adds_pin_env_and_arguments_before_the_users(setup):
    profile = LaunchProfile(name="kimi", model="openrouter:moonshotai/kimi-k2.6", env={"MY_FLAG": "1"},
                            args={"all": ["--verbose"], "claude": ["--effort", "high"], "codex": ["-x"]})
    launch = plan(setup, "cip3", profile=profile, extra=["--debug"])
    assert launch.argv == ["claude", "--dangerously-skip-permissions", "--verbose", "--effort", "high", "--debug"]
    assert launch.env["MY_FLAG"] == "1" and launch.changes["MY_FLAG"] == "1"
    seen = identity_from_username(launch.env["HTTPS_PROXY"][7:].partition(":")[0])
    assert (seen.tier, seen.model) == ("3", "openrouter:moonshotai/kimi-k2.6")
    assert any("profile 3 (kimi) pins" in note for note in launch.notes)
    # the user's own pin wins over the profile's
    launch = plan(setup, "cip3", profile=profile, pin="anthropic:claude-opus-4-8")
    assert identity_from_username(launch.env["HTTPS_PROXY"][7:].partition(":")[0]).model == "anthropic:claude-opus-4-8"


def test_profile_on_the_direct_route_keeps_env_and_args_but_not_its_pin(setup):
    profile = LaunchProfile(name="kimi", model="openrouter:moonshotai/kimi-k2.6", env={"MY_FLAG": "1"},
                            args={"claude": ["--verbose"]})
    launch = plan(setup, "cid3", profile=profile)
    assert launch.argv[-1] == "--verbose" and launch.env["MY_FLAG"] == "1" and "HTTPS_PROXY" not in launch.env
    assert any("profile 3's model openrouter:moonshotai/kimi-k2.6 is not used" in note for note in launch.notes)


def test_profile_cannot_override_the_proxy_recipe(setup):
    profile = LaunchProfile(env={"HTTPS_PROXY": "http://elsewhere:1"})
    launch = plan(setup, "cip1", profile=profile)
    assert launch.env["HTTPS_PROXY"].endswith("@127.0.0.1:8780")


def test_no_yolo_drops_bypass_flag_and_is_sandbox(setup):
    launch = plan(setup, "cip", yolo=False, is_root=True)
    assert launch.argv == ["claude"] and "IS_SANDBOX" not in launch.env


def test_user_environment_kept_old_proxy_variables_replaced(setup):
    launch = plan(setup, "cip")
    _, env = run(setup, launch)
    assert env["EDITOR"] == "vi" and env["ANTHROPIC_API_KEY"] == "sk-ant-api03-secret"
    assert "Https_Proxy" not in env and env["no_proxy"] == "localhost,127.0.0.1,::1"
    assert env["NODE_EXTRA_CA_CERTS"].endswith("mitmproxy-ca-cert.pem")
    assert "IS_SANDBOX" not in env  # not root
    assert launch.changes["Https_Proxy"] is None
    assert "EDITOR" not in launch.changes and "ANTHROPIC_API_KEY" not in launch.changes


def test_direct_route_removes_every_proxy_and_ca_variable(setup):
    environ = {**setup[0], "ALL_PROXY": "socks5://x:1", "all_proxy": "socks5://x:1", "SSL_CERT_FILE": "/a",
               "REQUESTS_CA_BUNDLE": "/a", "CURL_CA_BUNDLE": "/a", "GIT_SSL_CAINFO": "/a",
               "CODEX_CA_CERTIFICATE": "/a", "NODE_USE_ENV_PROXY": "1", "HTTP_PROXY": "http://h:1",
               "NO_PROXY": "x"}
    launch = plan(setup, "xnd", prompt="go", environ=environ, is_root=True)
    argv, env = run(setup, launch)
    assert argv == ["exec", "--skip-git-repo-check", "-c", "check_for_update_on_startup=false",
                    "--dangerously-bypass-approvals-and-sandbox", "go"]
    removed = {n for n in environ if n not in ("PATH", "XX_RECORD", "HOME", "ANTHROPIC_API_KEY", "GITHUB_TOKEN",
                                               "EDITOR")}
    assert not removed & set(env)
    assert {n for n, v in launch.changes.items() if v is None} == removed
    assert env["EDITOR"] == "vi"
    assert "IS_SANDBOX" not in env  # codex needs none, even as root


def test_claude_as_root_gets_is_sandbox_on_every_route(setup):
    for route in "pbd":
        _, env = run(setup, plan(setup, f"ci{route}", is_root=True))
        assert env["IS_SANDBOX"] == "1"


def test_describe_shows_argv_and_changes_but_never_secrets(setup):
    environ = {**setup[0], "OPENAI_API_KEY": "sk-old"}
    launch = plan(setup, "oip", model="openrouter/moonshotai/kimi-k2.6", pin="openrouter:moonshotai/kimi-k2.6",
                  environ=environ,
                  extra=["--title", "it's mine"])
    launch.changes["OPENAI_API_KEY"] = "sk-new-secret"  # a key among the changes is masked too
    text = describe_launch(launch)
    assert text.splitlines()[0] == ("run  opencode --auto -m openrouter/moonshotai/kimi-k2.6 --title 'it'\"'\"'s mine'")
    assert "unset Https_Proxy" in text
    assert "set   HTTPS_PROXY" in text and "xx-oip.m-" in text and ":****@127.0.0.1:8780" in text
    for secret in (TOKEN, "sk-new-secret", "sk-ant-api03-secret", "ghp_secret", "old:pw"):
        assert secret not in text
    assert "OPENAI_API_KEY" in text and "= ****" in text


def test_mask_value():
    assert mask_value("X_API_KEY", "abc") == "****"
    assert mask_value("Secret_thing", "abc") == "****"
    assert mask_value("DB_PASSWORD", "abc") == "****"
    assert mask_value("HTTPS_PROXY", "http://u:pw@h:1") == "http://u:****@h:1"
    assert mask_value("HTTPS_PROXY", "http://h:1") == "http://h:1"
    assert mask_value("NOTE", "has tok in it", token="tok") == "has **** in it"


def test_notes_for_tier_on_direct_and_bypass_and_odd_session(setup):
    assert any("no effect" in n for n in plan(setup, "cidk").notes)
    assert any("route b never changes" in n for n in plan(setup, "cibk").notes)
    assert any("route b never changes" in n for n in plan(setup, "cib", pin="openrouter:x/y").notes)
    launch = plan(setup, "csp", session="my title.1")
    assert launch.argv == ["claude", "--resume", "my title.1", "--dangerously-skip-permissions"]
    assert any("cannot travel" in n for n in launch.notes)
    assert ".s-" not in launch.env["HTTPS_PROXY"]
    assert "the Gateway process" in " ".join(plan(setup, "wcp").notes)


def test_bad_gateway_and_refusals(setup):
    with pytest.raises(LaunchError, match="host:port"):
        plan(setup, "cip", gateway="localhost")
    with pytest.raises(LaunchError, match="Ante"):
        plan(setup, "acp")


def test_direct_route_launch_has_no_token(setup):
    launch = plan(setup, "cid")
    assert launch.token is None and TOKEN not in str(launch.env)


def test_codex_with_only_openai_api_key_gets_a_note(setup):
    environ = {**setup[0], "OPENAI_API_KEY": "sk-proj-x"}
    assert any("set CODEX_API_KEY" in n for n in plan(setup, "xnp", prompt="go", environ=environ).notes)
    environ["CODEX_API_KEY"] = "sk-proj-x"
    assert not any("CODEX_API_KEY" in n for n in plan(setup, "xnp", prompt="go", environ=environ).notes)
