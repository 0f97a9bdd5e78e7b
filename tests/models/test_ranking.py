"""The model ranking: reliability first, unknown between proven good and proven bad, recent probes
weigh most, free models kept apart for `f`, replacements for cascades."""

from __future__ import annotations

import pytest

from addons.models import ranking
from addons.models.catalog import parse_catalog
from addons.config.rules import ModelTarget

NOW = 1_800_000_000.0
HOUR = 3600.0


def model(model_id: str, context: int = 262144, prompt: str = "0.0000006", completion: str = "0.0000025"):
    return {"id": model_id, "name": model_id, "context_length": context,
            "pricing": {"prompt": prompt, "completion": completion}, "supported_parameters": ["tools"]}


def models(*entries):
    return parse_catalog({"data": list(entries)}, NOW).models


def probe(key: str, ok: bool, age_h: float = 0.0, ttft: float | None = 400.0, tps: float | None = 80.0, **more):
    return {"ts": NOW - age_h * HOUR, "model": key, "ok": ok, "status": 200 if ok else 429,
            "error": None if ok else "HTTP 429: rate limited", "ttft_ms": ttft if ok else None,
            "tokens_per_s": tps if ok else None, "output_tokens": 20 if ok else None, **more}


def by_model(rows):
    return {r["model"]: r for r in rows}


def test_rows_have_the_usage_store_shape_and_ranks_start_at_one():
    rows = ranking.rank(models(model("a/one"), model("b/two:free", prompt="0", completion="0")), now=NOW)
    assert [r["rank"] for r in rows] == [1, 2]
    assert set(rows[0]) == {"rank", "model", "free", "score", "why", "context_length", "tools", "prompt_price",
                            "completion_price", "success_rate", "ttft_ms", "tokens_per_s", "computed_at"}
    free = by_model(rows)["openrouter:b/two:free"]
    assert free["free"] and free["tools"] and free["computed_at"] == NOW and free["success_rate"] is None
    assert "no probe or use yet" in free["why"] and "free" in free["why"]
    assert "$0.60/$2.50 per M in/out" in by_model(rows)["openrouter:a/one"]["why"]
    assert ranking.rank(models(model("a/one")), provider="or2", now=NOW)[0]["model"] == "or2:a/one"


def test_unknown_ranks_between_proven_good_and_proven_bad():
    three = models(model("good/m"), model("unknown/m"), model("bad/m"))
    rows = ranking.rank(three, probes=[probe("openrouter:good/m", True), probe("openrouter:bad/m", False)], now=NOW)
    assert [r["model"] for r in rows] == ["openrouter:good/m", "openrouter:unknown/m", "openrouter:bad/m"]
    bad = by_model(rows)["openrouter:bad/m"]
    assert bad["success_rate"] == 0 and "last probe failed: HTTP 429" in bad["why"]
    assert by_model(rows)["openrouter:good/m"]["success_rate"] == 1.0


def test_success_rate_dominates_speed_context_and_price():
    # the fast, cheap, 1M-context model fails a third of its real requests; the slow one never does
    flaky = model("fast/flaky", context=1_000_000, prompt="0.0000001", completion="0.0000001")
    steady = model("slow/steady", context=64_000, prompt="0.00001", completion="0.00003")
    stats = {"openrouter:fast/flaky": {"attempts": 30, "successes": 20, "ttft_ms_p50": 300.0},
             "openrouter:slow/steady": {"attempts": 30, "successes": 30, "ttft_ms_p50": 9000.0}}
    probes = [probe("openrouter:fast/flaky", True, ttft=100, tps=300), probe("openrouter:slow/steady", True,
                                                                             ttft=5000, tps=5)]
    rows = ranking.rank(models(flaky, steady), probes=probes, stats=stats, now=NOW)
    assert rows[0]["model"] == "openrouter:slow/steady"
    assert "30/30 real attempts, 1/1 probes" in rows[0]["why"]
    # with equal reliability, speed decides
    stats["openrouter:fast/flaky"]["successes"] = 30
    rows = ranking.rank(models(flaky, steady), probes=probes, stats=stats, now=NOW)
    assert rows[0]["model"] == "openrouter:fast/flaky"


def test_recent_probes_count_more_than_old_ones():
    a, b = models(model("a/m"), model("b/m"))
    # a: worked three times last week, failed an hour ago; b: failed last week, worked an hour ago
    probes = [*(probe("openrouter:a/m", True, age_h=150) for _ in range(3)), probe("openrouter:a/m", False, age_h=1),
              *(probe("openrouter:b/m", False, age_h=150) for _ in range(3)), probe("openrouter:b/m", True, age_h=1)]
    rows = ranking.rank([a, b], probes=probes, now=NOW)
    assert rows[0]["model"] == "openrouter:b/m"
    assert by_model(rows)["openrouter:a/m"]["success_rate"] < 0.5  # the fresh failure outweighs old successes
    # probes older than the window are not evidence any more
    old = [probe("openrouter:a/m", False, age_h=24 * 8)]
    assert ranking.rank([a], probes=old, now=NOW)[0]["success_rate"] is None


