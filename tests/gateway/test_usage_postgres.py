"""Team mode's usage database on a real PostgreSQL (`clutch_usage_db=postgresql://...`): the same reports
as the SQLite store from the same rows; a schema migrated once by replicas that start together; rows
spooled while the server is away and replayed in order when it returns, none lost and none doubled;
two real gateway replicas writing to one database, which stops for 30 s under load."""

from __future__ import annotations

import calendar
import concurrent.futures
import json
import threading
import time

import psycopg
import pytest
from postgres_server import PASSWORD, PostgresServer
from test_relay import calls, chat, start
from xx_rig import run_xx, xx_env

from addons.accounting.postgres import PostgresStore, UsageStoreUnavailable
from addons.accounting.postgres_schema import SCHEMA_VERSION
from addons.accounting.reports import GROUPS, SPENT_BY, UsageStoreError, day_of, ended_at
from addons.accounting.spool import Spool
from addons.accounting.store import UsageStore
from addons.accounting.writer import SpooledWriter

T0 = calendar.timegm((2026, 12, 1, 10, 0, 0))
RULES = """\
version: 1
providers:
  openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
               key_env: OPENROUTER_API_KEY}
cascades:
  "openrouter:pg1/fail-500": ["openrouter:pg1/chunks-2"]
fallback: {method: cascade}
"""


