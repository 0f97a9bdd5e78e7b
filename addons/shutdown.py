"""Shutdown: a stopping gateway lets the answers it is streaming finish, ends the rest well, and books
every one of them; a restart after `kill -9` says how many were lost.

What mitmproxy 12 does on SIGTERM (and Ctrl-C): `master.shutdown` sets `should_exit`, and
`Master.run` awaits the `done` hook of every addon in order (mitmproxy's own first, then this
script's in `make_addons` order, then Save and the rest); the event loop still runs meanwhile, so the
proxy keeps serving the connections it has. Its listeners are never closed, and once `done` returns,
`asyncio.run` cancels whatever is left: before Clutch drained, every stream in flight was cut with no
error event and no usage row. So the first `done` of Clutch's (`Shutdown`, first in the list):

1. closes the proxy's listeners (new connections are refused) and has the Engine answer any new LLM
   request on an open connection with a 503 in its dialect (`x-clutch-error: shutting_down`);
2. waits up to `clutch_drain_timeout_ms` (10 s) for the requests in flight to finish; a second
   SIGTERM or Ctrl-C ends the wait at once;
3. has the Engine end the rest: a stream with a well-formed error event in the agent's dialect
   ("Clutch is shutting down"), a request with no answer yet with a 503; each attempt is booked as
   `aborted` with error `shutdown` and the tokens generated so far (estimated);
4. waits (at most CUT_S) until each of those flows has been through every addon's hooks, Usage's
   included, so its rows are queued; Usage's own `done`, later, writes them.

Only then do the later addons' `done` run: Resilience saves the breakers with the drained outcomes,
Usage flushes its writer and closes the database, Save writes the flows.

`Drain` (addons/drain.py), placed last, sees each admitted request end (its response or error hook
runs after every other addon's), and keeps the in-flight record that the next start reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from mitmproxy import ctx, exceptions

from addons.accounting.inflight import InFlightRecord, Lost, claim_leftovers
from addons.accounting.reports import day_of
from addons.drain import Drain
from addons.resilience import Resilience
from addons.usage import Usage

logger = logging.getLogger(__name__)

CUT_S = 5.0  # after the grace: longest wait for the streams that were ended to go through the hooks
MESSAGE = "Clutch is shutting down"


class Shutdown:
    def __init__(self, drain: Drain, engine, resilience: Resilience, usage: Usage | None = None):
        self._drain = drain
        self._engine = engine
        self._resilience = resilience
        self._usage = usage
        self.lost: list[Lost] = []  # what the last gateway (killed) had in flight
        self.lost_at: float | None = None

    def load(self, loader):
        loader.add_option("clutch_drain_timeout_ms", int, 10_000,
                          "On SIGTERM or Ctrl-C: how long the requests in flight may go on before the rest are "
                          "ended with an error in the agent's dialect (new ones are refused meanwhile).")

    def configure(self, updated):
        if "clutch_drain_timeout_ms" in updated and ctx.options.clutch_drain_timeout_ms < 0:
            raise exceptions.OptionsError("clutch_drain_timeout_ms must be 0 or more milliseconds")

    def running(self):
        folder = self._resilience.state_dir
        if folder is None or self._drain.record is not None:
            return
        self.lost = claim_leftovers(folder)
        if self.lost:
            self.lost_at = time.time()
            models = ", ".join(sorted({f"{lost.agent} {lost.model}" for lost in self.lost}))
            # a warning: mitmdump stops on an error logged at start-up
            logger.warning("%d attempt%s were lost in flight when the gateway last stopped (killed): %s",
                           len(self.lost), "" if len(self.lost) == 1 else "s", models)
            self._book_lost()
        record = InFlightRecord(folder)
        try:
            record.open()
        except OSError as e:
            logger.warning("no in-flight record (%s): a restart after kill -9 cannot tell what was lost", e)
            return
        self._drain.record = record

    def health(self) -> dict:
        """For /health: what the previous gateway lost in flight."""
        return {"count": len(self.lost), "noticed_at": self.lost_at,
                "requests": [{"request_id": lost.request_id, "agent": lost.agent, "model": lost.model,
                              "started": lost.started} for lost in self.lost[:50]]}

    def _book_lost(self) -> None:
        """A usage row per lost request (outcome `aborted`, error `lost_in_flight`, tokens unknown)."""
        if self._usage is None:
            return
        rows = []
        for lost in self.lost:
            provider, _, model = lost.model.partition(":")
            rows.append({"ts": lost.started, "day": day_of(lost.started), "request_id": lost.request_id,
                         "agent": lost.agent, "provider": provider, "model": model, "attempt": 0,
                         "outcome": "aborted", "error_class": "lost_in_flight", "served": False})
        self._usage.add_rows(rows)

    async def done(self):
        drain = self._drain
        drain.closing = True
        started = time.monotonic()
        await _close_listeners()
        before = len(drain.flows)
        hurry = asyncio.Event()
        _on_second_signal(hurry.set)
        grace = ctx.options.clutch_drain_timeout_ms / 1000
        if before:
            logger.info("stopping: %d request%s in flight, waiting up to %g s", before,
                        "" if before == 1 else "s", grace)
        finished = await drain.wait_empty(grace, hurry)
        cut = len(drain.flows)
        if not finished:
            self._engine.stop_serving(MESSAGE)
            await drain.wait_empty(CUT_S)
        left = len(drain.flows)
        if before:
            logger.info("stopped in %.1f s: %d request%s finished, %d ended by the shutdown%s",
                        time.monotonic() - started, before - cut, "" if before - cut == 1 else "s", cut,
                        f", {left} not booked" if left else "")
        if drain.record is not None:
            drain.record.close(clean=not left)
            drain.record = None


async def _close_listeners() -> None:
    """Stop accepting connections: the proxy's listeners close (open connections stay)."""
    proxyserver = ctx.master.addons.get("proxyserver")
    if proxyserver is None:
        return
    try:
        await proxyserver.servers.update([])
    except Exception:  # the drain goes on: new requests are still refused by the Engine
        logger.exception("could not close the proxy's listeners")


def _on_second_signal(hurry) -> None:
    """A second SIGTERM or Ctrl-C while draining ends the wait (mitmproxy's handler would do nothing)."""
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, hurry)
