"""How long an upstream asks Clutch to wait before it tries again, read from its headers or its error
body, whatever its dialect.

Pure logic, no mitmproxy. The sources, in order: `retry-after-ms`, `Retry-After` (seconds or HTTP date),
`X-RateLimit-Reset` (OpenRouter epoch milliseconds; epoch seconds or a delta when smaller; Go durations),
OpenAI's `x-ratelimit-reset-requests/-tokens` ("1s", "6m0s") and Anthropic's
`anthropic-ratelimit-*-reset` (RFC 3339) of the exhausted limits, then the body (OpenRouter
metadata.headers, Gemini RetryInfo.retryDelay, "try again in 2s" in the message). A free-models-per-day
cap waits for its X-RateLimit-Reset, else the next UTC midnight (OpenRouter's day is the UTC day).

References: https://openrouter.ai/docs/api-reference/errors-and-debugging, https://docs.anthropic.com/en/api/errors,
https://platform.openai.com/docs/guides/rate-limits, https://ai.google.dev/gemini-api/docs/troubleshooting,
https://www.rfc-editor.org/rfc/rfc9110#field.retry-after
"""

from __future__ import annotations

import datetime
import email.utils
import math
import re
import time
from collections.abc import Sequence
from typing import Any

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


def error_object(payload: Any) -> dict[str, Any]:
    """The `error` object of an error body; {} when it has none."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return payload["error"]
    return {}


def _body_reset(payload: Any, now: float) -> float | None:
    """OpenRouter copies the provider's rate-limit headers into error.metadata.headers."""
    metadata = error_object(payload).get("metadata")
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
    error = error_object(payload)
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


def free_cap_wait(headers: Headers, payload: Any, now: float) -> float:
    """How long OpenRouter's free-models-per-day cap lasts: its X-RateLimit-Reset (the header, else the
    copy in the body), else until the next UTC midnight (OpenRouter's day is the UTC day)."""
    reset = header(headers, "x-ratelimit-reset")
    return (parse_reset(reset, now) if reset else None) or _body_reset(payload, now) or _until_utc_midnight(now)
