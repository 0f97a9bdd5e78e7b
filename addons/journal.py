"""Journal: the most recent LLM requests, for `xx watch` (GET /requests?after=N on the gateway).

One plain summary per finished LLM flow: who sent it (agent, launch code, session), what it asked for,
which rule fired, which model answered, status, attempts and time. Nothing from the bodies or headers
beyond that: no prompt text, no keys. The journal is bounded (`clutch_journal_size` entries) and in
memory only; the usage store (addons/usage.py) is what keeps history.
"""

from __future__ import annotations

import collections
import itertools
import time

from mitmproxy import ctx, http

from addons.accounting.rows import outcome_of
from addons.flows.meta import ATTEMPTS, CALL, COMPRESSION, IDENTITY, ROUTE, USAGE, WEBSOCKET_TURN


class Journal:
    def __init__(self) -> None:
        self._entries: collections.deque[dict] = collections.deque(maxlen=500)
        self._sequence = itertools.count(1)

    def load(self, loader):
        loader.add_option("clutch_journal_size", int, 500,
                          "How many recent LLM requests the gateway keeps for `xx watch` (GET /requests).")

    def configure(self, updated):
        if "clutch_journal_size" in updated:
            size = max(1, ctx.options.clutch_journal_size)
            self._entries = collections.deque(self._entries, maxlen=size)

    def response(self, flow: http.HTTPFlow) -> None:
        self._record(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._record(flow)

    def _record(self, flow: http.HTTPFlow) -> None:
        call = flow.metadata.get(CALL)
        if call is None or flow.metadata.get("clutch.journaled"):
            return
        flow.metadata["clutch.journaled"] = True
        self._entries.append(summarise(flow, next(self._sequence)))

    def since(self, after: int) -> dict:
        """Entries newer than sequence number `after` (0: all kept), oldest first."""
        entries = [entry for entry in self._entries if entry["seq"] > after]
        newest = self._entries[-1]["seq"] if self._entries else after
        return {"next": max(newest, after), "requests": entries}


def _answering(tried: list[dict]) -> tuple[dict | None, str]:
    """The attempt whose answer the agent got, and the outcome: success, or a stream cut, timed out
    or ended by an error after it began (its status stays the 200 it started with), aborted by the
    agent, or every attempt failed ("refused" when none was tried)."""
    answered = next((a for a in reversed(tried) if a.get("committed_s") is not None), None)
    last = tried[-1] if tried else None
    if answered is None and last is not None and last.get("ended") == "aborted":
        answered = last  # the agent left before any answer: an abort, not a failure of the providers
    outcome = outcome_of(answered) if answered else ("failed" if tried else "refused")
    return answered, outcome


def _error_of(flow: http.HTTPFlow, answered: dict | None, outcome: str) -> str | None:
    """Clutch's x-clutch-error, the flow's error, or what went wrong with the answering attempt."""
    response = flow.response
    error = (response.headers.get("x-clutch-error") if response else None) or (flow.error.msg if flow.error else None)
    if answered and outcome != "success":
        error = error or answered.get("error") or outcome
    return error


def summarise(flow: http.HTTPFlow, seq: int) -> dict:
    call = flow.metadata.get(CALL) or {}
    identity = flow.metadata.get(IDENTITY) or {}
    route = flow.metadata.get(ROUTE) or {}
    attempts = flow.metadata.get(ATTEMPTS) or []
    response = flow.response
    tried = [a for a in attempts if a.get("ended") != "skipped"]
    ended = (response.timestamp_end if response and response.timestamp_end else None) or time.time()
    served = response.headers.get("x-clutch-model") if response else None
    answered, outcome = _answering(tried)
    if answered is not None and answered.get("committed_s") is not None:
        served = answered.get("target") or served  # booked to the model the answer named (it can come late)
    error = _error_of(flow, answered, outcome)
    compression = flow.metadata.get(COMPRESSION) or {}
    usage = flow.metadata.get(USAGE) or {}
    return {
        "seq": seq,
        "time": flow.request.timestamp_start,
        "agent": identity.get("agent", "unknown"),
        "user": identity.get("user"),  # a team gateway's user (credentials.py)
        "launch": identity.get("launch_code"),
        "session": identity.get("session"),
        "route": identity.get("route"),
        "dialect": call.get("dialect"),
        "stream": call.get("stream"),
        "provider": call.get("provider"),
        "model": call.get("model"),
        "rule": route.get("rule"),
        "target": route.get("target"),
        "served_by": served,
        "status": response.status_code if response else None,
        "outcome": outcome,
        "error": error,
        "attempts": len(tried),
        "fallback": bool(answered and answered.get("fallback")),
        "duration_ms": round((ended - flow.request.timestamp_start) * 1000),
        "compression": compression.get("mode"),
        "tokens_before": compression.get("tokens_before"),
        "tokens_after": compression.get("tokens_after"),
        "compression_note": compression.get("note"),  # "counted by estimate (...)", "sent uncompressed: ..."
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "cost_usd": usage.get("cost_usd"),
        "estimated": usage.get("estimated"),
        # a turn of a Responses WebSocket Clutch answered: {"socket": its flow id, "turn": n}
        "websocket": flow.metadata.get(WEBSOCKET_TURN),
    }
