"""Every agent x mode command line (launcher/agents.py), refused modes, and every agent x mode x route
actually run: a fake agent executable on PATH records the argv and environment it receives."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from addons.certs import ca_files
from addons.wire.identity import AGENT_LETTERS, identity_from_username
from launcher.agents import AGENTS, LaunchError, UnsupportedMode, command_line, yolo_env
from launcher.codes import parse_code
from launcher.launch import PROXY_AND_CA, plan_launch

S, P = "4f1c2a", "fix the failing test"
UPDATES = ["-c", "check_for_update_on_startup=false"]

# agent -> mode -> expected argv (None: refused). The table the launcher implements.
EXPECTED = {
    "claude": {
        "i": ["claude", "--dangerously-skip-permissions"],
        "c": ["claude", "--continue", "--dangerously-skip-permissions"],
        "n": ["claude", "--print", "--dangerously-skip-permissions", P],
        "s": ["claude", "--resume", S, "--dangerously-skip-permissions"],
        "r": ["claude", "--dangerously-skip-permissions", "--resume"],
    },
    "codex": {  # UPDATES: its self-updater's switch (launcher.updaters) goes first among the flags
        "i": ["codex", "--no-daemon", *UPDATES, "--dangerously-bypass-approvals-and-sandbox"],
        "c": ["codex", "resume", "--last", "--no-daemon", *UPDATES, "--dangerously-bypass-approvals-and-sandbox"],
        "n": ["codex", "exec", "--skip-git-repo-check", *UPDATES, "--dangerously-bypass-approvals-and-sandbox", P],
        "s": ["codex", "resume", S, "--no-daemon", *UPDATES, "--dangerously-bypass-approvals-and-sandbox"],
        "r": ["codex", "resume", "--no-daemon", *UPDATES, "--dangerously-bypass-approvals-and-sandbox"],
    },
    "opencode": {
        "i": ["opencode", "--auto"],
        "c": ["opencode", "--continue", "--auto"],
        "n": ["opencode", "run", "--auto", P],
        "s": ["opencode", "--session", S, "--auto"],
        "r": None,
    },
    "qwen": {
        "i": ["qwen", "--yolo"],
        "c": ["qwen", "--continue", "--yolo"],
        "n": ["qwen", "--yolo", P],
        "s": ["qwen", "-r", S, "--yolo"],
        "r": ["qwen", "--yolo", "-r"],
    },
    "pi": {
        "i": ["pi"],
        "c": ["pi", "--continue"],
        "n": ["pi", "--print", P],
        "s": ["pi", "--session", S],
        "r": ["pi", "--resume"],
    },
    "hermes": {
        "i": ["hermes", "--yolo"],
        "c": ["hermes", "--yolo", "--continue"],
        "n": ["hermes", "-z", P],
        "s": ["hermes", "-r", S, "--yolo"],
        "r": None,
    },
    "ante": {
        "i": ["ante", "--yolo"],
        "c": None,
        "n": ["ante", "--yolo", "-p", P],
        "s": ["ante", "-r", S, "--yolo"],
        "r": None,
    },
    "antigravity": {
        "i": ["agy", "--dangerously-skip-permissions"],
        "c": ["agy", "--continue", "--dangerously-skip-permissions"],
        "n": ["agy", "--dangerously-skip-permissions", "-p", P],
        "s": ["agy", "--conversation", S, "--dangerously-skip-permissions"],
        "r": None,
    },
    "openclaw": {
        "i": ["openclaw", "tui", "--local"],
        "c": ["openclaw", "resume"],
        "n": ["openclaw", "agent", "exec", P],
        "s": None,
        "r": None,
    },
}
REFUSALS = {  # (agent, mode) -> words the refusal must contain
    ("opencode", "r"): ["OpenCode", "resume picker", "It offers", "resume by id (s)"],
    ("hermes", "r"): ["Hermes", "resume picker", "It offers", "continue last (c)"],
    ("ante", "c"): ["Ante", "continue last", "FROM-DOCS", "It offers", "resume by id (s)"],
    ("ante", "r"): ["Ante", "resume picker", "It offers"],
    ("antigravity", "r"): ["Antigravity", "/resume", "It offers"],
    ("openclaw", "s"): ["OpenClaw", "--session-id", "mode n with -s ID", "It offers"],
    ("openclaw", "r"): ["OpenClaw", "resume picker", "mode c"],
}
CASES = [(agent, mode) for agent in EXPECTED for mode in "icnsr"]


def args_for(mode):
    return {"session": S if mode == "s" else None, "prompt": P if mode == "n" else None}


def test_every_agent_letter_has_a_spec():
    assert set(AGENTS) == set(AGENT_LETTERS.values()) == set(EXPECTED)


@pytest.mark.parametrize("agent,mode", CASES)
def test_command_line(agent, mode):
    expected = EXPECTED[agent][mode]
    if expected is None:
        with pytest.raises(UnsupportedMode) as caught:
            command_line(agent, mode, **args_for(mode))
        for word in REFUSALS[(agent, mode)]:
            assert word in str(caught.value)
    else:
        assert command_line(agent, mode, **args_for(mode)) == expected


def test_every_refusal_is_listed():
    assert {(a, m) for a, m in CASES if EXPECTED[a][m] is None} == set(REFUSALS)


@pytest.mark.parametrize("agent,expected", [
    ("claude", ["claude", "--print", "--resume", S, "--dangerously-skip-permissions", P]),
    ("codex", ["codex", "exec", "--skip-git-repo-check", *UPDATES, "--dangerously-bypass-approvals-and-sandbox",
               "resume", S, P]),
    ("opencode", ["opencode", "run", "--session", S, "--auto", P]),
    ("openclaw", ["openclaw", "agent", "--session-id", S, "-m", P]),
    ("pi", ["pi", "--session", S, "--print", P]),
])
def test_prompt_into_a_session(agent, expected):
    assert command_line(agent, "n", session=S, prompt=P) == expected


@pytest.mark.parametrize("agent", ["qwen", "hermes", "ante", "antigravity"])
def test_prompt_into_a_session_refused_where_undocumented(agent):
    with pytest.raises(UnsupportedMode, match="prompt into an existing session"):
        command_line(agent, "n", session=S, prompt=P)


@pytest.mark.parametrize("agent,model,flag", [
    ("claude", "sonnet", ["--model", "sonnet"]),
    ("codex", "gpt-6.1-sol", ["-m", "gpt-6.1-sol"]),
    ("opencode", "openrouter/moonshotai/kimi-k2.6", ["-m", "openrouter/moonshotai/kimi-k2.6"]),
    ("qwen", "qwen3-coder", ["-m", "qwen3-coder"]),
    ("pi", "openrouter/qwen/qwen3-coder", ["--model", "openrouter/qwen/qwen3-coder"]),
    ("hermes", "anthropic/claude-opus-4.8", ["-m", "anthropic/claude-opus-4.8"]),
    ("ante", "deepseek-v4", ["-m", "deepseek-v4"]),
    ("openclaw", "openrouter/kimi", ["--model", "openrouter/kimi"]),
])
def test_model_flag_then_extra(agent, model, flag):
    argv = command_line(agent, "i", model=model, extra=["--verbose"])
    spec = AGENTS[agent]
    assert argv[argv.index(flag[0]):argv.index(flag[0]) + 3] == [*flag, "--verbose"]
    assert argv[:1] == [spec.binary]


def test_antigravity_refuses_a_model():
    with pytest.raises(UnsupportedMode, match=r"Antigravity.*1\.0\.x rejects --model"):
        command_line("antigravity", "i", model="gemini-3.1-pro")


def test_opencode_wants_provider_slash_model():
    with pytest.raises(LaunchError, match="provider/model"):
        command_line("opencode", "i", model="kimi-k2.6")


@pytest.mark.parametrize("kwargs,message", [
    ({"mode": "s"}, "-s ID"),
    ({"mode": "n"}, "give the prompt"),
    ({"mode": "i", "prompt": P}, "only for mode n"),
    ({"mode": "c", "session": S}, "needs mode s"),
    ({"mode": "x"}, "unknown mode"),
])
def test_usage_errors(kwargs, message):
    with pytest.raises(LaunchError, match=message):
        command_line("claude", **kwargs)


def test_without_yolo_no_bypass_flags():
    assert command_line("claude", "i", yolo=False) == ["claude"]
    assert command_line("codex", "n", prompt=P, yolo=False) == ["codex", "exec", "--skip-git-repo-check", *UPDATES, P]
    assert yolo_env("claude", is_root=True, yolo=False) == {}


def test_is_sandbox_only_for_claude_as_root():
    assert yolo_env("claude", is_root=True) == {"IS_SANDBOX": "1"}
    assert yolo_env("claude", is_root=False) == {}
    assert all(yolo_env(agent, is_root=True) == {} for agent in AGENTS if agent != "claude")


# ---- every agent x mode x route, run through a fake agent executable ----

FAKE = """#!/bin/sh
# a fake agent: records its argv and environment (NUL-separated) and exits
for a in "$@"; do printf '%s\\0' "$a"; done > "$XX_RECORD.argv"
env -0 > "$XX_RECORD.env"
"""


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bin")
    for spec in AGENTS.values():
        path = folder / spec.binary
        path.write_text(FAKE)
        path.chmod(0o755)
    return folder


def run_fake(launch, record: Path):
    result = subprocess.run(launch.argv, env=launch.env, capture_output=True, timeout=20)
    assert result.returncode == 0, result.stderr
    argv = record.with_suffix(".argv").read_bytes().split(b"\0")[:-1]
    env = dict(item.split("=", 1) for item in record.with_suffix(".env").read_bytes().decode().split("\0") if item)
    return [launch.argv[0], *(a.decode() for a in argv)], env


def user_environ(fake_bin, record, **more):
    return {
        "PATH": f"{fake_bin}:{os.defpath}:/usr/bin:/bin",
        "HOME": "/home/someone", "LANG": "C.UTF-8", "XX_RECORD": str(record),
        "OPENROUTER_API_KEY": "sk-or-test", "MY_SETTING": "kept",
        "https_proxy": "http://corp:3128", "ALL_PROXY": "socks5://corp:1080", "SSL_CERT_FILE": "/corp.pem",
        **more,
    }


ROUTE_CASES = [(agent, mode, route) for agent, mode in CASES if EXPECTED[agent][mode] is not None
               for route in "pbd"]


@pytest.mark.skipif(shutil.which("env") is None, reason="needs env(1)")
@pytest.mark.parametrize("agent,mode,route", ROUTE_CASES)
def test_agent_receives_argv_and_env(fake_bin, tmp_path, agent, mode, route):
    letter = next(letter for letter, name in AGENT_LETTERS.items() if name == agent)
    code = parse_code(letter + mode + route)
    record = tmp_path / "record"
    ca = ca_files(tmp_path / "certs")
    launch = plan_launch(code, environ=user_environ(fake_bin, record), gateway="127.0.0.1:8780", ca=ca,
                         token="tok-secret", is_root=True, extra=(), model=None, **args_for(mode))
    argv, env = run_fake(launch, record)
    assert argv == EXPECTED[agent][mode]
    assert env["MY_SETTING"] == "kept" and env["OPENROUTER_API_KEY"] == "sk-or-test"
    assert env["HOME"] == "/home/someone"
    assert ("IS_SANDBOX" in env) == (agent == "claude")
    assert "ALL_PROXY" not in env
    if route == "d":
        assert not [name for name in env if name.upper() in PROXY_AND_CA]
    else:
        user = f"xx-{code.text}" + (f".s-{S}" if mode == "s" else "")
        url = f"http://{user}:tok-secret@127.0.0.1:8780"
        for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
            assert env[name] == url
        assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,::1"
        assert env["NODE_EXTRA_CA_CERTS"] == str(ca.ca_cert)
        for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "CODEX_CA_CERTIFICATE"):
            assert env[name] == str(ca.bundle)
        assert env["NODE_USE_ENV_PROXY"] == "1"
        seen = identity_from_username(user)
        assert (seen.agent, seen.route, seen.launch_code) == (agent, route, code.text)


# ---- the docs' table of command lines (docs/xx.md) is the launcher's, cell by cell ----

def docs_command_table() -> dict[str, list[str]]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "xx.md").read_text()
    start, end = "<!-- command-lines: checked by tests/launcher/test_agents.py -->", "<!-- /command-lines -->"
    block = text.split(start, 1)[1].split(end)[0]
    rows = [line for line in block.strip().splitlines() if line.startswith("| ") and not line.startswith("| agent")]
    return {cells[0]: cells[1:] for cells in
            ([cell.strip() for cell in row.strip("|").split("|")] for row in rows)}


def test_docs_table_matches_every_command_line():
    table = docs_command_table()
    assert set(table) == {spec.title for spec in AGENTS.values()}
    for spec in AGENTS.values():
        cells = table[spec.title]
        for mode, cell in zip("icnsr", cells):
            expected = EXPECTED[spec.name][mode]
            if expected is None:
                assert cell == "—", (spec.name, mode)
            else:
                placeholders = [{S: "ID", P: "PROMPT"}.get(word, word) for word in expected]
                assert cell == "`" + " ".join(placeholders) + "`", (spec.name, mode, cell)
        try:
            into_session = "`" + " ".join(command_line(spec.name, "n", session="ID", prompt="PROMPT")) + "`"
        except UnsupportedMode:
            into_session = "—"
        assert cells[5] == into_session, spec.name
        model = "`" + " ".join(spec.model).replace("{model}", "M") + "`" if spec.model else "—"
        assert cells[6] == model, spec.name
