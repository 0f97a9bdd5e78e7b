"""Prometheus metrics for the gateway's `/metrics`, in the text exposition format 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/), rendered here without prometheus_client.

Pure logic, no mitmproxy. The Usage addon hands every finished request's rows (usage_store.ATTEMPT_COLUMNS)
to `observe_rows`: `observe(row)` per attempt, then `observe_request(rows)`, so requests, fallbacks and
end-to-end latency count once per request and attempts, tokens and spend once per attempt.
`render(breakers, quotas)` adds gauges from the `/resilience` snapshots (addons/fallback/breakers.py and
addons/fallback/quotas.py `snapshot()`).

Metric names start with `clutch_`; label names are the ones LiteLLM's Prometheus metrics use
(https://docs.litellm.ai/docs/proxy/prometheus), so existing dashboards and habits carry over:

    label              LiteLLM meaning                       Clutch value
    agent              end_user (the caller)                 the agent: claude, codex, qwen, ... (AGENT_NAMES)
    requested_model    model sent in the request             the model the agent asked for ("" if none)
    api_provider       the LLM API provider                  the provider of the attempt, from the rules
    model              litellm_model_name (deployment)       the model the attempt was sent to
    fallback_model     model a fallback went to              "provider:model" that served (or last failed)
    exception_status   status of the exception               HTTP status of a failed attempt, "" if none
    exception_class    class of the exception                the attempt's error class (or outcome)
    status_code        status code returned to the client    its class: 2xx, 4xx, 5xx, or "none"
    outcome            -                                     success, failed, soft_failure, broken, aborted
    window             -                                     quota window: minute (rpm) or day (rpd)
    user               user (the key's owner)                a team gateway's user (clutch users), "" if none

No session or request label: their cardinality grows without bound. Every label keeps at most
MAX_LABEL_VALUES distinct values (later ones are counted under "other") of at most MAX_LABEL_CHARS characters,
so a client inventing model names cannot blow up the series count. Gauges from the snapshots are bounded by
the rules and the breakers' window, and are not capped (capping them could produce duplicate series).

Thread-safe: one lock around every update and the rendering (the relay's event loop and a scrape may overlap).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeGuard

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds. LLM answers take from a fraction of a second to many minutes (long agent turns stream for long),
# so the buckets spread roughly geometrically up to 10 minutes; first tokens come within a minute or fail.
REQUEST_LATENCY_BUCKETS: tuple[float, ...] = (0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 90, 120, 180, 300, 600)
TTFT_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 30, 60)

MAX_LABEL_VALUES = 200
MAX_LABEL_CHARS = 200
OTHER = "other"

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}  # like litellm_deployment_state's 0/1/2

_ATTEMPT = ("api_provider", "model")
_USAGE = ("agent", "api_provider", "model", "user")


@dataclasses.dataclass
class _Family:
    name: str
    kind: str  # counter | histogram
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    # counter: labels -> value; histogram: labels -> [per-bucket counts (not cumulative)..., +Inf, sum]
    series: dict[tuple[str, ...], Any] = dataclasses.field(default_factory=dict)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._label_values: dict[str, set[str]] = {}
        self._families: dict[str, _Family] = {}
        add = self._add
        add("clutch_requests_total", "counter", "Requests from agents, by the status class they got back.",
            ("agent", "requested_model", "status_code", "user"))
        add("clutch_failed_requests_total", "counter", "Requests that no attempt served.",
            ("agent", "requested_model", "exception_status", "exception_class", "user"))
        add("clutch_attempts_total", "counter", "Upstream attempts, by outcome.",
            (*_ATTEMPT, "outcome", "exception_status", "exception_class"))
        add("clutch_successful_fallbacks_total", "counter",
            "Requests served by another attempt than the first (a fallback).", ("requested_model", "fallback_model"))
        add("clutch_failed_fallbacks_total", "counter",
            "Requests that fell back and still failed; fallback_model is the last one tried.",
            ("requested_model", "fallback_model"))
        for kind, what in (("input", "Prompt tokens, cached ones included."), ("output", "Generated tokens, "
                           "reasoning included."), ("cached", "Prompt tokens read from a cache."),
                           ("cache_write", "Prompt tokens written to a cache."), ("reasoning", "Reasoning tokens.")):
            add(f"clutch_{kind}_tokens_total", "counter", what, _USAGE)
        add("clutch_estimated_usage_attempts_total", "counter",
            "Attempts whose tokens were estimated because the provider reported none.", _ATTEMPT)
        add("clutch_spend_usd_total", "counter", "Spend in USD (provider-reported or priced from the catalog).",
            _USAGE)
        add("clutch_compression_saved_tokens_total", "counter", "Prompt tokens saved by compression.", ("agent",))
        add("clutch_request_total_latency_seconds", "histogram",
            "End-to-end request latency: first attempt start to last attempt end.", ("agent", "requested_model"),
            REQUEST_LATENCY_BUCKETS)
        add("clutch_llm_api_latency_seconds", "histogram", "Latency of one upstream attempt.", _ATTEMPT,
            REQUEST_LATENCY_BUCKETS)
        add("clutch_llm_api_time_to_first_token_seconds", "histogram", "Time to first token of an upstream attempt.",
            _ATTEMPT, TTFT_BUCKETS)

    # -------------------------------------------------------------- updates

    def observe(self, row: Mapping[str, Any]) -> None:
        """One attempt row. A "refused" row (no upstream attempt was made) counts only in observe_request."""
        if row.get("outcome") == "refused":
            return
        with self._lock:
            target = (self._v("api_provider", row.get("provider")), self._v("model", row.get("model")))
            usage = (self._v("agent", row.get("agent")), *target, self._v("user", row.get("user_name")))
            self._inc("clutch_attempts_total", (*target, self._v("outcome", row.get("outcome")),
                                                *self._exception(row)))
            for kind in ("input", "output", "cached", "cache_write", "reasoning"):
                count = _number(row.get(f"{kind}_tokens"))
                if count:
                    self._inc(f"clutch_{kind}_tokens_total", usage, count)
            if row.get("tokens_estimated"):
                self._inc("clutch_estimated_usage_attempts_total", target)
            cost = _number(row.get("cost_usd"))
            if cost is not None:
                self._inc("clutch_spend_usd_total", usage, cost)
            saved = _number(row.get("tokens_saved"))
            if saved:
                self._inc("clutch_compression_saved_tokens_total", usage[:1], saved)
            duration, ttft = _number(row.get("duration_ms")), _number(row.get("ttft_ms"))
            if duration is not None:
                self._observe("clutch_llm_api_latency_seconds", target, duration / 1000)
            if ttft is not None:
                self._observe("clutch_llm_api_time_to_first_token_seconds", target, ttft / 1000)

    def observe_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """A finished request's rows: each attempt, then the request (the Usage addon's listener)."""
        for row in rows:
            self.observe(row)
        self.observe_request(rows)

    def observe_request(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """All the rows of one finished request (attempt order): the request, its fallback, its latency."""
        if not rows:
            return
        first, last = rows[0], rows[-1]
        served = next((r for r in rows if r.get("served")), None)
        attempts = [r for r in rows if r.get("outcome") != "refused"]
        status = (served or last).get("status")
        status_class = f"{status // 100}xx" if _is_int(status) and 100 <= status < 600 else "none"
        latency = _span_s(rows)
        with self._lock:
            agent = self._v("agent", first.get("agent"))
            requested = self._v("requested_model", first.get("requested_model"))
            user = self._v("user", first.get("user_name"))
            self._inc("clutch_requests_total", (agent, requested, self._v("status_code", status_class), user))
            if served is None:
                self._inc("clutch_failed_requests_total", (agent, requested, *self._exception(last), user))
                if len(attempts) > 1:
                    self._inc("clutch_failed_fallbacks_total", (requested, self._target(attempts[-1])))
            elif served.get("fallback") or (_number(served.get("attempt")) or 0) > 0:
                self._inc("clutch_successful_fallbacks_total", (requested, self._target(served)))
            if latency is not None:
                self._observe("clutch_request_total_latency_seconds", (agent, requested), latency)

    # -------------------------------------------------------------- rendering

    def render(self, breakers: Mapping[str, Any] | None = None, quotas: Mapping[str, Any] | None = None) -> str:
        """The exposition text: every family (HELP and TYPE even when empty), then the snapshot gauges."""
        out: list[str] = []
        with self._lock:
            for family in self._families.values():
                _render_family(out, family)
        _render_gauges(out, _breaker_gauges(breakers or {}) + _quota_gauges(quotas or {}))
        return "\n".join(out) + "\n"

    # -------------------------------------------------------------- internals

    def _add(self, name: str, kind: str, help_text: str, labels: tuple[str, ...],
             buckets: tuple[float, ...] = ()) -> None:
        self._families[name] = _Family(name, kind, help_text, labels, tuple(float(b) for b in buckets))

    def _v(self, label: str, value: Any) -> str:
        """A label value, bounded: at most MAX_LABEL_VALUES distinct ones per label name (caller holds the lock)."""
        text = _label_text(value)
        seen = self._label_values.setdefault(label, set())
        if text in seen:
            return text
        if len(seen) >= MAX_LABEL_VALUES:
            return OTHER
        seen.add(text)
        return text

    def _exception(self, row: Mapping[str, Any]) -> tuple[str, str]:
        if row.get("outcome") == "success":
            return "", ""
        status = row.get("status")
        return (self._v("exception_status", str(status) if _is_int(status) else ""),
                self._v("exception_class", row.get("error_class") or row.get("outcome")))

    def _target(self, row: Mapping[str, Any]) -> str:
        return self._v("fallback_model", f"{_label_text(row.get('provider'))}:{_label_text(row.get('model'))}")

    def _inc(self, name: str, labels: tuple[str, ...], amount: float = 1) -> None:
        series = self._families[name].series
        series[labels] = series.get(labels, 0) + amount

    def _observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        family = self._families[name]
        slots = family.series.get(labels)
        if slots is None:
            slots = family.series[labels] = [0] * (len(family.buckets) + 1) + [0.0]
        slots[bisect.bisect_left(family.buckets, value)] += 1  # le is inclusive: value == bound goes in it
        slots[-1] += value


# ------------------------------------------------------------------------------------------ snapshots

def _split_target(key: str) -> tuple[str, str]:
    provider, _, model = str(key).partition(":")  # provider names have no colon; model names may (":free")
    return provider, model


def _breaker_gauges(breakers: Mapping[str, Any]) -> list[tuple[str, str, tuple[str, ...], list]]:
    state: list = []
    failures: list = []
    for key, entry in sorted(breakers.items()):
        if not isinstance(entry, Mapping):
            continue
        labels = _split_target(key)
        if entry.get("state") in BREAKER_STATES:
            state.append((labels, BREAKER_STATES[entry["state"]]))
        weight = _number(entry.get("failures"))
        if weight is not None:
            failures.append((labels, weight))
    return [
        ("clutch_deployment_state", "Circuit breaker of a target: 0 closed, 1 half-open, 2 open (targets not listed "
         "are closed).", _ATTEMPT, state),
        ("clutch_deployment_failures", "Weighted failures of a target in the breaker's window.", _ATTEMPT, failures),
    ]


def _quota_gauges(quotas: Mapping[str, Any]) -> list[tuple[str, str, tuple[str, ...], list]]:
    remaining: list = []
    limits: list = []
    cooldown: list = []
    caps: list = []
    for key, entry in sorted(quotas.items()):
        if key == "free_daily_cap":
            for provider, until in sorted((entry or {}).items()) if isinstance(entry, Mapping) else ():
                if (until := _number(until)) is not None:
                    caps.append(((_label_text(provider),), until))
            continue
        if not isinstance(entry, Mapping):
            continue
        labels = _split_target(key)
        for window, field in (("minute", "rpm"), ("day", "rpd")):
            used_limit = _used_limit(entry.get(field))
            if used_limit is not None:
                used, limit = used_limit
                remaining.append(((*labels, window), max(limit - used, 0)))
                limits.append(((*labels, window), limit))
        cooldown.append((labels, _number(entry.get("wait_s")) or 0))
    window_labels = (*_ATTEMPT, "window")
    return [
        ("clutch_remaining_requests", "Requests left in a quota window (model \"\" = the whole provider).",
         window_labels, remaining),
        ("clutch_max_requests", "A quota's limit per window.", window_labels, limits),
        ("clutch_cooldown_seconds", "Seconds until a quota key may get a request again (0 = now).", _ATTEMPT,
         cooldown),
        ("clutch_free_daily_cap_reset_timestamp_seconds", "When a provider's used-up free-model daily cap resets "
         "(epoch seconds).", ("api_provider",), caps),
    ]


def _used_limit(value: Any) -> tuple[int, int] | None:
    """QuotaBook.snapshot's "used/limit" (request counts)."""
    if not isinstance(value, str):
        return None
    used, sep, limit = value.partition("/")
    try:
        return (int(used), int(limit)) if sep else None
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------ text format

