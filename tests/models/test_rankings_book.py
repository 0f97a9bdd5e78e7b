"""RankingsBook: the gateway's copy of the scan's ranking, re-read only when another process stored a new one."""

from __future__ import annotations

import sqlite3

import pytest

from addons.models import ranking
from addons.models.catalog import parse_catalog
from addons.models.rankings_book import RankingsBook
from addons.config.rules import ModelTarget
from addons.accounting.store import UsageStore

NOW = 1_800_000_000.0


def rows_for(*ids: str, probes=()):
    data = [{"id": i, "context_length": 262144 if i.endswith("/big") else 131072,
             "pricing": {"prompt": "0", "completion": "0"} if i.endswith(":free") else
             {"prompt": "0.000001", "completion": "0.000002"}, "supported_parameters": ["tools"]} for i in ids]
    return ranking.rank(parse_catalog({"data": data}, NOW).models, probes=probes, now=NOW)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def stores(tmp_path):
    """The gateway's connection and the scan's (another process in real life: its own connection)."""
    gateway, scan = UsageStore(tmp_path / "usage.db"), UsageStore(tmp_path / "usage.db")
    yield gateway, scan
    gateway.close()
    scan.close()


def test_loads_at_start_and_reloads_within_the_check_interval_after_a_scan(stores):
    gateway, scan = stores
    clock = Clock()
    book = RankingsBook(gateway, check_every_s=30, clock=clock, wall_clock=lambda: NOW)
    assert book.rankings == [] and book.tier("m") is None and book.computed_at is None
    scan.save_rankings(rows_for("p/big", "q/free:free"), NOW)
    clock.now = 10
    assert book.tier("m") is None  # not looked at again yet: a request pays a clock comparison only
    clock.now = 31
    assert book.tier("m") == ModelTarget("openrouter", "p/big")
    assert book.tier("f") == ModelTarget("openrouter", "q/free:free")
    assert book.computed_at == NOW
    assert book.pick("m").reason.startswith("tier m chosen at launch: the model scan's best-ranked model")
    assert book.snapshot()["tiers"] == {"m": "openrouter:p/big", "f": "openrouter:q/free:free"}
    # nothing committed since: data_version is unchanged and the rows are not read again
    clock.now = 62
    assert book.refresh() is False
    scan.save_rankings(rows_for("z/new"), NOW + 1)
    assert book.refresh() is False  # checked at 62 already
    clock.now = 93
    assert book.refresh() is True and book.tier("m") == ModelTarget("openrouter", "z/new")
    assert book.tier("f") is None
    assert book.refresh(force=True) is True


def test_follows_the_store_the_usage_addon_holds_and_survives_a_broken_one(tmp_path, stores):
    gateway, scan = stores
    scan.save_rankings(rows_for("p/big"), NOW)
    current = {"store": None}
    clock = Clock()
    book = RankingsBook(lambda: current["store"], clock=clock)
    assert book.rankings == []  # no store yet (the Usage addon has not opened it)
    current["store"] = gateway
    clock.now = 31
    assert [r["model"] for r in book.rankings] == ["openrouter:p/big"]
    gateway.close()  # a store that cannot be read keeps the last ranking in force
    clock.now = 62
    assert book.refresh() is False and book.tier("m") == ModelTarget("openrouter", "p/big")
    assert book.last_error and "closed" in book.last_error
    fresh = UsageStore(tmp_path / "usage.db")
    current["store"] = fresh  # reopened: read again even though its data_version may match
    clock.now = 93
    assert book.refresh() is True and book.last_error is None
    fresh.close()
    with pytest.raises(sqlite3.ProgrammingError):
        gateway.rankings()


def test_replacements_for_a_chain_keep_free_chains_free(stores):
    gateway, scan = stores
    probes = [{"ts": NOW, "model": "openrouter:bad/m:free", "ok": False}]
    scan.save_rankings(rows_for("p/big", "p/small", "a/one:free", "b/two:free", "bad/m:free", probes=probes), NOW)
    book = RankingsBook(gateway)
    free_chain = [ModelTarget("openrouter", "a/one:free"), ModelTarget("openrouter", "unranked/x:free")]
    assert [str(t) for t in book.for_chain(free_chain)] == ["openrouter:b/two:free"]  # never a paid one, never bad
    mixed = [ModelTarget("openrouter", "a/one:free"), ModelTarget("anthropic", "claude-x")]
    assert [str(t) for t in book.for_chain(mixed, limit=2)] == ["openrouter:p/big", "openrouter:p/small"]
    assert book.for_chain([]) == []
    assert [str(t) for t in book.replacements({"openrouter:p/big"}, limit=1)] == ["openrouter:p/small"]
    assert RankingsBook(None).for_chain(mixed) == [] and RankingsBook(None).snapshot()["rankings"] == []


def test_a_gateway_whose_chain_has_only_open_breakers_is_served_by_a_ranked_replacement(tmp_path, fake, pki):
    """Through a real gateway: the chain's models fail until their breakers open, then the next request
    goes to the ranking's best model instead of getting a 503."""
    import time

    import httpx
    from harness import gateway_on_rules, trust

    state = tmp_path / "state"
    store = UsageStore(state / "usage.db")
    store.save_rankings([{"rank": 1, "model": "openrouter:rk/replacement", "free": False, "score": 0.9,
                          "why": "probe ok", "tools": True}], computed_at=time.time())
    store.close()
    gateway = gateway_on_rules(tmp_path, fake, pki, """\
version: 1
providers:
  openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai]}
cascades:
  "openrouter:rk/fail-500": ["openrouter:rk/fail-502"]
fallback: {method: cascade}
""", "--set", f"clutch_state_dir={state}", "--set", "clutch_retries=0", "--set", "clutch_breaker_failures=1")
    try:
        with httpx.Client(proxy=gateway.proxy_url("xx-qip"), verify=trust(gateway.bundle), trust_env=False,
                          timeout=30) as client:
            def ask():
                return client.post("https://openrouter.ai/api/v1/chat/completions",
                                   json={"model": "rk/fail-500", "messages": [{"role": "user", "content": "hi"}]})
            assert ask().status_code == 500  # both fail; each breaker opens after one failure
            answer = ask()
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-clutch-model"] == "openrouter:rk/replacement"
    finally:
        gateway.stop()
