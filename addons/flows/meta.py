"""Facts Clutch's addons share about a flow.

The rich objects (the agent's identity, the parsed LLM call) live in weak side tables keyed by the
flow, so they vanish with it and never reach mitmproxy's flow serialisation (`mitmdump -w`, saving
in mitmweb), which accepts only plain values. `flow.metadata` gets a plain summary of each, for
saved flows and `~meta` filters.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Protocol

from addons.guard.key_mask import masked_url
from addons.routing.plan import Plan
from addons.routing.router import Decision
from addons.wire.dialects import LLMCall
from addons.wire.identity import UNKNOWN, Identity


class Flow(Protocol):
    """What these tables need of a flow: mitmproxy's HTTPFlow has it (and more)."""

    id: str
    metadata: dict[str, Any]


IDENTITY = "clutch.identity"  # summary of the agent that sent the flow
CALL = "clutch.call"  # summary of the LLM call Classify recognised
WEBSOCKET = "clutch.websocket"  # on Codex's Responses WebSocket upgrade: True, then the clutch_websocket mode
WEBSOCKET_TURN = "clutch.websocket_turn"  # {"socket": upgrade flow id, "turn": n} on a turn Clutch sent
ATTEMPTS = "clutch.attempts"  # summaries of the engine's upstream attempts
ROUTE = "clutch.route"  # summary of the routing decision and the upstream plan
COMPRESSION = "clutch.compression"  # mode, cuts and tokens before/after of the request's compression
USAGE = "clutch.usage"  # the request's tokens and cost over all its attempts (addons/usage.py)

_identities: weakref.WeakKeyDictionary[Flow, Identity] = weakref.WeakKeyDictionary()
_calls: weakref.WeakKeyDictionary[Flow, LLMCall] = weakref.WeakKeyDictionary()
_routes: weakref.WeakKeyDictionary[Flow, tuple[Decision, Plan]] = weakref.WeakKeyDictionary()


def set_identity(flow: Flow, identity: Identity) -> None:
    _identities[flow] = identity
    flow.metadata[IDENTITY] = {k: v for k, v in dataclasses.asdict(identity).items() if v is not None}


def identity_of(flow: Flow) -> Identity:
    return _identities.get(flow, UNKNOWN)


def set_call(flow: Flow, call: LLMCall) -> None:
    _calls[flow] = call
    flow.metadata[CALL] = {"dialect": str(call.dialect), "provider": call.provider, "model": call.model,
                           "stream": call.stream}


def call_of(flow: Flow) -> LLMCall | None:
    return _calls.get(flow)


def release(flow: Flow) -> None:
    """Forget the flow's parsed call and plan once every addon is done with it (Reclaim): a finished
    flow waits for Python's cyclic collector (mitmproxy keeps it in reference cycles), its parsed
    body need not. The plain summaries in `flow.metadata` stay."""
    _calls.pop(flow, None)
    _routes.pop(flow, None)


def set_route(flow: Flow, decision: Decision, plan: Plan) -> None:
    _routes[flow] = (decision, plan)
    flow.metadata[ROUTE] = {
        "rule": decision.rule, "reason": decision.reason, "target": str(decision.target) if decision.target else None,
        "signals": list(decision.signals), "tokens": decision.tokens, "layer": list(decision.layer),
        "provider": plan.provider, "model": plan.model, "url": masked_url(plan.url),
        "translated": f"{plan.client_dialect}->{plan.upstream_dialect}" if plan.translated else None,
        "key": plan.key_source, "notes": list(plan.notes),
    }


def route_of(flow: Flow) -> tuple[Decision, Plan] | None:
    return _routes.get(flow)
