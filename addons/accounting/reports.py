"""What a usage row holds, and the reads every usage store answers: SQLite's (store.py) and
PostgreSQL's (postgres.py) run the same SQL, written in the part of the language both speak.

Pure logic, no mitmproxy. A store gives `_dicts(sql, params)` (placeholders are `?`) and the SQL of a
time bucket; this module does the rest, so `xx usage`, the gateway's /usage, the dashboard and the
budgets say the same thing whichever database holds the rows. Rounding and medians are done here in
Python, not in SQL, for the same reason: both databases round and order floats in their own ways.
"""

from __future__ import annotations

import calendar
import statistics
import time
from typing import Any

ATTEMPT_COLUMNS = (
    "ts", "day", "request_id", "agent", "launch", "session", "dialect", "stream", "requested_model", "provider",
    "model", "rule", "attempt", "outcome", "status", "error_class", "served", "fallback", "input_tokens",
    "output_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens", "tokens_estimated", "cost_usd",
    "cost_source", "ttft_ms", "duration_ms", "tokens_saved", "cache_saved_usd", "user_name",
)
OUTCOMES = ("success", "failed", "soft_failure", "broken", "aborted", "refused")
PROBE_COLUMNS = ("ts", "model", "ok", "status", "error", "ttft_ms", "tokens_per_s", "output_tokens")
RANKING_COLUMNS = ("rank", "model", "free", "score", "why", "context_length", "tools", "prompt_price",
                   "completion_price", "success_rate", "ttft_ms", "tokens_per_s", "computed_at")
FLAGS = {"served", "fallback", "tokens_estimated", "ok", "free"}  # NOT NULL: absent is false
BOOLEAN = {"stream", "served", "fallback", "tokens_estimated", "ok", "free", "tools"}

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
    "user": "coalesce(user_name, '(no user)')",  # a team gateway's user (clutch users add)
}
_MONEY = ("cost_usd", "cache_saved_usd")
SPENT_BY = {"agent": "agent", "provider": "provider", "user": "user_name"}  # what a budget can limit
# When an attempt ended, in SQL; ended_at() computes the same in Python (both add doubles)
ENDED = "(ts + coalesce(duration_ms, 0) / 1000.0)"


class UsageStoreError(Exception):
    """The usage database cannot be used; the message names it (a file, or a URL without its password)."""


def ended_at(row: dict[str, Any]) -> float:
    """When a row's attempt ended, as ENDED computes it in SQL."""
    return float(row.get("ts") or 0.0) + float(row.get("duration_ms") or 0) / 1000.0


