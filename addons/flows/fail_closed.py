"""Fail closed: an LLM request whose handling in Clutch's own logic raised is answered, never sent.

mitmproxy logs an exception in an addon's hook ("Addon error") and carries on with the next addon and
then the upstream connection: for Clutch that was the silent forward, the agent's original request
sent with its own key to the provider it named, past the routing rules and the budgets. Each request
hook of Route, Budget and the Engine runs under `guarded`: an unexpected exception on an LLM call
(call_of(flow) is set) becomes an error answer in the agent's dialect, in the flow's comment and, like
every answered request, in the journal (GET /requests); the log has the traceback and the flow id.
Everything else (non-LLM traffic) keeps mitmproxy's behaviour. Compression is the one step that fails
open (addons/compress.py): a request sent uncompressed still goes where the rules say.

Nothing here imports mitmproxy: the addon passes the constructor of its answers (`respond`, mitmproxy's
`http.Response.make`), and a flow is anything with mitmproxy's flow attributes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from addons.flows.meta import call_of, identity_of
from addons.wire import dialects
from addons.wire.dialects import Dialect

logger = logging.getLogger(__name__)

Respond = Callable[[int, bytes, dict[str, str]], Any]
"""Makes the flow's answer from a status, a body and headers: mitmproxy's `http.Response.make`."""


def answer(flow: Any, respond: Respond, status: int, kind: str, message: str, **headers: str) -> None:
    """Answer an LLM request from the gateway with an error in the agent's own dialect."""
    call = call_of(flow)
    dialect = call.dialect if call is not None else None
    flow.response = respond(status, dialects.error_body(dialect, status, message), {
        "content-type": "application/json", "x-clutch-error": kind, **headers})
    flow.comment = f"clutch: {identity_of(flow).describe()} refused ({kind}): {message}"


def internal_error(flow: Any, respond: Respond, where: str, error: BaseException) -> None:
    """Clutch's own logic failed on this request: it fails, visibly, and is not retried by the SDKs
    (the same request would fail the same way)."""
    logger.error("%s failed on %s; the request is refused, not forwarded", where, flow.id,
                 exc_info=(type(error), error, error.__traceback__))
    call = call_of(flow)
    # Codex shows a 500's body as "high demand"; a 502 it prints (see relay.py)
    status = 502 if call is not None and call.dialect is Dialect.OPENAI_RESPONSES else 500
    answer(flow, respond, status, "internal_error",
           f"Clutch: internal error in {where} on this request ({type(error).__name__}: {error}); it was not "
           f"sent anywhere. The gateway log has the details (flow {flow.id}).", **{"x-should-retry": "false"})


def guarded(where: str, respond: Respond):
    """Decorates an (async) request hook: an exception on an LLM call answers it (internal_error)."""
    def wrap(hook):
        @functools.wraps(hook)
        async def run(self, flow: Any) -> None:
            try:
                await hook(self, flow)
            except Exception as e:
                if call_of(flow) is None:  # not an LLM call: mitmproxy's own handling
                    raise
                internal_error(flow, respond, where, e)
        return run
    return wrap
