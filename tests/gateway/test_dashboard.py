"""Dashboard: the page the gateway serves at /dashboard renders the usage store's real numbers in
headless Chromium (Debian's chromium + chromedriver, which ./clutch test installs).

Requests from two agents go through a real gateway to the fake provider (one served after a
fallback, one model failing until its breaker opens); the page must show exactly what /usage says,
charts included, with no JavaScript error and no request outside the gateway. The screenshot lands in
tests/artifacts/dashboard.png for a person to look at.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import httpx
import pytest
import webdriver
from harness import gateway_on_rules, trust

from addons.accounting.reports import day_of
from addons.accounting.store import UsageStore

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ARTIFACT = ARTIFACTS / "dashboard.png"  # the 1 h window: this run's requests only
RULES = textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
                   key_env: OPENROUTER_API_KEY}
    cascades:
      "openrouter:dash/fail-502": ["openrouter:dash/alpha"]
    fallback: {method: cascade}
""")
FAILING = "openrouter:dash/fail-500"
USAGE_COLUMNS = ("requests", "input_tokens", "output_tokens", "cached_tokens", "cost_usd", "failures", "fallbacks")
# An earlier run's traffic, three days ago: outside the 1 h window, inside the 7 d one.
HISTORY_AGENT, HISTORY_MODEL = "codex", "dash/earlier"


def require_browser() -> None:
    webdriver.need_browser()


RANKINGS = [
    {"rank": 1, "model": "openrouter:dash/ranked-best", "free": False, "score": 0.91, "why": "probe ok, 40 tok/s",
     "context_length": 262144, "tools": True, "prompt_price": 3e-7, "completion_price": 1.2e-6, "success_rate": 1.0,
     "ttft_ms": 420.0, "tokens_per_s": 40.0},
    {"rank": 2, "model": "openrouter:dash/ranked-free:free", "free": True, "score": 0.6, "why": "untried",
     "context_length": 131072, "tools": True, "prompt_price": 0.0, "completion_price": 0.0, "success_rate": None,
     "ttft_ms": None, "tokens_per_s": None},
]


def history_rows(now: float) -> list[dict]:
    rows = []
    for i in range(6):
        ts = now - 3 * 86400 + i * 7200
        rows.append({"ts": ts, "day": day_of(ts), "request_id": f"earlier-{i}", "agent": HISTORY_AGENT, "launch": None,
                     "session": "earlier", "dialect": "openai_responses", "stream": True, "requested_model": HISTORY_MODEL,
                     "provider": "openrouter", "model": HISTORY_MODEL, "rule": None, "attempt": 0, "outcome": "success",
                     "status": 200, "error_class": None, "served": True, "fallback": False,
                     "input_tokens": 20 * (i + 1), "output_tokens": 4 * (i + 1), "cached_tokens": 0,
                     "cache_write_tokens": 0, "reasoning_tokens": 0, "tokens_estimated": False,
                     "cost_usd": 2.5e-5 * (i + 1), "cost_source": "provider", "ttft_ms": 300.0, "duration_ms": 900.0,
                     "tokens_saved": None})
    return rows


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, fake, pki):
    require_browser()  # before starting anything
    workdir = tmp_path_factory.mktemp("dashboard")
    state = workdir / "state"
    state.mkdir()
    store = UsageStore(state / "usage.db")
    store.add(history_rows(time.time()))
    store.save_rankings(RANKINGS, computed_at=time.time())  # as `xx scan` leaves them
    store.close()
    process = gateway_on_rules(workdir, fake, pki, RULES, "--set", "clutch_retries=0",
                               "--set", f"clutch_state_dir={state}", env={"OPENROUTER_API_KEY": "sk-or-v1-rules-key"})
    yield process
    process.stop()