def database(server: PostgresServer, name: str) -> str:
    """A new, empty database on the server: its URL."""
    with psycopg.connect(server.url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + f"/{name}"


def history(count: int = 60) -> list[dict]:
    """Rows of many shapes: failures rescued by a fallback, refusals, soft failures, rows without
    tokens, two days, three agents, sessions and none."""
    rows = []
    for n in range(count):
        ts = T0 + n * 1700.5  # spans two UTC days and many hour buckets
        common = {"ts": ts, "day": day_of(ts), "request_id": f"req-{n}", "agent": ("claude", "codex", "qwen")[n % 3],
                  "launch": f"L{n % 2}" if n % 4 else None, "session": f"s{n % 5}" if n % 3 else None,
                  "dialect": "anthropic" if n % 2 else "openai_chat", "stream": n % 2 == 0,
                  "requested_model": "claude-sonnet", "rule": "tier:middle" if n % 2 else None,
                  "user_name": ("ana", "bo", None)[n % 3]}
        if n % 7 == 0:
            rows.append({**common, "provider": "openrouter", "model": "m1", "attempt": 0, "outcome": "refused",
                         "status": 429, "error_class": "quota", "served": False})
            continue
        if n % 5 == 0:
            rows.append({**common, "provider": "openrouter", "model": "m1", "attempt": 0, "outcome": "failed",
                         "status": 500, "error_class": "status", "duration_ms": 120.0 + n})
            rows.append({**common, "ts": ts + 0.2, "provider": "anthropic", "model": "m2", "attempt": 1,
                         "outcome": "success", "status": 200, "served": True, "fallback": True,
                         "input_tokens": 1000 + n, "output_tokens": 50, "cached_tokens": 10,
                         "cost_usd": 0.003 * n, "cache_saved_usd": 0.0001, "ttft_ms": 400.0 + n,
                         "duration_ms": 900.0})
            continue
        rows.append({**common, "provider": "openrouter", "model": f"m{1 + n % 3}", "attempt": 0,
                     "outcome": "soft_failure" if n % 11 == 0 else "success", "status": 200, "served": True,
                     "input_tokens": 100 * n if n % 4 else None, "output_tokens": 10 + n,
                     "cache_write_tokens": n, "reasoning_tokens": n % 3, "tokens_estimated": n % 4 == 0,
                     "cost_usd": 0.001 * n, "cost_source": "provider", "ttft_ms": 200.0 + n % 9,
                     "duration_ms": 500.0 + n, "tokens_saved": n * 2})
    return rows


def test_postgres_gives_the_same_reports_as_sqlite(postgres, tmp_path):
    sqlite = UsageStore(tmp_path / "usage.db")
    pg = PostgresStore(database(postgres, "parity"))
    try:
        rows = history()
        sqlite.add(rows)
        pg.add(rows)
        assert pg.count() == sqlite.count() == len(rows)
        assert pg.rows() == sqlite.rows()
        windows = [(None, None), (T0 + 3600, T0 + 86400)]
        for by in GROUPS:
            for since, until in windows:
                assert pg.report(by, since, until) == sqlite.report(by, since, until), by
        for by in (None, "model", "agent"):
            for bucket in (3600, 86400):
                assert pg.timeline(bucket, by) == sqlite.timeline(bucket, by), (by, bucket)
        assert pg.model_stats(T0) == sqlite.model_stats(T0)
        for day in {row["day"] for row in rows}:
            for by in ("agent", "provider", "user"):
                assert pg.spent(day, by) == sqlite.spent(day, by)
                # the shared counters' base: an attempt ending exactly at `since` is the counters', not
                # the base's (shared_spend.py); both databases compute that end as Python does
                for since in sorted({ended_at(row) for row in rows if row["day"] == day})[::5]:
                    assert pg.spent(day, by, ended_before=since) == sqlite.spent(day, by, ended_before=since)
                    expected = sum(r.get("cost_usd") or 0 for r in rows if r["day"] == day and ended_at(r) < since
                                   and r.get(SPENT_BY[by]) is not None)
                    found = sum(v["cost_usd"] for v in pg.spent(day, by, ended_before=since).values())
                    assert found == pytest.approx(expected, abs=1e-9), (day, by, since)
        report = pg.report("agent")
        assert sum(row["requests"] for row in report) == 60 and all(row["cost_usd"] > 0 for row in report)
    finally:
        sqlite.close()
        pg.close()


def test_probes_and_rankings_and_their_change_marker(postgres):
    pg = PostgresStore(database(postgres, "scan"))
    try:
        pg.add_probes([{"ts": T0, "model": "openrouter:m1", "ok": True, "status": 200, "ttft_ms": 300.0}])
        assert pg.probes(T0 - 1)[0]["ok"] is True
        before = pg.data_version()
        pg.save_rankings([{"rank": 1, "model": "openrouter:m1", "free": True, "score": 0.9, "tools": True}], T0)
        assert pg.data_version() != before
        assert [(r["rank"], r["model"], r["free"]) for r in pg.rankings()] == [(1, "openrouter:m1", True)]
    finally:
        pg.close()


def test_a_batch_written_twice_is_written_once(postgres):
    pg = PostgresStore(database(postgres, "twice"))
    try:
        rows = history(20)
        pg.add(rows)
        pg.add(rows[5:])  # a replay of rows whose commit was made but whose answer was lost
        assert pg.count() == len(rows)
    finally:
        pg.close()


def test_replicas_that_start_together_migrate_once_and_a_newer_schema_is_refused(postgres):
    url = database(postgres, "together")
    stores = [PostgresStore(url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))

    def connect(store):
        barrier.wait()
        store.connect()
        return store.version

    with concurrent.futures.ThreadPoolExecutor(len(stores)) as pool:
        assert list(pool.map(connect, stores)) == [SCHEMA_VERSION] * 4
    with psycopg.connect(url, autocommit=True) as connection:
        assert connection.execute("SELECT count(*) FROM clutch_schema").fetchone()[0] == SCHEMA_VERSION
        connection.execute("INSERT INTO clutch_schema (version) VALUES (99)")
    for store in stores:
        store.close()
    newer = PostgresStore(url)
    with pytest.raises(UsageStoreError, match=f"schema version 99, newer than this Clutch's {SCHEMA_VERSION}") as refused:
        newer.connect()
    # the rows wait for a Clutch that knows the schema: unavailable, not refused row by row
    assert isinstance(refused.value, UsageStoreUnavailable) and PASSWORD not in str(refused.value)


def test_errors_never_carry_the_password(postgres):
    wrong = postgres.url.replace(PASSWORD, "not-the-" + PASSWORD)
    store = PostgresStore(wrong)
    with pytest.raises(UsageStoreUnavailable) as away:
        store.count()
    message = str(away.value)
    assert "password authentication failed" in message and PASSWORD not in message
    assert store.name == f"postgresql://***@127.0.0.1:{postgres.port}/clutch"


def test_rows_spooled_while_the_server_is_away_are_replayed_in_order_once(postgres, tmp_path):
    """One gateway's writer: the rows of 3 batches finished while PostgreSQL is stopped wait in the
    spool, on disk; once the server is back, one retry writes them, and those that finished after it
    returned, in the order they finished. Rows that reach the database twice (a commit whose answer was
    lost, or a crash before the spool was emptied) are there once."""
    url = database(postgres, "spooling")
    store = PostgresStore(url)
    now = [1000.0]
    writer = SpooledWriter(store, Spool.claim(tmp_path / "state"), clock=lambda: now[0])
    rows = history(40)

    def finish(part):  # what Usage does for each finished request: the event loop's part, then the thread's
        assert writer.take(part) is False
        writer.write(part)

    finish(rows[:10])
    assert writer.written == 10 and writer.spooled == 0
    postgres.stop()
    try:
        for part in (rows[10:20], rows[20:25], rows[25:30]):
            finish(part)
        assert writer.spooled == 20 and writer.unreachable and "cannot be reached" in writer.unreachable
        assert writer.retry() is False and writer.spooled == 20  # not yet time: no new attempt
        now[0] += 10
        assert writer.retry() is False and writer.spooled == 20  # an attempt, and the server still away
        assert writer.spool.path.read_text().count("\n") == 20
    finally:
        postgres.start()
    finish(rows[30:])  # behind the spooled rows: not yet time to try again, nothing overtakes them
    assert writer.spooled == len(rows) - 10
    now[0] += 10
    assert writer.retry() and writer.spooled == 0 and writer.unreachable is None
    with psycopg.connect(url) as connection:
        written = [found for (found,) in connection.execute("SELECT request_id FROM attempts ORDER BY id")]
    assert written == [row["request_id"] for row in rows]  # in the order they finished
    assert writer.dropped == 0 and writer.written == len(rows)
    assert writer.spool.path.stat().st_size == 0
    finish(rows[30:])  # the same rows again
    assert store.count() == len(rows)
    writer.spool.close()
    store.close()


def test_rows_a_killed_gateway_had_not_written_are_written_by_its_next_start(postgres, tmp_path):
    """A `kill -9` between the event loop's append and the thread's write: the kernel kept the lines,
    and the gateway that next takes the slot (or any other, for a slot left alone) writes them."""
    url = database(postgres, "killed")
    folder = tmp_path / "state"
    killed = Spool.claim(folder)
    rows = history(8)
    assert killed.append(rows) == len(rows) == 9
    killed.close()  # the process is gone: its lock with it
    store = PostgresStore(url)
    writer = SpooledWriter(store, Spool.claim(folder))  # the next start takes the same slot
    assert writer.spool.path == killed.path and writer.spooled == 9
    assert writer.retry() and store.count() == 9 and writer.written == 9
    writer.spool.close()
    store.close()


def test_a_spool_left_by_a_stopped_replica_is_replayed_by_another(postgres, tmp_path):
    url = database(postgres, "orphans")
    folder = tmp_path / "shared-state"
    first, second = Spool.claim(folder), Spool.claim(folder)  # two replicas on one state folder
    assert (first.path.name, second.path.name) == ("usage-spool-1.jsonl", "usage-spool-2.jsonl")
    rows = history(8)
    assert second.append(rows) == len(rows)  # then the second replica stops before PostgreSQL returns
    second.close()
    store = PostgresStore(url)
    writer = SpooledWriter(store, first)
    assert writer.retry() and store.count() == len(rows) and writer.written == len(rows)
    assert not (folder / "usage-spool-2.jsonl").exists()
    first.close()
    store.close()


def test_a_row_refused_for_its_content_costs_only_itself_and_a_missing_right_costs_nothing(postgres, tmp_path):
    """A value the column cannot hold (SQLSTATE 22003) is dropped alone, counted, and the spool goes on. A
    role that may not INSERT (42501, as after a failover to a read-only standby) makes the rows wait:
    once it may, they are written."""
    url = database(postgres, "refusals")
    PostgresStore(url).connect()  # the schema, made by the owner
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE ROLE limited LOGIN PASSWORD 'limited-pw'")
        connection.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO limited")
    limited_url = url.replace(f"clutch:{PASSWORD}", "limited:limited-pw")
    now = [0.0]
    store = PostgresStore(limited_url)
    writer = SpooledWriter(store, Spool.claim(tmp_path), clock=lambda: now[0])
    rows = history(6)
    writer.take(rows)
    writer.write(rows)
    assert writer.spooled == len(rows) and "permission denied" in writer.unreachable and writer.dropped == 0
    assert store.count() == 0  # a role that may only read still reads: no migration is tried for it
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("GRANT INSERT ON attempts TO limited")
    bad = {**rows[0], "request_id": "too-big", "attempt": 2 ** 40}
    writer.take([bad])
    now[0] += 10
    assert writer.retry() and writer.spooled == 0 and store.count() == len(rows)
    assert writer.dropped == 1 and "refused a row" in writer.last_drop
    writer.spool.close()
    store.close()


class Freezer:
    """A TCP relay in front of the real server that can stop relaying while it keeps every connection
    open: a host that hangs, which a stopped server is not."""

    def __init__(self, port: int):
        import socket

        self.target = port
        self.frozen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source, sink) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.frozen.is_set():
                continue  # swallowed: the peer waits for an answer that never comes
            sink.sendall(data)

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def test_a_host_that_hangs_costs_a_call_at_most_its_timeout_and_close_never_waits(postgres, monkeypatch):
    from addons.accounting import postgres as postgres_module

    monkeypatch.setattr(postgres_module, "CALL_TIMEOUT_S", 1.0)
    url = database(postgres, "hang")
    freezer = Freezer(postgres.port)
    store = PostgresStore(url.replace(f":{postgres.port}/", f":{freezer.port}/"))
    try:
        store.add(history(3))
        freezer.frozen.set()
        started = time.monotonic()
        with pytest.raises(UsageStoreUnavailable, match="cannot be reached"):
            store.add(history(6)[3:])
        assert time.monotonic() - started < 10
        # a writer stuck in a call, and a shutdown: close shuts its socket instead of waiting for it
        monkeypatch.setattr(postgres_module, "CALL_TIMEOUT_S", 60.0)
        freezer.frozen.clear()
        store.count()
        freezer.frozen.set()
        stuck: list = []
        writer = threading.Thread(target=lambda: stuck.append(pytest.raises(UsageStoreUnavailable, store.count)))
        writer.start()
        time.sleep(0.3)  # the call is sent; nothing here can tell when the relay swallowed it
        started = time.monotonic()
        store.close()
        writer.join(10)
        assert not writer.is_alive() and stuck and time.monotonic() - started < 5
    finally:
        freezer.close()
        store.close()


