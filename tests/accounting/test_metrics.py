"""addons/accounting/metrics.py: the exposition text parsed with the real Prometheus text parser (prometheus_client),
values checked against usage-store attempt rows (usage_store.ATTEMPT_COLUMNS) and the /resilience snapshots of the real
BreakerBoard and QuotaBook."""

from __future__ import annotations

import math
import sys
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from addons.accounting import metrics  # noqa: E402
from addons.fallback.breakers import BreakerBoard  # noqa: E402
from addons.accounting.metrics import Metrics  # noqa: E402
from addons.fallback.quotas import QuotaBook  # noqa: E402


def row(**fields) -> dict:
    """An attempt row as the usage store holds it: a served first attempt unless told otherwise."""
    base = {"ts": 1_700_000_000.0, "day": "2023-11-14", "request_id": "r1", "agent": "claude", "launch": None,
            "session": "s-1", "dialect": "anthropic", "stream": True, "requested_model": "claude-sonnet-4",
            "provider": "openrouter", "model": "qwen/qwen3-coder", "rule": "default", "attempt": 0,
            "outcome": "success", "status": 200, "error_class": None, "served": True, "fallback": False,
            "input_tokens": 1000, "output_tokens": 200, "cached_tokens": 400, "cache_write_tokens": None,
            "reasoning_tokens": 50, "tokens_estimated": False, "cost_usd": 0.0125, "cost_source": "provider",
            "ttft_ms": 420.0, "duration_ms": 2500.0, "tokens_saved": None}
    base.update(fields)
    return base


def parse(text: str) -> dict:
    """{family name: Metric}, failing on anything the Prometheus parser rejects."""
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert len(families) == len(list(text_string_to_metric_families(text)))  # no family split in two
    return families


