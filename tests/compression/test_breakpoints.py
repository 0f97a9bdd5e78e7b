"""Prompt-cache breakpoints added where the target needs them (addons/compression/breakpoints.py),
and carried into the upstream request by build_plan."""

from __future__ import annotations

import copy
import json
import textwrap
from urllib.parse import urlsplit

import pytest
from harness import corpus_files, deepest_per_session, session_turns

from addons.compression.breakpoints import LIMIT, has_breakpoints, needed, with_breakpoints
from addons.compression.policy import Settings, compress_request
from addons.config.rules import parse_rules
from addons.routing.plan import build_plan
from addons.routing.router import Decision
from addons.wire import dialects
from addons.wire.dialects import Dialect
from addons.wire.identity import Identity  # noqa: F401 - the router's request type needs it importable

MARK = {"type": "ephemeral"}


def dialect(record: dict) -> Dialect:
    return Dialect.ANTHROPIC if record["format"] == "anthropic" else Dialect.OPENAI_CHAT


def anthropic_body() -> dict:
    return {"model": "claude-x", "max_tokens": 100, "system": "You code.",
            "tools": [{"name": "Read", "input_schema": {}}, {"name": "Bash", "input_schema": {}}],
            "messages": [{"role": "user", "content": "fix the bug"},
                         {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                                           {"type": "tool_use", "id": "t1", "name": "Bash",
                                                            "input": {"command": "pytest"}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                                       "content": "1 failed"}]}]}


def marks(body) -> list[str]:
    """Where the body's breakpoints are, as readable places."""
    found = []

    def walk(node, place):
        if isinstance(node, dict):
            if "cache_control" in node:
                found.append(place)
            for key, value in node.items():
                walk(value, f"{place}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{place}[{i}]")
    walk(body, "")
    return found


def unmarked(node):
    """The body as the provider caches it: the markers are not part of the prompt, and a lone marked
    text block is the string it was."""
    if isinstance(node, dict):
        out = {k: unmarked(v) for k, v in node.items() if k != "cache_control"}
        for key in ("content", "system"):
            blocks = out.get(key)
            if isinstance(blocks, list) and len(blocks) == 1 and isinstance(blocks[0], dict) \
                    and set(blocks[0]) == {"type", "text"} and blocks[0]["type"] == "text":
                out[key] = blocks[0]["text"]
        return out
    if isinstance(node, list):
        return [unmarked(v) for v in node]
    return node


def test_an_anthropic_request_without_breakpoints_gets_tools_system_and_the_newest_turns():
    body = anthropic_body()
    before = copy.deepcopy(body)
    out, added = with_breakpoints(Dialect.ANTHROPIC, body)
    assert added == LIMIT == 4
    assert marks(out) == [".system[0]", ".tools[1]", ".messages[0].content[0]", ".messages[2].content[0]"]
    assert body == before  # the agent's body is not touched
    assert unmarked(out) == unmarked(before)  # the prompt is the same: only billing changes


def test_thinking_and_empty_text_blocks_never_carry_a_breakpoint():
    body = anthropic_body()
    body["messages"][1]["content"] = [{"type": "text", "text": "ok"}, {"type": "thinking", "thinking": "x"},
                                      {"type": "text", "text": ""}]
    body["messages"].append({"role": "assistant", "content": [{"type": "thinking", "thinking": "only"}]})
    out, _ = with_breakpoints(Dialect.ANTHROPIC, body)
    assert not any("messages[1]" in m or "messages[3]" in m for m in marks(out))


def test_a_request_with_any_breakpoint_of_its_own_is_left_exactly_as_it_came():
    for place in ("system", "tools", "message", "top"):
        body = anthropic_body()
        if place == "system":
            body["system"] = [{"type": "text", "text": "You code.", "cache_control": MARK}]
        elif place == "tools":
            body["tools"][0]["cache_control"] = MARK
        elif place == "message":
            body["messages"][0]["content"] = [{"type": "text", "text": "fix", "cache_control": MARK}]
        else:
            body["cache_control"] = MARK
        out, added = with_breakpoints(Dialect.ANTHROPIC, body)
        assert added == 0 and out is body and has_breakpoints(body), place


