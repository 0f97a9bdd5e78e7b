"""Output that fits the terminal (launcher/terminal.py): every table `xx` and `./clutch` print, at 80 and
120 columns, with OpenRouter's long model ids; each line within the width and each model id whole, or
wrapped after its `provider:` and `vendor/`, or shortened the documented way; names printed as they are
(no rich markup); and the real `xx usage` and `xx codes` commands in a pipe, where COLUMNS decides."""

from __future__ import annotations

import json
import time

import pytest
from xx_rig import fits, run_xx, shows, xx_env

from addons.accounting.store import UsageStore
from launcher import terminal
from launcher.codes import code_table
from launcher.scan.report import print_run
from launcher.tables import WatchLayout, render_request, render_resilience, render_status
from launcher.terminal import shorten_model, terminal_width, wrap_model
from launcher.usage_report import render_usage

MODELS = ["openrouter:moonshotai/kimi-k2.6", "openrouter:deepseek/deepseek-chat-v3.1:free",
          "openrouter:anthropic/claude-opus-4.8", "openrouter:nvidia/nemotron-3-super-120b-a12b:free",
          "anthropic:claude-opus-4-8"]
WIDTHS = [80, 120]


# ------------------------------------------------------------------ the pieces

def test_the_width_is_columns_else_80_off_a_terminal(tmp_path):
    with open(tmp_path / "out", "w") as file:  # a file, like a pipe: not a terminal
        assert terminal_width({}, file) == 80
        assert terminal_width({"COLUMNS": "132"}, file) == 132
        assert terminal_width({"COLUMNS": "12"}, file) == terminal.NARROWEST
        assert terminal_width({"COLUMNS": "wide"}, file) == 80


@pytest.mark.parametrize("name,width,short", [
    ("openrouter:moonshotai/kimi-k2.6", 40, "openrouter:moonshotai/kimi-k2.6"),
    ("openrouter:moonshotai/kimi-k2.6", 25, "moonshotai/kimi-k2.6"),
    ("openrouter:deepseek/deepseek-chat-v3.1:free", 25, "deepseek-chat-v3.1:free"),
    ("deepseek/deepseek-chat-v3.1:free", 30, "deepseek-chat-v3.1:free"),  # no provider: the colon is :free
    ("openrouter:nvidia/nemotron-3-super-120b-a12b:free", 21, "nemotron-3…-a12b:free"),
])
def test_shorten_model_drops_the_provider_then_the_vendor_then_the_middle(name, width, short):
    assert shorten_model(name, width) == short and len(short) <= width


def test_wrap_model_breaks_after_the_provider_and_the_vendor():
    assert wrap_model("openrouter:deepseek/deepseek-chat-v3.1:free", 30) == \
        "openrouter:deepseek/\ndeepseek-chat-v3.1:free"
    assert wrap_model("openrouter:deepseek/deepseek-chat-v3.1:free", 12) == \
        "openrouter:\ndeepseek/\ndeepseek-cha\nt-v3.1:free"  # a part longer than the column: folded
    assert wrap_model("anthropic:claude-opus-4-8", 40) == "anthropic:claude-opus-4-8"


# ------------------------------------------------------------------ each table at 80 and 120 columns

def usage_rows(keys: list[str]) -> list[dict]:
    return [{"key": key, "requests": 12 + i, "attempts": 14, "failures": 1, "fallbacks": 2, "soft_failures": 0,
             "input_tokens": 1_234_567, "output_tokens": 45_678, "cached_tokens": 10_000, "cost_usd": 0.0123 * i,
             "ttft_ms_p50": 812.0} for i, key in enumerate(keys)]


@pytest.mark.parametrize("width", WIDTHS)
def test_usage_by_model_keeps_every_model_id(width):
    fitted = render_usage(usage_rows(MODELS), "model", width)
    text = terminal.render_text(fitted.table, width)
    fits(text, width)
    for model in MODELS:
        assert shows(text, model), f"{model} not readable at {width}:\n{text}"
    header = text.splitlines()[:3]
    assert any("requests" in line for line in header) and any("cost" in line for line in header)
    assert "$0.0492" in text and "total" in text  # the last row's cost, and the total row
    if width == 80:
        assert fitted.left_out and "attempts" in fitted.note(80)


