"""The usage store on PostgreSQL, for a team gateway: `clutch_usage_db=postgresql://...`.

Pure logic, no mitmproxy. Same rows, same reports (reports.py) as the SQLite store; what differs:

- Several replicas write to one database. A row's key is (request_id, attempt): request ids are
  mitmproxy's flow ids (UUIDs), unique across replicas, and every insert is ON CONFLICT DO NOTHING, so
  a batch written twice (the spool replayed after a commit whose answer was lost) is one batch.
- The schema is versioned in the table `clutch_schema`; each entry of MIGRATIONS is applied in one
  transaction under an advisory lock, so two replicas starting together migrate once. A database of a
  newer Clutch is refused.
- The server can go away. Every failure to reach it is `UsageStoreUnreachable`: the writer spools the
  rows (spool.py) and replays them when it answers again; a report says the database cannot be read.
  Connections are made on first use and made again after a failure, each within CONNECT_TIMEOUT_S, and
  a statement runs at most STATEMENT_TIMEOUT_MS on the server.
- The URL's password is the user's secret: the log, errors and /health name the database by
  config/server_urls.py's `without_secrets`.

psycopg 3 is imported on first use, so a gateway on SQLite never loads it.
"""

from __future__ import annotations

import contextlib
import decimal
import threading
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from addons.accounting.reports import (
    ATTEMPT_COLUMNS,
    PROBE_COLUMNS,
    RANKING_COLUMNS,
    UsageReads,
    UsageStoreError,
    as_python,
    row_values,
)
from addons.config.server_urls import without_secrets

SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 15_000
_MIGRATION_LOCK = 0x636C7574636801  # pg_advisory_xact_lock key: "clutch" + 1, the usage schema

