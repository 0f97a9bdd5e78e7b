"""The usage store: one SQLite row per upstream attempt, and the model scan's probes and rankings.

Pure logic, no mitmproxy: the Usage addon writes rows from a thread of its own, the reports (`xx
usage`, the gateway's /usage endpoints, the dashboard) and the model scan read them.

Why SQLite: it is in the standard library, one file, safe under concurrent readers and one writer in
WAL mode, and survives a crash of the gateway (a transaction is either in the file or not). The
schema is versioned in `PRAGMA user_version`; each entry of MIGRATIONS brings a database one version
forward, in one transaction, so an old file is upgraded in place and keeps its rows. A file made by a
newer Clutch is refused rather than guessed at.

What a row holds is accounting only: who (agent, launch code, session), what was asked and routed,
the outcome, tokens, cost and timings. Never prompt text, headers or keys; `add` keeps only the
columns below, so a caller cannot add one by mistake.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ATTEMPT_COLUMNS = (
    "ts", "day", "request_id", "agent", "launch", "session", "dialect", "stream", "requested_model", "provider",
    "model", "rule", "attempt", "outcome", "status", "error_class", "served", "fallback", "input_tokens",
    "output_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens", "tokens_estimated", "cost_usd",
    "cost_source", "ttft_ms", "duration_ms", "tokens_saved", "cache_saved_usd",
)
OUTCOMES = ("success", "failed", "soft_failure", "broken", "aborted", "refused")
PROBE_COLUMNS = ("ts", "model", "ok", "status", "error", "ttft_ms", "tokens_per_s", "output_tokens")
RANKING_COLUMNS = ("rank", "model", "free", "score", "why", "context_length", "tools", "prompt_price",
                   "completion_price", "success_rate", "ttft_ms", "tokens_per_s", "computed_at")
_FLAGS = {"served", "fallback", "tokens_estimated", "ok", "free"}  # NOT NULL: absent is false
_BOOLEAN = {"stream", "served", "fallback", "tokens_estimated", "ok", "free", "tools"}

# What `report` and `timeline` can group by, and the SQL that names the group.
GROUPS = {
    "agent": "agent",
    "session": "coalesce(session, '(no session)')",
    "model": "provider || ':' || model",
    "provider": "provider",
    "day": "day",
    "dialect": "dialect",
    "rule": "coalesce(rule, '(none)')",
    "launch": "coalesce(launch, '(no launch code)')",
}

MIGRATIONS: tuple[str, ...] = (
    # 1: the attempts
    """
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        day TEXT NOT NULL,
        request_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        launch TEXT,
        session TEXT,
        dialect TEXT,
        stream INTEGER,
        requested_model TEXT,
        provider TEXT,
        model TEXT,
        rule TEXT,
        attempt INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        status INTEGER,
        error_class TEXT,
        served INTEGER NOT NULL DEFAULT 0,
        fallback INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER,
        output_tokens INTEGER,
        cached_tokens INTEGER,
        cache_write_tokens INTEGER,
        reasoning_tokens INTEGER,
        tokens_estimated INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL,
        cost_source TEXT,
        ttft_ms REAL,
        duration_ms REAL,
        tokens_saved INTEGER
    );
    CREATE INDEX attempts_by_time ON attempts (ts);
    CREATE INDEX attempts_by_day ON attempts (day, agent, provider);
    CREATE INDEX attempts_by_request ON attempts (request_id);
    """,
    # 2: the model scan
    """
    CREATE TABLE probes (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        model TEXT NOT NULL,
        ok INTEGER NOT NULL,
        status INTEGER,
        error TEXT,
        ttft_ms REAL,
        tokens_per_s REAL,
        output_tokens INTEGER
    );
    CREATE INDEX probes_by_model ON probes (model, ts);
    CREATE TABLE rankings (
        rank INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        free INTEGER NOT NULL,
        score REAL NOT NULL,
        why TEXT,
        context_length INTEGER,
        tools INTEGER,
        prompt_price REAL,
        completion_price REAL,
        success_rate REAL,
        ttft_ms REAL,
        tokens_per_s REAL,
        computed_at REAL NOT NULL
    );
    """,
    # 3: what prompt caching saved on an attempt, at catalog prices (accounting/rows.py `priced`)
    """
    ALTER TABLE attempts ADD COLUMN cache_saved_usd REAL;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class UsageStoreError(Exception):
    """The usage database cannot be used; the message names the file."""


