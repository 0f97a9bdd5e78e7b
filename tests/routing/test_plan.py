"""The upstream request of a routing decision: URL, key, headers and body, for every kind of change."""

from __future__ import annotations

import ast
import gzip
import json
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from addons.wire import dialects
from addons.wire.identity import Identity
from addons.routing.plan import PlanError, build_plan, translate_answer, with_body
from addons.routing.router import RouteRequest, decide
from addons.config.rules import parse_rules
from addons.wire.dialects import Dialect

RULES = parse_rules(textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat, openai_responses],
                   hosts: [openrouter.ai], key_env: OR_KEY}
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
                  key_env: ANT_KEY}
      gemini: {base_url: "https://generativelanguage.googleapis.com", dialects: [gemini],
               hosts: [generativelanguage.googleapis.com], key_env: GEM_KEY}
      ollama: {base_url: "http://127.0.0.1:11434/v1", dialects: [openai_chat]}
      openai: {base_url: "https://api.openai.com/v1", dialects: [openai_responses], hosts: [api.openai.com],
               key_env: OAI_KEY}
    aliases:
      coder-model: "openrouter:qwen/qwen3-coder"
      to-claude: "anthropic:claude-x"
      local: "ollama:qwen3:4b"
      codex-to-claude: "anthropic:claude-y"
      gemini-pro: "gemini:gemini-3.1-pro"
      to-responses: "openai:gpt-5"
"""), "rules.yaml")
ENV = {"OR_KEY": "sk-or-rules", "ANT_KEY": "sk-ant-rules", "OAI_KEY": "sk-oai-rules"}
URLS = {Dialect.OPENAI_CHAT: "https://openrouter.ai/api/v1/chat/completions",
        Dialect.ANTHROPIC: "https://api.anthropic.com/v1/messages?beta=true",
        Dialect.OPENAI_RESPONSES: "https://openrouter.ai/api/v1/responses",
        Dialect.GEMINI: "https://generativelanguage.googleapis.com/v1beta/models/gemini-flash:streamGenerateContent?alt=sse"}
PROVIDER = {Dialect.OPENAI_CHAT: "openrouter", Dialect.ANTHROPIC: "anthropic", Dialect.OPENAI_RESPONSES: "openrouter",
            Dialect.GEMINI: "gemini"}


def plan_for(body, dialect=Dialect.OPENAI_CHAT, headers=None, raw=None, environ=ENV):
    raw = raw if raw is not None else json.dumps(body).encode()
    url = URLS[dialect]
    content = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    call = dialects.read_call(dialect, PROVIDER[dialect], urlsplit(url).path, content)
    decision = decide(RouteRequest(dialect, call.provider, call.model, call.body, len(raw), Identity()), RULES)
    headers = headers or [(b"authorization", b"Bearer sk-agent"), (b"content-type", b"application/json")]
    return build_plan(call, decision, RULES, url, headers, raw, environ)


def header(plan, name):
    return [v.decode() for k, v in plan.headers if k.decode().lower() == name]


def test_no_rule_sends_the_agents_bytes_untouched():
    body = {"model": "anything", "messages": [{"role": "user", "content": "hi"}]}
    raw = gzip.compress(json.dumps(body).encode())
    headers = [(b"authorization", b"Bearer sk-agent"), (b"content-encoding", b"gzip")]
    plan = plan_for(body, raw=raw, headers=headers)
    assert not plan.changed and plan.body == raw and plan.headers == headers
    assert plan.url == URLS[Dialect.OPENAI_CHAT] and plan.key_source == "agent"


def test_no_decision_sends_the_agents_request_unread():
    """No router ran (no Route addon): the bytes as they came, and nothing read from the body, not even
    a subagent tag or Pi's repair."""
    body = {"model": "anything", "messages": [
        {"role": "system", "content": "<CLUTCH-MODEL>openrouter:z-ai/glm-5</CLUTCH-MODEL>You explore."},
        {"role": "user", "content": "hi"}]}
    raw = gzip.compress(json.dumps(body).encode())
    headers = [(b"authorization", b"Bearer sk-agent"), (b"content-encoding", b"gzip")]
    call = dialects.read_call(Dialect.OPENAI_CHAT, "openrouter", "/api/v1/chat/completions", json.dumps(body).encode())
    plan = build_plan(call, None, RULES, URLS[Dialect.OPENAI_CHAT], headers, raw, ENV, agent="pi")
    assert (plan.body, plan.headers, plan.sent, plan.notes) == (raw, headers, None, [])
    assert not plan.changed and (plan.provider, plan.model, plan.key_source) == ("openrouter", "anything", "agent")


