"""End to end: the real Claude Code CLI (npm @anthropic-ai/claude-code, a Bun-compiled binary) routed
through Clutch with nothing but the recipe's environment: no ANTHROPIC_BASE_URL, so it talks to
https://api.anthropic.com as in real use, including its non-LLM start-up calls.

`run_claude` takes the gateway as a parameter, so a case with other rules (e.g. Claude Code's
Anthropic requests routed to an OpenAI-chat-only provider) is `Gateway(..., rules=path)` plus
`run_claude(that_gateway, fake, tmp_path, prompt)`; `llm_turns`, `tool_calls` and `tool_results`
read the fake's log in either dialect.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from harness import agent_binary, gateway_on_rules

from addons.certs import ca_files
from addons.wire.identity import Identity, username_for
from launcher.recipe import agent_environment

API_KEY = "sk-ant-api03-e2e-test"  # realistic prefix: other sk-ant- keys look like OAuth tokens
ANSWER = "pong from the fake upstream"
TOOL_MARKER = "clutch-e2e-tool-ran"
TOOL_ARGS = {"command": f"echo {TOOL_MARKER}", "description": "Print the end-to-end marker"}
# the fake answers a last message containing use-tool:NAME:{json} with a call of NAME (tests/fake_upstream.py)
TOOL_PROMPT = f"Run the marker command: use-tool:Bash:{json.dumps(TOOL_ARGS, separators=(',', ':'))}"
LLM_PATHS = ("/v1/messages", "/api/v1/messages", "/v1/chat/completions", "/api/v1/chat/completions")
STARTUP_PATHS = ("/api/claude_code/settings", "/api/claude_code/policy_limits")

pytestmark = pytest.mark.e2e


@pytest.fixture
def claude():
    return agent_binary("claude", "Claude Code")


def run_claude(gateway, fake, tmp_path, prompt: str, *, args: tuple[str, ...] = (), timeout: float = 120,
               session: str = "e2e-cc") -> tuple[subprocess.CompletedProcess, list[dict]]:
    """`claude -p PROMPT` through `gateway`, in a fresh HOME; returns the finished process and the
    fake upstream's log entries it caused (entries are written when a response ends, and Claude
    has read every response before it exits)."""
    home = tmp_path / "home"
    work = tmp_path / "work"  # Claude's working directory: its Bash tool runs here
    home.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    proxy = gateway.proxy_url(username_for(Identity(agent="claude", session=session)))
    env = {
        "PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb",
        "ANTHROPIC_API_KEY": API_KEY,
        # leaves policy_limits + settings of the 12 start-up requests
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "IS_SANDBOX": "1",  # --dangerously-skip-permissions is refused as root without it
        **agent_environment(proxy, ca_files(gateway.confdir)),
    }
    before = len(fake.entries())
    result = subprocess.run([str(agent_binary("claude", "Claude Code")), "-p", prompt, "--dangerously-skip-permissions", *args],
                            env=env, cwd=work, capture_output=True, text=True, timeout=timeout)
    return result, fake.entries()[before:]


def llm_turns(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e["method"] == "POST" and e["path"].split("?")[0] in LLM_PATHS]


def _blocks(content) -> list[dict]:
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") if b.get("type") == "text" else _text(b.get("content")) for b in _blocks(content))


def tool_calls(request_json: dict) -> dict[str, tuple[str, dict]]:
    """The tool calls in a request's history, {id: (name, arguments)}: Anthropic tool_use blocks or
    OpenAI chat tool_calls."""
    calls = {}
    for message in request_json.get("messages") or []:
        if message.get("role") != "assistant":
            continue
        for block in _blocks(message.get("content")):
            if block.get("type") == "tool_use":
                calls[block["id"]] = (block["name"], block.get("input") or {})
        for call in message.get("tool_calls") or []:
            calls[call["id"]] = (call["function"]["name"], json.loads(call["function"]["arguments"] or "{}"))
    return calls


def tool_results(request_json: dict) -> dict[str, str]:
    """The tool results in a request's history, {tool call id: text}: Anthropic tool_result blocks or
    OpenAI chat `role: tool` messages."""
    results = {}
    for message in request_json.get("messages") or []:
        if message.get("role") == "tool":
            results[message["tool_call_id"]] = _text(message.get("content"))
        for block in _blocks(message.get("content")):
            if block.get("type") == "tool_result":
                results[block["tool_use_id"]] = _text(block.get("content"))
    return results


def test_claude_runs_a_turn_through_clutch(claude, gateway, fake, tmp_path):
    result, entries = run_claude(gateway, fake, tmp_path, "say hi")
    assert result.returncode == 0, result.stderr[-3000:]
    assert ANSWER in result.stdout

    turns = llm_turns(entries)
    assert len(turns) == 1
    for entry in turns:  # through Clutch's engine to api.anthropic.com, with Claude's own key, no retries
        assert entry["host"] == "api.anthropic.com"
        assert entry["path"] == "/v1/messages?beta=true"
        assert entry["headers"]["x-api-key"] == API_KEY
        assert entry["headers"]["x-stainless-retry-count"] == "0"
        assert "x-clutch-flow" in entry["headers"]
        assert entry["status"] == 200 and entry["request_json"]["stream"] is True

    # Claude's start-up calls pass through untouched (not the engine's business), each asked once:
    # a policy_limits answer it does not accept costs 5 retries and ~5 s
    startup = [e for e in entries if e not in turns]
    assert sorted(e["path"] for e in startup) == sorted(STARTUP_PATHS), [e["path"] for e in startup]
    for entry in startup:
        assert entry["host"] == "api.anthropic.com" and entry["status"] in (200, 404)
        assert "x-clutch-flow" not in entry["headers"]
        assert entry["headers"]["x-api-key"] == API_KEY


def test_claude_runs_a_tool_and_sends_its_result_through_clutch(claude, gateway, fake, tmp_path):
    result, entries = run_claude(gateway, fake, tmp_path, TOOL_PROMPT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ANSWER in result.stdout

    turns = llm_turns(entries)
    assert len(turns) == 2, [e["path"] for e in entries]
    assert all("x-clutch-flow" in e["headers"] and e["status"] == 200 for e in turns)
    assert not tool_results(turns[0]["request_json"])
    # the second request carries the Bash call the fake asked for and its output, paired by id
    calls, results = tool_calls(turns[1]["request_json"]), tool_results(turns[1]["request_json"])
    assert [name for name, _ in calls.values()] == ["Bash"]
    [(call_id, (_, arguments))] = calls.items()
    assert arguments["command"] == TOOL_ARGS["command"]
    assert TOOL_MARKER in results[call_id], results


ROUTED_RULES = """\
version: 1
providers:
  anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
              key_env: ANTHROPIC_API_KEY}
  openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
               key_env: OPENROUTER_API_KEY}
