"""The Usage addon's writer thread: one per open store, with a queue of its own.

Pure logic, no mitmproxy. The event loop puts each finished request's rows on the queue (or, for a
team's PostgreSQL, word that rows were spooled: an empty list), and the thread hands them to its
RowWriter (writer.py) in batches: it waits up to LINGER_S after a row for more, up to BATCH items, so
under load a transaction carries many requests. A flush and an ordered read (`read_in_order`) travel in
the same queue, so each sees exactly the rows queued before it. The thread outlives any error of its
own; a writer that does not stop in time keeps its queue, and the next thread gets a new one.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from addons.accounting.reports import UsageStoreError
from addons.accounting.writer import RowWriter

logger = logging.getLogger(__name__)

BATCH = 500
# The writer waits this long after a row for more before it commits: under load a transaction per
# request costs more CPU than the rows; a report never waits for it (flush).
LINGER_S = 0.05
_STOP = object()


@dataclasses.dataclass
class _Read:
    """A read of the store that the thread runs between two batches (see WriterThread.read_in_order)."""

    read: Callable[[Any], Any]
    future: concurrent.futures.Future

    def fail(self, error: Exception) -> None:
        if self.future.set_running_or_notify_cancel():
            self.future.set_exception(error)

    def run(self, store: Any) -> None:
        if not self.future.set_running_or_notify_cancel():
            return  # the caller stopped waiting
        try:
            self.future.set_result(self.read(store))
        except Exception as e:  # the caller's to report
            self.future.set_exception(e)


class WriterThread:
    def __init__(self, writer: RowWriter):
        self.writer = writer
        self._items: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="clutch-usage", daemon=True)
        self._thread.start()

    def put(self, rows: list[dict[str, Any]]) -> None:
        """A finished request's rows, or [] for rows the writer reads from its spool."""
        self._items.put(rows)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until every row queued before this call is written (so a report includes the latest
        requests). Call it off the event loop."""
        written = threading.Event()
        self._items.put(written)
        return written.wait(timeout_s)

    def read_in_order(self, read: Callable[[Any], Any]) -> concurrent.futures.Future:
        """Run `read(store)` on this thread, after every row queued before this call is written and
        before any row queued after it. A read while rows still wait in a spool fails (UsageStoreError):
        the store would count too little."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._items.put(_Read(read, future))
        return future

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Write what is queued and end; False when the thread did not end in time."""
        self._items.put(_STOP)
        self._thread.join(timeout=timeout_s)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            try:
                if self._write_some():
                    return
            except Exception:  # the thread must outlive any surprise: the rows wait in the spool, or are counted
                logger.exception("usage: the writer failed; it goes on")

    def _write_some(self) -> bool:
        """One batch from the queue; True once told to stop."""
        writer, items = self.writer, self._items
        try:
            batch = [items.get(timeout=writer.due_in())]
        except queue.Empty:
            writer.retry()  # the database was away, or other replicas' spools may wait: nothing new came
            return False
        deadline = time.monotonic() + LINGER_S
        while len(batch) < BATCH and isinstance(batch[-1], list):  # an Event, a _Read or _STOP ends it
            try:
                batch.append(items.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        rows = [row for item in batch if isinstance(item, list) for row in item]
        if any(isinstance(item, list) for item in batch):  # rows, or (spooled) word of new rows
            try:
                writer.write(rows)
            except Exception as e:  # a full disk must not stop the gateway; the log and /health say what was lost
                logger.exception("could not write %d usage rows to %s", len(rows), writer.store.name)
                writer.drop(len(rows), f"{type(e).__name__}: {e}, writing to {writer.store.name}")
        for item in batch:
            if isinstance(item, threading.Event):
                writer.retry()  # a flush: the spooled rows too, if the database answers
                item.set()
            elif isinstance(item, _Read):
                if writer.retry():
                    item.run(writer.store)
                else:  # the store lacks rows still in the spool: a read now would count too little
                    item.fail(UsageStoreError(f"{writer.spooled} usage rows still wait in the spool for "
                                              f"{writer.store.name}"))
        return any(item is _STOP for item in batch)
