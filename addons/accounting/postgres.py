"""The usage store on PostgreSQL, for a team gateway: `clutch_usage_db=postgresql://...`.

Pure logic, no mitmproxy. Same rows, same reports (reports.py) as the SQLite store; what differs:

- Several replicas write to one database. A row's key is (request_id, attempt): request ids are
  mitmproxy's flow ids (UUIDs), unique across replicas, and every insert is ON CONFLICT DO NOTHING, so
  a batch written twice (the spool replayed after a commit whose answer was lost) is one batch.
- The schema is versioned in the table `clutch_schema`; each entry of MIGRATIONS is applied in one
  transaction under an advisory lock, so two replicas starting together migrate once. A database of a
  newer Clutch is refused.
- The server can go away, or refuse to take rows for a while (a standby after a failover is read-only,
  a role lacks a right, a table is missing, the schema is newer): each is `UsageStoreUnavailable`, and
  the rows wait in the spool (spool.py) until it takes them. Only a row the server refuses for its
  content (SQLSTATE classes 22 and 23) is `UsageRowRefused`, which costs that row alone (writer.py).
- Nothing waits without a bound: a connection is made within CONNECT_TIMEOUT_S, a statement runs at
  most STATEMENT_TIMEOUT_MS on the server, and a watchdog shuts the socket of a call that has not
  answered in CALL_TIMEOUT_S (a host that keeps the connection open and never answers).
- Only the writer's connection creates and migrates the schema: a reader (`xx usage` with a role
  that may only SELECT, a report on a standby) never tries to.
- The URL's password is the user's secret: the log, errors and /health name the database by
  config/server_urls.py's `without_secrets`.

psycopg 3 is imported on first use, so a gateway on SQLite never loads it.
"""

from __future__ import annotations

import contextlib
import decimal
import hashlib
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from addons.accounting.postgres_schema import MIGRATIONS, SCHEMA_VERSION
from addons.accounting.reports import (
    ATTEMPT_COLUMNS,
    PROBE_COLUMNS,
    RANKING_COLUMNS,
    UsageReads,
    UsageStoreError,
    as_python,
    row_values,
)
from addons.accounting.store import statements
from addons.config.server_urls import without_secrets

SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 15_000
CALL_TIMEOUT_S = 20.0  # past the server's own statement timeout: only a host that never answers meets it
ROW_ERRORS = ("22", "23")  # SQLSTATE classes of a row refused for what it holds (data, constraint)
_MIGRATION_LOCK = 0x636C7574636801  # pg_advisory_xact_lock key: "clutch" + 1, the usage schema



class UsageStoreUnavailable(UsageStoreError):
    """The database cannot take rows now (down, refused, timed out, a broken connection, read-only, a
    right or a table missing, a newer schema): the rows wait and the call is tried again later."""


class UsageRowRefused(UsageStoreError):
    """The database refused a row for what it holds: trying it again will not help."""


def is_postgres_url(text: str) -> bool:
    return text.split("://", 1)[0].lower() in SCHEMES and "://" in text


def check_url(url: str) -> None:
    """ValueError (without the password) unless `url` is a PostgreSQL URL libpq can read."""
    from psycopg import conninfo

    try:
        conninfo.conninfo_to_dict(url)
    except Exception:
        raise ValueError(f"{without_secrets(url)} is not a PostgreSQL URL that can be used "
                         f"(postgresql://user:password@host:port/database)") from None


def spool_key(url: str) -> str:
    """A short name for the database `url` leads to (host, port, database, user; no password): the
    spool's rows are for it alone (spool.py)."""
    from psycopg import conninfo

    given = conninfo.conninfo_to_dict(url)
    where = "|".join(str(given.get(name) or "") for name in ("host", "hostaddr", "port", "dbname", "user"))
    return hashlib.sha256(where.encode()).hexdigest()[:10]


