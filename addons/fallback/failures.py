"""What went wrong with one attempt at an upstream, read once from the wire, and what the cascade may do
about it: try another model, wait, skip every free model, or give up and tell the agent.

Pure logic, no mitmproxy. Four sources of failure, one `Failure` shape:

* `from_status`: an HTTP error status, its headers and body (any dialect, OpenRouter's metadata included);
* `from_transport`: an attempt without an HTTP answer (the engine's `upstream.UpstreamError` kinds);
* `from_answer`: a complete 2xx JSON answer that is an error, or empty, or lacks the tool call the request forced;
* `StreamWatch`: the same for an SSE stream, event by event, which also finds the commit point (the first
  text, tool call or reasoning delta: before it the cascade may still move on; research/peers.md (d) lesson 2).

Decisions (research/peers.md (d) lessons 2-5, OpenRouter §4):

* Retryable means "another model, or this one later, may work". Retryable: 408, 409, 425, 429, every 5xx
  (529 and Cloudflare's 520-524 included), 404 (the model may not exist, another may; `misconfigured`: the
  same target is never retried and its breaker does not count it), 400/413/422 when the
  prompt is too long for the model (another may have a larger context window), 403 OpenRouter moderation
  (another model may not be moderated), 401/403 only when the rules supplied the key (another provider has
  another key; the agent's own bad key stays bad), 402 only with Retry-After (OpenRouter: "a 402 without the
  header is not a wait-and-retry case"). Everything else (400, 405, 413, 415, 422, ...) is the request's fault.
* Counts for breakers means "this says something about the model's health". Not counted: client-caused
  errors (400/413/422, the agent's own 401/403), billing (402), request-specific 409/425/moderation,
  OpenRouter's free-models-per-day cap (an account quota: the cascade skips every ":free" model instead),
  and OpenRouter's routing answers (`routing`: "No endpoints found ...", 503 "no provider meets your routing
  requirements": the request's provider constraints, not an outage), and a 404 (a wrong model name or base
  URL in the rules is a configuration mistake to fix, not an outage to wait out). Transport failures and
  stalled streams (STALL_KINDS) count.
* Soft failures (empty, no_tool_call, length_no_content) are retryable and count half. An answer with
  reasoning (text, blocks, items, or reasoning tokens in its usage) is not empty and not a length failure
  (claude-code-proxy's reasoning exemption), but it still misses a forced tool call. Whitespace is no content:
  a stream that opens with "\\n\\n" is not committed until something visible follows.
* Errors inside a 200 (OpenRouter's body or SSE `data: {"error": ...}`, Anthropic `event: error`, Responses
  `error` / `response.failed`, Gemini `{"error": ...}`) take their status from the error itself (OpenRouter's
  numeric code, Anthropic's error type, OpenAI/Gemini code words), else 200; they follow the status rules.
  Their `body` is the error as an error body of the upstream's dialect, so it can be passed on or translated.
* Retry-After, in order: `retry-after-ms`, `Retry-After` (seconds or HTTP date), `X-RateLimit-Reset`
  (OpenRouter epoch milliseconds; epoch seconds or a delta when smaller; Go durations), OpenAI's
  `x-ratelimit-reset-requests/-tokens` ("1s", "6m0s") and Anthropic's `anthropic-ratelimit-*-reset` (RFC 3339)
  of the exhausted limits, then the body (OpenRouter metadata.headers, Gemini RetryInfo.retryDelay,
  "try again in 2s" in the message). A free-models-per-day cap waits for its X-RateLimit-Reset, else the next
  UTC midnight (OpenRouter's day is the UTC day).

References: https://openrouter.ai/docs/api-reference/errors-and-debugging, https://docs.anthropic.com/en/api/errors,
https://platform.openai.com/docs/guides/rate-limits, https://ai.google.dev/gemini-api/docs/troubleshooting,
https://www.rfc-editor.org/rfc/rfc9110#field.retry-after
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import json
import math
import re
import time
from collections.abc import Sequence
from typing import Any

from addons.translate.errors import ANTHROPIC_ERROR_STATUS, ProviderError, read_error
from addons.wire.dialects import Dialect
from addons.wire.sse import SSEEvent, SSEParser
from addons.wire.usage_blocks import StreamUsage

TRANSPORT_KINDS = ("connect", "protocol", "timeout_connect", "timeout_first_byte", "timeout_idle")
# A streamed answer that came (200 and its headers) but, before its commit point, sent nothing at all for
# the silence limit (`timeout_silent`), only keep-alives until the first-token limit (`timeout_first_token`),
# or ended without the dialect's end marker (`stream_cut`).
STALL_KINDS = ("timeout_silent", "timeout_first_token", "stream_cut")
MAX_MESSAGE = 300


@dataclasses.dataclass(frozen=True)
class Failure:
    kind: str  # "status" | "connect" | "protocol" | "timeout_connect" | "timeout_first_byte" | "timeout_idle"
    #            | "error_in_200" | "stream_error" | "empty" | "no_tool_call" | "length_no_content"
    status: int | None  # the HTTP status (for errors inside a 200: the error's own); None for transport failures
    retryable: bool  # may the cascade try another model (or this one again)?
    soft: bool  # the answer came but is unusable: counts half in circuit breakers
    message: str  # short human text: logs, the flow comment, the final error to the agent
    retry_after_s: float | None = None  # how long the upstream asked us to wait (module docstring: sources)
    rampup: bool = False  # "rate increased too quickly": move on at once, no waiting on this model
    free_daily_cap: bool = False  # OpenRouter free-models-per-day: skip every remaining ":free" candidate
    counts_for_breaker: bool = True  # False for client-caused, billing and account-quota failures
    body: bytes = b""  # the upstream's error body, kept for the final answer to the agent
    routing: bool = False  # OpenRouter found no provider meeting the request's requirements (require_parameters,
    #                        only, data policy): change those or the model; not an outage
    misconfigured: bool = False  # 404: the target as configured (its URL or model name) does not exist; another
    #                              candidate may, but this one is never retried and its breaker never counts it


# ---------------------------------------------------------------- headers and waits

Headers = Sequence[tuple[bytes | str, bytes | str]]

_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|h|m|s))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_TRY_AGAIN = re.compile(r"(?:try again|retry) in ((?:\d+(?:\.\d+)?(?:ms|h|m|s))+)", re.I)
_EPOCH_MS = 1e11  # as seconds that is the year 5138, as milliseconds 1973: bigger numbers are epoch ms
_EPOCH_S = 1e9  # 2001 as epoch seconds; smaller numbers are seconds from now


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def header(headers: Headers, name: str) -> str | None:
    """The first value of a header, whatever the case of its name."""
    name = name.lower()
    for key, value in headers:
        if _text(key).lower() == name:
            return _text(value).strip()
    return None


def parse_duration(text: str) -> float | None:
    """Go-style durations as OpenAI and Gemini write them: "1s", "6m0s", "20ms", "1h2m3.5s", "38.2s"."""
    text = text.strip()
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(number) * _UNIT_S[unit] for number, unit in _DURATION_PART.findall(text))


def _seconds(text: str) -> float | None:
    """A plain number (inf and nan are no wait anybody can honour)."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_retry_after(value: str, now: float) -> float | None:
    """A Retry-After value: delay-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if (number := _seconds(value)) is not None:
        return max(0.0, number)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


def parse_reset(value: str, now: float) -> float | None:
    """A rate-limit reset: epoch ms (OpenRouter), epoch s, seconds from now, a duration or an RFC 3339 time."""
    if (number := _seconds(value)) is not None:
        if number >= _EPOCH_MS:
            return max(0.0, number / 1000 - now)
        if number >= _EPOCH_S:
            return max(0.0, number - now)
        return max(0.0, number)
    if (duration := parse_duration(value)) is not None:
        return duration
    try:
        when = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


def _exhausted_resets(headers: Headers, prefix: str, limits: tuple[str, ...], now: float,
                      remaining_first: bool) -> float | None:
    """The longest reset among the limits with nothing left (or among all, when none says so)."""
    resets: dict[str, float] = {}
    empty: set[str] = set()
    for limit in limits:
        names = (f"{prefix}remaining-{limit}", f"{prefix}reset-{limit}") if remaining_first else \
            (f"{prefix}{limit}-remaining", f"{prefix}{limit}-reset")
        reset = header(headers, names[1])
        if reset is None or (seconds := parse_reset(reset, now)) is None:
            continue
        resets[limit] = seconds
        if header(headers, names[0]) == "0":
            empty.add(limit)
    chosen = [resets[limit] for limit in resets if limit in empty] or list(resets.values())
    return max(chosen) if chosen else None


def _error_of(payload: Any) -> dict[str, Any]:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return payload["error"]
    return {}


def _body_reset(payload: Any, now: float) -> float | None:
    """OpenRouter copies the provider's rate-limit headers into error.metadata.headers."""
    metadata = _error_of(payload).get("metadata")
    copied = metadata.get("headers") if isinstance(metadata, dict) else None
    if isinstance(copied, dict):
        reset = next((str(v) for k, v in copied.items() if str(k).lower() == "x-ratelimit-reset"), None)
        if reset is not None:
            return parse_reset(reset, now)
    return None