def day_of(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


class UsageStore:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()
        folder = self.path.parent
        try:
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = not self.path.exists()
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
            if fresh:  # usage tells what each agent and model costs: the owner's business only
                os.chmod(self.path, 0o600)
        except (OSError, sqlite3.Error) as e:
            raise UsageStoreError(f"cannot open the usage database {self.path}: {e}") from e
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode never corrupts the file; a crash of the gateway loses nothing committed,
            # only a power cut can lose the last transactions
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._migrate()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise UsageStoreError(f"{self.path} is not a usable usage database ({e}); "
                                  f"move it aside and Clutch starts a new one") from e
        except UsageStoreError:
            self._db.close()
            raise

    @property
    def version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        version = self.version
        if version > SCHEMA_VERSION:
            raise UsageStoreError(f"{self.path} has schema version {version}, newer than this Clutch's "
                                  f"{SCHEMA_VERSION}: use the newer Clutch, or move the file aside")
        for number in range(version, SCHEMA_VERSION):
            # executescript would commit on its own; each migration is one transaction with its version bump
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(MIGRATIONS[number]):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number + 1}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ writing

    def add(self, rows: Iterable[dict[str, Any]]) -> int:
        """Write attempt rows in one transaction; unknown keys are dropped. Returns how many were written."""
        values = [_row_values(row, ATTEMPT_COLUMNS) for row in rows]
        if not values:
            return 0
        sql = f"INSERT INTO attempts ({', '.join(ATTEMPT_COLUMNS)}) VALUES ({', '.join('?' * len(ATTEMPT_COLUMNS))})"
        with self._lock, self._transaction():
            self._db.executemany(sql, values)
        return len(values)

    def add_probes(self, probes: Iterable[dict[str, Any]]) -> None:
        values = [_row_values(probe, PROBE_COLUMNS) for probe in probes]
        sql = f"INSERT INTO probes ({', '.join(PROBE_COLUMNS)}) VALUES ({', '.join('?' * len(PROBE_COLUMNS))})"
        with self._lock, self._transaction():
            self._db.executemany(sql, values)

    def save_rankings(self, rankings: Iterable[dict[str, Any]], computed_at: float) -> None:
        values = [_row_values({**ranking, "computed_at": computed_at}, RANKING_COLUMNS) for ranking in rankings]
        sql = f"INSERT INTO rankings ({', '.join(RANKING_COLUMNS)}) VALUES ({', '.join('?' * len(RANKING_COLUMNS))})"
        with self._lock, self._transaction():
            self._db.execute("DELETE FROM rankings")
            self._db.executemany(sql, values)

    @contextlib.contextmanager
    def _transaction(self):
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ------------------------------------------------------------ reading

    def rows(self, since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
        """Every attempt row in the window, oldest first (for exports and tests)."""
        where, params = _window(since, until)
        return self._dicts(f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM attempts {where} ORDER BY ts, id", params)

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM attempts").fetchone()[0]

    def report(self, by: str, since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
        """Usage grouped by `by` (see GROUPS), most expensive first, then by most requests."""
        key = _group(by)
        where, params = _window(since, until)
        rows = self._dicts(f"""
            WITH picked AS (SELECT * FROM attempts {where}),
                 outcome AS (SELECT request_id, max(served) AS served, max(fallback) AS fell_back
                             FROM picked GROUP BY request_id)
            SELECT {key} AS key,
                   count(DISTINCT w.request_id) AS requests,
                   sum(w.outcome != 'refused') AS attempts,
                   count(DISTINCT CASE WHEN o.served = 0 THEN w.request_id END) AS failures,
                   count(DISTINCT CASE WHEN o.fell_back = 1 THEN w.request_id END) AS fallbacks,
                   sum(w.outcome IN ('failed', 'broken')) AS failed_attempts,
                   sum(w.outcome = 'soft_failure') AS soft_failures,
                   coalesce(sum(w.input_tokens), 0) AS input_tokens,
                   coalesce(sum(w.output_tokens), 0) AS output_tokens,
                   coalesce(sum(w.cached_tokens), 0) AS cached_tokens,
                   coalesce(sum(w.cache_write_tokens), 0) AS cache_write_tokens,
                   coalesce(sum(w.reasoning_tokens), 0) AS reasoning_tokens,
                   coalesce(sum(w.tokens_saved), 0) AS tokens_saved,
                   round(coalesce(sum(w.cost_usd), 0), 8) AS cost_usd,
                   round(coalesce(sum(w.cache_saved_usd), 0), 8) AS cache_saved_usd,
                   sum(w.tokens_estimated) AS estimated,
                   avg(w.duration_ms) AS duration_ms_avg,
                   min(w.ts) AS first_ts, max(w.ts) AS last_ts
            FROM picked AS w JOIN outcome AS o USING (request_id)
            GROUP BY key ORDER BY cost_usd DESC, requests DESC, key""", params)
        medians = self._medians(key, "ttft_ms", where, params)
        for row in rows:
            row["ttft_ms_p50"] = medians.get(row["key"])
            if row["duration_ms_avg"] is not None:
                row["duration_ms_avg"] = round(row["duration_ms_avg"], 1)
        return rows

    def timeline(self, bucket_s: int, by: str | None = None, since: float | None = None,
                 until: float | None = None) -> list[dict[str, Any]]:
        bucket_s = max(1, int(bucket_s))
        key = _group(by) if by else "NULL"
        where, params = _window(since, until)
        return self._dicts(f"""
            WITH picked AS (SELECT * FROM attempts {where}),
                 outcome AS (SELECT request_id, max(served) AS served FROM picked GROUP BY request_id)
            SELECT CAST(w.ts / {bucket_s} AS INTEGER) * {bucket_s} AS t, {key} AS key,
                   count(DISTINCT w.request_id) AS requests,
                   coalesce(sum(w.input_tokens), 0) AS input_tokens,
                   coalesce(sum(w.output_tokens), 0) AS output_tokens,
                   round(coalesce(sum(w.cost_usd), 0), 8) AS cost_usd,
                   count(DISTINCT CASE WHEN o.served = 0 THEN w.request_id END) AS failures
            FROM picked AS w JOIN outcome AS o USING (request_id)
            GROUP BY t, key ORDER BY t, key""", params)

    def model_stats(self, since: float) -> dict[str, dict[str, Any]]:
        """How each routed target fared in real use since `since`: the ranking's evidence."""
        where, params = _window(since, None)
        where += " AND outcome NOT IN ('refused', 'aborted')"  # an agent that hung up says nothing of the model
        key = GROUPS["model"]
        rows = self._dicts(f"""
            SELECT {key} AS key, count(*) AS attempts, sum(outcome = 'success') AS successes
            FROM attempts {where} GROUP BY key""", params)
        ttft = self._medians(key, "ttft_ms", where, params)
        duration = self._medians(key, "duration_ms", where, params)
        return {row["key"]: {"attempts": row["attempts"], "successes": row["successes"],
                             "success_rate": round(row["successes"] / row["attempts"], 4) if row["attempts"] else None,
                             "ttft_ms_p50": ttft.get(row["key"]), "duration_ms_p50": duration.get(row["key"])}
                for row in rows}

    def spent(self, day: str, by: str) -> dict[str, dict[str, Any]]:
        """Tokens and dollars per agent or provider on one UTC day (budgets)."""
        if by not in ("agent", "provider"):
            raise ValueError(f"spent() groups by agent or provider, not {by!r}")
        rows = self._dicts(f"""
            SELECT {by} AS key,
                   coalesce(sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0)), 0) AS tokens,
                   coalesce(sum(cost_usd), 0) AS cost_usd
            FROM attempts WHERE day = ? GROUP BY key""", (day,))
        return {row["key"]: {"tokens": row["tokens"], "cost_usd": row["cost_usd"]} for row in rows}

    def probes(self, since: float) -> list[dict[str, Any]]:
        return self._dicts(f"SELECT {', '.join(PROBE_COLUMNS)} FROM probes WHERE ts >= ? ORDER BY ts, id", (since,))

    def rankings(self) -> list[dict[str, Any]]:
        return self._dicts(f"SELECT {', '.join(RANKING_COLUMNS)} FROM rankings ORDER BY rank")

    def data_version(self) -> int:
        """Changes whenever another connection committed (cheap: for reloading rankings)."""
        with self._lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0]

    def _dicts(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            cursor = self._db.execute(sql, params)
            names = [d[0] for d in cursor.description]
            found = cursor.fetchall()
        return [{name: (bool(value) if name in _BOOLEAN and value is not None else value)
                 for name, value in zip(names, row, strict=True)} for row in found]

    def _medians(self, key: str, column: str, where: str, params: tuple) -> dict[Any, float]:
        with self._lock:
            found = self._db.execute(
                f"SELECT {key}, {column} FROM attempts {where} AND {column} IS NOT NULL ORDER BY 1", params).fetchall()
        values: dict[Any, list[float]] = {}
        for group, value in found:
            values.setdefault(group, []).append(value)
        return {group: round(statistics.median(numbers), 1) for group, numbers in values.items()}


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


def _row_values(row: dict[str, Any], columns: tuple[str, ...]) -> tuple:
    values = []
    for column in columns:
        value = row.get(column)
        if column in _FLAGS:
            value = int(bool(value))
        elif column in _BOOLEAN and value is not None:
            value = int(bool(value))
        values.append(value)
    return tuple(values)


def _group(by: str) -> str:
    try:
        return GROUPS[by]
    except KeyError:
        raise ValueError(f"cannot group usage by {by!r}; one of {', '.join(GROUPS)}") from None


def _window(since: float | None, until: float | None) -> tuple[str, tuple]:
    clauses, params = ["1"], []
    if since is not None:
        clauses.append("ts >= ?")
        params.append(since)
    if until is not None:
        clauses.append("ts < ?")
        params.append(until)
    return "WHERE " + " AND ".join(clauses), tuple(params)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str | None, now: float | None = None) -> float | None:
    """A point in time from a query or the command line: epoch seconds ("1764547200"), a span back from
    now ("90m", "24h", "7d"), or a UTC date ("2026-12-01"). None for empty; ValueError names the text."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    now = time.time() if now is None else now
    try:
        return float(text)
    except ValueError:
        pass
    unit = _UNITS.get(text[-1:].lower())
    if unit is not None:
        try:
            return now - float(text[:-1]) * unit
        except ValueError:
            pass
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%d"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give epoch seconds, a span like 24h or 7d, "
                         f"or a date like 2026-12-01") from None