def test_evidence_weights_and_speed_parts():
    evidence = ranking.gather([probe("k", True, age_h=24, ttft=1000), probe("k", True, age_h=0, ttft=400)],
                              {"k": {"attempts": 4, "successes": 3, "ttft_ms_p50": 2500.0}}, NOW)["k"]
    assert evidence.probe_weight == pytest.approx(1.5)  # yesterday's probe counts half
    assert evidence.ttft_ms == pytest.approx((0.5 * 1000 + 400) / 1.5)
    assert evidence.success_rate == pytest.approx((1.5 + 3) / (1.5 + 4))
    assert evidence.reliability == pytest.approx((0.75 * 2 + 1.5 + 3) / (2 + 5.5))
    assert ranking.Evidence().reliability == ranking.PRIOR and ranking.speed(ranking.Evidence()) == (0.5, None)
    used_only = ranking.Evidence(attempts=1, successes=1, usage_ttft_ms=4000.0)
    assert ranking.speed(used_only) == (0.5, 4000.0)  # real prompts are judged on their own scale
    assert ranking.context_score(32_000) == 0 and ranking.context_score(1_024_000) == 1
    assert ranking.context_score(None) == 0
    garbage = ranking.gather([{"model": 1}, {"model": "x"}, {"ts": "now", "model": "x"}], {"y": {"attempts": 0}}, NOW)
    assert garbage == {}


def test_price_never_lifts_a_free_model_and_cheaper_paid_ranks_higher():
    cheap = model("cheap/m", prompt="0.0000001", completion="0.0000002")
    dear = model("dear/m", prompt="0.000015", completion="0.000075")
    free = model("free/m:free", prompt="0", completion="0")
    rows = ranking.rank(models(cheap, dear, free), now=NOW)
    assert [r["model"] for r in rows] == ["openrouter:cheap/m", "openrouter:free/m:free", "openrouter:dear/m"]
    assert ranking.value_score(models(free)[0]) == 0.5


def test_best_for_the_tiers():
    rows = ranking.rank(models(model("paid/best", context=1_000_000), model("paid/other"),
                               model("free/broken:free", prompt="0", completion="0", context=1_000_000),
                               model("free/untried:free", prompt="0", completion="0", context=1_000_000),
                               model("free/works:free", prompt="0", completion="0", context=40_000)),
                        probes=[probe("openrouter:free/broken:free", False), probe("openrouter:free/works:free", True),
                                probe("openrouter:paid/best", True)], now=NOW)
    assert ranking.best(rows, free=False)["model"] == "openrouter:paid/best"
    # f: proven working first, even when an untried free model has more context
    assert ranking.best(rows, free=True)["model"] == "openrouter:free/works:free"
    untried = [r for r in rows if r["model"] != "openrouter:free/works:free"]
    assert ranking.best(untried, free=True)["model"] == "openrouter:free/untried:free"
    only_broken = [r for r in rows if r["model"] == "openrouter:free/broken:free"]
    assert ranking.best(only_broken, free=True) is None and ranking.best(only_broken, free=False) is None
    assert ranking.best([], free=False) is None
    picked = ranking.pick(rows, "f", NOW + 2 * HOUR)
    assert picked.target == ModelTarget("openrouter", "free/works:free")
    assert picked.reason.startswith("tier f chosen at launch: the model scan's best working free model (rank ")
    assert "ranked 2 h ago" in picked.reason
    assert ranking.pick(rows, "m", NOW).target.model == "paid/best" and ranking.pick(rows, "k", NOW) is None


def test_replacements_skip_the_chain_broken_ones_and_keep_free_apart():
    rows = ranking.rank(models(model("p/one", context=1_000_000), model("p/two"),
                               model("f/one:free", prompt="0", completion="0"),
                               model("f/bad:free", prompt="0", completion="0")),
                        probes=[probe("openrouter:f/bad:free", False)], now=NOW)
    names = lambda found: [str(t) for t in found]  # noqa: E731
    assert names(ranking.replacements(rows, {"openrouter:p/one"}, 5)) == ["openrouter:p/two", "openrouter:f/one:free"]
    assert names(ranking.replacements(rows, set(), 1)) == ["openrouter:p/one"]
    assert names(ranking.replacements(rows, set(), 5, free=True)) == ["openrouter:f/one:free"]
    assert names(ranking.replacements(rows, set(), 5, free=False)) == ["openrouter:p/one", "openrouter:p/two"]
    assert ranking.replacements(rows, set(), 0) == []