def retry_after_from(headers: Headers, payload: Any = None, *, now: float | None = None) -> float | None:
    """How long the upstream asks us to wait, in seconds, from its headers or its error body (module docstring)."""
    now = time.time() if now is None else now
    if (value := header(headers, "retry-after-ms")) is not None and (number := _seconds(value)) is not None:
        return max(0.0, number / 1000)
    if (value := header(headers, "retry-after")) is not None and (seconds := parse_retry_after(value, now)) is not None:
        return seconds
    if (value := header(headers, "x-ratelimit-reset")) is not None and (seconds := parse_reset(value, now)) is not None:
        return seconds
    anthropic_limits = ("requests", "tokens", "input-tokens", "output-tokens")
    for found in (_exhausted_resets(headers, "x-ratelimit-", ("requests", "tokens"), now, remaining_first=True),
                  _exhausted_resets(headers, "anthropic-ratelimit-", anthropic_limits, now, remaining_first=False)):
        if found is not None:
            return found
    if (seconds := _body_reset(payload, now)) is not None:
        return seconds
    error = _error_of(payload)
    for detail in error.get("details") or []:  # Gemini: google.rpc.RetryInfo
        if isinstance(detail, dict) and isinstance(detail.get("retryDelay"), str):
            if (seconds := parse_duration(detail["retryDelay"])) is not None:
                return seconds
    message = error.get("message") if error else (payload.get("message") if isinstance(payload, dict) else None)
    if isinstance(message, str) and (match := _TRY_AGAIN.search(message)):
        return parse_duration(match[1])
    return None


