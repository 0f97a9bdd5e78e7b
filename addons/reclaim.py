"""Reclaim: frees the memory of finished flows promptly, by Python's cyclic garbage collector.

mitmproxy's HTTP layer keeps every flow in reference cycles (its stream objects hold bound methods of
themselves), so a finished flow, its request body and all Clutch parsed from it are freed only by the
cyclic collector, not when the last reference goes. That collector counts objects, not bytes: with
200 KB bodies at 32 concurrent streams about 100 finished flows waited for it, and the gateway's peak
RSS reached 380 MB (bench/memory.py; 216 MB with this addon). So:

* at `load`, after every module and the tokenizer exist and before mitmproxy listens, one collection
  runs and everything that survives it is frozen out of later collections (gc.freeze: a full
  collection under load went from ~125 ms to ~6 ms on the benchmark machine, the automatic ones too);
* a full collection runs whenever finished flows add up to COLLECT_AFTER_BYTES: their request bodies
  plus FLOW_BYTES each, so small requests trigger one too, every hundred or so (2 MB: 209 MB peak at
  32 streams of 200 KB against 222 MB with 8 MB, bench/memory.py);
* at a flow's end (this addon's hooks run after every other Clutch addon's) its parsed call and plan
  are dropped (flows.meta.release), so only the flow's own bytes wait for the collection.

Measured and not done: fixing glibc's mmap threshold at 128 KB (mallopt), so that freed bodies go back
to the system at once, cut the resident set under 200 KB bodies from 222 to 192 MB, but asyncio reads
every socket into a fresh 256 KB buffer, which then became an mmap and an munmap per read: under
200-event streams `SSLObject.read` went from under 2 % to 18 % of the gateway's CPU samples.
"""

from __future__ import annotations

import gc
import logging
import time

from mitmproxy import http

from addons.flows import meta

logger = logging.getLogger(__name__)

COLLECT_AFTER_BYTES = 2 << 20
FLOW_BYTES = 16 << 10  # what a finished flow of a small request leaves behind, about


class Reclaim:
    def __init__(self):
        self._pending = 0  # bytes of finished flows since the last collection

    def load(self, loader):
        started = time.perf_counter()
        gc.collect()
        gc.freeze()
        logger.debug("froze %d start-up objects out of garbage collection in %.0f ms", gc.get_freeze_count(),
                     (time.perf_counter() - started) * 1000)

    def response(self, flow: http.HTTPFlow) -> None:
        self._finished(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finished(flow)

    def _finished(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None:  # an upgraded flow's messages still need its call
            meta.release(flow)
        self._pending += len(flow.request.raw_content or b"") + FLOW_BYTES
        if self._pending >= COLLECT_AFTER_BYTES:
            self._pending = 0
            gc.collect()