def test_the_same_body_gives_the_same_bytes():
    a = json.dumps(with_breakpoints(Dialect.ANTHROPIC, anthropic_body())[0])
    b = json.dumps(with_breakpoints(Dialect.ANTHROPIC, anthropic_body())[0])
    assert a == b


def test_a_chat_request_marks_its_system_message_and_its_newest_user_and_tool_messages_only():
    body = {"model": "anthropic/claude-x", "messages": [
        {"role": "system", "content": "You code."}, {"role": "user", "content": "fix"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
                                                              "function": {"name": "sh", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "1 failed"}]}
    out, added = with_breakpoints(Dialect.OPENAI_CHAT, body)
    assert added == 3
    assert marks(out) == [".messages[0].content[0]", ".messages[1].content[0]", ".messages[3].content[0]"]


def test_which_targets_need_explicit_breakpoints():
    assert needed(Dialect.ANTHROPIC, False, "claude-opus-4-6")
    assert needed(Dialect.ANTHROPIC, True, "deepseek/deepseek-v4-flash")  # any Anthropic Messages endpoint
    for model in ("anthropic/claude-sonnet-4.5", "google/gemini-3-pro-preview", "qwen/qwen3-coder"):
        assert needed(Dialect.OPENAI_CHAT, True, model), model
    for model in ("deepseek/deepseek-v4-flash", "moonshotai/kimi-k2.6", "openai/gpt-5", "x-ai/grok-4"):
        assert not needed(Dialect.OPENAI_CHAT, True, model), model
    assert not needed(Dialect.OPENAI_CHAT, False, "anthropic/claude-x")  # not OpenRouter: no such family
    assert not needed(Dialect.OPENAI_RESPONSES, True, "anthropic/claude-x")


@pytest.fixture(scope="module")
def sessions() -> list[dict]:
    records = [json.loads(path.read_text()) for path in corpus_files("*.json")]
    return deepest_per_session(records)


def test_replayed_sessions_keep_their_cached_prefix_turn_over_turn(sessions):
    """Each corpus session replayed turn by turn, compressed (cache_safe) and then given breakpoints as
    a target that needs them would: at most 4; tools and system byte-identical every turn; the previous
    request's last breakpoint is in the next request at the same place, on byte-identical content;
    and everything before it is the same prompt (the markers aside), so the provider reads it from
    the cache."""
    checked = 0
    for record in sessions:
        kind = dialect(record)
        previous = None
        for body in session_turns(record)[-40:]:
            out, added = with_breakpoints(kind, compress_request(kind, body, Settings()).body)
            assert 0 < added <= LIMIT
            assert json.dumps(out) == json.dumps(with_breakpoints(kind, compress_request(kind, body,
                                                                                          Settings()).body)[0])
            if previous is not None:
                last = len(previous["messages"]) - 1
                assert out["messages"][last] == previous["messages"][last], record["meta"]["id"]
                assert "cache_control" in json.dumps(out["messages"][last])
                assert unmarked(out["messages"][:last + 1]) == unmarked(previous["messages"]), record["meta"]["id"]
                for field in ("system", "tools"):
                    assert json.dumps(out.get(field)) == json.dumps(previous.get(field))
                checked += 1
            previous = out
    assert checked > 300


RULES_TEXT = textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
                   key_env: OR_KEY}
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
                  key_env: ANT_KEY}
    profiles:
      pi: {breakpoints: "off"}