def value(families: dict, sample_name: str, **labels) -> float | None:
    """The one sample named so whose labels include `labels` (None when there is none)."""
    found = [s.value for family in families.values() for s in family.samples
             if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, f"{sample_name} {labels} matches {len(found)} samples"
    return found[0] if found else None


def record(m: Metrics, rows: list[dict]) -> None:
    for r in rows:
        m.observe(r)
    m.observe_request(rows)


# ------------------------------------------------------------------------------------------ values

def test_success_request_counts_everything_once():
    m = Metrics()
    record(m, [row()])
    f = parse(m.render({}, {}))
    target = {"api_provider": "openrouter", "model": "qwen/qwen3-coder"}
    usage = {"agent": "claude", **target}
    assert value(f, "clutch_requests_total", agent="claude", requested_model="claude-sonnet-4",
                 status_code="2xx") == 1
    assert value(f, "clutch_attempts_total", outcome="success", exception_status="", exception_class="",
                 **target) == 1
    assert value(f, "clutch_input_tokens_total", **usage) == 1000
    assert value(f, "clutch_output_tokens_total", **usage) == 200
    assert value(f, "clutch_cached_tokens_total", **usage) == 400
    assert value(f, "clutch_reasoning_tokens_total", **usage) == 50
    assert value(f, "clutch_cache_write_tokens_total", **usage) is None  # None in the row: no sample
    assert value(f, "clutch_spend_usd_total", **usage) == pytest.approx(0.0125)
    assert value(f, "clutch_failed_requests_total") is None
    assert value(f, "clutch_successful_fallbacks_total") is None
    assert value(f, "clutch_llm_api_time_to_first_token_seconds_count", **target) == 1
    assert value(f, "clutch_llm_api_time_to_first_token_seconds_sum", **target) == pytest.approx(0.42)
    assert value(f, "clutch_request_total_latency_seconds_sum", agent="claude") == pytest.approx(2.5)


def test_cascade_counts_attempts_and_one_successful_fallback():
    m = Metrics()
    rows = [row(outcome="failed", status=429, error_class="rate_limit", served=False, input_tokens=None,
                output_tokens=None, cached_tokens=None, reasoning_tokens=None, cost_usd=None, ttft_ms=None,
                duration_ms=300.0),
            row(ts=1_700_000_000.5, attempt=1, provider="openai", model="gpt-5-mini", fallback=True, cost_usd=0.002,
                duration_ms=1500.0)]
    record(m, rows)
    f = parse(m.render())
    assert value(f, "clutch_attempts_total", api_provider="openrouter", outcome="failed", exception_status="429",
                 exception_class="rate_limit") == 1
    assert value(f, "clutch_attempts_total", api_provider="openai", outcome="success") == 1
    assert value(f, "clutch_successful_fallbacks_total", requested_model="claude-sonnet-4",
                 fallback_model="openai:gpt-5-mini") == 1
    assert value(f, "clutch_requests_total", status_code="2xx") == 1  # one request, not two
    assert value(f, "clutch_input_tokens_total", api_provider="openrouter") is None
    assert value(f, "clutch_spend_usd_total", api_provider="openai") == pytest.approx(0.002)
    # end to end: from the first start (t) to the second's end (t + 0.5 + 1.5)
    assert value(f, "clutch_request_total_latency_seconds_sum") == pytest.approx(2.0)
    assert value(f, "clutch_llm_api_latency_seconds_count", api_provider="openrouter") == 1


def test_failed_request_and_failed_fallback():
    m = Metrics()
    rows = [row(outcome="failed", status=500, error_class="server_error", served=False, cost_usd=None),
            row(attempt=1, model="qwen/qwen3-coder:free", outcome="broken", status=None, error_class=None,
                served=False, fallback=True, cost_usd=None)]
    record(m, rows)
    f = parse(m.render())
    assert value(f, "clutch_requests_total", status_code="none") == 1  # the last attempt had no HTTP status
    assert value(f, "clutch_failed_requests_total", agent="claude", exception_status="",
                 exception_class="broken") == 1
    assert value(f, "clutch_failed_fallbacks_total", fallback_model="openrouter:qwen/qwen3-coder:free") == 1
    assert value(f, "clutch_successful_fallbacks_total") is None


def test_refused_request_is_a_request_but_no_attempt():
    m = Metrics()
    record(m, [row(outcome="refused", status=429, error_class="budget", served=False, provider="", model="x",
                   input_tokens=None, output_tokens=None, cost_usd=None, ttft_ms=None, duration_ms=None)])
    f = parse(m.render())
    assert value(f, "clutch_requests_total", status_code="4xx") == 1
    assert value(f, "clutch_failed_requests_total", exception_status="429", exception_class="budget") == 1
    assert f["clutch_attempts"].samples == []
    assert f["clutch_request_total_latency_seconds"].samples == []  # no duration, no latency


def test_soft_failure_estimates_and_compression_savings():
    m = Metrics()
    rows = [row(outcome="soft_failure", status=200, error_class="empty_answer", served=False, tokens_saved=900,
                tokens_estimated=True),
            row(attempt=1, fallback=True)]
    record(m, rows)
    f = parse(m.render())
    assert value(f, "clutch_attempts_total", outcome="soft_failure", exception_status="200",
                 exception_class="empty_answer") == 1
    assert value(f, "clutch_estimated_usage_attempts_total", api_provider="openrouter") == 1
    assert value(f, "clutch_compression_saved_tokens_total", agent="claude") == 900
    assert value(f, "clutch_input_tokens_total", agent="claude") == 2000  # both attempts were billed


def test_bad_numbers_are_ignored():
    m = Metrics()
    m.observe(row(input_tokens=-5, output_tokens=True, cost_usd=float("nan"), ttft_ms=float("inf"),
                  duration_ms="12"))
    f = parse(m.render())
    assert value(f, "clutch_input_tokens_total") is None
    assert value(f, "clutch_output_tokens_total") is None
    assert value(f, "clutch_spend_usd_total") is None
    assert f["clutch_llm_api_latency_seconds"].samples == []
    assert value(f, "clutch_attempts_total") == 1


# ------------------------------------------------------------------------------------------ histograms

def test_histogram_buckets_are_cumulative_and_inf_is_the_count():
    m = Metrics()
    ttfts = [50, 100, 240, 999, 1000, 2500, 59_000, 61_000, 700_000]  # ms; 100 ms and 1 s sit on bounds
    for ms in ttfts:
        m.observe(row(ttft_ms=float(ms), duration_ms=ms * 2.0))
    f = parse(m.render())
    for family in ("clutch_llm_api_time_to_first_token_seconds", "clutch_llm_api_latency_seconds"):
        samples = f[family].samples
        buckets = [s for s in samples if s.name == f"{family}_bucket"]
        bounds = [float(s.labels["le"]) for s in buckets]
        counts = [s.value for s in buckets]
        assert bounds == sorted(bounds) and bounds[-1] == math.inf
        assert counts == sorted(counts)  # cumulative: never decreasing
        assert counts[-1] == value(f, f"{family}_count") == len(ttfts)
    buckets = {float(s.labels["le"]): s.value for s in f["clutch_llm_api_time_to_first_token_seconds"].samples
               if s.name.endswith("_bucket")}
    assert buckets[0.1] == 2  # le is inclusive: 0.1 s goes in le="0.1"
    assert buckets[1.0] == 5
    assert buckets[60.0] == 7
    assert tuple(sorted(buckets)[:-1]) == tuple(float(b) for b in metrics.TTFT_BUCKETS)
    assert value(f, "clutch_llm_api_time_to_first_token_seconds_sum") == pytest.approx(sum(ttfts) / 1000)


# ------------------------------------------------------------------------------------------ escaping, bounds

def test_label_values_are_escaped():
    nasty = 'we"ird\\model\nname'
    m = Metrics()
    record(m, [row(model=nasty, requested_model='a "quoted" \\ one', agent="line\nbreak")])
    f = parse(m.render({f"openrouter:{nasty}": {"state": "open", "failures": 3.0}}, {}))
    assert value(f, "clutch_attempts_total", model=nasty) == 1
    assert value(f, "clutch_requests_total", requested_model='a "quoted" \\ one', agent="line\nbreak") == 1
    assert value(f, "clutch_deployment_state", api_provider="openrouter", model=nasty) == 2


def test_label_cardinality_is_bounded(monkeypatch):
    monkeypatch.setattr(metrics, "MAX_LABEL_VALUES", 3)
    m = Metrics()
    for n in range(10):
        m.observe(row(model=f"vendor/model-{n}"))
    f = parse(m.render())
    models = {s.labels["model"]: s.value for s in f["clutch_attempts"].samples}
    assert models == {"vendor/model-0": 1, "vendor/model-1": 1, "vendor/model-2": 1, "other": 7}
    m.observe(row(model="vendor/model-1"))  # a value already seen keeps its own series
    assert value(parse(m.render()), "clutch_attempts_total", model="vendor/model-1") == 2


def test_long_label_values_are_cut():
    m = Metrics()
    m.observe(row(model="m" * 5000))
    (sample,) = parse(m.render())["clutch_attempts"].samples
    assert sample.labels["model"] == "m" * metrics.MAX_LABEL_CHARS


def test_no_session_label_anywhere():
    m = Metrics()
    record(m, [row(session=f"s-{n}", request_id=f"r{n}") for n in range(3)])
    for family in parse(m.render()).values():
        for sample in family.samples:
            assert not {"session", "request_id", "launch"} & set(sample.labels)


# ------------------------------------------------------------------------------------------ snapshots

def test_breaker_states_from_the_real_board():
    now = [1000.0]
    board = BreakerBoard(threshold=2, window_s=60, cooldown_s=30, clock=lambda: now[0])
    board.failure("openrouter:a/open:free")
    board.failure("openrouter:a/open:free")  # open
    board.failure("openai:half")
    board.failure("openai:half")
    board.failure("anthropic:closed-with-failure")  # closed, listed with its failure
    now[0] += 20
    board.failure("openrouter:late")
    now[0] += 15  # the cooldowns (30 s from t=1000) have passed: both half_open
    board.failure("openrouter:a/open:free")  # a failure in half_open opens it again
    f = parse(Metrics().render(board.snapshot(), {}))
    states = {(s.labels["api_provider"], s.labels["model"]): s.value for s in f["clutch_deployment_state"].samples}
    assert states == {("openrouter", "a/open:free"): 2, ("openai", "half"): 1,
                      ("anthropic", "closed-with-failure"): 0, ("openrouter", "late"): 0}
    assert value(f, "clutch_deployment_failures", api_provider="anthropic", model="closed-with-failure") == 1


def test_quota_gauges_from_the_real_book():
    now = [1_700_000_000.0]
    book = QuotaBook(clock=lambda: now[0])
    book.configure({"openrouter": {"rpm": 20, "rpd": 1000}, "openai:gpt-5": {"rpm": 5}})
    for _ in range(3):
        book.consume("openrouter:qwen/qwen3-coder")
    book.consume("openai:gpt-5")
    book.cooldown("openai:gpt-5", 12)
    book.free_daily_cap("openrouter")
    snapshot = book.snapshot()
    f = parse(Metrics().render({}, snapshot))
    assert value(f, "clutch_remaining_requests", api_provider="openrouter", model="", window="minute") == 17
    assert value(f, "clutch_remaining_requests", api_provider="openrouter", model="", window="day") == 997
    assert value(f, "clutch_max_requests", api_provider="openai", model="gpt-5", window="minute") == 5
    assert value(f, "clutch_remaining_requests", api_provider="openai", model="gpt-5", window="day") is None
    assert value(f, "clutch_cooldown_seconds", api_provider="openai", model="gpt-5") == pytest.approx(60)
    assert value(f, "clutch_cooldown_seconds", api_provider="openrouter", model="") == 0
    assert value(f, "clutch_free_daily_cap_reset_timestamp_seconds", api_provider="openrouter") == \
        snapshot["free_daily_cap"]["openrouter"]


def test_empty_render_has_every_family():
    text = Metrics().render()
    f = parse(text)
    assert text.endswith("\n")
    assert {"clutch_requests", "clutch_attempts", "clutch_input_tokens", "clutch_spend_usd",
            "clutch_successful_fallbacks", "clutch_request_total_latency_seconds",
            "clutch_llm_api_time_to_first_token_seconds", "clutch_deployment_state",
            "clutch_remaining_requests"} <= set(f)
    assert all(name.startswith("clutch_") for name in f)
    assert f["clutch_requests"].type == "counter" and f["clutch_deployment_state"].type == "gauge"
    assert f["clutch_request_total_latency_seconds"].type == "histogram"
    assert metrics.CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_concurrent_updates_lose_nothing():
    m = Metrics()
    n_threads, per_thread = 8, 400
    start = threading.Barrier(n_threads + 1)

    def work(t: int) -> None:
        start.wait()
        for n in range(per_thread):
            record(m, [row(agent=f"agent-{t % 3}", input_tokens=n)])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    start.wait()
    for _ in range(20):
        parse(m.render())  # scrapes while the updates run
    for thread in threads:
        thread.join()
    f = parse(m.render())
    assert sum(s.value for s in f["clutch_requests"].samples) == n_threads * per_thread
    assert sum(s.value for s in f["clutch_input_tokens"].samples) == n_threads * sum(range(1, per_thread))
    assert value(f, "clutch_llm_api_latency_seconds_count") == n_threads * per_thread


def test_a_team_gateways_user_is_a_label_of_requests_tokens_and_spend():
    m = Metrics()
    record(m, [row(user_name="ana")])
    record(m, [row()])
    f = parse(m.render({}, {}))
    assert value(f, "clutch_requests_total", user="ana") == 1 and value(f, "clutch_requests_total", user="") == 1
    assert value(f, "clutch_spend_usd_total", user="ana") == pytest.approx(0.0125)
    assert value(f, "clutch_input_tokens_total", user="ana") > 0