tiers:
  big: "openrouter:moonshotai/kimi-k2.6"
  middle: "openrouter:qwen/qwen3-coder:free"
  small: "openrouter:qwen/qwen3-next-80b-a3b-instruct:free"
routes: {default: "openrouter:qwen/qwen3-coder:free"}
"""
ROUTER_KEY = "sk-or-v1-e2e-from-the-rules"


@pytest.fixture(scope="module")
def routed_gateway(tmp_path_factory, fake, pki):
    """A gateway whose rules send Claude Code to an OpenAI-chat-only OpenRouter: every request is
    translated Anthropic -> Chat Completions, and every answer back."""
    gateway = gateway_on_rules(tmp_path_factory.mktemp("claude-routed"), fake, pki, ROUTED_RULES,
                               env={"OPENROUTER_API_KEY": ROUTER_KEY})
    yield gateway
    gateway.stop()


def test_claude_on_an_openai_chat_provider_runs_a_tool_turn(claude, routed_gateway, fake, tmp_path):
    result, entries = run_claude(routed_gateway, fake, tmp_path, TOOL_PROMPT, session="e2e-cc-routed")
    assert result.returncode == 0, result.stderr[-3000:] + routed_gateway.output()[-3000:]
    assert ANSWER in result.stdout

    turns = llm_turns(entries)
    assert len(turns) == 2, [e["path"] for e in entries]
    for entry in turns:  # Claude called api.anthropic.com; the rules sent it to OpenRouter, in its dialect
        assert (entry["host"], entry["path"]) == ("openrouter.ai", "/api/v1/chat/completions")
        assert entry["headers"]["authorization"] == f"Bearer {ROUTER_KEY}"
        assert "x-api-key" not in entry["headers"] and API_KEY not in json.dumps(entry["headers"])
        assert entry["model"] in ("moonshotai/kimi-k2.6", "qwen/qwen3-coder:free")
        assert entry["status"] == 200 and entry["request_json"]["stream"] is True
        assert entry["request_json"]["messages"][0]["role"] == "system"  # Claude Code's system prompt
        assert all(t["type"] == "function" for t in entry["request_json"]["tools"])
    first, second = (t["request_json"] for t in turns)
    assert "Bash" in {t["function"]["name"] for t in first["tools"]}
    # the translated tool call went back to Claude Code as a tool_use, it ran Bash, and its result
    # came back translated as a `tool` message paired with the call's id
    calls, results = tool_calls(second), tool_results(second)
    assert list(calls) == ["call_fake_1"] and calls["call_fake_1"][0] == "Bash"
    assert calls["call_fake_1"][1]["command"] == TOOL_ARGS["command"]
    assert TOOL_MARKER in results["call_fake_1"]
    tool_message = next(m for m in second["messages"] if m["role"] == "tool")
    assert second["messages"].index(tool_message) == next(
        i for i, m in enumerate(second["messages"]) if m.get("tool_calls")) + 1


FAILING_FIRST_RULES = """\
version: 1
providers:
  anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
              key_env: ANTHROPIC_API_KEY}
  openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
               key_env: OPENROUTER_API_KEY}
