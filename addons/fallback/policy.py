"""What went wrong with one attempt at an upstream, read once from the wire, and what the cascade may do
about it: try another model, wait, skip every free model, or give up and tell the agent.

Pure logic, no mitmproxy. Four sources of failure, one `Failure` shape:

* `from_status`: an HTTP error status, its headers and body (any dialect, OpenRouter's metadata included);
* `from_transport`: an attempt without an HTTP answer (the engine's `upstream.UpstreamError` kinds), and
  `stalled`: a stream that stalled or broke before its commit point;
* an error inside a 2xx answer or stream (`in_band`), and an answer that is empty or lacks the tool call
  the request forced: found by `checks.py` (`from_answer`) and `stream_watch.py` (`StreamWatch`).

How long to wait is `retry_after.py`'s; which failure the agent is told about when every candidate
failed is `most_informative`.

Decisions:

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
* Errors inside a 200 (OpenRouter's body or SSE `data: {"error": ...}`, Anthropic `event: error`, Responses
  `error` / `response.failed`, Gemini `{"error": ...}`) take their status from the error itself (OpenRouter's
  numeric code, Anthropic's error type, OpenAI/Gemini code words), else 200; they follow the status rules.
  Their `body` is the error as an error body of the upstream's dialect, so it can be passed on or translated.

References: https://openrouter.ai/docs/api-reference/errors-and-debugging, https://docs.anthropic.com/en/api/errors,
https://platform.openai.com/docs/guides/error-codes, https://ai.google.dev/gemini-api/docs/troubleshooting
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from typing import Any

from addons.fallback.retry_after import Headers, error_object, free_cap_wait, header, retry_after_from
from addons.translate.errors import ANTHROPIC_ERROR_STATUS, ProviderError, read_error

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
    retry_after_s: float | None = None  # how long the upstream asked us to wait (retry_after.py: sources)
    rampup: bool = False  # "rate increased too quickly": move on at once, no waiting on this model
    free_daily_cap: bool = False  # OpenRouter free-models-per-day: skip every remaining ":free" candidate
    counts_for_breaker: bool = True  # False for client-caused, billing and account-quota failures
    body: bytes = b""  # the upstream's error body, kept for the final answer to the agent
    routing: bool = False  # OpenRouter found no provider meeting the request's requirements (require_parameters,
    #                        only, data policy): change those or the model; not an outage
    misconfigured: bool = False  # 404: the target as configured (its URL or model name) does not exist; another
    #                              candidate may, but this one is never retried and its breaker never counts it


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
    raw = error_object(payload).get("code")
    if isinstance(raw, str) and raw.isdigit():
        return int(raw)
    if error.anthropic_type in ANTHROPIC_ERROR_STATUS:
        return ANTHROPIC_ERROR_STATUS[error.anthropic_type]
    inner = error_object(payload)
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
    if kind != "status" or status is None:
        status = _own_status(payload, error) or 200
    text = body.decode("utf-8", "replace")
    free_daily_cap = bool(_FREE_DAILY.search(text))
    routing = bool(_ROUTING.search(text))
    moderation = status == 403 and (bool(_MODERATION.search(text))
                                    or isinstance((error_object(payload).get("metadata") or {}).get("reasons"), list))
    retry_after = retry_after_from(headers, payload, now=now)
    if free_daily_cap:
        retry_after = free_cap_wait(headers, payload, now)
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


def in_band(kind: str, error_body: dict[str, Any], *, key_from_rules: bool) -> Failure:
    """An error inside a 2xx answer (`error_in_200`) or stream (`stream_error`), `error_body` being an error
    body of the upstream's dialect: judged like an error status, with the status the error names itself."""
    prefix = "error in a 200 answer" if kind == "error_in_200" else "error in the stream"
    return _judge(kind, None, (), _dumps(error_body), error_body, key_from_rules=key_from_rules, now=None,
                  prefix=prefix)


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
