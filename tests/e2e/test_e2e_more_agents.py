"""End to end: the real Codex CLI, Pi, Hermes Agent and OpenClaw, each running one prompt through the
shared Clutch gateway to the fake provider with nothing but the recipe's environment (HTTPS_PROXY with
the xx identity, the CA variables; no base URLs), a fresh HOME and its own fake key.

Each agent's setup (HOME files, key, switches, provider / model flags, which log entries are its LLM
calls) is tests/agent_setups.py; its command line is the launcher's, `xx <agent>np -p PROMPT -- ARGS`
(launcher.agents.command_line). The setups taken from the older e2e tests (Claude Code, OpenCode, Qwen
Code) run here too, so every setup in that module is known to work.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from agent_setups import AgentSetup, prepare
from fake_upstream import FakeUpstream
from harness import agent_binary, agent_search_path, gateway_on_rules, stop_group

from addons.certs import ca_files
from addons.wire.identity import Identity, username_for
from launcher.agents import agent_spec, command_line, yolo_env
from launcher.recipe import agent_environment

ANSWER = FakeUpstream().expected_answer()  # the fake process's default answer: "pong from the fake upstream"
PROMPT = "say hi"
# every path on which any dialect's LLM calls arrive at the fake: an agent's LLM call elsewhere than
# its setup's host + path fails the test instead of going unnoticed
LLM_PATHS = ("/v1/messages", "/api/v1/messages", "/v1/chat/completions", "/api/v1/chat/completions",
             "/chat/completions", "/v1/responses", "/api/v1/responses")

pytestmark = pytest.mark.e2e


def looks_like_llm_call(entry: dict) -> bool:
    path = entry["path"].split("?", 1)[0]
    return entry["method"] == "POST" and (path in LLM_PATHS or path.endswith((":generateContent",
                                                                              ":streamGenerateContent")))


def run_one_prompt(agent: str, gateway, fake, tmp_path: Path, *, timeout: float = 120, prompt: str = PROMPT
                   ) -> tuple[subprocess.CompletedProcess, AgentSetup, list[dict]]:
    """`xx <agent>np -p PROMPT -- <setup args>` without xx: the launcher's argv and the recipe's
    environment, in a fresh HOME; returns the finished process, the setup and the fake's log
    entries it caused (entries are written when a response ends; the agents have read every
    response before they exit)."""
    binary = agent_binary(agent, agent_spec(agent).title)
    home, work = tmp_path / "home", tmp_path / "work"
    setup = prepare(agent, home, work)
    proxy = gateway.proxy_url(username_for(Identity(agent=agent, session=f"e2e-{agent}")))
    env = {
        "PATH": agent_search_path(agent), "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb",
        **yolo_env(agent, is_root=os.geteuid() == 0),
        **setup.env,
        **agent_environment(proxy, ca_files(gateway.confdir)),
    }
    argv = command_line(agent, "n", prompt=prompt, extra=setup.args)
    argv[0] = str(binary)
    before = len(fake.entries())
    # its own process group, so whatever the agent starts (workers, sandboxes) is stopped with it
    process = subprocess.Popen(argv, env=env, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(process)
        stdout, stderr = process.communicate()
        pytest.fail(f"{agent} did not finish within {timeout} s: {argv}\n{stderr[-3000:]}")
    finally:
        stop_group(process)
    result = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
    return result, setup, fake.entries()[before:]


def assert_every_llm_call_went_through_clutch(result, setup: AgentSetup, entries: list[dict], gateway) -> list[dict]:
    """Exit 0, the fake's answer printed, and every LLM call on the setup's host + path, through
    Clutch's engine (x-clutch-flow), answered 200, with the agent's own key; its other requests to
    provider hosts (model lists) passed through untouched. Returns the LLM calls."""
    assert result.returncode == 0, result.stderr[-3000:] + gateway.output()[-2000:]
    assert ANSWER in result.stdout, (result.stdout[-2000:], result.stderr[-3000:])
    calls = [e for e in entries if looks_like_llm_call(e)]
    assert calls, [(e["method"], e["host"], e["path"]) for e in entries]
    for entry in calls:
        assert setup.is_llm_call(entry), (entry["host"], entry["path"])
        assert "x-clutch-flow" in entry["headers"]
        assert entry["status"] == 200
        assert setup.carries_own_key(entry), {k: v for k, v in entry["headers"].items() if "auth" in k or "key" in k}
    if setup.model:
        assert setup.model in {e["model"] for e in calls}
    assert any(PROMPT in json.dumps(e["request_json"]) for e in calls)
    for entry in entries:
        if entry not in calls:
            assert "x-clutch-flow" not in entry["headers"], (entry["method"], entry["path"])
    return calls


def websocket_turns(gateway, session: str, count: int) -> list[dict]:
    """The journal's entries (GET /requests) of a session's turns sent on a Responses WebSocket, once
    there are `count` (a turn is journaled when its flow ends, which may be just after Codex exits)."""
    deadline = time.monotonic() + 10
    while True:
        journal = httpx.get(f"http://127.0.0.1:{gateway.port}/requests", timeout=5, trust_env=False).json()
        turns = [e for e in journal["requests"] if e["session"] == session and e["websocket"]]
        if len(turns) >= count or time.monotonic() > deadline:
            return turns
        time.sleep(0.05)


def assert_codex_used_its_websocket(result, entries, gateway, log_before: int) -> None:
    """Codex spoke its own transport, the Responses WebSocket, which Clutch answered: no upgrade reached
    the fake, none was refused (no 426, so no ERROR line from Codex), and its turns came as HTTP
    requests through Clutch's engine (each call of the caller's checks carries x-clutch-flow)."""
    assert not [e for e in entries if e["method"] == "GET"], [e["path"] for e in entries]
    assert "<< 426" not in gateway.output()[log_before:]  # a response line; "426" alone is in some port numbers
    assert "failed to connect to Responses WebSocket" not in result.stderr + result.stdout
    assert "ERROR" not in result.stderr, result.stderr[-3000:]


def test_codex_runs_a_prompt_through_clutch(gateway, fake, tmp_path):
    log_before = len(gateway.output())
    result, setup, entries = run_one_prompt("codex", gateway, fake, tmp_path)
    calls = assert_every_llm_call_went_through_clutch(result, setup, entries, gateway)
    assert len(calls) == 1 and calls[0]["stream"] is True
    assert calls[0]["headers"]["originator"] == "codex_exec"
    # on gateway defaults Codex keeps its WebSocket (its first try): Clutch answered the upgrade
    # and its pre-warm itself, and sent the one turn through the gateway with the whole input
    assert_codex_used_its_websocket(result, entries, gateway, log_before)
    [turn] = websocket_turns(gateway, "e2e-codex", 1)
    assert (turn["agent"], turn["model"], turn["status"], turn["websocket"]["turn"]) == ("codex", setup.model, 200, 1)
    roles = [item.get("role") for item in calls[0]["request_json"]["input"]]
    assert roles[0] == "developer" and roles[-1] == "user"  # the pre-warm's instructions, then the prompt


CODEX_ROUTED_RULES = """\
version: 1
providers:
  openai: {base_url: "https://api.openai.com/v1", dialects: [openai_responses], hosts: [api.openai.com],
           key_env: OPENAI_API_KEY}
  openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
               key_env: OPENROUTER_API_KEY}