def test_the_ranking_is_read_off_the_event_loop_from_a_database_that_is_away(postgres):
    from addons.models.rankings_book import RankingsBook

    away = PostgresStore(f"postgresql://clutch:{PASSWORD}@127.0.0.1:1/nowhere")
    book = RankingsBook(away)
    started = time.monotonic()
    assert book.rankings == [] and time.monotonic() - started < 0.5  # a request never waits for it
    book._reader.join(10)
    assert "cannot be reached" in book.last_error


def test_each_database_has_spools_of_its_own(postgres, tmp_path):
    from addons.accounting.postgres import spool_key

    one, other = database(postgres, "keyed_a"), database(postgres, "keyed_b")
    assert spool_key(one) != spool_key(other) and spool_key(one) == spool_key(one.replace(PASSWORD, "changed"))
    first = Spool.claim(tmp_path, key=spool_key(one))
    first.append(history(2))
    first.close()
    elsewhere = SpooledWriter(PostgresStore(other), Spool.claim(tmp_path, key=spool_key(other)))
    assert elsewhere.retry() and elsewhere.store.count() == 0  # reached, schema made, nothing of its own  # the other database's rows stay for it
    assert first.path.exists() and first.path.name == f"usage-spool-{spool_key(one)}-1.jsonl"
    elsewhere.spool.close()
    elsewhere.store.close()


