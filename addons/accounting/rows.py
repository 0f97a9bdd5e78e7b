"""The usage store's rows for one finished LLM request: one per upstream attempt.

Pure logic, no mitmproxy: the Usage addon gathers the plain summaries the other addons left in the
flow's metadata (the call, the agent's identity, the route, the engine's attempts, compression) into
a `Finished` and this module turns it into rows (the columns of usage_store.ATTEMPT_COLUMNS). Only
names, numbers and outcomes are copied; nothing here ever sees a body or a header.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from addons.accounting.reports import day_of

# (provider, model, input, output, cached, cache-write tokens) -> USD; None when no price is known
Pricer = Callable[[str, str, int, int, int, int], float | None]


@dataclasses.dataclass
class Finished:
    request_id: str
    started: float  # the agent's request, epoch seconds
    ended: float
    call: dict[str, Any]  # meta.CALL: dialect, provider, model, stream
    identity: dict[str, Any]  # meta.IDENTITY
    route: dict[str, Any]  # meta.ROUTE (empty when no route was decided)
    attempts: list[dict[str, Any]]  # meta.ATTEMPTS: attempts.Attempt as dicts, skipped ones included
    compression: dict[str, Any]  # meta.COMPRESSION
    status: int | None  # what the agent got
    error: str | None  # x-clutch-error, or the flow's error
    input_estimate: int | None = None  # tiktoken's count of the request as sent, when a provider gave none


def outcome_of(attempt: dict[str, Any]) -> str:
    ended, error = attempt.get("ended"), attempt.get("error")
    if ended == "complete":
        if not error:
            return "success"
        return "soft_failure" if attempt.get("soft") else "broken"  # an error after the commit point
    if ended == "failed":
        return "soft_failure" if attempt.get("soft") else "failed"
    if ended in ("broken", "aborted"):
        return ended
    return "failed"


def rows_for(done: Finished, price: Pricer | None = None) -> list[dict[str, Any]]:
    tried = [a for a in done.attempts if a.get("ended") != "skipped"]
    common = {
        "request_id": done.request_id,
        "agent": done.identity.get("agent") or "unknown",
        "launch": done.identity.get("launch_code"),
        "session": done.identity.get("session"),
        "user_name": done.identity.get("user"),
        "dialect": done.call.get("dialect"),
        "stream": bool(done.call.get("stream")),
        "requested_model": done.call.get("model"),
        "rule": done.route.get("rule"),
    }
    if not tried:  # answered before any attempt: no candidate, a budget, a route that cannot be built
        return [_refused_row(done, common)]
    return [priced(_attempt_row(done, common, index, attempt), price) for index, attempt in enumerate(tried)]


def _refused_row(done: Finished, common: dict[str, Any]) -> dict[str, Any]:
    """The one row of a request no provider was asked for: booked to the first skipped candidate, else
    to the route's target, else to what the agent asked for."""
    provider = done.route.get("provider") or done.call.get("provider")
    model = done.route.get("model") or done.call.get("model")
    skipped = [a for a in done.attempts if a.get("ended") == "skipped"]
    if skipped and ":" in (skipped[0].get("target") or ""):
        provider, model = skipped[0]["target"].split(":", 1)
    return {**common, "ts": done.started, "day": day_of(done.started), "provider": provider, "model": model,
            "attempt": 0, "outcome": "refused", "status": done.status, "error_class": done.error,
            "served": False, "fallback": False, "tokens_estimated": False,
            "tokens_saved": done.compression.get("tokens_saved"),
            "duration_ms": round((done.ended - done.started) * 1000, 1)}


def _attempt_row(done: Finished, common: dict[str, Any], index: int, attempt: dict[str, Any]) -> dict[str, Any]:
    """The row of the `index`th attempt that was tried (the compression's savings go on the first)."""
    target = attempt.get("target") or ""
    provider, _, model = target.partition(":")
    outcome = outcome_of(attempt)
    served = attempt.get("committed_s") is not None
    started = attempt.get("started_at") or done.started
    usage = attempt.get("usage") or {}
    routed = done.route.get("target")
    row = {
        **common,
        "ts": started, "day": day_of(started), "provider": provider, "model": model, "attempt": index,
        "outcome": outcome, "status": attempt.get("status"),
        "error_class": attempt.get("error") if outcome != "success" else None,
        "served": served,
        # the model that served is not the one the request was routed to; a retry of it is no fallback
        "fallback": served and bool(attempt.get("fallback", routed and target != routed)),
        **usage_columns(usage),
        "ttft_ms": _ms(attempt.get("committed_s")) if served else None,
        "duration_ms": _ms(attempt.get("duration_s")),
        "tokens_saved": done.compression.get("tokens_saved") if index == 0 else None,
    }
    if usage and row["input_tokens"] is None and done.input_estimate is not None:
        row["input_tokens"], row["tokens_estimated"] = done.input_estimate, True
    return row


def usage_columns(usage: dict[str, Any]) -> dict[str, Any]:
    """A usage_blocks.TokenUsage (as a dict) as the row's token and cost columns; the cost is the provider's."""
    return {"input_tokens": usage.get("input_tokens"), "output_tokens": usage.get("output_tokens"),
            "cached_tokens": usage.get("cached_tokens"), "cache_write_tokens": usage.get("cache_write_tokens"),
            "reasoning_tokens": usage.get("reasoning_tokens"), "tokens_estimated": bool(usage.get("estimated")),
            "cost_usd": usage.get("cost_usd"),
            "cost_source": "provider" if usage.get("cost_usd") is not None else None}


def priced(row: dict[str, Any], price: Pricer | None) -> dict[str, Any]:
    """The row with the catalog's cost filled in when the provider reported none and the tokens are known,
    and `cache_saved_usd`: what the same tokens would have cost uncached, less what they cost with the
    provider's cache reads and writes, at catalog prices (negative on a turn that only wrote the cache:
    the write premium, which later reads repay)."""
    if price is None or row.get("input_tokens") is None:
        return row
    cached, written = row.get("cached_tokens") or 0, row.get("cache_write_tokens") or 0
    tokens = (row["provider"], row["model"], row["input_tokens"], row.get("output_tokens") or 0)
    paid = price(*tokens, cached, written)
    if row.get("cost_usd") is None and paid is not None:
        row["cost_usd"], row["cost_source"] = paid, "catalog"
    if (cached or written) and paid is not None:
        uncached = price(*tokens, 0, 0)
        if uncached is not None:
            row["cache_saved_usd"] = round(uncached - paid, 10)
    return row


def needs_input_estimate(attempts: list[dict[str, Any]]) -> bool:
    """Some attempt produced an answer whose provider did not say how many prompt tokens it billed."""
    return any(a.get("usage") and a["usage"].get("input_tokens") is None for a in attempts)


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None