def _until_utc_midnight(now: float) -> float:
    today = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
    midnight = datetime.datetime.combine(today + datetime.timedelta(days=1), datetime.time(), datetime.UTC)
    return midnight.timestamp() - now


# ---------------------------------------------------------------- reading an error

_RAMPUP = re.compile(r"increased too quickly|ramp(?:ing)? up (?:your (?:request )?rate )?gradually", re.I)
_FREE_DAILY = re.compile(r"free-models-per-day|free_tier_daily", re.I)
_ROUTING = re.compile(r"no endpoints found|no (?:allowed )?providers? (?:are |is )?available"
                      r"|no available model provider|meets? your routing requirements", re.I)
_MODERATION = re.compile(r"moderation|flagged", re.I)
_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)
# Error words that stand for a status, for errors inside a 200 that carry no number.
_STATUS_OF_CODE = {"server_error": 500, "rate_limit_exceeded": 429, "insufficient_quota": 429,
                   "invalid_api_key": 401, "context_length_exceeded": 400, "RESOURCE_EXHAUSTED": 429,
                   "UNAVAILABLE": 503, "INTERNAL": 500, "DEADLINE_EXCEEDED": 504, "UNAUTHENTICATED": 401,
                   "PERMISSION_DENIED": 403, "INVALID_ARGUMENT": 400, "NOT_FOUND": 404}


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError):
        return None


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def _read(body: bytes, payload: Any, status: int | None) -> ProviderError:
    if isinstance(payload, dict):
        return read_error(payload, status)
    text = _short(_TAGS.sub(" ", body.decode("utf-8", "replace"))) if body.strip() else "an empty body"
    return ProviderError(text)


def _own_status(payload: Any, error: ProviderError) -> int | None:
    """The status an error inside a 200 names itself: OpenRouter's code (a number, sometimes a string),
    Anthropic's error type, an OpenAI or Gemini code word."""
    if error.status:
        return error.status
    raw = _error_of(payload).get("code")
    if isinstance(raw, str) and raw.isdigit():
        return int(raw)
    if error.anthropic_type in ANTHROPIC_ERROR_STATUS:
        return ANTHROPIC_ERROR_STATUS[error.anthropic_type]
    inner = _error_of(payload)
    for word in (error.code, inner.get("type"), inner.get("status")):
        if isinstance(word, str) and word in _STATUS_OF_CODE:
            return _STATUS_OF_CODE[word]
    return None


