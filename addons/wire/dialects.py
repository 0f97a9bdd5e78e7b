"""The LLM API dialects Clutch understands: recognising a request, reading its key fields, and
speaking each dialect's error shape.

Pure logic, no mitmproxy. The dialect is a property of the request (its method and path), not of the
host: OpenRouter serves OpenAI Chat, Anthropic Messages and Responses under one host.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Iterable
from typing import Any

from addons.wire.header_values import has_control


class Dialect(enum.StrEnum):
    """The API an LLM request speaks (its method and path), and so the shape of its body, stream and errors."""

    ANTHROPIC = "anthropic"
    OPENAI_CHAT = "openai_chat"
    OPENAI_RESPONSES = "openai_responses"
    GEMINI = "gemini"


# An LLM request's headers, all together (names, values, separators). The engine's loopback server
# reads the head mitmproxy hands it with a little room above this (loopback.py); past it the agent
# gets a 431 in its dialect from Classify, not a connection mitmproxy reports as an HTML 502.
MAX_HEADERS_BYTES = 64 * 1024
MAX_MODEL_CHARS = 1024  # OpenRouter's longest model ids are under 100; the name goes into headers and keys

_ANTHROPIC = re.compile(r"(^|/)v1/messages$")
_CHAT = re.compile(r"(^|/)chat/completions$")
_RESPONSES = re.compile(r"(^|/)v1/responses$")
_GEMINI = re.compile(r"/models/(?P<model>[^/:]+):(?P<method>streamGenerateContent|generateContent)$")


@dataclasses.dataclass
class LLMCall:
    """What Clutch knows about one LLM request, as Classify read it."""

    dialect: Dialect
    provider: str
    model: str | None
    stream: bool
    body: dict[str, Any] | None  # parsed JSON, None when the body is not a JSON object
    body_error: str | None = None
    invalid: str | None = None  # why Clutch answers 400 itself: a model that is no usable name


def recognise(method: str, path: str, headers: Any = None) -> Dialect | None:
    """The dialect of a generating request, or None for everything else (model lists, OAuth, ...)."""
    path = path.split("?", 1)[0]
    if method == "POST":
        if _ANTHROPIC.search(path):
            return Dialect.ANTHROPIC
        if _CHAT.search(path):
            return Dialect.OPENAI_CHAT
        if _RESPONSES.search(path):
            return Dialect.OPENAI_RESPONSES
        if _GEMINI.search(path):
            return Dialect.GEMINI
    return None


def is_responses_websocket(method: str, path: str, headers: Any) -> bool:
    """Codex's first try: the Responses API over a WebSocket upgrade (`GET /v1/responses` with
    `openai-beta: responses_websockets=...`); a quick 4xx makes it fall back to HTTPS at once."""
    return (
        method == "GET"
        and bool(_RESPONSES.search(path.split("?", 1)[0]))
        and headers.get("upgrade", "").lower() == "websocket"
    )


def read_call(dialect: Dialect, provider: str, path: str, content: bytes | None) -> LLMCall:
    """Parse the body once. A body that is not a JSON object, or a model that is missing or unusable,
    is refused by Classify (body_error, invalid): Clutch cannot route what it cannot read."""
    body: dict[str, Any] | None = None
    error = None
    try:
        parsed = json.loads(content) if content else None
        if isinstance(parsed, dict):
            body = parsed
        else:
            error = "request body is not a JSON object"
    except (ValueError, UnicodeDecodeError) as e:
        error = f"request body is not JSON: {e}"
    except RecursionError:  # nested deeper than the parser goes: unread, like any body it cannot parse
        error = "request body is nested too deeply to read"
    if dialect is Dialect.GEMINI:
        match = _GEMINI.search(path.split("?", 1)[0])
        model = match["model"] if match else None
        stream = bool(match and match["method"] == "streamGenerateContent")
    else:
        model = body.get("model") if body else None
        stream = bool(body and body.get("stream") is True)
    invalid = model_problem(model)
    if invalid is None and body is not None and dialect is not Dialect.GEMINI and not model:
        invalid = "the request names no model (the model field is required)"
    return LLMCall(dialect, provider, model if invalid is None else None, stream, body, error, invalid)


def model_problem(model: Any) -> str | None:
    """Why `model` cannot be used (it names breakers, quotas, usage rows and response headers), or
    None for a usable name or no model at all."""
    if model is None:
        return None
    if not isinstance(model, str):
        return f"the model field must be a string, not {_JSON_TYPES.get(type(model), type(model).__name__)}"
    if has_control(model):
        return "the model name contains a control character (a line break, a tab, ...)"
    if len(model) > MAX_MODEL_CHARS:
        return f"the model name is longer than {MAX_MODEL_CHARS} characters"
    return None


def headers_too_large(fields: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why the request's headers are too large for Clutch to forward, or None."""
    size = sum(len(name) + len(value) + 4 for name, value in fields)
    if size > MAX_HEADERS_BYTES:
        return f"the request headers are {size} bytes, more than the {MAX_HEADERS_BYTES} Clutch forwards"
    return None