def connect_options(url: str) -> dict[str, Any]:
    """What Clutch adds to the URL's own settings, never in their place: a connect timeout, the
    application name, and a statement timeout added to any `options` it has."""
    from psycopg import conninfo

    given = conninfo.conninfo_to_dict(url)
    added: dict[str, Any] = {}
    if "connect_timeout" not in given:
        added["connect_timeout"] = CONNECT_TIMEOUT_S
    if "application_name" not in given:
        added["application_name"] = "clutch"
    options = str(given.get("options") or "")
    if "statement_timeout" not in options:
        added["options"] = f"{options} -c statement_timeout={STATEMENT_TIMEOUT_MS}".strip()
    return added


class PostgresStore(UsageReads):
    """Thread-safe: the writer's connection and the readers' are separate, each behind its own lock."""

    remote = True  # reads cross the network: callers on the event loop read it from a thread

    def __init__(self, url: str):
        self.url = url
        self.name = without_secrets(url)
        # the writer's, the reports', and the token directory's (credentials.py): a long report never
        # holds up a token check
        self._locks = {"write": threading.Lock(), "read": threading.Lock(), "tokens": threading.Lock()}
        self._connections: dict[str, Any] = {}
        self._migrated = False
        self._closed = False

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
        """Close the connections; one still in a call (a writer that did not stop in time) has its
        socket shut, so its thread gets an error instead of this call waiting for it. A closed store
        opens no new connection."""
        self._closed = True
        for kind, lock in self._locks.items():
            if lock.acquire(timeout=1.0):
                try:
                    self._drop(kind)
                finally:
                    lock.release()
            else:
                self._abort(kind)

    # ------------------------------------------------------------ connections

    @contextlib.contextmanager
    def _using(self, kind: str) -> Iterator[Any]:
        import psycopg

        with self._locks[kind]:
            watchdog = threading.Timer(CALL_TIMEOUT_S, self._abort, (kind,))
            watchdog.daemon = True
            try:
                connection = self._connections.get(kind)
                if connection is None or connection.closed or connection.broken:
                    if self._closed:
                        raise UsageStoreUnavailable(f"the usage database {self.name} was closed")
                    connection = self._connections[kind] = self._open(psycopg, migrate=kind == "write")
                watchdog.start()
                yield connection
            except psycopg.Error as e:
                if isinstance(e, psycopg.OperationalError) or _broken(self._connections.get(kind)):
                    self._drop(kind)
                    raise UsageStoreUnavailable(f"the usage database {self.name} cannot be reached: "
                                                f"{_first_line(e)}") from None
                if (e.sqlstate or "")[:2] in ROW_ERRORS:
                    raise UsageRowRefused(f"the usage database {self.name} refused a row: {_first_line(e)}") from None
                raise UsageStoreUnavailable(f"the usage database {self.name} refused: {_first_line(e)}") from None
            finally:
                watchdog.cancel()

    def _open(self, psycopg: Any, migrate: bool) -> Any:
        connection = psycopg.connect(self.url, autocommit=True, **connect_options(self.url))
        if migrate and not self._migrated:
            try:
                self._migrate(connection)
            except BaseException:
                connection.close()
                raise
            self._migrated = True
        return connection

    def _abort(self, kind: str) -> None:
        """Shut the socket of a call that has not answered (from the watchdog's thread, or `close`): the
        waiting thread gets an error, and the connection is made again on the next call."""
        connection = self._connections.get(kind)
        if connection is None or connection.closed:
            return
        with contextlib.suppress(OSError, ValueError, Exception):
            fd = connection.pgconn.socket
            with socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)

    def _drop(self, kind: str) -> None:
        connection = self._connections.pop(kind, None)
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def _migrate(self, connection: Any) -> None:
        """Bring the schema to SCHEMA_VERSION. Up to date: one read and no DDL, so a role that may only
        write rows (not create tables) is enough once the schema exists."""
        if self._version(connection) == SCHEMA_VERSION:
            return
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            connection.execute("CREATE TABLE IF NOT EXISTS clutch_schema (version INTEGER NOT NULL)")
            version = self._version(connection)
            for number in range(version, SCHEMA_VERSION):
                for statement in statements(MIGRATIONS[number]):
                    connection.execute(statement)
                connection.execute("INSERT INTO clutch_schema (version) VALUES (%s)", (number + 1,))

    def _version(self, connection: Any) -> int:
        """The schema's version (0: none yet); a newer one than this Clutch's is refused."""
        if connection.execute("SELECT to_regclass('clutch_schema')").fetchone()[0] is None:
            return 0
        version = connection.execute("SELECT coalesce(max(version), 0) FROM clutch_schema").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise UsageStoreUnavailable(f"the usage database {self.name} has schema version {version}, newer "
                                        f"than this Clutch's {SCHEMA_VERSION}: use the newer Clutch")
        return version

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

    # ------------------------------------------------------------ users (clutch users; credentials)

    def add_user(self, name: str, token_sha256: str, budget_usd_day: float | None, now: float) -> None:
        """A new user; UsageStoreError when the name is taken (a revoked name cannot be reused: its
        rows keep meaning that user)."""
        with self._using("write") as connection:
            found = connection.execute(
                "INSERT INTO users (name, token_sha256, budget_usd_day, created_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING RETURNING name", (name, token_sha256, budget_usd_day, now)).fetchone()
        if found is None:
            raise UsageStoreError(f"a user named {name!r} exists already in {self.name}")

    def revoke_user(self, name: str, now: float) -> bool:
        """Its token stops working (at each replica's next refresh); its rows stay. False: no such user."""
        with self._using("write") as connection:
            found = connection.execute("UPDATE users SET revoked_at = %s WHERE name = %s AND revoked_at IS NULL "
                                       "RETURNING name", (now, name)).fetchone()
        return found is not None

    def set_budget(self, name: str, budget_usd_day: float | None) -> bool:
        """A user's daily budget (None: none); every replica applies it at its next read of the users.
        False: no such user with a working token."""
        with self._using("write") as connection:
            found = connection.execute("UPDATE users SET budget_usd_day = %s WHERE name = %s AND revoked_at IS NULL "
                                       "RETURNING name", (budget_usd_day, name)).fetchone()
        return found is not None

    def users(self) -> list[dict[str, Any]]:
        """Every user, without the token's hash."""
        return self._dicts("SELECT name, budget_usd_day, created_at, revoked_at FROM users ORDER BY name")

    def token_directory(self) -> dict[str, dict[str, Any]]:
        """The tokens that work now: SHA-256 -> the user's name and daily budget."""
        rows = self._dicts("SELECT token_sha256, name, budget_usd_day FROM users WHERE revoked_at IS NULL",
                           kind="tokens")
        return {row["token_sha256"]: {"name": row["name"], "budget_usd_day": row["budget_usd_day"]} for row in rows}

    # ------------------------------------------------------------ reading (reports.py)

    def data_version(self) -> int:
        """Changes when the ranking was saved again (what the rankings book reloads on)."""
        found = self._dicts("SELECT count(*) AS n, coalesce(max(computed_at), 0) AS at FROM rankings")[0]
        return hash((found["n"], found["at"]))

    def _dicts(self, sql: str, params: tuple = (), kind: str = "read") -> list[dict[str, Any]]:
        with self._using(kind) as connection, connection.cursor() as cursor:
            cursor.execute(sql.replace("?", "%s"), params)
            names = [d.name for d in cursor.description]
            found = cursor.fetchall()
        return [{name: as_python(name, _plain(value)) for name, value in zip(names, row, strict=True)}
                for row in found]

    def _bucket(self, column: str, bucket_s: int) -> str:
        return f"CAST(floor({column} / {int(bucket_s)}) AS BIGINT) * {int(bucket_s)}"


def _broken(connection: Any) -> bool:
    return connection is not None and (connection.closed or connection.broken)


def _plain(value: Any) -> Any:
    """PostgreSQL sums BIGINTs as NUMERIC: give them back as the int (or float) they are."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