def _policy(status: int, error: ProviderError, *, key_from_rules: bool, retry_after_header: bool,
            routing: bool, moderation: bool, free_daily_cap: bool) -> tuple[bool, bool]:
    """(retryable, counts_for_breaker) of an error status; the reasons are in the module docstring."""
    if routing:
        return True, False
    if status == 429:
        return True, not free_daily_cap
    if status == 403 and moderation:
        return True, False
    if status in (401, 403):
        return key_from_rules, key_from_rules
    if status == 402:
        return retry_after_header, False
    if status == 404:  # the model or path does not exist as configured: a mistake, not an outage
        return True, False
    if status == 408:
        return True, True
    if status in (409, 425):
        return True, False
    if status in (400, 413, 422) and error.context_too_long:
        return True, False
    if 400 <= status < 500:
        return False, False
    if status >= 500:
        return True, True
    return False, False  # 1xx/3xx: nothing the cascade can fix


def _judge(kind: str, status: int | None, headers: Headers, body: bytes, payload: Any, *,
           key_from_rules: bool, now: float | None, prefix: str) -> Failure:
    """One classification for every error the upstream put into words: HTTP statuses and errors inside a 200."""
    now = time.time() if now is None else now
    error = _read(body, payload, status)
    if kind != "status":
        status = _own_status(payload, error) or 200
    text = body.decode("utf-8", "replace")
    free_daily_cap = bool(_FREE_DAILY.search(text))
    routing = bool(_ROUTING.search(text))
    moderation = status == 403 and (bool(_MODERATION.search(text))
                                    or isinstance((_error_of(payload).get("metadata") or {}).get("reasons"), list))
    retry_after = retry_after_from(headers, payload, now=now)
    if free_daily_cap:
        reset = header(headers, "x-ratelimit-reset")
        retry_after = (parse_reset(reset, now) if reset else None) or _body_reset(payload, now) \
            or _until_utc_midnight(now)
    has_retry_after = header(headers, "retry-after") is not None or header(headers, "retry-after-ms") is not None
    if status == 200:  # an error inside a 200 that names no status: the provider failed to answer
        retryable, counts = True, True
    else:
        retryable, counts = _policy(status, error, key_from_rules=key_from_rules, retry_after_header=has_retry_after,
                                    routing=routing, moderation=moderation, free_daily_cap=free_daily_cap)
    return Failure(kind, status, retryable, False, _short(f"{prefix}: {error.message}"), retry_after,
                   rampup=bool(_RAMPUP.search(text)), free_daily_cap=free_daily_cap, counts_for_breaker=counts,
                   body=body, routing=routing, misconfigured=status == 404 and not routing)


def from_status(status: int, headers: Headers, body: bytes, *, key_from_rules: bool,
                now: float | None = None) -> Failure | None:
    """An HTTP answer's status, headers and (error) body; None for 2xx."""
    if 200 <= status < 300:
        return None
    return _judge("status", status, headers, body, _json(body), key_from_rules=key_from_rules, now=now,
                  prefix=f"HTTP {status}")


def from_transport(kind: str, message: str) -> Failure:
    """An attempt without an HTTP answer: another model, or this one later, may well work."""
    if kind not in TRANSPORT_KINDS:
        raise ValueError(f"unknown transport failure {kind!r} (one of {', '.join(TRANSPORT_KINDS)})")
    return Failure(kind, None, True, False, _short(f"{kind.replace('_', ' ')}: {message}"))


def stalled(kind: str, message: str) -> Failure:
    """A stream that stalled or broke before its commit point (STALL_KINDS): another model may well work.
    Each counts whole in its breaker: for the agent, a model that sends nothing usable is down."""
    if kind not in STALL_KINDS:
        raise ValueError(f"unknown stall {kind!r} (one of {', '.join(STALL_KINDS)})")
    return Failure(kind, None, True, False, _short(message))  # no status of its own: 504 / 502 for the agent


def _in_band(kind: str, error_body: dict[str, Any], *, key_from_rules: bool) -> Failure:
    prefix = "error in a 200 answer" if kind == "error_in_200" else "error in the stream"
    return _judge(kind, None, (), _dumps(error_body), error_body, key_from_rules=key_from_rules, now=None,
                  prefix=prefix)


