"""usage_rows: a finished request's plain summaries -> one row per upstream attempt."""

from __future__ import annotations

import pytest

from addons.accounting.rows import Finished, needs_input_estimate, outcome_of, rows_for

USAGE = {"input_tokens": 120, "output_tokens": 7, "cached_tokens": 60, "cache_write_tokens": None,
         "reasoning_tokens": 2, "cost_usd": None, "estimated": False}


def finished(attempts, **extra) -> Finished:
    values = dict(request_id="f1", started=1000.0, ended=1002.0,
                  call={"dialect": "anthropic", "provider": "anthropic", "model": "claude-sonnet-4-5", "stream": True},
                  identity={"agent": "claude", "launch_code": "cip", "session": "s9"},
                  route={"rule": "tier:middle", "target": "openrouter:qwen/qwen3-coder", "provider": "openrouter",
                         "model": "qwen/qwen3-coder"},
                  attempts=attempts, compression={"tokens_saved": 40}, status=200, error=None)
    return Finished(**{**values, **extra})


def test_outcomes():
    assert outcome_of({"ended": "complete"}) == "success"
    assert outcome_of({"ended": "complete", "error": "empty", "soft": True}) == "soft_failure"
    assert outcome_of({"ended": "complete", "error": "stream_error"}) == "broken"
    assert outcome_of({"ended": "failed", "error": "status"}) == "failed"
    assert outcome_of({"ended": "failed", "error": "empty", "soft": True}) == "soft_failure"
    assert outcome_of({"ended": "aborted"}) == "aborted"


def test_a_cascade_is_a_row_per_tried_attempt_with_the_fallback_marked_and_skips_left_out():
    rows = rows_for(finished([
        {"target": "openrouter:qwen/qwen3-coder:free", "ended": "skipped", "error": "breaker open"},
        {"target": "openrouter:qwen/qwen3-coder", "ended": "failed", "error": "status", "status": 429,
         "started_at": 1000.1, "duration_s": 0.05},
        {"target": "anthropic:claude-sonnet-4-5", "ended": "complete", "status": 200, "started_at": 1000.2,
         "committed_s": 0.4, "duration_s": 1.5, "usage": USAGE},
    ]))
    failed, served = rows
    assert (failed["attempt"], failed["outcome"], failed["served"], failed["fallback"], failed["error_class"]) == \
        (0, "failed", False, False, "status")
    assert failed["tokens_saved"] == 40 and served["tokens_saved"] is None  # counted once per request
    assert (served["attempt"], served["provider"], served["model"], served["served"], served["fallback"]) == \
        (1, "anthropic", "claude-sonnet-4-5", True, True)
    assert (served["ttft_ms"], served["duration_ms"], served["ts"]) == (400.0, 1500.0, 1000.2)
    assert (served["input_tokens"], served["cached_tokens"], served["cost_usd"], served["cost_source"]) == \
        (120, 60, None, None)
    assert all(r["request_id"] == "f1" and r["session"] == "s9" and r["launch"] == "cip" for r in rows)


def test_cost_from_the_price_table_when_the_provider_reports_none():
    def price(provider, model, tokens_in, tokens_out, cached, written):
        assert (provider, model, tokens_in, tokens_out) == ("openrouter", "qwen/qwen3-coder", 120, 7)
        assert (cached, written) in ((60, 0), (0, 0))  # as billed, and uncached for the cache's saving
        return 0.5 if cached else 0.8
    [row] = rows_for(finished([{"target": "openrouter:qwen/qwen3-coder", "ended": "complete", "committed_s": 0.1,
                                "usage": USAGE}]), price)
    assert (row["cost_usd"], row["cost_source"], row["cache_saved_usd"]) == (0.5, "catalog", 0.3)
    [reported] = rows_for(finished([{"target": "openrouter:qwen/qwen3-coder", "ended": "complete",
                                     "committed_s": 0.1, "usage": {**USAGE, "cost_usd": 0.02}}]), price)
    # the provider's own cost stands; the cache's saving is still at catalog prices
    assert (reported["cost_usd"], reported["cost_source"], reported["cache_saved_usd"]) == (0.02, "provider", 0.3)


def test_a_turn_that_only_writes_the_cache_saved_a_negative_amount():
    """Anthropic's cache write costs 1.25x: the first turn's saving is negative, later reads repay it."""
    from addons.models.catalog import Prices, cost_usd
    prices = Prices(prompt=3e-6, completion=15e-6, cache_read=0.3e-6, cache_write=3.75e-6)

    def price(provider, model, tokens_in, tokens_out, cached, written):
        return cost_usd(prices, tokens_in, tokens_out, cached, written)
    usage = {"input_tokens": 10_000, "output_tokens": 10, "cached_tokens": 0, "cache_write_tokens": 10_000}
    [first] = rows_for(finished([{"target": "anthropic:claude-x", "ended": "complete", "committed_s": 0.1,
                                  "usage": usage}]), price)
    assert first["cache_saved_usd"] == pytest.approx(-0.0075)  # 10k tokens at 0.75e-6 more
    usage = {**usage, "input_tokens": 10_500, "cached_tokens": 10_000, "cache_write_tokens": 500}
    [second] = rows_for(finished([{"target": "anthropic:claude-x", "ended": "complete", "committed_s": 0.1,
                                   "usage": usage}]), price)
    assert second["cache_saved_usd"] == pytest.approx(10_000 * 2.7e-6 - 500 * 0.75e-6)
    plain = {**usage, "cached_tokens": 0, "cache_write_tokens": 0}
    [uncached] = rows_for(finished([{"target": "anthropic:claude-x", "ended": "complete", "committed_s": 0.1,
                                     "usage": plain}]), price)
    assert "cache_saved_usd" not in uncached


def test_estimated_input_fills_in_only_what_the_provider_left_out():
    attempts = [{"target": "openrouter:m", "ended": "complete", "committed_s": 0.1,
                 "usage": {"input_tokens": None, "output_tokens": 9, "estimated": True}}]
    assert needs_input_estimate(attempts)
    [row] = rows_for(finished(attempts, input_estimate=333))
    assert (row["input_tokens"], row["output_tokens"], row["tokens_estimated"]) == (333, 9, True)
    assert not needs_input_estimate([{"usage": USAGE}, {"usage": None}])


def test_a_request_refused_before_any_attempt_is_one_refused_row():
    [row] = rows_for(finished([{"target": "openrouter:qwen/qwen3-coder", "ended": "skipped",
                                "error": "breaker open"}], status=503, error="no_candidate"))
    assert (row["outcome"], row["status"], row["error_class"], row["served"], row["attempt"]) == \
        ("refused", 503, "no_candidate", False, 0)
    assert (row["provider"], row["model"], row["duration_ms"]) == ("openrouter", "qwen/qwen3-coder", 2000.0)
    [budget] = rows_for(finished([], status=429, error="budget"))
    assert (budget["outcome"], budget["provider"], budget["model"]) == ("refused", "openrouter", "qwen/qwen3-coder")
