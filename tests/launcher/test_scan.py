"""`xx scan` as a user runs it, against the fake provider's OpenRouter catalog over HTTPS (test PKI):
the catalog and its TTL cache, the coding filter, the ranking stored for the gateway, probes only with
--probe, and `xx ...m` / `xx ...f` naming the ranked models; then the gateway routing a tier-m launch
to the ranked model."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import httpx
import pytest
from fake_upstream import openrouter_catalog
from harness import Gateway, first_content, trust
from xx_rig import fits, run_xx, shows, write_config, xx_env

from addons.models import catalog
from addons.config.rules import Provider
from addons.wire.dialects import Dialect
from addons.accounting.store import UsageStore
from launcher import scan
from launcher.scan import probing

SCAN_RULES = """\
version: 1
providers:
  openrouter:
    base_url: {base}
    dialects: [openai_chat, anthropic, openai_responses]
    hosts: [openrouter.ai]
    key_env: OPENROUTER_API_KEY
  anthropic:
    base_url: https://api.anthropic.com
    dialects: [anthropic]
    hosts: [api.anthropic.com]
"""
FREE = {"openrouter:qwen/qwen3-coder:free", "openrouter:nvidia/nemotron-3-super-120b-a12b:free",
        "openrouter:openrouter/free", "openrouter:openrouter/fake-fail-429:free"}


@pytest.fixture
def scan_home(xx_home, fake, pki, tmp_path):
    """An xx HOME whose rules put OpenRouter at the fake (127.0.0.1 is in the test leaf's SANs), the
    test CA in SSL_CERT_FILE, and a key of its own, so the fake's log tells this test's calls apart."""
    home, config = xx_home
    rules = tmp_path / "rules.yaml"
    rules.write_text(SCAN_RULES.format(base=f"https://127.0.0.1:{fake.port}/api/v1"))
    write_config(home, fake.port, pki.ca_cert, gateway=config["gateway"], rules=str(rules))
    key = "sk-or-v1-scan-" + secrets.token_hex(6)
    env = xx_env(home, SSL_CERT_FILE=str(pki.ca_cert), OPENROUTER_API_KEY=key, COLUMNS="250")
    return home, env, key


def state(home: Path) -> Path:
    return home / ".local" / "state" / "clutch"


def xx_scan(env, *args: str) -> dict:
    result = run_xx(env, "scan", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def calls(fake, since: float, path: str) -> list[dict]:
    return [e for e in fake.entries() if e["t"] >= since and e["path"].startswith(path)]


def test_scan_ranks_the_catalog_without_probing_and_stores_the_ranking(scan_home, fake):
    home, env, key = scan_home
    started = time.time()
    run = xx_scan(env)
    info = run["catalog"]
    assert info["origin"] == "fetched" and info["url"].endswith("/api/v1/models")
    assert info["models"] == len(openrouter_catalog())
    assert run["left_out"] == {"meta-llama/llama-3.3-8b-instruct:free": "no tool calling (supported_parameters has "
                                                                       "no 'tools')",
                               "fake/small-context": "context 8192 < 32000 tokens",
                               "openrouter/auto": "no fixed price (a router that picks other models)"}
    assert info["left_out"] == {"no tools": 1, "small context": 1, "no fixed price": 1}
    ranked = [r["model"] for r in run["rankings"]]
    assert len(ranked) == 15 and run["ranked"] == info["fit"] == info["models"] - 3
    assert "openrouter:fake/small-context" not in ranked and run["probes"] == []
    # never probes by itself: the catalog was the only request, and it carried no key
    models_call, = calls(fake, started, "/api/v1/models")
    assert "authorization" not in models_call["headers"] and key not in json.dumps(models_call)
    assert calls(fake, started, "/api/v1/chat") == []
    # stored for the gateway, with the catalog cache beside it
    store = UsageStore(state(home) / "usage.db")
    try:
        stored = store.rankings()
        assert [r["model"] for r in stored][:15] == ranked and len(stored) == run["ranked"]
        assert store.probes(0) == [] and run["db"] == str(state(home) / "usage.db")
    finally:
        store.close()
    assert catalog.read_cache(state(home) / "catalog.json").fetched_at == pytest.approx(info["fetched_at"])
    assert run["tiers"]["m"] == ranked[0] and run["tiers"]["f"] in FREE


def test_catalog_ttl_refresh_and_a_stale_cache_when_the_provider_is_down(scan_home, fake, tmp_path):
    home, env, _ = scan_home
    started = time.time()
    assert xx_scan(env)["catalog"]["origin"] == "fetched"
    assert xx_scan(env)["catalog"]["origin"] == "cached"
    assert len(calls(fake, started, "/api/v1/models")) == 1  # the second scan asked nobody
    assert xx_scan(env, "--refresh")["catalog"]["origin"] == "fetched"
    assert xx_scan(env, "--ttl", "0")["catalog"]["origin"] == "fetched"
    assert len(calls(fake, started, "/api/v1/models")) == 3
    # the provider is unreachable: an old cache from the same URL is used, and the scan says so
    dead = tmp_path / "dead.yaml"
    url = "https://127.0.0.1:9/api/v1"
    dead.write_text(SCAN_RULES.format(base=url))
    cache = state(home) / "catalog.json"
    raw = json.loads(cache.read_text())
    catalog.save_cache(cache, raw, time.time() - 3 * 86400, url + "/models")
    result = run_xx(env, "scan", "--rules", str(dead))
    assert result.returncode == 0, result.stderr
    assert "cannot fetch the model catalog" in result.stderr
    assert "using the cached catalog from 3 days ago" in result.stderr
    assert "stale cache" in result.stdout
    # no cache for that URL: a clear failure
    cache.unlink()
    result = run_xx(env, "scan", "--rules", str(dead))
    assert result.returncode == 1
    assert "cannot fetch the model catalog https://127.0.0.1:9/api/v1/models" in result.stderr


def test_probes_measure_the_best_candidates_and_rank_a_failing_one_last(scan_home, fake):
    home, env, key = scan_home
    started = time.time()
    run = xx_scan(env, "--free", "--probe", "4")
    probes = {p["model"]: p for p in run["probes"]}
    assert set(probes) == FREE  # the four best free ones: every free candidate of the fake's catalog
    failed = probes["openrouter:openrouter/fake-fail-429:free"]
    assert (failed["ok"], failed["status"]) == (False, 429) and failed["error"].startswith("HTTP 429: ")
    for name, found in probes.items():
        if name != "openrouter:openrouter/fake-fail-429:free":
            assert found["ok"] and found["status"] == 200 and found["error"] is None, found
            assert found["ttft_ms"] > 0 and found["output_tokens"] > 0
    sent = calls(fake, started, "/api/v1/chat/completions")
    assert len(sent) == 4 and {e["model"] for e in sent} == {p.split(":", 1)[1] for p in FREE}
    for entry in sent:
        body = entry["request_json"]
        assert body["stream"] is True and body["max_tokens"] == 64 and len(body["messages"]) == 1
        assert entry["headers"]["authorization"] == f"Bearer {key}"
    rows = {r["model"]: r for r in run["rankings"]}
    assert set(rows) == {m for m in FREE}  # --free shows free models only
    assert rows["openrouter:openrouter/fake-fail-429:free"]["rank"] == max(r["rank"] for r in rows.values())
    assert rows["openrouter:openrouter/fake-fail-429:free"]["success_rate"] == 0
    assert run["tiers"]["f"] in FREE - {"openrouter:openrouter/fake-fail-429:free"}
    assert run["tiers"]["f"] == min(rows.values(), key=lambda r: r["rank"])["model"]
    store = UsageStore(state(home) / "usage.db")
    try:
        assert sorted(p["model"] for p in store.probes(started)) == sorted(FREE)
        assert "last probe failed: HTTP 429" in next(r["why"] for r in store.rankings()
                                                      if r["model"] == "openrouter:openrouter/fake-fail-429:free")
    finally:
        store.close()
    # the next scan keeps the evidence: the failed model stays behind without being probed again
    again = xx_scan(env, "--free")
    assert again["probes"] == [] and again["rankings"][-1]["model"] == "openrouter:openrouter/fake-fail-429:free"


def test_probing_needs_the_flag_and_the_key(scan_home, fake):
    home, env, _ = scan_home
    started = time.time()
    refused = run_xx(env, "scan", "3")
    assert refused.returncode == 2 and "write `xx scan --probe 3`" in refused.stderr
    no_key = run_xx({k: v for k, v in env.items() if k != "OPENROUTER_API_KEY"}, "scan", "--probe")
    assert no_key.returncode == 2 and "set OPENROUTER_API_KEY" in no_key.stderr
    both = run_xx(env, "scan", "--free", "--paid")
    assert both.returncode == 2
    assert calls(fake, started, "/api/v1/chat") == [] and calls(fake, started, "/api/v1/models") == []


def test_the_table_and_xx_m_and_f_name_the_ranked_models(scan_home, fake):
    home, env, _ = scan_home
    before = run_xx(env, "cipm", "--dry-run")
    assert before.returncode == 0, before.stderr
    assert "tier m has no model in launch_tiers" in before.stdout and "no model scan has ranked one" in before.stdout
    result = run_xx(env, "scan", "--probe", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "fit      " in out and "left out: 1 no fixed price, 1 no tools, 1 small context" in out
    assert "probe    openrouter:" in out and "ok, first token" in out
    stored = UsageStore(state(home) / "usage.db")
    try:
        rows = stored.rankings()
    finally:
        stored.close()
    from addons.models import ranking
    best_m, best_f = ranking.best(rows, free=False)["model"], ranking.best(rows, free=True)["model"]
    assert rows[0]["model"] in out and f"tier m   {best_m}" in out
    narrow = run_xx({**env, "COLUMNS": "80"}, "scan")  # the same ranking in 80 columns: the ids whole
    assert narrow.returncode == 0, narrow.stderr
    fits(narrow.stdout, 80)
    for row in rows[:15]:
        assert shows(narrow.stdout, row["model"]), f"{row['model']}:\n{narrow.stdout}"
    assert "probe 1/2: openrouter:" in result.stderr  # progress while it probes
    m = run_xx(env, "cipm", "--dry-run")
    assert m.returncode == 0, m.stderr
    assert f"note tier m: every request goes to {best_m} (the model scan's best-ranked model: rank 1" in m.stdout
    f = run_xx(env, "hcpf", "--dry-run")
    assert f.returncode == 0, f.stderr
    assert f"tier f: every request goes to {best_f} (the model scan's best working free model" in f.stdout
    assert best_f.endswith(":free") or best_f == "openrouter:openrouter/free"


def test_probe_outcomes_against_the_fake(fake, pki, monkeypatch):
    """probe() on its own: what counts as working, and tokens per second when the stream lasts."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_cert))
    provider = Provider(base_url=f"https://127.0.0.1:{fake.port}/api/v1", dialects=[Dialect.OPENAI_CHAT])
    with scan.client(10) as client:
        def probe(model):
            return probing.probe(client, provider, "sk-or-v1-probe", "openrouter", model, timeout=10)
        slow = probe("fake/slow")
        assert slow["ok"] and slow["tokens_per_s"] is not None and 2 < slow["tokens_per_s"] < 20
        assert slow["output_tokens"] == 12 and slow["model"] == "openrouter:fake/slow"
        assert probe("fake/good")["tokens_per_s"] is None  # all at once: too short to measure
        assert probe("fake/empty")["error"].startswith("an empty answer")
        midstream = probe("fake/midstream-error")
        assert not midstream["ok"] and midstream["error"].startswith("stream error: ")
        assert not probe("fake/error-200")["ok"]
        assert probe("fake/fail-500")["status"] == 500
        assert probe("fake/fail-401")["error"].startswith("HTTP 401")
    with scan.client(0.5) as client:
        hang = probing.probe(client, provider, "k", "openrouter", "fake/hang-after-headers", timeout=0.5)
        assert not hang["ok"] and "timed out" in hang["error"]


def test_the_gateway_routes_a_tier_m_launch_to_the_ranked_model(fake, pki, tmp_path, monkeypatch):
    folder = tmp_path / "state"
    rules = tmp_path / "scan-rules.yaml"
    rules.write_text(SCAN_RULES.format(base=f"https://127.0.0.1:{fake.port}/api/v1"))
    result = run_xx(xx_env(tmp_path, SSL_CERT_FILE=str(pki.ca_cert), OPENROUTER_API_KEY="sk-or-v1-x"),
                    "scan", "--json", "--rules", str(rules), "--db", str(folder / "usage.db"), "--probe", "1")
    assert result.returncode == 0, result.stderr
    best = json.loads(result.stdout)["tiers"]
    gateway = Gateway(tmp_path / "gw", fake.port, pki.ca_cert, "--set", f"clutch_state_dir={folder}",
                      env={"OPENROUTER_API_KEY": "sk-or-v1-gateway"})
    try:
        for code, wanted in (("cipm", best["m"]), ("cipf", best["f"])):
            with httpx.Client(proxy=gateway.proxy_url(f"xx-{code}"), verify=trust(gateway.ca_cert), timeout=20) as c:
                response = c.post("https://openrouter.ai/api/v1/chat/completions",
                                  json={"model": "anything/asked", "messages": [{"role": "user", "content": code}]})
            assert response.status_code == 200, response.text
            entry = fake.wait_for(lambda e: first_content(e) == code and e.get("t", 0) > 0, newest=True)
            assert "openrouter:" + entry["model"] == wanted
            assert "launch:tier-" + code[-1] in response.headers.get("x-clutch-route", "")
    finally:
        gateway.stop()