def test_a_new_body_is_reserialised_without_the_agents_encoding():
    body = {"model": "coder-model", "messages": [{"role": "user", "content": "hi"}]}
    plan = plan_for(body, raw=gzip.compress(json.dumps(body).encode()),
                    headers=[(b"authorization", b"Bearer sk-agent"), (b"content-encoding", b"gzip")])
    more = {**plan.sent, "models": ["qwen/qwen3-coder", "z-ai/glm-5"]}
    again = with_body(plan, more, "OpenRouter fallbacks z-ai/glm-5")
    assert json.loads(again.body) == more and again.sent is more and again.changed
    assert header(again, "authorization") == ["Bearer sk-agent"] and not header(again, "content-encoding")
    assert again.notes == [*plan.notes, "OpenRouter fallbacks z-ai/glm-5"] and plan.sent is not more


def plan_constructions(root: Path) -> list[str]:
    """Every `Plan(...)` call in addons/ and launcher/ outside addons/routing/plan.py."""
    found = []
    for path in sorted([*(root / "addons").rglob("*.py"), *(root / "launcher").rglob("*.py")]):
        if path.relative_to(root).as_posix() == "addons/routing/plan.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name == "Plan":
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_plans_are_made_only_by_build_plan():
    """Route, Budget, the engine and `clutch explain` carry a decision the same way: through
    build_plan (and with_body for a built plan's new body), never a Plan of their own."""
    root = Path(__file__).resolve().parents[2]
    assert plan_constructions(root) == []


def test_a_plan_made_elsewhere_is_found(tmp_path):
    (tmp_path / "addons" / "routing").mkdir(parents=True)
    (tmp_path / "launcher").mkdir()
    (tmp_path / "addons" / "routing" / "plan.py").write_text("class Plan:\n    pass\n\n\nPlan()\n")
    (tmp_path / "addons" / "engine.py").write_text("from addons.routing import plan\n\nfirst = plan.Plan()\n")
    (tmp_path / "launcher" / "explain.py").write_text("from addons.routing.plan import Plan\n\n\nPlan(1)\n")
    assert plan_constructions(tmp_path) == ["addons/engine.py:3", "launcher/explain.py:4"]

def test_alias_on_the_same_provider_changes_only_the_model():
    plan = plan_for({"model": "coder-model", "messages": [{"role": "user", "content": "hi"}]},
                    headers=[(b"authorization", b"Bearer sk-agent"), (b"content-encoding", b"gzip"),
                             (b"content-length", b"99")])
    assert plan.changed and not plan.translated
    # OpenRouter's Qwen models cache only at breakpoints (compression/breakpoints.py): one is added
    assert json.loads(plan.body) == {"model": "qwen/qwen3-coder", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]}
    assert header(plan, "authorization") == ["Bearer sk-agent"]  # the agent's own key
    assert not header(plan, "content-encoding") and not header(plan, "content-length")