routes: {default: "openrouter:e2e/fail-429:free"}
cascades:
  "openrouter:e2e/fail-429:free": ["openrouter:e2e/fail-503", "openrouter:e2e/answers"]
fallback: {method: cascade}
"""


@pytest.fixture(scope="module")
def failing_first_gateway(tmp_path_factory, fake, pki):
    workdir = tmp_path_factory.mktemp("claude-cascade")
    gateway = gateway_on_rules(workdir, fake, pki, FAILING_FIRST_RULES,
                               "--set", f"clutch_state_dir={workdir / 'state'}", env={"OPENROUTER_API_KEY": ROUTER_KEY})
    yield gateway
    gateway.stop()


def test_claude_completes_a_tool_turn_while_its_first_two_models_fail(claude, failing_first_gateway, fake, tmp_path):
    result, entries = run_claude(failing_first_gateway, fake, tmp_path, TOOL_PROMPT, session="e2e-cc-cascade")
    assert result.returncode == 0, result.stderr[-3000:] + failing_first_gateway.output()[-3000:]
    assert ANSWER in result.stdout

    turns = llm_turns(entries)
    models = [e["model"] for e in turns]
    # first request: 429 then 503 then the model that answers; Claude never saw the failures.
    # The second request (the tool result) goes straight to the answering model: the 429 put the
    # free model in its cooldown, and the session sticks to the model that answered.
    assert models[:3] == ["e2e/fail-429:free", "e2e/fail-503", "e2e/answers"], models
    assert models[3:] == ["e2e/answers"], models
    assert [e["status"] for e in turns] == [429, 503, 200, 200]
    calls, results = tool_calls(turns[-1]["request_json"]), tool_results(turns[-1]["request_json"])
    assert [name for name, _ in calls.values()] == ["Bash"]
    assert TOOL_MARKER in results[next(iter(calls))]