@pytest.mark.parametrize("width", WIDTHS)
def test_watch_lines_fit_and_name_the_model_that_served(width):
    layout = WatchLayout.for_width(width)
    entries = [{"time": time.time(), "agent": "claude", "launch": "cip", "session": "4f1c2a", "model": "opus",
                "served_by": model, "status": 200, "attempts": 1, "input_tokens": 72_345, "output_tokens": 612,
                "cost_usd": 0.000084, "duration_ms": 3012, "outcome": "success", "fallback": model.endswith("free")}
               for model in MODELS]
    lines = [render_request(None, layout)] + [render_request(entry, layout) for entry in entries]
    fits("\n".join(lines), width)
    assert lines[0].split()[:2] == ["time", "agent"] and "served" in lines[0]
    for line, model in zip(lines[1:], MODELS, strict=True):
        served = shorten_model(model, layout.widths[[f.heading for f in layout.fields].index("served by")] - 1)
        assert served in line and " 200 " in line and "72.3k/612" in line and "$0.000084" in line
        assert model.rsplit("/", 1)[-1].split(":", 1)[-1] in line  # kimi-k2.6, claude-opus-4-8, ...: whole
    if width == 120:  # the whole id where there is room
        assert "openrouter:anthropic/claude-opus-4.8" in lines[3]
    assert all(line.rstrip().endswith(("3012", "ms")) for line in lines)  # no column cut off the end


def test_watch_names_how_a_stream_ended_and_keeps_its_columns():
    layout = WatchLayout.for_width(80)
    base = {"time": time.time(), "agent": "antigravity", "served_by": MODELS[1], "status": 200, "attempts": 2}
    cut = render_request({**base, "outcome": "broken", "error": "stream_cut"}, layout)
    aborted = render_request({**base, "outcome": "aborted", "error": "aborted"}, layout)
    stalled = render_request({**base, "outcome": "broken", "error": "timeout_idle"}, layout)
    failed = render_request({**base, "status": 502, "error": "all_failed", "outcome": "failed"}, layout)
    assert " cut " in cut and " aborted " in aborted and " stalled " in stalled and " 502 " in failed
    assert len({len(line.split("  ")[0]) for line in (cut, aborted, stalled)}) == 1
    fits("\n".join([cut, aborted, stalled, failed]), 80)


def resilience_state() -> dict:
    now = time.time()
    return {"breakers": {MODELS[1]: {"state": "open", "failures": 5, "until": now + 30,
                                     "reason": "HTTP 429: Rate limit exceeded: free-models-per-day"},
                         MODELS[0]: {"state": "closed", "failures": 1, "reason": "timeout"}},
            "quotas": {MODELS[2]: {"rpm": "3/20", "rpd": "10/200", "cooldown_until": now + 12},
                       MODELS[3]: {"rpm": "1/20", "rpd": "4/50"}},
            "sticky": [{"session": "4f1c2a9e77", "primary": MODELS[2], "target": MODELS[3], "expires_in_s": 281}]}


@pytest.mark.parametrize("width", WIDTHS)
def test_resilience_tables_fit_with_whole_model_ids(width):
    text = render_resilience(resilience_state(), width)
    fits(text, width)
    for model in MODELS[:4]:
        assert shows(text, model), f"{model} not readable at {width}:\n{text}"
    assert "open" in text and "3/20" in text and "281 s" in text
    assert "free-models-per-day" in text  # the last failure's reason wraps, it is not dropped


@pytest.mark.parametrize("width", WIDTHS)
def test_status_wraps_long_paths_within_the_width(width):
    health = {"pid": 4242, "uptime_s": 4000, "version": "0.1.0",
              "listen": ["regular 127.0.0.1:8780", "reverse 127.0.0.1:8790"],
              "rules": {"path": "/home/someone/projects/dotfiles/clutch/rules-for-the-whole-team.yaml",
                        "loaded_at": "2026-12-04T08:00:00Z", "providers": ["openrouter", "anthropic", "openai"]},
              "ca_cert": "/home/someone/projects/clutch/certs/mitmproxy-ca-cert.pem",
              "problems": ["usage database was corrupt: moved aside to usage.db.corrupt-20261204T080000Z"]}
    text = render_status("127.0.0.1:8780", health, 4242, "/home/someone/.xx/gateway.log", width)
    fits(text, width)
    assert "running on 127.0.0.1:8780, up 1h06m" in text and "4242, started by xx" in text
    assert "DEGRADED" in text and "providers  openrouter, anthropic, openai" in text


def scan_run() -> dict:
    rankings = [{"rank": i + 1, "model": model, "score": 0.9 - i / 10, "success_rate": 1.0, "ttft_ms": 812.0,
                 "tokens_per_s": 41.0, "context_length": 131_072, "prompt_price": 3e-7, "completion_price": 1.2e-6,
                 "free": model.endswith(":free"), "why": "probe ok, 41 tok/s; 12 requests this week, none failed"}
                for i, model in enumerate(MODELS[:4])]
    return {"catalog": {"models": 342, "url": "https://openrouter.ai/api/v1/models", "origin": "fetched",
                        "fetched_at": time.time() - 5, "fit": 201, "left_out": {"no tools": 120, "small context": 21}},
            "probes": [{"model": MODELS[1], "ok": True, "ttft_ms": 812.0, "tokens_per_s": 41.0, "error": None}],
            "rankings": rankings, "ranked": 201, "tiers": {"m": MODELS[0], "f": MODELS[1]},
            "db": "/home/someone/.local/state/clutch/usage.db"}