def test_another_provider_gets_its_key_from_the_rules_and_is_translated():
    plan = plan_for({"model": "to-claude", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert (plan.provider, plan.url) == ("anthropic", "https://api.anthropic.com/v1/messages")
    assert plan.translated and plan.key_source == "ANT_KEY"
    assert header(plan, "x-api-key") == ["sk-ant-rules"] and not header(plan, "authorization")
    assert header(plan, "anthropic-version") == ["2023-06-01"] and header(plan, "accept-encoding") == ["identity"]
    sent = json.loads(plan.body)
    assert sent["model"] == "claude-x" and sent["max_tokens"] == 8192 and sent["stream"] is True


def test_a_missing_key_is_an_error_that_names_the_variable():
    with pytest.raises(PlanError) as error:
        plan_for({"model": "to-claude", "messages": []}, environ={})
    assert error.value.kind == "missing_key" and "$ANT_KEY" in str(error.value)


def test_a_keyless_provider_never_receives_the_agents_key():
    plan = plan_for({"model": "local", "messages": [{"role": "user", "content": "hi"}]})
    assert plan.url == "http://127.0.0.1:11434/v1/chat/completions" and plan.key_source == "none"
    assert not header(plan, "authorization")


def test_anthropic_request_to_another_anthropic_speaker_keeps_its_query_and_dialect():
    rules_body = {"model": "claude-opus-4-8", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
                  "system": "<CLUTCH-MODEL>openrouter:z-ai/glm-5</CLUTCH-MODEL>You explore."}
    plan = plan_for(rules_body, Dialect.ANTHROPIC, headers=[(b"x-api-key", b"sk-ant-agent")])
    # openrouter here speaks no anthropic: translated, tag stripped, OpenRouter key as a Bearer token
    assert plan.url == "https://openrouter.ai/api/v1/chat/completions"
    assert header(plan, "authorization") == ["Bearer sk-or-rules"] and not header(plan, "x-api-key")
    sent = json.loads(plan.body)
    assert sent["messages"][0] == {"role": "system", "content": "You explore."}
    assert "subagent tag stripped" in plan.notes


def test_responses_to_a_chat_only_target_is_translated():
    plan = plan_for({"model": "local", "input": "hi", "stream": True}, Dialect.OPENAI_RESPONSES)
    assert plan.translated and plan.url == "http://127.0.0.1:11434/v1/chat/completions"
    sent = json.loads(plan.body)
    assert sent["messages"] == [{"role": "user", "content": "hi"}] and sent["stream_options"]["include_usage"]
    assert plan.client_context.echo["tools"] == []  # the way back repeats the request's fields


def test_responses_to_an_anthropic_only_target_goes_through_chat():
    plan = plan_for({"model": "codex-to-claude", "instructions": "Be brief.", "input": "hi"},
                    Dialect.OPENAI_RESPONSES)
    assert (plan.url, plan.upstream_dialect) == ("https://api.anthropic.com/v1/messages", Dialect.ANTHROPIC)
    sent = json.loads(plan.body)
    assert sent["system"] == [{"type": "text", "text": "Be brief."}] and sent["model"] == "claude-y"
    assert header(plan, "x-api-key") == ["sk-ant-rules"] and "max_tokens 8192 (Anthropic requires one)" in plan.notes


def test_chat_to_a_responses_only_target_is_translated():
    plan = plan_for({"model": "to-responses", "messages": [{"role": "user", "content": "hi"}]})
    assert (plan.url, plan.upstream_dialect) == ("https://api.openai.com/v1/responses", Dialect.OPENAI_RESPONSES)
    assert json.loads(plan.body) == {"model": "gpt-5", "input": [{"role": "user", "content": "hi"}], "store": False}
    assert header(plan, "authorization") == ["Bearer sk-oai-rules"]


def test_a_request_the_target_cannot_express_is_refused_naming_why():
    with pytest.raises(PlanError) as error:
        plan_for({"model": "local", "input": "again", "previous_response_id": "resp_1"}, Dialect.OPENAI_RESPONSES)
    assert (error.value.kind, error.value.status) == ("untranslatable", 400)
    assert str(error.value) == ("cannot send this openai_responses request to ollama:qwen3:4b (ollama speaks "
                                "openai_chat): previous_response_id names a response stored by the agent's provider")


def test_a_dialect_without_translation_is_refused_not_kept():
    raw = b'{"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}'
    call = dialects.read_call(Dialect.GEMINI, "gemini", "/v1beta/models/local:generateContent", raw)
    decision = decide(RouteRequest(Dialect.GEMINI, "gemini", call.model, call.body, len(raw), Identity()), RULES)
    url = "https://generativelanguage.googleapis.com/v1beta/models/local:generateContent"
    with pytest.raises(PlanError) as error:
        build_plan(call, decision, RULES, url, [(b"x-goog-api-key", b"g")], raw, ENV)
    assert (error.value.kind, error.value.status) == ("untranslatable", 400)
    assert str(error.value) == ("cannot send this gemini request to ollama:qwen3:4b (ollama speaks openai_chat): "
                                "Clutch translates gemini to none of those")


def test_gemini_model_lives_in_the_path():
    plan = plan_for({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, Dialect.GEMINI)
    assert not plan.changed  # the model in the path, gemini-flash, has no rule
    call = dialects.read_call(Dialect.GEMINI, "gemini", "/v1beta/models/gemini-pro:streamGenerateContent",
                              b'{"contents": []}')
    decision = decide(RouteRequest(Dialect.GEMINI, "gemini", call.model, call.body, 16, Identity()), RULES)
    url = "https://generativelanguage.googleapis.com/v1beta/models/gemini-pro:streamGenerateContent?alt=sse"
    plan = build_plan(call, decision, RULES, url, [(b"x-goog-api-key", b"g")], b'{"contents": []}', ENV)
    assert plan.url == ("https://generativelanguage.googleapis.com/v1beta/models/gemini-3.1-pro:"
                        "streamGenerateContent?alt=sse")
    assert header(plan, "x-goog-api-key") == ["g"]


def test_whole_answers_and_errors_come_back_in_the_agents_dialect():
    plan = plan_for({"model": "to-claude", "messages": [{"role": "user", "content": "hi"}]})
    answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
              "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
              "usage": {"input_tokens": 5, "output_tokens": 1}}
    status, body = translate_answer(plan, json.dumps(answer).encode(), 200)
    chat = json.loads(body)
    assert status == 200 and chat["choices"][0]["message"]["content"] == "hello"
    status, body = translate_answer(plan, b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}',
                                    529)
    assert status == 529 and "busy" in json.loads(body)["error"]["message"]
    status, body = translate_answer(plan, b'{"error": {"message": "in a 200", "code": 502}}', 200)
    assert status == 502 and "in a 200" in json.loads(body)["error"]["message"]


def test_whole_responses_answers_both_ways():
    plan = plan_for({"model": "local", "input": "hi"}, Dialect.OPENAI_RESPONSES)
    answer = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "qwen3:4b",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}]}
    status, body = translate_answer(plan, json.dumps(answer).encode(), 200)
    assert status == 200 and json.loads(body)["output"][0]["content"][0]["text"] == "hello"
    plan = plan_for({"model": "to-responses", "messages": [{"role": "user", "content": "hi"}]})
    response = {"id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "error": None,
                "model": "gpt-5", "output": [{"type": "message", "id": "msg_1", "role": "assistant",
                                              "content": [{"type": "output_text", "text": "hey"}]}]}
    status, body = translate_answer(plan, json.dumps(response).encode(), 200)  # "error": null is no error
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "hey"
    failed = {**response, "status": "failed", "error": {"code": "server_error", "message": "it broke"}}
    status, body = translate_answer(plan, json.dumps(failed).encode(), 200)
    assert status == 502 and json.loads(body)["error"]["message"] == "it broke"


def test_a_translator_that_breaks_fails_the_request_closed(monkeypatch):
    """A bug in a translator must not leave the request to go out unchanged to the agent's provider."""
    from addons.translate import pairs as translation

    def broken(*args, **kwargs):
        raise KeyError("a translator bug")

    monkeypatch.setattr(translation, "translate_request", broken)
    with pytest.raises(PlanError) as error:
        plan_for({"model": "local", "input": "hi"}, Dialect.OPENAI_RESPONSES)
    # 400: the same request fails the same way again, so the agent's SDK must not retry it
    assert (error.value.kind, error.value.status) == ("translation_failed", 400)
    assert str(error.value).startswith("Clutch could not translate this openai_responses request to openai_chat "
                                       "for ollama:qwen3:4b (KeyError: 'a translator bug')")