""")
RULES = parse_rules(RULES_TEXT, "rules.yaml")
ENV = {"OR_KEY": "sk-or", "ANT_KEY": "sk-ant"}


def plan(body: dict, dialect: Dialect, target: str | None, layer=("rules",), rules=RULES):
    from addons.config.rules import ModelTarget
    url = "https://api.anthropic.com/v1/messages" if dialect is Dialect.ANTHROPIC else \
        "https://openrouter.ai/api/v1/chat/completions"
    provider = "anthropic" if dialect is Dialect.ANTHROPIC else "openrouter"
    raw = json.dumps(body).encode()
    call = dialects.read_call(dialect, provider, urlsplit(url).path, raw)
    decision = Decision("alias" if target else "unchanged", ModelTarget.parse(target) if target else None, "test",
                        layer=layer)
    return build_plan(call, decision, rules, url, [(b"content-type", b"application/json")], raw, ENV)


def test_an_anthropic_request_to_anthropic_is_sent_with_breakpoints():
    sent = json.loads(plan(anthropic_body(), Dialect.ANTHROPIC, None).body)
    assert len(marks(sent)) == 4
    assert any("breakpoints added" in note for note in plan(anthropic_body(), Dialect.ANTHROPIC, None).notes)


def test_translated_to_openrouters_claude_the_breakpoints_reach_the_content_parts():
    """Anthropic -> Chat for OpenRouter's Anthropic model: the breakpoints on system and messages are
    carried on the chat content parts (a tool has no place for one in Chat)."""
    sent = json.loads(plan(anthropic_body(), Dialect.ANTHROPIC, "openrouter:anthropic/claude-sonnet-4.5").body)
    places = marks(sent)
    assert places and all(".content[" in place for place in places)
    assert sent["messages"][0]["role"] == "system" and "cache_control" in json.dumps(sent["messages"][0])


IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


@pytest.mark.parametrize("dialect, target", [
    (Dialect.ANTHROPIC, "openrouter:anthropic/claude-sonnet-4.5"),  # translated to Chat
    (Dialect.ANTHROPIC, "anthropic:claude-y"),  # as it came
    (Dialect.OPENAI_CHAT, "anthropic:claude-y"),  # translated to Anthropic
])
def test_every_breakpoint_added_reaches_the_provider_even_when_a_turn_ends_in_an_image(dialect, target):
    """A turn ending in a screenshot: the breakpoint goes on its text, not on the image, whose marker
    no translator carries; a tool schema is marked only where the request stays Anthropic; the note's
    count is what arrives."""
    if dialect is Dialect.ANTHROPIC:
        body = anthropic_body()
        body["messages"][-1]["content"].append(IMAGE)
        body["messages"].append({"role": "user", "content": [{"type": "text", "text": "see this"}, IMAGE]})
    else:
        image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
        body = {"model": "x", "messages": [{"role": "system", "content": "You code."},
                                           {"role": "user", "content": [{"type": "text", "text": "see"}, image]}]}
    built = plan(body, dialect, target)
    sent = json.loads(built.body)
    note = next(n for n in built.notes if "breakpoints added" in n)
    assert len(marks(sent)) == int(note.split()[0]) > 0, (marks(sent), built.notes)
    assert not any("image" in json.dumps(part) and "cache_control" in part for part in _parts(sent))


def _parts(body: dict) -> list[dict]:
    return [part for message in body.get("messages", []) if isinstance(message.get("content"), list)
            for part in message["content"] if isinstance(part, dict)]


def test_a_target_with_automatic_caching_gets_no_breakpoints():
    sent = json.loads(plan(anthropic_body(), Dialect.ANTHROPIC, "openrouter:deepseek/deepseek-v4-flash").body)
    assert marks(sent) == []


def test_the_agents_own_breakpoints_reach_openrouters_gemini_unmoved():
    body = {"model": "x", "messages": [
        {"role": "system", "content": [{"type": "text", "text": "You code.", "cache_control": MARK}]},
        {"role": "user", "content": "hi"}]}
    sent = json.loads(plan(body, Dialect.OPENAI_CHAT, "openrouter:google/gemini-3-pro-preview").body)
    assert marks(sent) == [".messages[0].content[0]"]


def test_breakpoints_off_in_the_rules_or_a_profile():
    off = parse_rules(RULES_TEXT + "compression: {breakpoints: off}\n", "rules.yaml")
    assert marks(json.loads(plan(anthropic_body(), Dialect.ANTHROPIC, "anthropic:claude-y", rules=off).body)) == []
    by_profile = plan(anthropic_body(), Dialect.ANTHROPIC, "anthropic:claude-y", layer=("rules", "profile pi"))
    assert marks(json.loads(by_profile.body)) == []