@pytest.mark.parametrize("width", WIDTHS)
def test_scan_table_fits_with_whole_model_ids(width, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", str(width))
    print_run(scan_run())
    text = capsys.readouterr().out
    fits(text, width)
    for model in MODELS[:4]:
        assert shows(text, model), f"{model} not readable at {width}:\n{text}"
    assert f"tier m   {MODELS[0]}" in text and "score" in text


@pytest.mark.parametrize("width", [40, 80, 120])
def test_the_code_table_fits(width):
    text = code_table(width)
    fits(text, width)
    assert "c claude" in text and "g antigravity" in text and "w openclaw" in text


# ------------------------------------------------------------------ names are printed as they are

def test_a_model_named_like_rich_markup_prints_as_itself(tmp_path):
    db = tmp_path / "usage.db"
    fill(db, ["openrouter:[/bold]", "openrouter:[red]x[/red]"])
    result = run_xx(xx_env(tmp_path, COLUMNS="100"), "usage", "--by", "model", "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert "openrouter:[/bold]" in result.stdout and "openrouter:[red]x[/red]" in result.stdout


def test_scan_prints_catalog_names_as_they_are(monkeypatch, capsys):
    run = scan_run()
    run["rankings"][0]["model"] = "openrouter:[/link]evil"
    run["probes"][0]["model"] = "openrouter:[bold]x"
    monkeypatch.setenv("COLUMNS", "120")
    print_run(run)
    out = capsys.readouterr().out
    assert "openrouter:[/link]evil" in out and "probe    openrouter:[bold]x: ok" in out


# ------------------------------------------------------------------ the real commands, in a pipe

def fill(db, models: list[str]) -> None:
    """A usage database as the gateway writes it: a request per model today."""
    store = UsageStore(db)
    now = time.time()
    try:
        store.add([{"ts": now - 60 + i, "day": time.strftime("%Y-%m-%d", time.localtime(now)),
                    "request_id": f"r{i}", "agent": "claude", "provider": model.split(":", 1)[0],
                    "model": model.split(":", 1)[1], "attempt": 0, "outcome": "success", "served": True, "input_tokens": 123_456 * (i + 1),
                    "output_tokens": 4_567, "cached_tokens": 1_000, "cost_usd": 0.0123 * (i + 1), "ttft_ms": 812.0}
                   for i, model in enumerate(models)])
    finally:
        store.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_xx_usage_by_model_in_a_pipe_fits_columns(tmp_path, width):
    db = tmp_path / "usage.db"
    fill(db, MODELS)
    result = run_xx(xx_env(tmp_path, COLUMNS=str(width)), "usage", "--by", "model", "--since", "7d",
                    "--db", str(db))
    assert result.returncode == 0, result.stderr
    fits(result.stdout, width)
    for model in MODELS:
        assert shows(result.stdout, model), f"{model} not readable at {width}:\n{result.stdout}"
    assert "usage by model" in result.stdout and "total" in result.stdout
    raw = json.loads(run_xx(xx_env(tmp_path), "usage", "--by", "model", "--db", str(db), "--json").stdout)
    assert sorted(row["key"] for row in raw["rows"]) == sorted(MODELS)  # --json keeps every column, whole


def test_xx_usage_without_columns_is_80_wide_in_a_pipe(tmp_path):
    db = tmp_path / "usage.db"
    fill(db, MODELS)
    result = run_xx(xx_env(tmp_path), "usage", "--by", "model", "--db", str(db))
    assert result.returncode == 0, result.stderr
    fits(result.stdout, 80)
    assert max(len(line) for line in result.stdout.splitlines()) > 70  # it uses the width, too
    assert "(not shown at 80 columns:" in result.stdout


@pytest.mark.parametrize("width", [80, 120])
def test_xx_codes_fits(tmp_path, width):
    result = run_xx(xx_env(tmp_path, COLUMNS=str(width)), "codes")
    assert result.returncode == 0, result.stderr
    fits(result.stdout, width)
    assert "a ante" in result.stdout and "antigravity  i c n s -  agy" in result.stdout


def test_a_terminal_without_utf8_gets_ascii_rules(tmp_path):
    db = tmp_path / "usage.db"
    fill(db, MODELS)
    result = run_xx(xx_env(tmp_path, PYTHONIOENCODING="latin-1"), "usage", "--by", "model", "--db", str(db))
    assert result.returncode == 0, result.stderr
    fits(result.stdout, 80)
    assert "-" * 80 in result.stdout and "─" not in result.stdout