MIGRATIONS: tuple[str, ...] = (
    # 1: attempts, probes and rankings, as in the SQLite store at its version 3
    """
    CREATE TABLE attempts (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        day TEXT NOT NULL,
        request_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        launch TEXT,
        session TEXT,
        dialect TEXT,
        stream SMALLINT,
        requested_model TEXT,
        provider TEXT,
        model TEXT,
        rule TEXT,
        attempt INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        status INTEGER,
        error_class TEXT,
        served SMALLINT NOT NULL DEFAULT 0,
        fallback SMALLINT NOT NULL DEFAULT 0,
        input_tokens BIGINT,
        output_tokens BIGINT,
        cached_tokens BIGINT,
        cache_write_tokens BIGINT,
        reasoning_tokens BIGINT,
        tokens_estimated SMALLINT NOT NULL DEFAULT 0,
        cost_usd DOUBLE PRECISION,
        cost_source TEXT,
        ttft_ms DOUBLE PRECISION,
        duration_ms DOUBLE PRECISION,
        tokens_saved BIGINT,
        cache_saved_usd DOUBLE PRECISION,
        CONSTRAINT attempts_once UNIQUE (request_id, attempt)
    );
    CREATE INDEX attempts_by_time ON attempts (ts);
    CREATE INDEX attempts_by_day ON attempts (day, agent, provider);
    CREATE TABLE probes (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        model TEXT NOT NULL,
        ok SMALLINT NOT NULL,
        status INTEGER,
        error TEXT,
        ttft_ms DOUBLE PRECISION,
        tokens_per_s DOUBLE PRECISION,
        output_tokens BIGINT
    );
    CREATE INDEX probes_by_model ON probes (model, ts);
    CREATE TABLE rankings (
        rank INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        free SMALLINT NOT NULL,
        score DOUBLE PRECISION NOT NULL,
        why TEXT,
        context_length BIGINT,
        tools SMALLINT,
        prompt_price DOUBLE PRECISION,
        completion_price DOUBLE PRECISION,
        success_rate DOUBLE PRECISION,
        ttft_ms DOUBLE PRECISION,
        tokens_per_s DOUBLE PRECISION,
        computed_at DOUBLE PRECISION NOT NULL
    )
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class UsageStoreUnreachable(UsageStoreError):
    """The database did not answer (refused, down, timed out, or its connection broke): worth retrying."""


def is_postgres_url(text: str) -> bool:
    return text.split("://", 1)[0].lower() in SCHEMES and "://" in text


def check_url(url: str) -> None:
    """ValueError (without the password) unless `url` is a PostgreSQL URL libpq can read."""
    from psycopg import conninfo

    try:
        conninfo.conninfo_to_dict(url)
        urlsplit(url).port  # noqa: B018 - a bad port raises here, not only at connect time
    except Exception:
        raise ValueError(f"{without_secrets(url)} is not a PostgreSQL URL that can be used "
                         f"(postgresql://user:password@host:port/database)") from None


class PostgresStore(UsageReads):
    """Thread-safe: the writer's connection and the readers' are separate, each behind its own lock."""

    def __init__(self, url: str):
        self.url = url
        self.name = without_secrets(url)
        self._locks = {"write": threading.Lock(), "read": threading.Lock()}
        self._connections: dict[str, Any] = {}
        self._migrated = False

    def __repr__(self) -> str:
        return f"PostgresStore({self.name})"

    @property
    def version(self) -> int:
        found = self._dicts("SELECT max(version) AS version FROM clutch_schema")
        return int(found[0]["version"] or 0)

    def connect(self) -> None:
        """Reach the server and bring its schema up to date now (else on the first write or read)."""
        with self._using("write"):
            pass

    def close(self) -> None:
        for kind, lock in self._locks.items():
            with lock:
                connection = self._connections.pop(kind, None)
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.close()

    # ------------------------------------------------------------ connections

    @contextlib.contextmanager
    def _using(self, kind: str) -> Iterator[Any]:
        import psycopg

        with self._locks[kind]:
            try:
                connection = self._connections.get(kind)
                if connection is None or connection.closed or connection.broken:
                    connection = self._connections[kind] = self._open(psycopg)
                yield connection
            except psycopg.OperationalError as e:
                self._drop(kind)
                raise UsageStoreUnreachable(f"the usage database {self.name} cannot be reached: "
                                            f"{_first_line(e)}") from None
            except psycopg.Error as e:
                if (connection := self._connections.get(kind)) is not None and connection.broken:
                    self._drop(kind)
                    raise UsageStoreUnreachable(f"the usage database {self.name} cannot be reached: "
                                                f"{_first_line(e)}") from None
                raise UsageStoreError(f"the usage database {self.name} refused: {_first_line(e)}") from None

    def _open(self, psycopg: Any) -> Any:
        connection = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                     application_name="clutch",
                                     options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
        if not self._migrated:
            try:
                self._migrate(connection)
            except BaseException:
                connection.close()
                raise
            self._migrated = True
        return connection

    def _drop(self, kind: str) -> None:
        connection = self._connections.pop(kind, None)
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def _migrate(self, connection: Any) -> None:
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            connection.execute("CREATE TABLE IF NOT EXISTS clutch_schema (version INTEGER NOT NULL)")
            version = connection.execute("SELECT coalesce(max(version), 0) FROM clutch_schema").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise UsageStoreError(f"the usage database {self.name} has schema version {version}, newer "
                                      f"than this Clutch's {SCHEMA_VERSION}: use the newer Clutch")
            for number in range(version, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[number]):
                    connection.execute(statement)
                connection.execute("INSERT INTO clutch_schema (version) VALUES (%s)", (number + 1,))

    # ------------------------------------------------------------ writing

    def add(self, rows: Iterable[dict[str, Any]]) -> int:
        """Write attempt rows in one transaction; a row already there (same request and attempt) is
        skipped. Returns how many rows were given."""
        values = [row_values(row, ATTEMPT_COLUMNS) for row in rows]
        if not values:
            return 0
        sql = (f"INSERT INTO attempts ({', '.join(ATTEMPT_COLUMNS)}) "
               f"VALUES ({', '.join(['%s'] * len(ATTEMPT_COLUMNS))}) "
               f"ON CONFLICT ON CONSTRAINT attempts_once DO NOTHING")
        with self._using("write") as connection, connection.transaction(), connection.cursor() as cursor:
            cursor.executemany(sql, values)
        return len(values)

    def add_probes(self, probes: Iterable[dict[str, Any]]) -> None:
        values = [row_values(probe, PROBE_COLUMNS) for probe in probes]
        sql = f"INSERT INTO probes ({', '.join(PROBE_COLUMNS)}) VALUES ({', '.join(['%s'] * len(PROBE_COLUMNS))})"
        with self._using("write") as connection, connection.transaction(), connection.cursor() as cursor:
            cursor.executemany(sql, values)

    def save_rankings(self, rankings: Iterable[dict[str, Any]], computed_at: float) -> None:
        values = [row_values({**ranking, "computed_at": computed_at}, RANKING_COLUMNS) for ranking in rankings]
        sql = (f"INSERT INTO rankings ({', '.join(RANKING_COLUMNS)}) "
               f"VALUES ({', '.join(['%s'] * len(RANKING_COLUMNS))})")
        with self._using("write") as connection, connection.transaction(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM rankings")
            cursor.executemany(sql, values)

    # ------------------------------------------------------------ reading (reports.py)

    def data_version(self) -> int:
        """Changes when the ranking was saved again (what the rankings book reloads on)."""
        found = self._dicts("SELECT count(*) AS n, coalesce(max(computed_at), 0) AS at FROM rankings")[0]
        return hash((found["n"], found["at"]))

    def _dicts(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        with self._using("read") as connection, connection.cursor() as cursor:
            cursor.execute(sql.replace("?", "%s"), params)
            names = [d.name for d in cursor.description]
            found = cursor.fetchall()
        return [{name: as_python(name, _plain(value)) for name, value in zip(names, row, strict=True)}
                for row in found]

    def _bucket(self, column: str, bucket_s: int) -> str:
        return f"CAST(floor({column} / {int(bucket_s)}) AS BIGINT) * {int(bucket_s)}"


def _plain(value: Any) -> Any:
    """PostgreSQL sums BIGINTs as NUMERIC: give them back as the int (or float) they are."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
