"""Error bodies from one dialect to the other: whatever error an upstream sent (OpenAI, OpenRouter with
its metadata, Anthropic, plain text or HTML from a load balancer) becomes a well-formed error of the
agent's own dialect, its message kept. Used for whole answers (plan.py) and in-stream errors
(stream.py, responses_stream.py).

Pure logic, no mitmproxy. Shapes: https://docs.anthropic.com/en/api/errors,
https://platform.openai.com/docs/guides/error-codes, https://openrouter.ai/docs/api-reference/errors-and-debugging,
the Responses API's `error` of a failed response (https://platform.openai.com/docs/api-reference/responses/object,
`response.failed` in https://platform.openai.com/docs/api-reference/responses-streaming).

A Responses error body is OpenAI's error body. Inside a stream, a Responses agent gets `response.failed`
whose `error.code` is the word its client acts on: Codex compacts on `context_length_exceeded`, stops on
`insufficient_quota` and waits on `rate_limit_exceeded` (openai/codex, codex-api/src/sse/responses.rs).
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
from typing import Any

from addons.wire.dialects import Dialect, error_body
from addons.wire.jsontext import as_object
from addons.wire.jsontext import dumps as _dumps

# Anthropic's error types and the status each goes with (https://docs.anthropic.com/en/api/errors).
ANTHROPIC_ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                          "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                          "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529}
_ANTHROPIC_TYPE_BY_STATUS = {402: "billing_error", 408: "timeout_error", 409: "invalid_request_error",
                             422: "invalid_request_error"}  # statuses dialects.error_body has no word for
_OPENAI_TYPE_BY_STATUS = {402: "insufficient_quota", 408: "timeout", 413: "invalid_request_error",
                          409: "invalid_request_error", 422: "invalid_request_error"}
_CONTEXT_TOO_LONG = re.compile(r"context[ _-]?(length|window)|maximum context|prompt is too long|too many tokens"
                               r"|reduce the length|input is too long", re.I)
_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)
MAX_TEXT_ERROR = 300


@dataclasses.dataclass
class ProviderError:
    """What a provider's error body says, whatever its dialect (not the engine's transport failure,
    upstream.client.UpstreamError: this is an answer that came back)."""

    message: str  # the upstream's text, with OpenRouter's provider name and raw provider error folded in
    code: str | None = None  # the upstream's most specific word for it (OpenAI code, Anthropic type, ...)
    anthropic_type: str | None = None  # set when the upstream (or the provider OpenRouter relays) is Anthropic
    status: int | None = None  # a status the error names itself (OpenRouter's numeric code)

    @property
    def context_too_long(self) -> bool:
        return self.code == "context_length_exceeded" or bool(_CONTEXT_TOO_LONG.search(self.message))


def _word(value: Any) -> str | None:
    """A field that should name an error type: a string, or None when a hostile upstream sent a
    list or an object there (which could not be looked up or shown as a type)."""
    return value if isinstance(value, str) and value else None


def _relayed_error(raw: Any) -> tuple[str, str | None]:
    """OpenRouter's metadata.raw (often the provider's own error body as a JSON string) as text + Anthropic type."""
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            return raw, None
    if isinstance(value, dict):
        inner = value.get("error", value)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            kind = inner.get("type") or inner.get("code") or inner.get("status")
            anthropic = kind if value.get("type") == "error" and _word(kind) in ANTHROPIC_ERROR_STATUS else None
            return (f"{kind}: {inner['message']}" if isinstance(kind, str) else inner["message"]), anthropic
        if isinstance(inner, str):
            return inner, None
    return (raw if isinstance(raw, str) else _dumps(raw)), None


def read_error(payload: Any, status: int | None = None) -> ProviderError:
    """Read an error object of any dialect: Anthropic {"type":"error","error":{type,message}}, OpenAI
    {"error":{message,type,code}}, OpenRouter {"error":{code,message,metadata{provider_name,raw}}}, Gemini
    {"error":{code,message,status}}, Ollama {"error": "..."}, FastAPI {"detail": "..."}."""
    fallback = f"upstream error (HTTP {status})" if status else "upstream error"
    if not isinstance(payload, dict):
        return ProviderError(fallback)
    error = payload.get("error")
    if isinstance(error, dict):
        return _error_object(error, payload.get("type") == "error", fallback)
    for key in ("error", "detail", "message"):
        if isinstance(payload.get(key), str) and payload[key].strip():
            return ProviderError(payload[key].strip())
    return ProviderError(fallback)


def _error_object(error: dict[str, Any], anthropic_shaped: bool, fallback: str) -> ProviderError:
    """An `error` object: its message, its most specific code, and OpenRouter's metadata folded in."""
    message = str(error.get("message") or "").strip() or fallback
    code = next((k for k in (error.get("code"), error.get("type"), error.get("status"))
                 if isinstance(k, str) and k), None)
    anthropic = _word(error.get("type")) if anthropic_shaped else None
    result = ProviderError(message, anthropic or code, anthropic if anthropic in ANTHROPIC_ERROR_STATUS else None,
                           error["code"] if isinstance(error.get("code"), int) else None)
    metadata = as_object(error.get("metadata"))
    provider = metadata.get("provider_name")
    if metadata.get("raw"):
        raw_text, raw_anthropic = _relayed_error(metadata["raw"])
        result.message = f"{message} ({provider}: {raw_text})" if provider else f"{message} ({raw_text})"
        result.anthropic_type = raw_anthropic or result.anthropic_type
    elif provider:
        result.message = f"{message} (provider: {provider})"
    if isinstance(metadata.get("reasons"), list):  # OpenRouter moderation errors
        result.message += f" (flagged: {', '.join(map(str, metadata['reasons']))})"
    return result