profiles:
  codex:
    routes: {default: "openrouter:qwen/qwen3-coder-for-codex"}
"""
CODEX_ROUTER_KEY = "sk-or-v1-e2e-codex-rules"
CODEX_MARKER = "clutch-e2e-codex-ran"
# the fake answers a last message holding use-tool:NAME:{json} with a call of NAME (tests/fake_upstream.py);
# exec_command is Codex 0.169.0's shell tool
CODEX_TOOL_PROMPT = f'Run the marker: use-tool:exec_command:{{"cmd":"echo {CODEX_MARKER}"}}'


@pytest.fixture(scope="module")
def codex_routed_gateway(tmp_path_factory, fake, pki):
    """Rules that send Codex (Responses API at api.openai.com) to an OpenRouter that speaks only Chat."""
    gateway = gateway_on_rules(tmp_path_factory.mktemp("codex-routed"), fake, pki, CODEX_ROUTED_RULES,
                               env={"OPENROUTER_API_KEY": CODEX_ROUTER_KEY})
    yield gateway
    gateway.stop()


def test_codex_routed_to_a_chat_only_provider_completes_a_tool_turn(codex_routed_gateway, fake, tmp_path):
    gateway = codex_routed_gateway
    log_before = len(gateway.output())
    result, setup, entries = run_one_prompt("codex", gateway, fake, tmp_path, prompt=CODEX_TOOL_PROMPT)
    assert result.returncode == 0, result.stderr[-3000:] + gateway.output()[-3000:]
    assert ANSWER in result.stdout, (result.stdout[-2000:], result.stderr[-3000:])
    calls = [e for e in entries if looks_like_llm_call(e)]
    # every LLM call went to the chat endpoint, translated, with the rules' key: none to /v1/responses,
    # and the WebSocket upgrade never reached a provider (Clutch answers it, and sends each turn on)
    assert len(calls) == 2 and entries == calls, [(e["method"], e["host"], e["path"]) for e in entries]
    assert_codex_used_its_websocket(result, entries, gateway, log_before)
    turns = websocket_turns(gateway, "e2e-codex", 2)
    assert [(t["target"], t["status"], t["websocket"]["turn"]) for t in turns] == [
        ("openrouter:qwen/qwen3-coder-for-codex", 200, 1), ("openrouter:qwen/qwen3-coder-for-codex", 200, 2)]
    assert turns[0]["websocket"]["socket"] == turns[1]["websocket"]["socket"]  # one socket, two turns
    for entry in calls:
        assert (entry["host"], entry["path"]) == ("openrouter.ai", "/api/v1/chat/completions")
        assert entry["headers"]["authorization"] == f"Bearer {CODEX_ROUTER_KEY}" and "x-clutch-flow" in entry["headers"]
        assert entry["status"] == 200 and entry["model"] == "qwen/qwen3-coder-for-codex"
        assert entry["request_json"]["stream"] is True
        tools = {t["function"]["name"]: t["function"] for t in entry["request_json"]["tools"]}
        assert "exec_command" in tools and "web_search" not in tools
        assert tools["apply_patch"]["parameters"]["properties"] == {"input": {"type": "string"}}  # the custom tool
    first, second = (e["request_json"]["messages"] for e in calls)
    assert first[0]["role"] == "system" and first[-1]["role"] == "user" and CODEX_MARKER in first[-1]["content"]
    # Codex ran the call it got back as a function_call and sent its output, paired by call id
    [call] = second[-2]["tool_calls"]
    assert (call["id"], call["function"]["name"]) == ("call_fake_1", "exec_command")
    assert json.loads(call["function"]["arguments"]) == {"cmd": f"echo {CODEX_MARKER}"}
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == "call_fake_1"
    assert f"\n{CODEX_MARKER}\n" in second[-1]["content"]  # the command's real output
    assert CODEX_ROUTER_KEY not in gateway.output()


def test_pi_runs_a_prompt_through_clutch(gateway, fake, tmp_path):
    result, setup, entries = run_one_prompt("pi", gateway, fake, tmp_path)
    calls = assert_every_llm_call_went_through_clutch(result, setup, entries, gateway)
    assert entries == calls  # --print sends nothing but the turn
    assert len(calls) == 1 and calls[0]["stream"] is True


def test_hermes_runs_a_prompt_through_clutch(gateway, fake, tmp_path):
    result, setup, entries = run_one_prompt("hermes", gateway, fake, tmp_path)
    calls = assert_every_llm_call_went_through_clutch(result, setup, entries, gateway)
    assert len(calls) == 1 and calls[0]["stream"] is True
    assert calls[0]["headers"]["x-title"] == "Hermes Agent"  # OpenRouter's app attribution header
    assert (tmp_path / "home" / ".hermes").is_dir()


def test_openclaw_runs_a_prompt_through_clutch(gateway, fake, tmp_path):
    result, setup, entries = run_one_prompt("openclaw", gateway, fake, tmp_path, timeout=180)
    calls = assert_every_llm_call_went_through_clutch(result, setup, entries, gateway)
    assert len(calls) == 1 and calls[0]["stream"] is True
    assert calls[0]["headers"]["x-openrouter-title"] == "OpenClaw"  # OpenRouter's app attribution header
    # it reads OpenRouter's (public) model list first, which passes through untouched, without a key
    [models] = [e for e in entries if e["method"] == "GET"]
    assert models["path"] == "/api/v1/models" and "authorization" not in models["headers"]


@pytest.mark.parametrize("agent", ["claude", "opencode", "qwen"])
def test_the_setups_taken_from_the_older_e2e_tests_run_too(agent, gateway, fake, tmp_path):
    result, setup, entries = run_one_prompt(agent, gateway, fake, tmp_path)
    assert_every_llm_call_went_through_clutch(result, setup, entries, gateway)
