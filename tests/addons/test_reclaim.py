"""Reclaim: finished flows are freed by a full garbage collection once their bytes add up, and what
exists at start-up is frozen out of collections (addons/reclaim.py says why)."""

from __future__ import annotations

import gc
import weakref

from mitmproxy.test import tflow

from addons import reclaim
from addons.reclaim import Reclaim


class _Cycle:
    """Garbage in a reference cycle, as mitmproxy leaves a finished flow: only a collection frees it."""

    def __init__(self):
        self.me = self


def _flow(body: bytes):
    flow = tflow.tflow(resp=True)
    flow.request.content = body
    return flow


def test_finished_flows_are_collected_once_their_bytes_add_up():
    addon = Reclaim()
    body = b"x" * (256 << 10)
    per_flow = len(body) + reclaim.FLOW_BYTES
    gc.disable()  # only Reclaim may collect here
    try:
        gc.collect()
        garbage = _Cycle()
        freed = weakref.ref(garbage)
        del garbage
        flows = reclaim.COLLECT_AFTER_BYTES // per_flow  # one short of the threshold
        for _ in range(flows):
            addon.response(_flow(body))
        assert freed() is not None
        addon.error(_flow(body))
        assert freed() is None
        assert addon._pending == 0
    finally:
        gc.enable()


def test_small_requests_trigger_a_collection_too():
    addon = Reclaim()
    gc.disable()
    try:
        gc.collect()
        garbage = _Cycle()
        freed = weakref.ref(garbage)
        del garbage
        for _ in range(reclaim.COLLECT_AFTER_BYTES // reclaim.FLOW_BYTES):
            addon.response(_flow(b"{}"))
        assert freed() is None
    finally:
        gc.enable()


def test_load_freezes_what_exists_at_start_up():
    try:
        Reclaim().load(None)
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()  # the test process goes on allocating and freeing


def test_a_finished_flow_lets_go_of_its_parsed_call_but_not_an_upgraded_one():
    from addons.flows import meta
    from addons.wire.dialects import Dialect, read_call

    addon = Reclaim()
    call = read_call(Dialect.OPENAI_CHAT, "openai", "/v1/chat/completions", b'{"model": "m", "messages": []}')
    done, upgraded = _flow(b"{}"), tflow.twebsocketflow()
    for flow in (done, upgraded):
        meta.set_call(flow, call)
        addon.response(flow)
    assert meta.call_of(done) is None and done.metadata[meta.CALL]["model"] == "m"  # the summary stays
    assert meta.call_of(upgraded) is call  # its messages are still to come