def day_of(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def row_values(row: dict[str, Any], columns: tuple[str, ...]) -> tuple:
    """A row's values in `columns` order; flags as 0/1 (both databases store them as integers)."""
    values = []
    for column in columns:
        value = row.get(column)
        if column in FLAGS:
            value = int(bool(value))
        elif column in BOOLEAN and value is not None:
            value = int(bool(value))
        values.append(value)
    return tuple(values)


def _when(condition: str) -> str:
    """1 where `condition` holds, else 0: summed, it counts (SQLite sums booleans, PostgreSQL does not)."""
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


class UsageReads:
    """The reports, over the `attempts`, `probes` and `rankings` tables of either database."""

    def _dicts(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _bucket(self, column: str, bucket_s: int) -> str:
        """SQL for the start of the `bucket_s`-second bucket that `column` (epoch seconds) falls in."""
        raise NotImplementedError

    def rows(self, since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
        """Every attempt row in the window, oldest first (for exports and tests)."""
        where, params = _window(since, until)
        return self._dicts(f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM attempts {where} ORDER BY ts, id", params)

    def count(self) -> int:
        return int(self._dicts("SELECT count(*) AS n FROM attempts")[0]["n"])

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
                   sum({_when("w.outcome != 'refused'")}) AS attempts,
                   count(DISTINCT CASE WHEN o.served = 0 THEN w.request_id END) AS failures,
                   count(DISTINCT CASE WHEN o.fell_back = 1 THEN w.request_id END) AS fallbacks,
                   sum({_when("w.outcome IN ('failed', 'broken')")}) AS failed_attempts,
                   sum({_when("w.outcome = 'soft_failure'")}) AS soft_failures,
                   coalesce(sum(w.input_tokens), 0) AS input_tokens,
                   coalesce(sum(w.output_tokens), 0) AS output_tokens,
                   coalesce(sum(w.cached_tokens), 0) AS cached_tokens,
                   coalesce(sum(w.cache_write_tokens), 0) AS cache_write_tokens,
                   coalesce(sum(w.reasoning_tokens), 0) AS reasoning_tokens,
                   coalesce(sum(w.tokens_saved), 0) AS tokens_saved,
                   coalesce(sum(w.cost_usd), 0) AS cost_usd,
                   coalesce(sum(w.cache_saved_usd), 0) AS cache_saved_usd,
                   sum(w.tokens_estimated) AS estimated,
                   avg(w.duration_ms) AS duration_ms_avg,
                   min(w.ts) AS first_ts, max(w.ts) AS last_ts
            FROM picked AS w JOIN outcome AS o USING (request_id)
            GROUP BY {key}""", params)
        medians = self._medians(key, "ttft_ms", where, params)
        for row in rows:
            _round_money(row)
            row["ttft_ms_p50"] = medians.get(row["key"])
            if row["duration_ms_avg"] is not None:
                row["duration_ms_avg"] = round(float(row["duration_ms_avg"]), 1)
        rows.sort(key=lambda row: (-row["cost_usd"], -row["requests"], _sortable(row["key"])))
        return rows

    def timeline(self, bucket_s: int, by: str | None = None, since: float | None = None,
                 until: float | None = None) -> list[dict[str, Any]]:
        bucket_s = max(1, int(bucket_s))
        key = _group(by) if by else "''"
        where, params = _window(since, until)
        points = self._dicts(f"""
            WITH picked AS (SELECT * FROM attempts {where}),
                 outcome AS (SELECT request_id, max(served) AS served FROM picked GROUP BY request_id)
            SELECT {self._bucket("w.ts", bucket_s)} AS t, {key} AS key,
                   count(DISTINCT w.request_id) AS requests,
                   coalesce(sum(w.input_tokens), 0) AS input_tokens,
                   coalesce(sum(w.output_tokens), 0) AS output_tokens,
                   coalesce(sum(w.cost_usd), 0) AS cost_usd,
                   count(DISTINCT CASE WHEN o.served = 0 THEN w.request_id END) AS failures
            FROM picked AS w JOIN outcome AS o USING (request_id)
            GROUP BY 1, 2""", params)
        for point in points:
            _round_money(point)
            point["t"] = int(point["t"])
            if not by:
                point["key"] = None
        points.sort(key=lambda point: (point["t"], _sortable(point["key"])))
        return points

    def model_stats(self, since: float) -> dict[str, dict[str, Any]]:
        """How each routed target fared in real use since `since`: the ranking's evidence."""
        where, params = _window(since, None)
        where += " AND outcome NOT IN ('refused', 'aborted')"  # an agent that hung up says nothing of the model
        key = GROUPS["model"]
        rows = self._dicts(f"""
            SELECT {key} AS key, count(*) AS attempts, sum({_when("outcome = 'success'")}) AS successes
            FROM attempts {where} GROUP BY {key}""", params)
        ttft = self._medians(key, "ttft_ms", where, params)
        duration = self._medians(key, "duration_ms", where, params)
        return {row["key"]: {"attempts": row["attempts"], "successes": row["successes"],
                             "success_rate": round(row["successes"] / row["attempts"], 4) if row["attempts"] else None,
                             "ttft_ms_p50": ttft.get(row["key"]), "duration_ms_p50": duration.get(row["key"])}
                for row in rows}

    def spent(self, day: str, by: str, ended_before: float | None = None) -> dict[str, dict[str, Any]]:
        """Tokens and dollars per agent, provider or user on one UTC day (budgets); with `ended_before`,
        only of the attempts that ended before it (the shared spend counters' base, shared_spend.py)."""
        column = SPENT_BY.get(by)
        if column is None:
            raise ValueError(f"spent() groups by {', '.join(SPENT_BY)}, not {by!r}")
        where: str = "day = ?"
        params: tuple = (day,)
        if ended_before is not None:
            where, params = f"day = ? AND {ENDED} < ?", (day, ended_before)
        rows = self._dicts(f"""
            SELECT {column} AS key,
                   coalesce(sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0)), 0) AS tokens,
                   coalesce(sum(cost_usd), 0) AS cost_usd
            FROM attempts WHERE {where} AND {column} IS NOT NULL GROUP BY {column}""", params)
        # rounded as the reports are: the two databases add floats in their own order
        return {row["key"]: {"tokens": int(row["tokens"]), "cost_usd": round(float(row["cost_usd"]), 8)}
                for row in rows}

    def probes(self, since: float) -> list[dict[str, Any]]:
        return self._dicts(f"SELECT {', '.join(PROBE_COLUMNS)} FROM probes WHERE ts >= ? ORDER BY ts, id", (since,))

    def rankings(self) -> list[dict[str, Any]]:
        return self._dicts(f"SELECT {', '.join(RANKING_COLUMNS)} FROM rankings ORDER BY rank")

    def _medians(self, key: str, column: str, where: str, params: tuple) -> dict[Any, float]:
        found = self._dicts(f"SELECT {key} AS grp, {column} AS value FROM attempts {where} "
                            f"AND {column} IS NOT NULL", params)
        values: dict[Any, list[float]] = {}
        for row in found:
            values.setdefault(row["grp"], []).append(float(row["value"]))
        return {group: round(statistics.median(numbers), 1) for group, numbers in values.items()}


def as_python(name: str, value: Any) -> Any:
    """A value read from either database as the reports give it: flags as booleans."""
    return bool(value) if name in BOOLEAN and value is not None else value


def _round_money(row: dict[str, Any]) -> None:
    for name in _MONEY:
        if name in row:
            row[name] = round(float(row[name] or 0), 8)


def _sortable(key: Any) -> tuple[int, str]:
    return (0, "") if key is None else (1, str(key))


def _group(by: str) -> str:
    try:
        return GROUPS[by]
    except KeyError:
        raise ValueError(f"cannot group usage by {by!r}; one of {', '.join(GROUPS)}") from None


def _window(since: float | None, until: float | None) -> tuple[str, tuple]:
    clauses, params = ["1 = 1"], []
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