def chat(gateway, user: str, model: str, stream: bool) -> httpx.Response:
    with httpx.Client(proxy=gateway.proxy_url(user), verify=trust(gateway.bundle), trust_env=False, timeout=30) as client:
        return client.post("https://openrouter.ai/api/v1/chat/completions",
                           headers={"authorization": "Bearer sk-or-v1-agent-key"},
                           json={"model": model, "stream": stream,
                                 "messages": [{"role": "user", "content": "dashboard prompt " + "x" * 200}]})


def local(gateway, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{gateway.port}{path}", timeout=10, trust_env=False)


def page_state(browser) -> dict:
    return browser.script("""return {state: document.body.dataset.state, window: document.body.dataset.window,
        refreshes: Number(document.body.dataset.refreshes), errors: window.__clutchErrors,
        offsite: performance.getEntriesByType("resource").map(e => e.name)
                 .filter(n => !n.startsWith(location.origin + "/"))};""")


def rows_shown(browser, table: str, attribute: str) -> dict[str, dict[str, float]]:
    """{row key: {column: raw number}} from the table's data-* attributes."""
    return browser.script("""
        const [table, attribute] = arguments, found = {};
        for (const tr of document.querySelectorAll(`#${table} tbody tr[${attribute}]`)) {
            const cells = {};
            for (const td of tr.querySelectorAll("td[data-value]")) cells[td.dataset.col] = td.dataset.value;
            cells.text = tr.textContent;
            found[tr.getAttribute(attribute)] = cells;
        }
        return found;""", table, attribute)


def series_shown(browser, chart: str) -> dict[str, float]:
    return browser.script("""
        const found = {};
        for (const p of document.querySelectorAll(`svg[data-chart="${arguments[0]}"] path[data-series]`))
            if (p.getAttribute("d")) found[p.dataset.series] = Number(p.dataset.total);
        return found;""", chart)


def assert_table_matches(browser, table: str, attribute: str, report: list[dict]) -> None:
    shown = rows_shown(browser, table, attribute)
    assert set(shown) == {row["key"] for row in report}
    for row in report:
        for column in USAGE_COLUMNS:
            assert float(shown[row["key"]][column]) == pytest.approx(row[column], rel=1e-9, abs=1e-12), (row["key"], column)


def timeline_totals(points: list[dict], metric: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for point in points:
        value = point["cost_usd"] if metric == "cost" else point["input_tokens"] + point["output_tokens"]
        totals[point["key"]] = totals.get(point["key"], 0) + value
    return {key: value for key, value in totals.items() if value > 0}


def test_the_dashboard_renders_real_usage_in_chromium(gateway):
    page = local(gateway, "/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert local(gateway, "/__clutch/dashboard/").content == page.content
    with webdriver.Browser.start() as browser:
        # before any request: the 1 h window is empty (the earlier run is days old) and says so
        browser.get(f"http://127.0.0.1:{gateway.port}/dashboard#1h")
        browser.wait(lambda: page_state(browser)["state"] == "ready", message="first load")
        assert browser.find("#agents tbody tr[data-empty]").text == "no requests in the last 1 h"
        assert browser.find_all("#chart-tokens-agent [data-empty]") and not series_shown(browser, "tokens-agent")

        for _ in range(2):
            assert chat(gateway, "xx-claude.s-dash1", "dash/alpha", stream=True).status_code == 200
        assert chat(gateway, "xx-claude.s-dash1", "dash/fail-502", stream=False).status_code == 200  # via the cascade
        assert chat(gateway, "xx-qnp.s-dash2", "dash/beta", stream=False).status_code == 200
        for _ in range(3):  # the breaker opens after 3 failures (clutch_breaker_failures)
            assert chat(gateway, "xx-qnp.s-dash2", "dash/fail-500", stream=True).status_code == 500
        assert local(gateway, "/resilience").json()["breakers"][FAILING]["state"] == "open"

        # the page refreshes itself every 10 s: the new requests appear without a reload
        refreshes = page_state(browser)["refreshes"]
        browser.wait(lambda: {"claude", "qwen"} <= set(rows_shown(browser, "agents", "data-agent")),
                     timeout=25, message="agents after the auto-refresh")
        assert page_state(browser)["refreshes"] > refreshes
        since = time.time() - 3600
        by_agent = local(gateway, f"/usage?by=agent&since={since}").json()["rows"]
        by_model = local(gateway, f"/usage?by=model&since={since}").json()["rows"]
        assert {row["key"] for row in by_agent} == {"claude", "qwen"}
        assert_table_matches(browser, "agents", "data-agent", by_agent)
        assert_table_matches(browser, "models", "data-model", by_model)
        agents = rows_shown(browser, "agents", "data-agent")
        for agent in ("claude", "qwen"):
            assert float(agents[agent]["input_tokens"]) > 0 and float(agents[agent]["cost_usd"]) > 0
        assert float(agents["qwen"]["failures"]) == 3 and float(agents["claude"]["fallbacks"]) == 1
        models = rows_shown(browser, "models", "data-model")
        for model in ("openrouter:dash/alpha", "openrouter:dash/beta"):
            assert float(models[model]["output_tokens"]) > 0 and float(models[model]["cost_usd"]) > 0
        assert "$" in agents["claude"]["text"]

        # the charts draw one series per agent and model, with the timeline's totals
        for by in ("agent", "model"):
            points = local(gateway, f"/usage/timeline?bucket=60&by={by}&since={since}").json()["points"]
            for metric in ("tokens", "cost"):
                expected = timeline_totals(points, metric)
                assert series_shown(browser, f"{metric}-{by}") == pytest.approx(expected, rel=1e-9), (metric, by)
        assert {"claude", "qwen"} <= set(series_shown(browser, "cost-agent"))
        assert {"openrouter:dash/alpha", "openrouter:dash/beta"} <= set(series_shown(browser, "tokens-model"))

        breakers = {tr.attribute("data-breaker"): tr.attribute("data-state")
                    for tr in browser.find_all("#breakers tbody tr[data-breaker]")}
        assert breakers[FAILING] == "open"
        assert browser.find(f'#breakers tr[data-breaker="{FAILING}"] td[data-col="state"]').text == "open"
        browser.full_screenshot(ARTIFACT)
        print(f"dashboard screenshot: {ARTIFACT}")

        # the 7 d window adds the earlier run's traffic
        browser.find('button[data-window="7d"]').click()
        browser.wait(lambda: HISTORY_AGENT in rows_shown(browser, "agents", "data-agent"), message="7 d window")
        assert page_state(browser)["window"] == "7d"
        week = local(gateway, f"/usage?by=agent&since={time.time() - 7 * 86400}").json()["rows"]
        assert_table_matches(browser, "agents", "data-agent", week)
        assert HISTORY_AGENT in series_shown(browser, "tokens-agent")

        state = page_state(browser)
        assert state["errors"] == [] and state["state"] == "ready"
        assert state["offsite"] == []  # self-contained: nothing loaded from anywhere but the gateway
        ranked = browser.script("""return [...document.querySelectorAll('#rankings tr[data-ranked]')]
            .map(tr => [tr.dataset.ranked, Number(tr.dataset.rank)]);""")
        assert ranked == [[r["model"], r["rank"]] for r in local(gateway, "/rankings").json()["rankings"]] == \
            [[r["model"], r["rank"]] for r in RANKINGS]
        severe = [entry["message"] for entry in browser.console() if entry.get("level") == "SEVERE"]
        assert severe == []
        week_shot = browser.full_screenshot(ARTIFACTS / "dashboard-7d.png")
        print(f"dashboard screenshot (7 d window): {week_shot}")

        # under /__clutch/ the page finds the same endpoints
        browser.get(f"http://127.0.0.1:{gateway.port}/__clutch/dashboard#1h")
        browser.wait(lambda: {"claude", "qwen"} <= set(rows_shown(browser, "agents", "data-agent")),
                     message="the page under /__clutch/")
        assert page_state(browser)["errors"] == []
    assert ARTIFACT.stat().st_size > 10_000