_JSON_TYPES = {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object"}


# Error kinds Clutch itself produces, mapped to each dialect's vocabulary.
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 415: "invalid_request_error",
                    426: "invalid_request_error", 431: "invalid_request_error",
                    429: "rate_limit_error", 500: "api_error", 502: "api_error", 503: "api_error",
                    504: "timeout_error", 529: "overloaded_error"}
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 413: "invalid_request_error", 415: "invalid_request_error",
                 426: "invalid_request_error", 429: "rate_limit_exceeded", 431: "invalid_request_error",
                 500: "server_error", 502: "server_error", 503: "server_error", 504: "timeout",
                 529: "server_error"}
_GEMINI_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                  404: "NOT_FOUND", 413: "INVALID_ARGUMENT", 415: "INVALID_ARGUMENT", 426: "FAILED_PRECONDITION",
                  429: "RESOURCE_EXHAUSTED", 431: "INVALID_ARGUMENT",
                  500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def error_body(dialect: Dialect | None, status: int, message: str) -> bytes:
    """A JSON error body that the agent's own SDK parses as an API error of that status.

    Shapes: Anthropic https://docs.anthropic.com/en/api/errors, OpenAI
    https://platform.openai.com/docs/guides/error-codes, Gemini https://ai.google.dev/gemini-api/docs/troubleshooting
    """
    if dialect is Dialect.ANTHROPIC:
        payload: dict[str, Any] = {"type": "error",
                                   "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
    elif dialect is Dialect.GEMINI:
        payload = {"error": {"code": status, "message": message, "status": _GEMINI_STATUS.get(status, "UNKNOWN")}}
    else:
        payload = {"error": {"message": message, "type": _OPENAI_TYPES.get(status, "server_error"),
                             "param": None, "code": _OPENAI_TYPES.get(status, "server_error")}}
    return json.dumps(payload).encode()


def stream_error_event(dialect: Dialect | None, message: str, kind: str = "api_error") -> bytes:
    """An in-stream error event that ends a stream the agent already started reading, in its dialect:
    Anthropic's `error` event, the chat-chunk error OpenRouter sends, Responses' `error` event."""
    if dialect is Dialect.ANTHROPIC:
        payload: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        return b"event: error\ndata: " + json.dumps(payload).encode() + b"\n\n"
    if dialect is Dialect.OPENAI_RESPONSES:
        payload = {"type": "error", "code": "server_error", "message": message, "param": None}
        return b"event: error\ndata: " + json.dumps(payload).encode() + b"\n\n"
    if dialect is Dialect.GEMINI:
        payload = {"error": {"code": 502, "message": message, "status": "UNAVAILABLE"}}
        return b"data: " + json.dumps(payload).encode() + b"\n\n"
    payload = {"error": {"message": message, "type": "server_error", "code": 502}}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
