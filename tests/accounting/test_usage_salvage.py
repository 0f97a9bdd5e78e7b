"""A broken usage database through a real gateway: broken the way real files break (a page of zeros
in the middle, a header that is not SQLite's, cut short mid-page), it is moved aside, a fresh one
records the new rows, /health says `degraded` and names the file (so do `xx status` and `xx
doctor`), and an agent over today's budget before the damage is still refused. Also the salvage
itself on each kind of damage (usage_salvage.py is pure)."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from harness import Gateway, trust
from xx_rig import run_xx, write_config, xx_env

from addons.accounting import salvage as usage_salvage
from addons.accounting.reports import day_of
from addons.accounting.store import UsageStore

PROVIDERS = """\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat, anthropic],
                   hosts: [openrouter.ai], key_env: OPENROUTER_API_KEY}
    budgets:
      agents:
        qwen: {usd_per_day: 0.5}
"""
PAGE = 4096


def history(path: Path, old: int = 3000, today_rows: int = 5) -> None:
    """A usage.db as the store writes it: older days first, then today's qwen rows, $0.25 each."""
    store = UsageStore(path)
    now = time.time()
    before = now - 3 * 86400
    store.add([{"ts": before + i, "day": day_of(before), "request_id": f"old{i}", "agent": "claude",
                "provider": "openrouter", "model": "x/old", "attempt": 0, "outcome": "success",
                "input_tokens": 100, "output_tokens": 10, "session": "s" * 40} for i in range(old)])
    store.add([{"ts": now - 60 + i, "day": day_of(now), "request_id": f"today{i}", "agent": "qwen",
                "provider": "openrouter", "model": "x/today", "attempt": 0, "outcome": "success",
                "served": True, "input_tokens": 100, "output_tokens": 10, "cost_usd": 0.25}
               for i in range(today_rows)])
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file, as after a clean stop
    store.close()


