"""Usage: every upstream attempt of every LLM request, written to the usage store.

When a flow ends, its rows are built from the plain summaries the other addons left in its metadata
(accounting/rows.py) and queued; one writer thread (accounting/writer_thread.py) writes them in batches,
one transaction per batch, so a burst of requests costs the event loop nothing but a queue put, and the
gateway's shutdown (`done`) drains the queue before it closes the database. The rows' token totals also
go into the flow's metadata (`clutch.usage`), where the journal (`xx watch`) and the budgets read them.

A team's PostgreSQL (`clutch_usage_db=postgresql://...`) is written by way of a spool file in the state
folder (accounting/spool.py, writer.py): the rows are appended to it on the event loop before the thread
is told, so a database that is away, or a `kill -9` of the gateway, loses none of them.

Codex's Responses-over-WebSocket carried to the provider (`clutch_websocket=pass`) has no HTTP response
per call: each `response.completed` message the provider sends becomes one row. A socket Clutch answers
itself (`route`) sends each turn as a request of its own, booked like any other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mitmproxy import ctx, http

from addons.accounting import postgres
from addons.accounting import salvage as usage_salvage
from addons.accounting.postgres import PostgresStore
from addons.accounting.reports import UsageStoreError, day_of
from addons.accounting.rows import Finished, needs_input_estimate, priced, rows_for, usage_columns
from addons.accounting.spool import Spool, SpoolError
from addons.accounting.store import UsageStore
from addons.accounting.writer import RowWriter, SpooledWriter
from addons.accounting.writer_thread import WriterThread
from addons.flows.meta import ATTEMPTS, CALL, COMPRESSION, IDENTITY, ROUTE, USAGE, WEBSOCKET, call_of, identity_of
from addons.models import catalog
from addons.models.catalog import CatalogFile
from addons.option_check import refuse
from addons.resilience import Resilience
from addons.wire import tokens, usage_blocks
from addons.wire.identity import session_of
from addons.wire.jsontext import as_object

logger = logging.getLogger(__name__)

Store = UsageStore | PostgresStore


class Usage:
    def __init__(self, resilience: Resilience):
        self._resilience = resilience
        self.store: Store | None = None
        self.writer: RowWriter | None = None  # the writer thread's: where each batch goes (spool included)
        self._thread: WriterThread | None = None
        self._listeners: list[Callable[[list[dict]], None]] = []
        self._catalog: CatalogFile | None = None
        self.salvaged: usage_salvage.Salvage | None = None  # the broken database this run moved aside
        self._open_error: str | None = None  # why there is no store although one was asked for
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file the store opened
        self._opened: Path | str | None = None  # the clutch_usage_db target of the store

    def load(self, loader):
        loader.add_option("clutch_usage_db", str, "",
                          "The usage database: a SQLite file, or postgresql://user:password@host:port/db for "
                          "a team gateway (replicas share it; rows pass through a spool in the state folder, so "
                          "neither an outage nor a kill -9 loses one). Empty: usage.db in the state folder "
                          "(clutch_state_dir); 'off': keep no usage records.")

    def configure(self, updated):
        if updated & {"clutch_usage_db", "clutch_state_dir"}:
            target = self._target()
            if isinstance(target, str):
                try:
                    postgres.check_url(target)
                except ValueError as e:
                    refuse(f"clutch_usage_db: {e}")
            self._open(target)
        if "clutch_state_dir" in updated and self._resilience.state_dir is not None:
            self._catalog = CatalogFile(catalog.cache_path(self._resilience.state_dir))

    def price(self, provider: str, model: str, input_tokens: int, output_tokens: int, cached_tokens: int,
              cache_write_tokens: int = 0) -> float | None:
        """A call's cost at the model catalog's prices (`xx scan` keeps the catalog); None when unknown."""
        prices = self._catalog.price_for(provider, model) if self._catalog is not None else None
        if prices is None:
            return None
        return catalog.cost_usd(prices, input_tokens, output_tokens, cached_tokens, cache_write_tokens)

    def on_rows(self, listener: Callable[[list[dict]], None]) -> None:
        """Call `listener` with each finished request's rows (on the event loop), e.g. metrics and budgets."""
        self._listeners.append(listener)

    def _target(self) -> Path | str | None:
        """The SQLite file, the PostgreSQL URL, or None (off)."""
        wanted = ctx.options.clutch_usage_db
        if wanted == "off":
            return None
        if postgres.is_postgres_url(wanted):
            return wanted
        if wanted:
            return Path(os.path.expanduser(wanted))
        return self._state_dir() / "usage.db"

    def _state_dir(self) -> Path:
        return self._resilience.state_dir or Path(".")

    def _open(self, target: Path | str | None) -> None:
        if self.store is not None and target == self._opened:
            return
        self._stop_writer()
        self._open_error = None
        self._opened = target
        if target is None:
            logger.info("usage records are off (clutch_usage_db=off)")
            return
        if isinstance(target, str):
            self._open_postgres(target)
            return
        path = target
        reason = usage_salvage.damage(path)
        if reason is not None:
            self._set_aside(path, reason)
        try:
            self.store = UsageStore(path)
        except UsageStoreError as e:
            # the gateway still serves agents; only the accounting is missing, and it says so (in
            # /health too), as a warning: mitmdump exits on an error logged at start-up
            self._open_error = f"usage records are off: {e}"
            logger.warning("%s", self._open_error)
            return
        self._identity = _identity(path)
        if self.salvaged is not None and self.salvaged.rows and reason is not None:
            try:
                self.store.add(self.salvaged.rows)
            except Exception as e:
                logger.warning("could not copy the %d recovered rows into %s: %s", len(self.salvaged.rows), path, e)
        self._start_writer(RowWriter(self.store))
        logger.info("usage records in %s", path)

    def _open_postgres(self, url: str) -> None:
        """A team's database: reached (and migrated) by the writer thread, so a server that is away
        delays no start-up; rows wait in a spool of this state folder until it answers."""
        store = PostgresStore(url)
        self.store = store
        try:
            spool = Spool.claim(self._state_dir(), key=postgres.spool_key(url))
        except (OSError, SpoolError) as e:
            logger.warning("usage: no spool for %s (%s): rows finished while it is away will be lost",
                           store.name, e)
            self._start_writer(RowWriter(store))
            return
        self._start_writer(SpooledWriter(store, spool))
        logger.info("usage records in %s, by way of %s", store.name, spool.path)

    def _start_writer(self, writer: RowWriter) -> None:
        self.writer = writer
        self._thread = WriterThread(writer)  # a queue of its own, never a stopped one's

    def _set_aside(self, path: Path, reason: str) -> None:
        """Move a broken database aside (it is the user's history) and keep today's rows it still has."""
        try:
            broken = usage_salvage.move_aside(path)
        except OSError as e:
            logger.warning("the usage database %s is broken (%s) and cannot be moved aside: %s", path, reason, e)
            return
        self.salvaged = usage_salvage.salvage(broken, reason)
        logger.warning("%s", self.salvaged.describe())

    def problems(self) -> list[str]:
        """What is wrong with the usage records right now, for /health (empty: nothing)."""
        found = [self.salvaged.describe()] if self.salvaged is not None else []
        if self._open_error:
            found.append(self._open_error)
        writer = self.writer
        if writer is not None and writer.unreachable:
            found.append(f"{writer.unreachable}; {writer.spooled} usage rows spooled, written when it answers")
        if writer is not None and writer.last_drop:
            found.append(writer.last_drop)
        store = self.store
        if isinstance(store, UsageStore) and self._identity is not None and _identity(store.path) != self._identity:
            found.append(f"the usage database {store.path} was deleted or replaced while the gateway runs: "
                         f"new rows go to a file no longer there; restart the gateway")
        return found

    def done(self):
        self._stop_writer()

    def _stop_writer(self) -> None:
        stopped = True
        if self._thread is not None:
            stopped = self._thread.stop(timeout_s=30)
            self._thread = None
        if self.store is not None:
            self.store.close()  # a writer still in a call gets an error, not this call's wait
            self.store = None
        if self.writer is not None and self.writer.spool is not None:
            if stopped:
                self.writer.spool.close()  # releases its slot
            else:  # its descriptor may still be in use: left open; the rows are in the file already
                logger.error("usage: the writer did not stop within 30 s; %d rows wait in %s for the next start",
                             self.writer.spooled, self.writer.spool.path)
        self.writer = None

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until every row queued before this call is written (so a report includes the latest
        requests). Call it off the event loop."""
        thread = self._thread
        return thread.flush(timeout_s) if thread is not None else True

    def read_in_order(self, read: Callable[[Store], Any]) -> concurrent.futures.Future | None:
        """Run `read(store)` on the writer thread, after every row queued before this call is written
        and before any row queued after it; None when there is no store. A caller that counts rows as
        they come (the budgets) can thus add the store's total and the rows emitted after this call
        without counting a row twice or missing one, and the event loop never waits for the disk."""
        thread = self._thread
        if thread is None or self.store is None:
            return None
        return thread.read_in_order(read)

    # ------------------------------------------------------------ mitmproxy hooks

    async def response(self, flow: http.HTTPFlow) -> None:
        await self._account(flow)

    async def error(self, flow: http.HTTPFlow) -> None:
        await self._account(flow)

    async def _account(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get(CALL) is None or flow.metadata.get(USAGE) is not None or flow.metadata.get(WEBSOCKET):
            return
        try:
            done = _finished(flow)
            if needs_input_estimate(done.attempts):
                done.input_estimate = done.compression.get("tokens_after")
                call = call_of(flow)
                if done.input_estimate is None and call is not None and call.body is not None:
                    done.input_estimate = await asyncio.to_thread(tokens.request_tokens, call.dialect, call.body)
            rows = rows_for(done, self.price)
        except Exception:  # accounting must never cost the agent its answer
            logger.exception("could not account for %s", flow.id)
            return
        flow.metadata[USAGE] = totals(rows)
        self._emit(rows)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """Codex's Responses over WebSocket: a row per `response.completed` the provider sent."""
        if flow.metadata.get(WEBSOCKET) != "pass":
            return  # a socket Clutch answers: its turns are requests of their own, with their own rows
        message = flow.websocket.messages[-1] if flow.websocket and flow.websocket.messages else None
        if message is None or message.from_client or not message.is_text \
                or b"response.completed" not in message.content:
            return
        try:
            payload = json.loads(message.content)
        except ValueError:
            return
        if not isinstance(payload, dict) or payload.get("type") != "response.completed":
            return
        usage = usage_blocks.usage_of_responses_event(payload)
        response = as_object(payload.get("response"))
        identity = flow.metadata.get(IDENTITY) or {}
        call = flow.metadata.get(CALL) or {}
        count = flow.metadata.get("clutch.websocket_responses", 0) + 1
        flow.metadata["clutch.websocket_responses"] = count
        provider = call.get("provider") or "openai"
        model = response.get("model") or call.get("model") or ""
        row = {
            "ts": message.timestamp, "day": day_of(message.timestamp), "request_id": f"{flow.id}/{count}",
            "agent": identity.get("agent") or "unknown", "launch": identity.get("launch_code"),
            "user_name": identity.get("user"),
            "session": session_of(identity_of(flow), flow.request.headers), "dialect": "openai_responses",
            "stream": True,
            "requested_model": model, "provider": provider, "model": model, "rule": "websocket", "attempt": 0,
            "outcome": "success", "status": 101, "served": True, "fallback": False,
            "tokens_estimated": False, "duration_ms": None, "ttft_ms": None,
            **(usage_columns(dataclasses.asdict(usage)) if usage is not None else {}),
        }
        self._emit([priced(row, self.price)])

    def add_rows(self, rows: list[dict]) -> None:
        """Rows that are no request of this run's (the requests a dead gateway lost in flight): written
        like the others, by way of the spool for a team's database; not shown to the listeners."""
        self._queue_rows(rows)

    def _emit(self, rows: list[dict]) -> None:
        # queued and shown to the listeners in one step on the event loop: a read_in_order comes
        # before both or after both (the budgets count on it)
        self._queue_rows(rows)
        for listener in self._listeners:
            try:
                listener(rows)
            except Exception:
                logger.exception("a usage listener failed")

    def _queue_rows(self, rows: list[dict]) -> None:
        writer = self.writer
        if self.store is not None and writer is not None:
            try:
                carried = writer.take(rows)  # a team's database: into the spool, the kill-proof part
            except Exception as e:  # a full disk: the rows are lost, and /health says so
                logger.exception("could not spool %d usage rows", len(rows))
                writer.drop(len(rows), f"{type(e).__name__}: {e}, spooling")
            else:
                if self._thread is not None:
                    self._thread.put(rows if carried else [])


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _finished(flow: http.HTTPFlow) -> Finished:
    response = flow.response
    ended = (response.timestamp_end if response and response.timestamp_end else None) or time.time()
    error = (response.headers.get("x-clutch-error") if response else None) or (flow.error.msg if flow.error else None)
    return Finished(
        request_id=flow.id, started=flow.request.timestamp_start, ended=ended,
        call=flow.metadata.get(CALL) or {},
        # the launch's session, else the agent's own session header: a prompt's side calls (titles,
        # warm-ups, subagents) carry the same one, so a session's report adds them up
        identity={**(flow.metadata.get(IDENTITY) or {}),
                  "session": session_of(identity_of(flow), flow.request.headers)},
        route=flow.metadata.get(ROUTE) or {}, attempts=flow.metadata.get(ATTEMPTS) or [],
        compression=flow.metadata.get(COMPRESSION) or {},
        status=response.status_code if response else None, error=error)


def totals(rows: list[dict]) -> dict:
    """One request's tokens and cost, over all its attempts (failed ones can be billed too)."""
    def total(name: str):
        values = [row.get(name) for row in rows if row.get(name) is not None]
        return sum(values) if values else None

    cost = total("cost_usd")
    return {"input_tokens": total("input_tokens"), "output_tokens": total("output_tokens"),
            "cached_tokens": total("cached_tokens"), "cost_usd": round(cost, 8) if cost is not None else None,
            "estimated": any(row.get("tokens_estimated") for row in rows), "attempts": len(rows)}