def anthropic_error_type(error: ProviderError, status: int) -> str:
    if error.anthropic_type:
        return error.anthropic_type
    if error.code in ("rate_limit_exceeded", "insufficient_quota") and status not in (402, 429):
        status = 402 if error.code == "insufficient_quota" else 429
    if status in _ANTHROPIC_TYPE_BY_STATUS:
        return _ANTHROPIC_TYPE_BY_STATUS[status]
    return json.loads(error_body(Dialect.ANTHROPIC, status, ""))["error"]["type"]


def anthropic_error(error: ProviderError, status: int) -> dict[str, Any]:
    message = error.message
    if error.context_too_long and "prompt is too long" not in message.lower():
        message = f"prompt is too long: {message}"  # Claude Code compacts on this phrase
    return {"type": "error", "error": {"type": anthropic_error_type(error, status), "message": message}}


def openai_error(error: ProviderError, status: int) -> dict[str, Any]:
    payload = json.loads(error_body(Dialect.OPENAI_CHAT, status, error.message))
    details = payload["error"]
    details["type"] = _OPENAI_TYPE_BY_STATUS.get(status, details["type"])
    if error.context_too_long:
        details["type"], details["code"] = "invalid_request_error", "context_length_exceeded"
    elif error.code:  # the upstream's own word (overloaded_error, invalid_api_key, ...) says more than the status
        details["code"] = error.code
    return payload


def status_of(error: ProviderError) -> int:
    """A status for an in-stream error, which has none of its own."""
    if error.code in ("rate_limit_exceeded", "rate_limit_error"):
        return 429
    return ANTHROPIC_ERROR_STATUS.get(error.anthropic_type or "", 500)


def responses_error(error: ProviderError, status: int) -> dict[str, Any]:
    """The `error` object of a failed Response: {code, message}."""
    if error.context_too_long:
        code = "context_length_exceeded"
    elif error.code in ("rate_limit_exceeded", "rate_limit_error") or status == 429:
        code = "rate_limit_exceeded"
    elif error.code == "insufficient_quota" or status == 402:
        code = "insufficient_quota"
    elif error.code in ("invalid_prompt", "invalid_request_error") or status == 400:
        code = "invalid_prompt"
    else:
        code = "server_error"
    return {"code": code, "message": error.message}


def _plain_text(body: bytes) -> str:
    text = html.unescape(_TAGS.sub(" ", body.decode("utf-8", "replace")))
    text = " ".join(text.split())
    return text[:MAX_TEXT_ERROR] + ("..." if len(text) > MAX_TEXT_ERROR else "")


def translate_error(upstream_body: bytes, status: int, to: Dialect) -> bytes:
    """Any upstream error body (OpenAI, OpenRouter, Anthropic, Gemini, plain text, HTML) in dialect `to`.

    The status stays the upstream's (the caller sends it); the body speaks the client's vocabulary and
    keeps the upstream's message, with OpenRouter's provider name and raw provider error folded in.
    """
    try:
        payload = json.loads(upstream_body) if upstream_body.strip() else None
    except (ValueError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict):
        error = read_error(payload, status)
    else:
        text = _plain_text(upstream_body) if upstream_body.strip() else "an empty body"
        error = ProviderError(f"upstream returned HTTP {status}: {text}")
    to = Dialect(to)
    if to is Dialect.ANTHROPIC:
        return _dumps(anthropic_error(error, status)).encode()
    if to is Dialect.GEMINI:
        return error_body(to, status, error.message)
    return _dumps(openai_error(error, status)).encode()  # OpenAI chat and Responses share it