def damage(path: Path, kind: str) -> None:
    data = bytearray(path.read_bytes())
    if kind == "zeros":  # a page of the older rows, in the middle of the file
        start = (len(data) // PAGE // 3) * PAGE
        data[start:start + PAGE] = bytes(PAGE)
    elif kind == "header":
        data[:16] = b"not a database!!"
    elif kind == "truncated":  # cut mid-page, two thirds in
        data = data[:len(data) * 2 // 3 + 1000]
    path.write_bytes(bytes(data))


def start(workdir: Path, fake, pki, *extra: str) -> Gateway:
    rules = workdir / "rules.yaml"
    rules.write_text(textwrap.dedent(PROVIDERS))
    return Gateway(workdir, fake.port, pki.ca_cert, "--set", f"clutch_state_dir={workdir / 'state'}", *extra,
                   rules=rules, env={"OPENROUTER_API_KEY": "sk-or-v1-salvage"})


def chat(gateway: Gateway, user: str) -> openai.OpenAI:
    client = httpx.Client(proxy=gateway.proxy_url(user), verify=trust(gateway.bundle), trust_env=False, timeout=30)
    return openai.OpenAI(api_key="sk-or-v1-agent", base_url="https://openrouter.ai/api/v1", http_client=client,
                         max_retries=0)


def ask(client: openai.OpenAI, model: str):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def test_a_page_of_zeros_moves_the_db_aside_and_todays_budget_still_holds(tmp_path, fake, pki):
    db = tmp_path / "state" / "usage.db"
    db.parent.mkdir(parents=True)
    history(db)
    damage(db, "zeros")
    gateway = start(tmp_path, fake, pki)
    try:
        health = gateway.health()
        broken = sorted(db.parent.glob("usage.db.broken-*"))
        assert [p.name for p in broken if not p.name.endswith(("-wal", "-shm"))], "the broken file was not kept"
        assert health["status"] == "degraded"
        assert any(broken[0].name in problem and "5 of today's rows" in problem for problem in health["problems"])
        # qwen spent $1.25 of its $0.50 today before the damage: still refused, nothing sent
        sent_before = len(fake.entries())
        with pytest.raises(openai.RateLimitError) as refused:
            ask(chat(gateway, "xx-qip"), "salvage/qwen")
        assert "agent qwen is over its daily budget" in refused.value.message
        assert len(fake.entries()) == sent_before
        # the fresh database records new requests, beside the rows read back
        assert ask(chat(gateway, "xx-cip"), "salvage/claude").choices[0].message.content
        rows = gateway.usage_rows()
        recovered = [r["request_id"] for r in rows if r["agent"] == "qwen" and r["outcome"] != "refused"]
        assert recovered == [f"today{i}" for i in range(5)]
        assert [r["model"] for r in rows if r["agent"] == "claude"] == ["salvage/claude"]
        assert not any(r["request_id"].startswith("old") for r in rows)  # history stays in the broken copy
        # xx status and xx doctor read /health and say it
        home = tmp_path / "xxhome"
        write_config(home, fake.port, pki.ca_cert, gateway=f"127.0.0.1:{gateway.port}")
        status = run_xx(xx_env(home, COLUMNS="400"), "status")  # the path on one line
        assert "DEGRADED" in status.stdout and broken[0].name in status.stdout, status.stdout + status.stderr
        doctor = run_xx(xx_env(home), "doctor")
        assert "gateway degraded" in doctor.stdout and broken[0].name in doctor.stdout, doctor.stdout
    finally:
        gateway.stop()


def test_refuse_mode_refuses_budgeted_agents_when_todays_rows_are_lost(tmp_path, fake, pki):
    db = tmp_path / "state" / "usage.db"
    db.parent.mkdir(parents=True)
    history(db)
    damage(db, "header")
    gateway = start(tmp_path, fake, pki, "--set", "clutch_budget_unknown=refuse")
    try:
        assert gateway.health()["status"] == "degraded"
        with pytest.raises(openai.InternalServerError) as refused:  # 503: the SDK's class for 5xx
            ask(chat(gateway, "xx-qip"), "salvage/refused")
        assert refused.value.status_code == 503
        assert refused.value.response.headers["x-clutch-error"] == "budget_unknown"
        assert refused.value.response.headers["x-should-retry"] == "false"
        assert "usage.db.broken-" in refused.value.message and "clutch_budget_unknown" in refused.value.message
        assert not fake.entries_for("salvage/refused")
        assert ask(chat(gateway, "xx-cip"), "salvage/unbudgeted").choices[0].message.content  # no budget: served
    finally:
        gateway.stop()


def test_a_usage_db_deleted_while_running_is_in_health(tmp_path, fake, pki):
    gateway = start(tmp_path, fake, pki)
    try:
        assert gateway.health()["status"] == "ok" and gateway.health()["problems"] == []
        (tmp_path / "state" / "usage.db").unlink()
        health = gateway.health()
        assert health["status"] == "degraded"
        assert any("deleted or replaced" in problem for problem in health["problems"])
    finally:
        gateway.stop()


@pytest.mark.parametrize("kind, recovered, lossless", [
    ("zeros", 5, True),  # today's rows are past the damaged page
    ("header", 0, False),
    ("truncated", 0, False),  # today's rows were at the end that is gone
])
def test_salvage_reads_back_what_each_damage_left(tmp_path, kind, recovered, lossless):
    db = tmp_path / "usage.db"
    history(db)
    damage(db, kind)
    reason = usage_salvage.damage(db)
    assert reason
    broken = usage_salvage.move_aside(db)
    assert not db.exists() and broken.exists() and broken.name.startswith("usage.db.broken-")
    found = usage_salvage.salvage(broken, reason)
    assert len(found.rows) == recovered and found.lossless is lossless
    assert not list(tmp_path.glob("*.salvage*"))  # the padded copy of a short file is gone


def test_salvage_of_a_cut_file_reads_the_rows_before_the_cut(tmp_path):
    db = tmp_path / "usage.db"
    history(db, old=0, today_rows=3000)
    damage(db, "truncated")
    found = usage_salvage.salvage(usage_salvage.move_aside(db), usage_salvage.damage(db) or "cut")
    assert 1000 < len(found.rows) < 3000 and not found.lossless


def test_an_intact_database_is_not_damaged(tmp_path):
    db = tmp_path / "usage.db"
    history(db)
    assert usage_salvage.damage(db) is None
    assert usage_salvage.damage(tmp_path / "absent.db") is None


def test_salvage_reads_a_database_of_an_older_schema(tmp_path, monkeypatch):
    """A file written before `cache_saved_usd` (schema 2) and broken: its rows are read with the columns
    it has, not lost to a `no such column` on every read."""
    from addons.accounting import store as usage_store
    monkeypatch.setattr(usage_store, "SCHEMA_VERSION", 2)  # the store as it was before migration 3
    monkeypatch.setattr(usage_store, "ATTEMPT_COLUMNS", usage_store.ATTEMPT_COLUMNS[:-2])
    db = tmp_path / "usage.db"
    history(db)
    monkeypatch.undo()
    damage(db, "zeros")
    found = usage_salvage.salvage(usage_salvage.move_aside(db), usage_salvage.damage(db) or "zeros")
    assert len(found.rows) == 5 and found.lossless
    assert {row["cost_usd"] for row in found.rows} == {0.25} and "cache_saved_usd" not in found.rows[0]
