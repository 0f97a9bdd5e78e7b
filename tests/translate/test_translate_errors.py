"""Upstream error bodies of every kind translated into the agent's dialect, read back with the official
`anthropic` and `openai` SDKs' own error classes.

Fixtures follow the providers' public error references (URL above each).
"""

import json

import anthropic
import httpx2
import openai
import pytest

from addons.wire.dialects import Dialect
from addons.translate.errors import translate_error

# ============================================================================================ errors

def sdk_error(dialect: Dialect, status: int, body: bytes):
    """The exception the client's own SDK raises for this status and body."""
    if dialect is Dialect.ANTHROPIC:
        client = anthropic.Anthropic(api_key="t", base_url="https://api.anthropic.com")
        url = "https://api.anthropic.com/v1/messages"
    else:
        client = openai.OpenAI(api_key="t", base_url="https://openrouter.ai/api/v1")
        url = "https://openrouter.ai/api/v1/chat/completions"
    response = httpx2.Response(status, content=body, request=httpx2.Request("POST", url))
    return client._make_status_error_from_response(response)


# Upstream bodies: OpenAI https://platform.openai.com/docs/guides/error-codes , OpenRouter
# https://openrouter.ai/docs/api-reference/errors-and-debugging (code, message, metadata{provider_name, raw}
# for provider errors, metadata{reasons, flagged_input} for moderation),
# Anthropic https://docs.anthropic.com/en/api/errors
OPENAI_SHAPED = [
    (400, {"error": {"message": "Invalid type for 'messages[0].content'", "type": "invalid_request_error",
                     "param": "messages", "code": None}},
     "invalid_request_error", "Invalid type for 'messages[0].content'", anthropic.BadRequestError),
    (401, {"error": {"message": "Incorrect API key provided: sk-abc***. You can find your API key at "
                                "https://platform.openai.com/account/api-keys.", "type": "invalid_request_error",
                     "param": None, "code": "invalid_api_key"}},
     "authentication_error", "Incorrect API key provided: sk-abc***", anthropic.AuthenticationError),
    (403, {"error": {"code": 403, "message": "openai/gpt-4o requires moderation on OpenAI. Your input was flagged for "
                                             "\"violence\".", "metadata": {"reasons": ["violence"],
                                                                          "flagged_input": "...",
                                                                          "provider_name": "OpenAI",
                                                                          "model_slug": "openai/gpt-4o"}}},
     "permission_error", "(provider: OpenAI) (flagged: violence)", anthropic.PermissionDeniedError),
    (404, {"error": {"message": "The model `gpt-9` does not exist or you do not have access to it.",
                     "type": "invalid_request_error", "param": None, "code": "model_not_found"}},
     "not_found_error", "The model `gpt-9` does not exist", anthropic.NotFoundError),
    (404, {"error": {"message": "No endpoints found for anthropic/claude-3-opus.", "code": 404}},
     "not_found_error", "No endpoints found for anthropic/claude-3-opus.", anthropic.NotFoundError),
    (400, {"error": {"message": "This model's maximum context length is 128000 tokens. However, your messages "
                                "resulted in 130412 tokens. Please reduce the length of the messages.",
                     "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}},
     "invalid_request_error", "prompt is too long: This model's maximum context length is 128000 tokens",
     anthropic.BadRequestError),
    (402, {"error": {"message": "Insufficient credits. Add more using https://openrouter.ai/credits", "code": 402}},
     "billing_error", "Insufficient credits.", anthropic.APIStatusError),
    (413, {"error": {"message": "Request Entity Too Large", "code": 413}},
     "request_too_large", "Request Entity Too Large", anthropic.ContentTooLargeError),
    (429, {"error": {"message": "Provider returned error", "code": 429, "metadata": {
        "raw": "qwen/qwen3-coder:free is temporarily rate-limited upstream. Please retry shortly.",
        "provider_name": "Chutes"}}, "user_id": "user_2x"},
     "rate_limit_error", "Provider returned error (Chutes: qwen/qwen3-coder:free is temporarily rate-limited "
                         "upstream. Please retry shortly.)", anthropic.RateLimitError),
    (429, {"error": {"message": "Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): "
                                "Limit 30000, Used 29000, Requested 2000.", "type": "tokens", "param": None,
                     "code": "rate_limit_exceeded"}},
     "rate_limit_error", "Rate limit reached for gpt-4o", anthropic.RateLimitError),
    (500, {"error": {"message": "The server had an error while processing your request. Sorry about that!",
                     "type": "server_error", "param": None, "code": None}},
     "api_error", "The server had an error while processing", anthropic.InternalServerError),
    (502, {"error": {"message": "Provider returned error", "code": 502, "metadata": {
        "raw": '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
        "provider_name": "Anthropic"}}},
     "overloaded_error", "Provider returned error (Anthropic: overloaded_error: Overloaded)",
     anthropic.InternalServerError),
    (503, {"error": {"message": "No endpoints found matching your data policy (Free model publication). "
                                "Configure: https://openrouter.ai/settings/privacy", "code": 503}},
     "api_error", "No endpoints found matching your data policy", anthropic.InternalServerError),
]


@pytest.mark.parametrize("status,upstream,anthropic_type,message,sdk_class", OPENAI_SHAPED)
def test_openai_and_openrouter_errors_for_anthropic_clients(status, upstream, anthropic_type, message, sdk_class):
    out = translate_error(json.dumps(upstream).encode(), status, Dialect.ANTHROPIC)
    body = json.loads(out)
    assert body["type"] == "error" and body["error"]["type"] == anthropic_type
    assert message in body["error"]["message"]
    error = sdk_error(Dialect.ANTHROPIC, status, out)
    assert isinstance(error, sdk_class) and error.body["error"]["message"] == body["error"]["message"]


ANTHROPIC_SHAPED = [
    (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum",
     "invalid_request_error", "context_length_exceeded", openai.BadRequestError),
    (400, "invalid_request_error", "messages.1.content.0.tool_use.input: Field required",
     "invalid_request_error", "invalid_request_error", openai.BadRequestError),
    (401, "authentication_error", "invalid x-api-key", "authentication_error", "authentication_error",
     openai.AuthenticationError),
    (403, "permission_error", "Your API key does not have permission to use the specified resource.",
     "permission_error", "permission_error", openai.PermissionDeniedError),
    (404, "not_found_error", "model: claude-nope", "not_found_error", "not_found_error", openai.NotFoundError),
    (413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", "invalid_request_error",
     "request_too_large", openai.APIStatusError),
    (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit",
     "rate_limit_exceeded", "rate_limit_error", openai.RateLimitError),
    (500, "api_error", "Internal server error", "server_error", "api_error", openai.InternalServerError),
    (529, "overloaded_error", "Overloaded", "server_error", "overloaded_error", openai.InternalServerError),
]


@pytest.mark.parametrize("status,upstream_type,message,openai_type,openai_code,sdk_class", ANTHROPIC_SHAPED)
def test_anthropic_errors_for_openai_clients(status, upstream_type, message, openai_type, openai_code, sdk_class):
    upstream = {"type": "error", "error": {"type": upstream_type, "message": message},
                "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}
    out = translate_error(json.dumps(upstream).encode(), status, Dialect.OPENAI_CHAT)
    body = json.loads(out)["error"]
    assert (body["message"], body["type"], body["code"]) == (message, openai_type, openai_code)
    error = sdk_error(Dialect.OPENAI_CHAT, status, out)
    assert type(error) is sdk_class
    assert (error.code, error.type, error.body["message"]) == (openai_code, openai_type, message)


def test_anthropic_errors_stay_anthropic_for_anthropic_clients():
    upstream = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert json.loads(translate_error(upstream, 529, Dialect.ANTHROPIC)) == {
        "type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


# A Cloudflare-style HTML page and a plain-text body from a proxy in front of a provider
HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
            b"</center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n")


@pytest.mark.parametrize("dialect", [Dialect.ANTHROPIC, Dialect.OPENAI_CHAT])
@pytest.mark.parametrize("status,raw,message", [
    (502, HTML_502, "upstream returned HTTP 502: 502 Bad Gateway 502 Bad Gateway cloudflare"),
    (503, b"upstream connect error or disconnect/reset before headers. reset reason: overflow",
     "upstream returned HTTP 503: upstream connect error or disconnect/reset before headers. reset reason: overflow"),
    (500, b"", "upstream returned HTTP 500: an empty body"),
    (404, b'{"detail":"Not Found"}', "Not Found"),
    (404, b'{"error":"model \\"qwen3:99b\\" not found, try pulling it first"}',
     'model "qwen3:99b" not found, try pulling it first'),
])
def test_non_json_and_odd_bodies(dialect, status, raw, message):
    out = translate_error(raw, status, dialect)
    error = sdk_error(dialect, status, out)
    if dialect is Dialect.ANTHROPIC:
        assert error.body["error"]["message"] == message
        assert error.body["error"]["type"] == {502: "api_error", 503: "api_error", 500: "api_error",
                                               404: "not_found_error"}[status]
    else:
        assert error.body["message"] == message and error.status_code == status


def test_gemini_clients_get_gemini_error_bodies():
    out = json.loads(translate_error(b'{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}', 429,
                                     Dialect.GEMINI))
    assert out == {"error": {"code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED"}}




# A hostile or broken upstream may put any JSON value in any field of its error body. Each field of
# each shape, given each wrong type, still becomes a well-formed error of the client's dialect that
# its SDK reads (no TypeError from looking up a list as an error type).
JUNK = [None, 7, 2.5, True, [], ["rate_limit_error"], {}, {"type": "x"}, ""]
ERROR_SHAPES = {
    "anthropic": {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
    "openai": {"error": {"message": "bad", "type": "invalid_request_error", "code": "invalid_api_key"}},
    "openrouter": {"error": {"code": 502, "message": "Provider returned error",
                             "metadata": {"provider_name": "Anthropic", "raw": json.dumps(
                                 {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})}}},
}


def hostile_variants():
    for shape, body in ERROR_SHAPES.items():
        for field in ("type", "message", "code", "metadata"):
            for junk in JUNK:
                variant = json.loads(json.dumps(body))
                variant["error"][field] = junk
                yield f"{shape}-{field}-{json.dumps(junk)}", variant
        raw = {"type": "error", "error": {"type": ["overloaded_error"], "message": "busy"}}
        yield f"{shape}-raw-type-list", {"error": {"message": "m", "metadata": {"raw": json.dumps(raw)}}}


@pytest.mark.parametrize("dialect", [Dialect.ANTHROPIC, Dialect.OPENAI_CHAT, Dialect.GEMINI])
def test_error_fields_of_any_json_type_still_translate(dialect):
    for name, variant in hostile_variants():
        body = translate_error(json.dumps(variant).encode(), 429, dialect)
        payload = json.loads(body)
        assert isinstance(payload["error"]["message"], str) and payload["error"]["message"], name
        if dialect is Dialect.ANTHROPIC:
            assert payload["type"] == "error" and isinstance(payload["error"]["type"], str), name
            assert isinstance(sdk_error(dialect, 429, body), anthropic.RateLimitError), name
        elif dialect is Dialect.OPENAI_CHAT:
            assert isinstance(payload["error"]["type"], str), name
            assert isinstance(sdk_error(dialect, 429, body), openai.RateLimitError), name
