"""End to end: the real Qwen Code CLI (npm @qwen-code/qwen-code, Node) routed through Clutch with the
recipe's environment. Its OpenAI-compatible provider is pointed at the real OpenRouter URL
(OPENAI_BASE_URL=https://openrouter.ai/api/v1, as a user would configure it): Clutch intercepts it
through HTTPS_PROXY, exactly as it would in real use.

`run_qwen` takes the gateway as a parameter, so a case with other rules is `Gateway(..., rules=path)`
plus `run_qwen(that_gateway, fake, tmp_path, prompt)`.
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

API_KEY = "sk-e2e-test"
BASE_URL = "https://openrouter.ai/api/v1"
# a real OpenRouter model that no other test asks the session-wide fake for: tests that look up
# fake log entries by model (test_route.py: qwen/qwen3-coder) must not find this test's entries
MODEL = "qwen/qwen3-coder-flash"
ANSWER = "pong from the fake upstream"

pytestmark = pytest.mark.e2e


@pytest.fixture
def qwen():
    return agent_binary("qwen", "Qwen Code")


def run_qwen(gateway, fake, tmp_path, prompt: str, *, model: str = MODEL, base_url: str = BASE_URL,
             args: tuple[str, ...] = (), timeout: float = 120,
             session: str = "e2e-qw") -> tuple[subprocess.CompletedProcess, list[dict]]:
    """`qwen --auth-type openai --approval-mode yolo PROMPT` (one-shot) through `gateway`, in a fresh
    HOME; returns the finished process and the fake upstream's log entries it caused."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    (home / ".qwen").mkdir(parents=True, exist_ok=True)
    work.mkdir(exist_ok=True)
    # no usage statistics posts to aliyuncs.com
    (home / ".qwen" / "settings.json").write_text(json.dumps({"privacy": {"usageStatisticsEnabled": False}}))
    proxy = gateway.proxy_url(username_for(Identity(agent="qwen", session=session)))
    env = {
        "PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb",
        "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": base_url, "OPENAI_MODEL": model,
        # Qwen otherwise re-runs itself in a child Node with a bigger heap: ~2 s more per run
        "QWEN_CODE_NO_RELAUNCH": "true",
        **agent_environment(proxy, ca_files(gateway.confdir)),
    }
    before = len(fake.entries())
    result = subprocess.run([str(agent_binary("qwen", "Qwen Code")), "--auth-type", "openai", "--approval-mode", "yolo", *args, prompt],
                            env=env, cwd=work, capture_output=True, text=True, timeout=timeout)
    return result, fake.entries()[before:]


def test_qwen_runs_a_turn_through_clutch(qwen, gateway, fake, tmp_path):
    result, entries = run_qwen(gateway, fake, tmp_path, "say hi")
    assert result.returncode == 0, result.stderr[-3000:]
    assert ANSWER in result.stdout

    # the turn, then a background "managed memory extraction" call: both through Clutch's engine
    turns = [e for e in entries if e["path"] == "/api/v1/chat/completions"]
    assert turns and len(turns) == len(entries), [e["path"] for e in entries]
    assert "say hi" in json.dumps(turns[0]["request_json"]["messages"][-1])
    for entry in turns:
        assert entry["host"] == "openrouter.ai"
        assert entry["model"] == MODEL and entry["stream"] is True
        assert entry["headers"]["authorization"] == f"Bearer {API_KEY}"
        assert entry["headers"]["x-stainless-retry-count"] == "0"
        assert "x-clutch-flow" in entry["headers"]
        assert entry["status"] == 200


LONG_CONTEXT_RULES = """\
version: 1
providers:
  openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
               key_env: OPENROUTER_API_KEY}
  anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
              key_env: ANTHROPIC_API_KEY}
routes:
  long_context: "anthropic:routed/qwen-long-context"
  long_context_threshold: 3000      # Qwen Code's system prompt and tool schemas alone are about 15k tokens
"""
ANTHROPIC_KEY = "sk-ant-api03-e2e-from-the-rules"


@pytest.fixture(scope="module")
def long_context_gateway(tmp_path_factory, fake, pki):
    gateway = gateway_on_rules(tmp_path_factory.mktemp("qwen-routed"), fake, pki, LONG_CONTEXT_RULES,
                               env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY})
    yield gateway
    gateway.stop()


def test_qwen_is_rerouted_by_the_long_context_route_to_an_anthropic_provider(qwen, long_context_gateway, fake,
                                                                             tmp_path):
    result, entries = run_qwen(long_context_gateway, fake, tmp_path, "say hi", session="e2e-qw-routed")
    assert result.returncode == 0, result.stderr[-3000:] + long_context_gateway.output()[-2000:]
    assert ANSWER in result.stdout

    # Qwen called OpenRouter's chat API; every call was over the threshold, so Clutch sent it to
    # Anthropic's Messages API with the rules' key, and translated the answer back
    assert entries and all(e["path"] == "/v1/messages" for e in entries), [e["path"] for e in entries]
    for entry in entries:
        assert entry["host"] == "api.anthropic.com"
        assert entry["model"] == "routed/qwen-long-context" and entry["stream"] is True
        assert entry["headers"]["x-api-key"] == ANTHROPIC_KEY
        assert API_KEY not in json.dumps(entry["headers"])
        assert entry["status"] == 200
        sent = entry["request_json"]
        assert isinstance(sent["system"], list) and sent["system"]  # Qwen's system message, hoisted
        assert all("input_schema" in tool for tool in sent.get("tools", []))
        assert sent["messages"][0]["role"] == "user"
    assert "say hi" in json.dumps(entries[0]["request_json"]["messages"][-1])
