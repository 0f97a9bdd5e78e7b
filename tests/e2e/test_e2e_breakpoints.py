"""What each real agent sends about prompt caching, measured on its own request bodies.

Each agent runs one prompt through a gateway whose rules turn Clutch's breakpoints off
(`compression.breakpoints: off`), so the fake provider sees exactly the agent's own `cache_control`
markers. The table below is what was seen with the pinned versions (tests/agents/); docs/caching.md
quotes it. For an agent that marks none on a target that needs them, the breakpoints module adds them
to that same body.
"""

from __future__ import annotations

import dataclasses
import textwrap

import agent_setups
import pytest
from harness import gateway_on_rules
from test_e2e_more_agents import looks_like_llm_call, run_one_prompt

from addons.compression.breakpoints import has_breakpoints, needed, with_breakpoints
from addons.wire.dialects import Dialect

pytestmark = pytest.mark.e2e

RULES = textwrap.dedent("""\
    version: 1
    compression: {breakpoints: "off"}
""")

CLAUDE_ON_OPENROUTER = "anthropic/claude-sonnet-4.5"
# (agent, the OpenRouter model it is told to use, None for its setup's own) -> for each model its LLM
# calls went to, whether they carry cache_control markers of their own (seen with the pinned
# versions; docs/caching.md has the table)
MARKS_OWN: dict[tuple[str, str | None], dict[str, bool]] = {
    ("claude", None): {"claude-opus-5-5": True},  # api.anthropic.com
    ("codex", None): {"gpt-5.5": False},  # OpenAI Responses: cached automatically
    # its title call goes to a small Gemini model, which on OpenRouter caches only at breakpoints
    ("opencode", None): {CLAUDE_ON_OPENROUTER: True, "google/gemini-3.8-flash": False},
    ("qwen", None): {"qwen/qwen3-coder-flash": False},  # needs breakpoints, gets Clutch's
    ("pi", None): {"deepseek/deepseek-chat": False},  # cached automatically
    ("hermes", None): {"nousresearch/hermes-4-70b": False},
    ("openclaw", None): {"z-ai/glm-4.6": False},
    ("qwen", CLAUDE_ON_OPENROUTER): {CLAUDE_ON_OPENROUTER: False},  # needs breakpoints, gets Clutch's
    ("pi", CLAUDE_ON_OPENROUTER): {CLAUDE_ON_OPENROUTER: True},
    ("hermes", CLAUDE_ON_OPENROUTER): {CLAUDE_ON_OPENROUTER: True},
    ("openclaw", CLAUDE_ON_OPENROUTER): {CLAUDE_ON_OPENROUTER: True},
}


@pytest.fixture(scope="module")
def unmarked_gateway(tmp_path_factory, fake, pki):
    gateway = gateway_on_rules(tmp_path_factory.mktemp("no-breakpoints"), fake, pki, RULES)
    yield gateway
    gateway.stop()


def markers(node) -> int:
    if isinstance(node, dict):
        return ("cache_control" in node) + sum(markers(v) for v in node.values())
    if isinstance(node, list):
        return sum(markers(v) for v in node)
    return 0


def on_model(agent: str, model: str, monkeypatch) -> None:
    """The agent's setup with another OpenRouter model in its flags (and Qwen's env)."""
    original = agent_setups.SETUPS[agent]

    def setup(home, work):
        made = original(home, work)
        args = tuple(a.replace(made.model, model) if made.model else a for a in made.args)
        env = {k: (model if v == made.model else v) for k, v in made.env.items()}
        return dataclasses.replace(made, args=args, env=env, model=model)
    monkeypatch.setitem(agent_setups.SETUPS, agent, setup)


@pytest.mark.parametrize("agent, model", list(MARKS_OWN))
def test_what_each_agent_marks_for_the_prompt_cache(agent, model, unmarked_gateway, fake, tmp_path, monkeypatch):
    if model:
        on_model(agent, model, monkeypatch)
    result, setup, entries = run_one_prompt(agent, unmarked_gateway, fake, tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    calls = [e for e in entries if looks_like_llm_call(e) and setup.is_llm_call(e)]
    assert calls
    path = setup.path.split("?", 1)[0]
    dialect = Dialect.ANTHROPIC if path.endswith("/messages") else \
        Dialect.OPENAI_RESPONSES if path.endswith("/responses") else Dialect.OPENAI_CHAT
    seen = {}
    for call in calls:
        body = call["request_json"]
        seen[call["model"]] = seen.get(call["model"], False) or markers(body) > 0
        need = needed(dialect, setup.host == "openrouter.ai", body.get("model"))
        if need and not has_breakpoints(body):  # what Clutch's default rules add to this body
            assert 0 < with_breakpoints(dialect, body)[1] <= 4
    assert seen == MARKS_OWN[agent, model]


def test_qwen_code_on_openrouter_gets_clutchs_breakpoints(gateway, fake, tmp_path):
    """Through the default rules, Qwen Code's unmarked requests to OpenRouter's qwen/ model arrive with
    breakpoints on the system prompt and the newest turns."""
    result, setup, entries = run_one_prompt("qwen", gateway, fake, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    calls = [e for e in entries if looks_like_llm_call(e) and setup.is_llm_call(e)]
    assert calls and all(0 < markers(call["request_json"]) <= 4 for call in calls)
    first = calls[0]["request_json"]["messages"][0]
    assert first["role"] == "system" and first["content"][-1]["cache_control"] == {"type": "ephemeral"}