# ------------------------------------------------------------ two real gateways on one database


@pytest.fixture(scope="module")
def team_db(postgres):
    return database(postgres, "team")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, fake, pki, team_db):
    gateways = []
    try:  # a replica that fails to start does not leave the other running
        for n in ("a", "b"):
            gateways.append(start(tmp_path_factory.mktemp(f"pg-replica-{n}"), fake, pki, RULES, clutch_usage_db=team_db))
        yield gateways
    finally:
        for gateway in gateways:
            gateway.stop()


def ask(gateway, model: str, n: int) -> int:
    client = chat(gateway, session=f"pg-{n}")
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"pg {n}"}])
    assert reply.choices[0].message.content == "pong from the fake upstream"
    return 200


def rows_in(url: str, prefix: str) -> list[tuple]:
    with psycopg.connect(url) as connection:
        return connection.execute("SELECT request_id, attempt, model, outcome FROM attempts WHERE model LIKE %s",
                                  (prefix + "%",)).fetchall()


def test_both_replicas_write_to_one_database_and_either_reports_all(replicas, team_db, fake):
    a, b = replicas
    for n in range(6):
        ask((a, b)[n % 2], "pg1/chunks-2" if n % 3 else "pg1/fail-500", n)
    for gateway in replicas:
        gateway.local("/usage")  # flushes that replica's writer
    found = rows_in(team_db, "pg1/")
    assert len(found) == 8  # 4 answered at once, 2 failed once and were rescued by their fallback
    assert len(calls(fake, "pg1/")) == 8
    for gateway in replicas:
        report = {row["key"]: row for row in gateway.local("/usage?by=model&since=1h")["rows"]}
        assert report["openrouter:pg1/chunks-2"]["requests"] == 6
        assert report["openrouter:pg1/fail-500"]["failed_attempts"] == 2
        health = gateway.health()
        assert health["status"] == "ok" and health["usage_db"] == team_db.replace(f"clutch:{PASSWORD}", "***")


