import json

import pytest

from addons.wire.dialects import error_body, is_responses_websocket, read_call, recognise
from addons.wire.dialects import Dialect


@pytest.mark.parametrize("method,path,dialect", [
    ("POST", "/v1/messages", Dialect.ANTHROPIC),
    ("POST", "/v1/messages?beta=true", Dialect.ANTHROPIC),
    ("POST", "/api/v1/messages", Dialect.ANTHROPIC),
    ("POST", "/v1/chat/completions", Dialect.OPENAI_CHAT),
    ("POST", "/api/v1/chat/completions", Dialect.OPENAI_CHAT),
    ("POST", "/v1/responses", Dialect.OPENAI_RESPONSES),
    ("POST", "/v1beta/models/gemini-3.1-pro-preview:streamGenerateContent?alt=sse", Dialect.GEMINI),
    ("POST", "/v1beta/models/gemini-3-flash:generateContent", Dialect.GEMINI),
    ("GET", "/api/v1/models", None),
    ("GET", "/v1/messages", None),
    ("POST", "/v1/messages/count_tokens", None),
    ("GET", "/api/claude_code/policy_limits", None),
    ("POST", "/api/event_logging/v2/batch", None),
])
def test_recognise(method, path, dialect):
    assert recognise(method, path) == dialect


def test_codex_websocket_upgrade():
    assert is_responses_websocket("GET", "/v1/responses", {"upgrade": "websocket"})
    assert not is_responses_websocket("GET", "/v1/responses", {})
    assert not is_responses_websocket("POST", "/v1/responses", {"upgrade": "websocket"})


def test_read_call_takes_model_and_stream_once():
    body = json.dumps({"model": "claude-opus-4-8", "stream": True, "messages": []}).encode()
    call = read_call(Dialect.ANTHROPIC, "anthropic", "/v1/messages", body)
    assert (call.model, call.stream, call.body["messages"], call.body_error) == ("claude-opus-4-8", True, [], None)
    gemini = read_call(Dialect.GEMINI, "gemini", "/v1beta/models/gemini-3-flash:streamGenerateContent?alt=sse",
                       b"{}")
    assert (gemini.model, gemini.stream) == ("gemini-3-flash", True)


def test_unreadable_bodies_are_kept_as_unread():
    assert read_call(Dialect.OPENAI_CHAT, "p", "/v1/chat/completions", b"not json").body_error.startswith(
        "request body is not JSON")
    assert read_call(Dialect.OPENAI_CHAT, "p", "/v1/chat/completions", b"[1]").body is None
    assert read_call(Dialect.OPENAI_CHAT, "p", "/v1/chat/completions", None).model is None


def test_error_bodies_speak_each_dialect():
    anthropic = json.loads(error_body(Dialect.ANTHROPIC, 504, "late"))
    assert anthropic == {"type": "error", "error": {"type": "timeout_error", "message": "late"}}
    openai = json.loads(error_body(Dialect.OPENAI_CHAT, 502, "down"))
    assert openai["error"]["message"] == "down" and openai["error"]["type"] == "server_error"
    gemini = json.loads(error_body(Dialect.GEMINI, 429, "slow down"))
    assert gemini["error"] == {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}
