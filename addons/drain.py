"""Drain: the LLM requests in flight, from the Engine's admission to the end of their hooks.

Placed last in the addon list, its response and error hooks run after every other addon's, so a
request it has seen end has been booked everywhere. The Engine asks it to admit each LLM request
(refused once the gateway stops); Shutdown (addons/shutdown.py) waits on it, and it keeps the
in-flight record (addons/accounting/inflight.py) that the next start reads after a `kill -9`.
"""

from __future__ import annotations

import asyncio
import time

from mitmproxy import http

from addons.accounting.inflight import InFlightRecord
from addons.flows.meta import call_of, identity_of, route_of


class Drain:
    """The LLM requests in flight, from the Engine's admission to the end of their hooks."""

    def __init__(self) -> None:
        self.closing = False
        self.flows: dict[str, http.HTTPFlow] = {}
        self.record: InFlightRecord | None = None
        self._changed = asyncio.Event()

    def admit(self, flow: http.HTTPFlow) -> bool:
        """Called by the Engine for each LLM request; False: the gateway is stopping, refuse it."""
        if self.closing:
            return False
        self.flows[flow.id] = flow
        if self.record is not None:
            call = call_of(flow)
            routed = route_of(flow)
            if routed and routed[1].model:
                model = f"{routed[1].provider}:{routed[1].model}"
            else:
                model = f"{call.provider}:{call.model or ''}" if call is not None else "unknown"
            self.record.started(flow.id, identity_of(flow).agent or "unknown", model)
        return True

    def response(self, flow: http.HTTPFlow) -> None:
        self._ended(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._ended(flow)

    def _ended(self, flow: http.HTTPFlow) -> None:
        if self.flows.pop(flow.id, None) is None:
            return
        if self.record is not None:
            self.record.ended(flow.id)
        self._changed.set()

    async def wait_empty(self, timeout_s: float, hurry: asyncio.Event | None = None) -> bool:
        """Wait until nothing is in flight (True), `timeout_s` passed or `hurry` is set (False)."""
        deadline = time.monotonic() + timeout_s
        while self.flows:
            left = deadline - time.monotonic()
            if left <= 0 or (hurry is not None and hurry.is_set()):
                return False
            self._changed.clear()
            waits = [asyncio.ensure_future(self._changed.wait())]
            if hurry is not None:
                waits.append(asyncio.ensure_future(hurry.wait()))
            try:
                await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
        return True