# ---------------------------------------------------------------- what an answer holds

_LENGTH = {"length", "max_tokens", "max_output_tokens", "model_context_window_exceeded"}
_ANTHROPIC_TOOL_BLOCKS = {"tool_use", "server_tool_use", "mcp_tool_use"}


def _visible(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


@dataclasses.dataclass
class _Output:
    """What an answer (or the stream so far) holds."""

    text: bool = False
    tool_call: bool = False
    reasoning: bool = False  # reasoning text, blocks or items
    hidden_reasoning: bool = False  # reasoning tokens in the usage without reasoning text (OpenAI o-series)
    stop: str | None = None  # finish_reason / stop_reason / incomplete reason / finishReason as sent
    blocked: str | None = None  # Gemini promptFeedback.blockReason

    @property
    def anything(self) -> bool:
        return self.text or self.tool_call or self.reasoning

    def verdict(self, dialect: Dialect, request: dict | None) -> Failure | None:
        truncated = (self.stop or "").lower() in _LENGTH
        if not (self.anything or self.hidden_reasoning):
            if truncated:
                return _soft("length_no_content",
                             f"the answer reached its token limit ({self.stop}) before any content")
            why = f" (blocked: {self.blocked})" if self.blocked else f" (stop: {self.stop})" if self.stop else ""
            return _soft("empty", f"empty answer: no text, tool call or reasoning{why}")
        if not self.tool_call and tool_required(dialect, request):
            return _soft("no_tool_call", "the request forced a tool call (tool_choice) and the answer has none")
        return None

    def reasoning_tokens(self, usage: Any, *paths: tuple[str, str]) -> None:
        if not isinstance(usage, dict):
            return
        for outer, inner in paths:
            value = usage.get(outer)
            value = value.get(inner) if isinstance(value, dict) and inner else value
            if isinstance(value, (int, float)) and value > 0:
                self.hidden_reasoning = True


def _soft(kind: str, message: str) -> Failure:
    return Failure(kind, 200, True, True, message)


def tool_required(dialect: Dialect, request: dict | None) -> bool:
    """Does the request force a tool call? Anthropic tool_choice any/tool, OpenAI "required" or a named
    function (and the legacy function_call), Responses "required" / a named or hosted tool / allowed_tools
    in required mode, Gemini functionCallingConfig.mode ANY."""
    if not isinstance(request, dict):
        return False
    dialect = Dialect(dialect)
    if dialect is Dialect.GEMINI:
        config = request.get("toolConfig") or request.get("tool_config")
        if not isinstance(config, dict):
            return False
        calling = config.get("functionCallingConfig") or config.get("function_calling_config")
        return isinstance(calling, dict) and str(calling.get("mode", "")).upper() == "ANY"
    choice = request.get("tool_choice")
    if dialect is Dialect.ANTHROPIC:
        return isinstance(choice, dict) and choice.get("type") in ("any", "tool")
    if choice == "required":
        return True
    if dialect is Dialect.OPENAI_CHAT:
        legacy = request.get("function_call")
        return (isinstance(choice, dict) and choice.get("type") == "function") or \
            (isinstance(legacy, dict) and bool(legacy.get("name")))
    if isinstance(choice, dict):
        if choice.get("type") == "allowed_tools":
            return choice.get("mode") == "required"
        return choice.get("type") not in (None, "auto", "none")
    return False


def _anthropic_block(block: Any, out: _Output) -> None:
    if not isinstance(block, dict):
        return
    kind = block.get("type")
    if kind == "text":
        out.text |= _visible(block.get("text"))
    elif kind in _ANTHROPIC_TOOL_BLOCKS:
        out.tool_call = True
    elif kind == "thinking":
        out.reasoning |= _visible(block.get("thinking"))
    elif kind == "redacted_thinking":
        out.reasoning = True
    elif kind:  # server tool results, documents, ...: content all the same
        out.text = True


def _chat_message(message: Any, out: _Output) -> None:
    """A chat completion's message, or one streamed delta: the same fields."""
    if not isinstance(message, dict):
        return
    content = message.get("content")
    if isinstance(content, list):  # content parts
        out.text |= any(isinstance(p, dict) and _visible(p.get("text")) for p in content)
    else:
        out.text |= _visible(content)
    out.text |= _visible(message.get("refusal"))
    out.tool_call |= bool(message.get("tool_calls")) or bool(message.get("function_call"))
    out.reasoning |= _visible(message.get("reasoning")) or _visible(message.get("reasoning_content")) \
        or bool(message.get("reasoning_details"))


def _responses_item(item: Any, out: _Output) -> None:
    if not isinstance(item, dict):
        return
    kind = str(item.get("type") or "")
    if kind == "message":
        for part in item.get("content") or []:
            if isinstance(part, dict):
                out.text |= _visible(part.get("text")) or _visible(part.get("refusal"))
    elif kind.endswith("_call"):  # function_call, custom_tool_call, web_search_call, local_shell_call, ...
        out.tool_call = True
    elif kind == "reasoning":
        parts = [*(item.get("summary") or []), *(item.get("content") or [])]
        out.reasoning |= any(isinstance(p, dict) and _visible(p.get("text")) for p in parts) \
            or bool(item.get("encrypted_content"))


def _gemini_chunk(answer: dict[str, Any], out: _Output) -> bool:
    """A GenerateContentResponse (whole or one streamed piece); True when it carries a finishReason."""
    finished = False
    for candidate in answer.get("candidates") or []:
        if not isinstance(candidate, dict):
            continue
        content = candidate.get("content") if isinstance(candidate.get("content"), dict) else {}
        for part in content.get("parts") or []:
            if not isinstance(part, dict):
                continue
            if "functionCall" in part or "function_call" in part:
                out.tool_call = True
            elif "text" in part:
                if part.get("thought"):
                    out.reasoning |= _visible(part["text"])
                else:
                    out.text |= _visible(part["text"])
            elif any(k in part for k in ("executableCode", "codeExecutionResult", "inlineData", "fileData")):
                out.text = True
        if candidate.get("finishReason"):
            out.stop, finished = candidate["finishReason"], True
    feedback = answer.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        out.blocked, finished = str(feedback["blockReason"]), True
    out.reasoning_tokens(answer.get("usageMetadata"), ("thoughtsTokenCount", ""))
    return finished


def _responses_object(response: Any, out: _Output) -> None:
    if not isinstance(response, dict):
        return
    for item in response.get("output") or []:
        _responses_item(item, out)
    details = response.get("incomplete_details")
    if response.get("status") == "incomplete" and isinstance(details, dict):
        out.stop = details.get("reason") or "incomplete"
    out.reasoning_tokens(response.get("usage"), ("output_tokens_details", "reasoning_tokens"))


def _answer_error(dialect: Dialect, answer: dict[str, Any]) -> dict[str, Any] | None:
    """The error a 2xx answer carries instead of an answer, as an error body of its dialect."""
    if answer.get("type") == "error":  # Anthropic
        return answer
    error = answer.get("error")
    if isinstance(error, dict) or _visible(error):
        return {"error": error}
    if dialect is Dialect.OPENAI_RESPONSES and answer.get("status") == "failed":
        return {"error": {"message": "the response failed", "code": "server_error"}}
    for choice in answer.get("choices") or []:  # OpenRouter: an error as the choice's finish_reason
        if not isinstance(choice, dict):
            continue
        inner = choice.get("error") if isinstance(choice.get("error"), dict) else {}
        if inner or choice.get("finish_reason") == "error":
            return {"error": {"message": "the provider ended the answer with an error", "code": "server_error",
                              **inner}}
    return None


def from_answer(dialect: Dialect, answer: dict, request: dict | None, *,
                key_from_rules: bool = False) -> Failure | None:
    """A complete non-streamed 2xx JSON answer: an error inside it, an empty answer, a missing forced tool
    call, or a token limit reached before any content; None when it is a usable answer."""
    dialect = Dialect(dialect)
    if (error := _answer_error(dialect, answer)) is not None:
        return _in_band("error_in_200", error, key_from_rules=key_from_rules)
    out = _Output()
    if dialect is Dialect.ANTHROPIC:
        for block in answer.get("content") or []:
            _anthropic_block(block, out)
        out.stop = answer.get("stop_reason")
    elif dialect is Dialect.OPENAI_CHAT:
        for choice in answer.get("choices") or []:
            if isinstance(choice, dict):
                _chat_message(choice.get("message"), out)
                out.stop = choice.get("finish_reason") or out.stop
        out.reasoning_tokens(answer.get("usage"), ("completion_tokens_details", "reasoning_tokens"))
    elif dialect is Dialect.OPENAI_RESPONSES:
        _responses_object(answer, out)
    else:
        _gemini_chunk(answer, out)
    return out.verdict(dialect, request)


def answer_model(dialect: Dialect, payload: dict[str, Any]) -> str | None:
    """The model an answer (or one streamed event) says it came from: `model` of a chat completion, its
    chunks and an Anthropic message, Anthropic's `message_start`, a Responses object or its
    `response.*` events, Gemini's `modelVersion`."""
    if dialect is Dialect.GEMINI:
        found = payload.get("modelVersion")
    elif isinstance(payload.get("message"), dict):  # Anthropic message_start
        found = payload["message"].get("model")
    elif isinstance(payload.get("response"), dict):  # Responses response.created / .completed
        found = payload["response"].get("model")
    else:
        found = payload.get("model")
    return found if isinstance(found, str) and found else None


# ---------------------------------------------------------------- streams


class StreamWatch:
    """Watches an upstream SSE stream (in the upstream's dialect) for the commit point and for failures.

    `meaningful` turns True at the first text, tool call or reasoning delta (an Anthropic message_start,
    ping or empty text block start, an OpenAI role-only delta, OpenRouter's ": OPENROUTER PROCESSING"
    comments are not). `committable` is the commit point: meaningful, and when the request forces a tool
    call (tool_choice), a tool call has begun, so an answer that opens with text is held until its call
    arrives (or judged `no_tool_call` when it ends without one). `failure` is set by the first error
    event. `finish()` judges the ended stream like `from_answer`; `complete` says whether it ended with
    its dialect's end marker (a stream without one was cut). `model` is the model the stream says
    answered (OpenRouter names the entry of its `models` list that served). Gemini is watched in its
    alt=sse form; its JSON-array stream is not SSE.
    """

    def __init__(self, dialect: Dialect, request: dict | None, *, key_from_rules: bool = False) -> None:
        self.dialect = Dialect(dialect)
        self.request = request
        self.key_from_rules = key_from_rules
        self.meaningful = False
        self.failure: Failure | None = None
        self.events = 0  # complete SSE events (comments are not events)
        self.end_seen = False  # the dialect's end marker arrived ([DONE], message_stop, response.completed, ...)
        self.model: str | None = None  # the first model name the stream gives
        self.tool_forced = tool_required(self.dialect, request)
        self._out = _Output()
        self._parser = SSEParser()
        self.usage = StreamUsage(self.dialect)  # the provider's token counts, read on the way past
        self.overflowed = False  # an event grew past sse.MAX_EVENT_BYTES: the stream is given up

    def feed(self, chunk: bytes) -> None:
        for event in self._parser.feed(chunk):
            self.events += 1
            if self.failure is None:
                self._event(event)
                self.meaningful = self.meaningful or self._out.anything
        if self._parser.overflowed and not self.overflowed:
            self.overflowed = True  # a bad answer like one that is not JSON: another model may do better
            self.failure = self.failure or Failure(
                "error_in_200", 200, True, False,
                f"the provider's stream sent over {self._parser.max_event >> 20} MB without ending an event")

    @property
    def committable(self) -> bool:
        return self.meaningful and (self._out.tool_call or not self.tool_forced)

    @property
    def complete(self) -> bool:
        """The stream ended as its dialect ends one (a chat stream's finish_reason counts: some servers
        that speak Chat Completions never send `[DONE]`)."""
        return self.end_seen or (self.dialect is Dialect.OPENAI_CHAT and self._out.stop is not None)

    def finish(self) -> Failure | None:
        if self.failure is not None:
            return self.failure
        return self._out.verdict(self.dialect, self.request)

    # -- one event

    def _event(self, event: SSEEvent) -> None:
        if event.data.strip() == "[DONE]":
            self.end_seen = True
            return
        try:
            payload = json.loads(event.data)
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        self.usage.event(event.event, payload)
        if self.model is None:
            self.model = answer_model(self.dialect, payload)
        if self.dialect is Dialect.ANTHROPIC:
            self._anthropic(payload.get("type") or event.event, payload)
        elif self.dialect is Dialect.OPENAI_RESPONSES:
            self._responses(payload.get("type") or event.event, payload)
        elif payload.get("error") is not None:  # OpenAI / OpenRouter / Gemini: an error object in a data event
            self._fail({"error": payload["error"]})
        elif self.dialect is Dialect.OPENAI_CHAT:
            self._chat(payload)
        else:
            self.end_seen |= _gemini_chunk(payload, self._out)

    def _fail(self, error_body: dict[str, Any]) -> None:
        self.failure = _in_band("stream_error", error_body, key_from_rules=self.key_from_rules)

    def _chat(self, payload: dict[str, Any]) -> None:
        for choice in payload.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            _chat_message(choice.get("delta"), self._out)
            if choice.get("finish_reason") == "error":  # OpenRouter without an error object
                self._fail({"error": {"message": "the provider ended the stream with an error",
                                      "code": "server_error"}})
            elif choice.get("finish_reason"):
                self._out.stop = choice["finish_reason"]
        self._out.reasoning_tokens(payload.get("usage"), ("completion_tokens_details", "reasoning_tokens"))

    def _anthropic(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "error":
            self._fail(payload if isinstance(payload.get("error"), dict) else
                       {"type": "error", "error": {"type": "api_error", "message": str(payload.get("error"))}})
        elif kind == "content_block_start":
            _anthropic_block(payload.get("content_block"), self._out)
        elif kind == "content_block_delta":
            delta = payload.get("delta") if isinstance(payload.get("delta"), dict) else {}
            if delta.get("type") == "text_delta":
                self._out.text |= _visible(delta.get("text"))
            elif delta.get("type") == "thinking_delta":
                self._out.reasoning |= _visible(delta.get("thinking"))
            elif delta.get("type") == "input_json_delta":
                self._out.tool_call = True
        elif kind == "message_delta":
            delta = payload.get("delta") if isinstance(payload.get("delta"), dict) else {}
            self._out.stop = delta.get("stop_reason") or self._out.stop
        elif kind == "message_stop":
            self.end_seen = True

    def _responses(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "error":
            error = payload.get("error") if isinstance(payload.get("error"), dict) else \
                {k: payload[k] for k in ("code", "message", "param") if k in payload}
            self._fail({"error": error or {"message": "error event without details"}})
        elif kind == "response.failed":
            response = payload.get("response") if isinstance(payload.get("response"), dict) else {}
            error = response.get("error") if isinstance(response.get("error"), dict) else None
            self._fail({"error": error or {"message": "the response failed", "code": "server_error"}})
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            self._out.text |= _visible(payload.get("delta"))
        elif kind.startswith("response.reasoning") and kind.endswith(".delta"):
            self._out.reasoning |= _visible(payload.get("delta"))
        elif kind in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta"):
            self._out.tool_call = True
        elif kind in ("response.output_item.added", "response.output_item.done"):
            _responses_item(payload.get("item"), self._out)
        elif kind in ("response.completed", "response.incomplete"):
            _responses_object(payload.get("response"), self._out)
            self.end_seen = True


# ---------------------------------------------------------------- the final answer

_UPSTREAM_SAID = ("status", "error_in_200", "stream_error")


def _rank(failure: Failure) -> tuple:
    """Lower is more informative: what the upstream said (429 with the shortest wait, then auth and billing
    401/402/403, then other 4xx, then 5xx and unnumbered errors; an HTTP status before an error inside a 200;
    with a body before without), then soft failures (the model answered, unusably), then transport and
    everything else."""
    if failure.kind in _UPSTREAM_SAID:
        status = failure.status or 0
        group = 0 if status == 429 else 1 if status in (401, 402, 403) else 2 if 400 <= status < 500 else 3
        wait = failure.retry_after_s if status == 429 and failure.retry_after_s is not None else math.inf
        return 0, group, wait, failure.kind != "status", not failure.body
    if failure.soft:
        return (1,)
    return (2,)


def most_informative(failures: list[Failure]) -> Failure:
    """The failure to report to the agent when every candidate failed (ties: the earliest)."""
    if not failures:
        raise ValueError("no failures to choose from")
    return min(failures, key=_rank)


def retry_after_header(failure: Failure) -> str | None:
    """A Retry-After value (whole seconds, rounded up) for the agent, when the upstream gave a wait."""
    if failure.retry_after_s is None:
        return None
    return str(max(0, math.ceil(failure.retry_after_s)))