def test_xx_usage_reads_the_team_database_and_says_what_it_needs_for_a_masked_url(replicas, team_db, tmp_path):
    env = xx_env(tmp_path, COLUMNS="100")
    report = json.loads(run_xx(env, "usage", "--by", "model", "--since", "1h", "--json", "--db", team_db).stdout)
    assert report["database"] == replicas[0].health()["usage_db"] and PASSWORD not in json.dumps(report)
    assert {row["key"]: row["requests"] for row in report["rows"]}["openrouter:pg1/chunks-2"] == 6
    masked = run_xx(env, "usage", "--db", replicas[0].health()["usage_db"])
    assert masked.returncode != 0 and "never shows its password" in masked.stderr


def until_status(gateway, status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while (health := gateway.health())["status"] != status and time.monotonic() < deadline:
        time.sleep(0.05)  # a poll of /health: the writer's retry is the event waited for
    return health


def test_postgres_stopped_for_30_s_under_load_loses_no_row_and_doubles_none(replicas, team_db, postgres, fake):
    """Four clients send requests over both replicas without pause; PostgreSQL stops once 10 are
    answered and starts again 30 s later. Every request is answered while it is away, both replicas
    say `degraded` with rows spooled, and once it is back every request has exactly its one row."""
    answered: list[int] = []
    lock = threading.Condition()
    stop = threading.Event()

    def client(k: int) -> None:
        n = 0
        while not stop.is_set():
            number = k * 10_000 + n
            ask(replicas[number % 2], "pg2/chunks-2", number)
            with lock:
                answered.append(number)
                lock.notify_all()
            n += 1

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        clients = [pool.submit(client, k) for k in range(4)]
        try:
            with lock:
                assert lock.wait_for(lambda: len(answered) >= 10, timeout=60)
            postgres.stop()
            try:
                stopped_at = time.monotonic()
                for gateway in replicas:
                    health = until_status(gateway, "degraded")
                    assert any("usage rows spooled" in p for p in health["problems"]), health["problems"]
                time.sleep(max(0.0, 30 - (time.monotonic() - stopped_at)))  # the outage the issue asks for
                during = len(answered)
            finally:
                postgres.start()
            for gateway in replicas:
                assert until_status(gateway, "ok")["status"] == "ok"
        finally:
            stop.set()
            for future in clients:
                future.result(timeout=60)
    for gateway in replicas:
        gateway.local("/usage")  # flushes the requests answered after the replay
    found = rows_in(team_db, "pg2/")
    assert len(answered) > during > 10
    # every request the provider was sent (the gateway names its flow upstream) has its one row
    sent = [call["headers"]["x-clutch-flow"] for call in calls(fake, "pg2/")]
    assert len(sent) == len(answered) and sorted(request_id for request_id, *_ in found) == sorted(sent)


def test_a_replica_killed_at_once_after_its_answers_loses_none_of_their_rows(tmp_path, fake, pki, postgres):
    """SIGKILL right after the last of 12 answers (half of them streamed) arrived: rows still waiting
    for the writer thread would be gone with the process, but each was appended to the spool before it
    was queued; the replica's next start writes them."""
    url = database(postgres, "kill9")
    workdir = tmp_path / "replica"
    workdir.mkdir()
    gateway = start(workdir, fake, pki, RULES, clutch_usage_db=url)
    try:
        for n in range(12):
            client = chat(gateway, session=f"kill-{n}")
            if n % 2:
                stream = client.chat.completions.create(model="pg3/chunks-2", stream=True,
                                                        messages=[{"role": "user", "content": f"kill {n}"}])
                assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == \
                    "pong from the fake upstream"
            else:
                ask(gateway, "pg3/chunks-2", n)
        gateway.process.kill()  # no drain, no `done`: what the OOM killer does
        gateway.process.wait(10)
    finally:
        gateway.stop()
    again = start(workdir, fake, pki, RULES, clutch_usage_db=url)
    try:
        again.local("/usage")  # flushes: the spool it found is written first
        found = rows_in(url, "pg3/")
        assert len(found) == 12 and len({request_id for request_id, *_ in found}) == 12
    finally:
        again.stop()