def _render_family(out: list[str], family: _Family) -> None:
    out.append(f"# HELP {family.name} {_escape_help(family.help)}")
    out.append(f"# TYPE {family.name} {family.kind}")
    for labels, value in sorted(family.series.items()):
        pairs = list(zip(family.labels, labels, strict=True))
        if family.kind == "counter":
            out.append(f"{family.name}{_labels(pairs)} {_fmt(value)}")
            continue
        running = 0
        for bound, count in zip((*family.buckets, math.inf), value[:-1], strict=True):
            running += count
            out.append(f"{family.name}_bucket{_labels([*pairs, ('le', _fmt(float(bound)))])} {running}")
        out.append(f"{family.name}_sum{_labels(pairs)} {_fmt(value[-1])}")
        out.append(f"{family.name}_count{_labels(pairs)} {running}")


def _render_gauges(out: list[str], gauges: Iterable[tuple[str, str, tuple[str, ...], list]]) -> None:
    for name, help_text, label_names, samples in gauges:
        out.append(f"# HELP {name} {_escape_help(help_text)}")
        out.append(f"# TYPE {name} gauge")
        seen: set[tuple[str, ...]] = set()
        for labels, value in samples:
            if labels in seen:  # one sample per label set, whatever the snapshot holds
                continue
            seen.add(labels)
            out.append(f"{name}{_labels(list(zip(label_names, labels, strict=True)))} {_fmt(value)}")


def _labels(pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{name}="{_escape_label(value)}"' for name, value in pairs) + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _fmt(value: float) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _label_text(value: Any) -> str:
    text = "" if value is None else str(value)
    return text[:MAX_LABEL_CHARS]


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> float | int | None:
    """A finite, non-negative number from a row, or None (a bad value must not poison a counter)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if value >= 0 else None


def _span_s(rows: Sequence[Mapping[str, Any]]) -> float | None:
    starts = [ts for r in rows if (ts := _number(r.get("ts"))) is not None]
    ends = [ts + d / 1000 for r in rows
            if (ts := _number(r.get("ts"))) is not None and (d := _number(r.get("duration_ms"))) is not None]
    if not starts or not ends:
        return None
    return max(max(ends) - min(starts), 0.0)
