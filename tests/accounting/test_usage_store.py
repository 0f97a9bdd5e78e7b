"""The usage store: migrations, refusals that name the file, the reports' arithmetic."""

from __future__ import annotations

import calendar
import sqlite3
import threading

import pytest

from addons.accounting.reports import UsageStoreError, day_of, parse_time
from addons.accounting.store import MIGRATIONS, SCHEMA_VERSION, UsageStore

T0 = calendar.timegm((2026, 12, 1, 10, 0, 0))


def attempt(request_id, attempt=0, outcome="success", served=True, ts=T0, **extra):
    row = {"ts": ts, "day": day_of(ts), "request_id": request_id, "agent": "claude", "session": "s1",
           "dialect": "anthropic", "stream": True, "requested_model": "claude-sonnet", "provider": "openrouter",
           "model": "m1", "rule": "tier:middle", "attempt": attempt, "outcome": outcome, "status": 200,
           "served": served, "fallback": False, "input_tokens": 100, "output_tokens": 10, "cached_tokens": 50,
           "cost_usd": 0.001, "ttft_ms": 300.0, "duration_ms": 900.0}
    return {**row, **extra}


@pytest.fixture
def store(tmp_path):
    found = UsageStore(tmp_path / "state" / "usage.db")
    yield found
    found.close()


def test_a_new_database_is_private_wal_and_at_the_latest_version(store):
    assert store.version == SCHEMA_VERSION == len(MIGRATIONS)
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
    assert oct(store.path.parent.stat().st_mode & 0o777) == "0o700"
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_older_database_is_migrated_in_place_and_keeps_its_rows(tmp_path):
    path = tmp_path / "usage.db"
    old = sqlite3.connect(path)
    old.executescript(MIGRATIONS[0])
    old.execute("PRAGMA user_version = 1")
    old.execute("INSERT INTO attempts (ts, day, request_id, agent, attempt, outcome) "
                "VALUES (1, '1970-01-01', 'r-old', 'qwen', 0, 'success')")
    old.commit()
    old.close()
    store = UsageStore(path)
    try:
        assert store.version == SCHEMA_VERSION
        assert [r["request_id"] for r in store.rows()] == ["r-old"]
        assert store.rankings() == []  # the table migration 2 added
    finally:
        store.close()


def test_a_newer_or_broken_database_is_refused_naming_the_file(tmp_path):
    newer = tmp_path / "newer.db"
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(UsageStoreError, match=f"{newer}.*newer than this Clutch"):
        UsageStore(newer)
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"not a database at all, but long enough to be looked at" * 40)
    with pytest.raises(UsageStoreError, match=f"{broken} is not a usable usage database"):
        UsageStore(broken)


def test_unknown_keys_never_reach_the_database(store):
    store.add([attempt("r1", prompt="secret prompt", api_key="sk-secret")])
    [row] = store.rows()
    assert "prompt" not in row and "api_key" not in row
    assert b"secret" not in store.path.read_bytes() + (store.path.with_name("usage.db-wal").read_bytes())


def test_the_report_counts_requests_attempts_failures_and_fallbacks(store):
    store.add([attempt("r1", 0, "failed", False, status=429, error_class="status", input_tokens=None,
                       output_tokens=None, cost_usd=None, ttft_ms=None),
               attempt("r1", 1, "success", True, model="m2", fallback=True)])
    store.add([attempt("r2")])
    store.add([attempt("r3", 0, "failed", False, status=500, agent="codex", input_tokens=None, cost_usd=None),
               attempt("r3", 1, "failed", False, status=502, agent="codex", input_tokens=None, cost_usd=None)])
    store.add([attempt("r4", 0, "soft_failure", False, agent="codex", error_class="empty", output_tokens=0),
               attempt("r4", 1, "success", True, agent="codex", fallback=True, tokens_estimated=True)])
    by_agent = {r["key"]: r for r in store.report("agent")}
    claude, codex = by_agent["claude"], by_agent["codex"]
    assert (claude["requests"], claude["attempts"], claude["failures"], claude["fallbacks"]) == (2, 3, 0, 1)
    assert (claude["input_tokens"], claude["output_tokens"], claude["cost_usd"]) == (200, 20, 0.002)
    assert (codex["requests"], codex["attempts"], codex["failures"], codex["fallbacks"]) == (2, 4, 1, 1)
    assert (codex["soft_failures"], codex["failed_attempts"], codex["estimated"]) == (1, 2, 1)
    assert claude["ttft_ms_p50"] == 300.0
    by_model = {r["key"]: r for r in store.report("model")}
    assert by_model["openrouter:m2"]["requests"] == 1 and by_model["openrouter:m1"]["requests"] == 4
    with pytest.raises(ValueError, match="cannot group usage by 'colour'"):
        store.report("colour")


def test_windows_timeline_stats_and_spending(store):
    store.add([attempt("a", ts=T0), attempt("b", ts=T0 + 1800), attempt("c", ts=T0 + 3600, agent="qwen"),
               attempt("d", ts=T0 + 86400)])
    assert [(r["key"], r["requests"]) for r in store.report("day")] == [("2026-12-01", 3), ("2026-12-02", 1)]
    windowed = store.report("agent", since=T0 + 1, until=T0 + 3601)  # b and c
    assert sorted((r["key"], r["requests"]) for r in windowed) == [("claude", 1), ("qwen", 1)]
    points = store.timeline(3600, "agent", until=T0 + 7200)
    assert [(p["t"], p["key"], p["requests"]) for p in points] == [(T0, "claude", 2), (T0 + 3600, "qwen", 1)]
    stats = store.model_stats(0)["openrouter:m1"]
    assert (stats["attempts"], stats["successes"], stats["success_rate"]) == (4, 4, 1.0)
    spent = store.spent(day_of(T0), "agent")
    assert spent == {"claude": {"tokens": 220, "cost_usd": pytest.approx(0.002)},
                     "qwen": {"tokens": 110, "cost_usd": pytest.approx(0.001)}}


def test_probes_and_rankings_round_trip(store):
    store.add_probes([{"ts": T0, "model": "openrouter:a", "ok": True, "status": 200, "ttft_ms": 120.0,
                       "tokens_per_s": 55.0, "output_tokens": 8}])
    assert store.probes(T0)[0]["ok"] is True
    store.save_rankings([{"rank": 1, "model": "openrouter:a", "free": False, "score": 0.9, "why": "fast",
                          "tools": True}], computed_at=T0)
    store.save_rankings([{"rank": 1, "model": "openrouter:b:free", "free": True, "score": 0.5, "why": "free"}],
                        computed_at=T0 + 1)
    assert [(r["model"], r["free"], r["computed_at"]) for r in store.rankings()] == [("openrouter:b:free", True, T0 + 1)]


def test_concurrent_writers_and_readers_lose_nothing(tmp_path):
    path = tmp_path / "usage.db"
    writers = [UsageStore(path) for _ in range(3)]
    try:
        def write(store, n):
            for i in range(50):
                store.add([attempt(f"{n}-{i}")])
                store.report("agent")
        threads = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert writers[0].count() == 150
    finally:
        for store in writers:
            store.close()


def test_parse_time():
    assert parse_time("24h", now=T0) == T0 - 86400 and parse_time("90m", now=T0) == T0 - 5400
    assert parse_time("2026-12-01") == calendar.timegm((2026, 12, 1, 0, 0, 0))
    assert parse_time(str(T0)) == T0 and parse_time("") is None and parse_time(None) is None
    with pytest.raises(ValueError, match="'yesterday' is not a time"):
        parse_time("yesterday")
