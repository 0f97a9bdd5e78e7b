"""The usage store: one SQLite row per upstream attempt, and the model scan's probes and rankings.

Pure logic, no mitmproxy: the Usage addon writes rows from a thread of its own, the reports (`xx
usage`, the gateway's /usage endpoints, the dashboard) and the model scan read them. The reads are
reports.py's, shared with the team gateway's PostgreSQL store (postgres.py).

Why SQLite: it is in the standard library, one file, safe under concurrent readers and one writer in
WAL mode, and survives a crash of the gateway (a transaction is either in the file or not). The
schema is versioned in `PRAGMA user_version`; each entry of MIGRATIONS brings a database one version
forward, in one transaction, so an old file is upgraded in place and keeps its rows. A file made by a
newer Clutch is refused rather than guessed at.

What a row holds is accounting only: who (agent, launch code, session), what was asked and routed,
the outcome, tokens, cost and timings. Never prompt text, headers or keys; `add` keeps only the
columns of reports.ATTEMPT_COLUMNS, so a caller cannot add one by mistake.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from addons.accounting.reports import (
    ATTEMPT_COLUMNS,
    PROBE_COLUMNS,
    RANKING_COLUMNS,
    UsageReads,
    UsageStoreError,
    as_python,
    row_values,
)

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
    # 4: the team gateway's user of the request (postgres.py has the users; a file has the column only)
    """
    ALTER TABLE attempts ADD COLUMN user_name TEXT;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class UsageStore(UsageReads):
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.name = str(self.path)  # what the log and /health call it (postgres.py: the URL without password)
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
                for statement in statements(MIGRATIONS[number]):
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
        values = [row_values(row, ATTEMPT_COLUMNS) for row in rows]
        if not values:
            return 0
        sql = f"INSERT INTO attempts ({', '.join(ATTEMPT_COLUMNS)}) VALUES ({', '.join('?' * len(ATTEMPT_COLUMNS))})"
        with self._lock, self._transaction():
            self._db.executemany(sql, values)
        return len(values)

    def add_probes(self, probes: Iterable[dict[str, Any]]) -> None:
        values = [row_values(probe, PROBE_COLUMNS) for probe in probes]
        sql = f"INSERT INTO probes ({', '.join(PROBE_COLUMNS)}) VALUES ({', '.join('?' * len(PROBE_COLUMNS))})"
        with self._lock, self._transaction():
            self._db.executemany(sql, values)

    def save_rankings(self, rankings: Iterable[dict[str, Any]], computed_at: float) -> None:
        values = [row_values({**ranking, "computed_at": computed_at}, RANKING_COLUMNS) for ranking in rankings]
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

    # ------------------------------------------------------------ reading (reports.py)

    def data_version(self) -> int:
        """Changes whenever another connection committed (cheap: for reloading rankings)."""
        with self._lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0]

    def _dicts(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            cursor = self._db.execute(sql, params)
            names = [d[0] for d in cursor.description]
            found = cursor.fetchall()
        return [{name: as_python(name, value) for name, value in zip(names, row, strict=True)} for row in found]

    def _bucket(self, column: str, bucket_s: int) -> str:
        return f"CAST({column} / {int(bucket_s)} AS INTEGER) * {int(bucket_s)}"


def statements(script: str) -> list[str]:
    """A migration's statements (PostgreSQL's migrations are split the same way)."""
    return [part.strip() for part in script.split(";") if part.strip()]
