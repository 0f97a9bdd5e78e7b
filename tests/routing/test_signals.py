"""Task triggers read in each dialect, on real agent request bodies from the shared corpus."""

from __future__ import annotations

import json


from harness import corpus_files

from addons.routing import signals
from addons.wire.dialects import Dialect

A, CHAT, RESP, GEM = Dialect.ANTHROPIC, Dialect.OPENAI_CHAT, Dialect.OPENAI_RESPONSES, Dialect.GEMINI


def corpus(prefix: str) -> list[dict]:
    return [json.loads(f.read_text()) for f in corpus_files(f"{prefix}*.json")]


def test_claude_code_tool_loops_in_the_corpus_are_seen():
    records = corpus("cc-")
    loops = [r for r in records if signals.continues_tool_loop(A, r["body"])]
    assert loops, "Claude Code sessions continue tool loops"
    for record in loops:
        last = record["body"]["messages"][-1]
        assert any(part.get("type") == "tool_result" for part in last["content"])
    # the same bodies read as another dialect find nothing: readers look at their own dialect's shapes
    assert not any(signals.continues_tool_loop(CHAT, r["body"]) for r in records)


def test_openai_shaped_agent_bodies_from_the_corpus():
    for record in corpus("swea-") + corpus("mini-"):
        body = record["body"]
        assert record["format"] == "openai"
        expected = body["messages"][-1]["role"] == "tool"
        assert signals.continues_tool_loop(CHAT, body) is expected
        assert not signals.has_image(CHAT, body)


def test_web_search_server_tool_and_named_tools():
    assert signals.wants_web_search(A, {"tools": [{"type": "web_search_20250305", "name": "web_search"}]})
    assert signals.wants_web_search(RESP, {"tools": [{"type": "web_search_preview"}]})
    assert signals.wants_web_search(CHAT, {"tools": [{"type": "function", "function": {"name": "perplexity"}}]})
    assert signals.wants_web_search(A, {"tools": [{"name": "brave", "input_schema": {}}]})
    assert signals.wants_web_search(GEM, {"tools": [{"googleSearch": {}}]})
    assert not signals.wants_web_search(A, {"tools": [{"name": "WebFetch", "input_schema": {}}]})


def test_thinking_and_effort_in_every_dialect():
    assert signals.wants_thinking(A, {"thinking": {"type": "enabled", "budget_tokens": 1024}})
    assert signals.wants_thinking(A, {"thinking": {"type": "adaptive"}})
    assert not signals.wants_thinking(A, {"thinking": {"type": "disabled"}})
    assert signals.wants_thinking(CHAT, {"reasoning_effort": "medium"})
    assert not signals.wants_thinking(CHAT, {"reasoning_effort": "minimal"})
    assert signals.wants_thinking(CHAT, {"reasoning": {"max_tokens": 2000}})
    assert signals.wants_thinking(RESP, {"reasoning": {"effort": "high"}})
    assert signals.wants_thinking(GEM, {"generationConfig": {"thinkingConfig": {"thinkingBudget": 512}}})
    assert not signals.wants_thinking(GEM, {"generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}})


def test_think_means_more_than_the_agents_default():
    """Claude Code and Codex ask for medium effort on every request: that is their default, not a wish
    for more thinking; above it the think route fires, for them and for agents that send none."""
    claude_default = {"thinking": {"type": "adaptive", "display": "omitted"}, "output_config": {"effort": "medium"}}
    assert signals.thinking_effort(A, claude_default) == "medium"
    assert not signals.wants_thinking(A, claude_default, "claude")
    assert signals.wants_thinking(A, {**claude_default, "output_config": {"effort": "high"}}, "claude")
    assert signals.wants_thinking(A, {"thinking": {"type": "enabled", "budget_tokens": 32000}}, "claude")
    assert not signals.wants_thinking(RESP, {"reasoning": {"effort": "medium"}}, "codex")
    assert not signals.wants_thinking(RESP, {"reasoning": {"effort": "low"}}, "codex")
    assert signals.wants_thinking(RESP, {"reasoning": {"effort": "xhigh"}}, "codex")
    assert not signals.wants_thinking(CHAT, {"reasoning": {"effort": "low"}}, "opencode")  # its title calls
    assert signals.wants_thinking(CHAT, {"reasoning": {"effort": "low"}}, "qwen")
    assert signals.thinking_effort(A, {"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}) == "xhigh"
    assert signals.thinking_effort(CHAT, {"reasoning": {"enabled": False}}) == "none"
    assert signals.thinking_effort(GEM, {"generationConfig": {"thinkingConfig": {"thinkingLevel": "HIGH"}}}) == "high"
    assert signals.thinking_effort(CHAT, {"messages": []}) is None


def test_tool_loop_and_forced_tool_calls():
    assert signals.continues_tool_loop(RESP, {"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]})
    assert signals.continues_tool_loop(GEM, {"contents": [{"role": "user", "parts": [{"functionResponse": {}}]}]})
    assert signals.forces_tool_call(A, {"tool_choice": {"type": "any"}})
    assert signals.forces_tool_call(A, {"tool_choice": {"type": "tool", "name": "Bash"}})
    assert not signals.forces_tool_call(A, {"tool_choice": {"type": "auto"}})
    assert signals.forces_tool_call(CHAT, {"tool_choice": "required"})
    assert signals.forces_tool_call(CHAT, {"tool_choice": {"type": "function", "function": {"name": "f"}}})
    assert not signals.forces_tool_call(CHAT, {"tool_choice": "auto"})
    assert signals.forces_tool_call(GEM, {"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}})


def test_images_inside_tool_results_count():
    body = {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x"}}]}]}]}
    assert signals.has_image(A, body)


def test_subagent_tag_found_and_stripped_in_place():
    body = {"system": [{"type": "text", "text": "Base."},
                       {"type": "text", "text": "<CCR-SUBAGENT-MODEL>openrouter,x/y</CCR-SUBAGENT-MODEL>\nYou explore."}]}
    assert signals.find_subagent_tag(A, body) == "openrouter,x/y"
    assert signals.strip_subagent_tags(A, body) == 1
    assert body["system"][1]["text"] == "You explore."
    chat = {"messages": [{"role": "developer", "content": [{"type": "text", "text": "a<CLUTCH-MODEL>p:m</CLUTCH-MODEL>b"}]},
                         {"role": "user", "content": "<CLUTCH-MODEL>not:system</CLUTCH-MODEL>"}]}
    assert signals.find_subagent_tag(CHAT, chat) == "p:m"
    assert signals.strip_subagent_tags(CHAT, chat) == 1
    assert chat["messages"][0]["content"][0]["text"] == "ab"
    assert chat["messages"][1]["content"] == "<CLUTCH-MODEL>not:system</CLUTCH-MODEL>"  # user text untouched


def test_family_and_max_tokens():
    assert [signals.family(m) for m in ("claude-haiku-4-5-20251001", "Claude-Opus-5", "gpt-5", None)] == \
        ["haiku", "opus", None, None]
    assert signals.max_output_tokens(CHAT, {"max_completion_tokens": 128}) == 128
    assert signals.max_output_tokens(GEM, {"generationConfig": {"maxOutputTokens": 64}}) == 64
