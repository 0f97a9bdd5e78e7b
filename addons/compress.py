"""Compress: shrinks the tool outputs of every LLM request before it is routed and sent upstream.

The mode comes from the `clutch_compression` option, else the agent's (or launch profile's) profile,
else the rules' `compression.mode`. What changes and why it is safe is in compression.py. The flow
keeps the request as sent; `clutch.compression` in its metadata and its comment give the tokens
before and after, counted off the hot path while the provider answers.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import logging
import time
import weakref

from mitmproxy import ctx, exceptions, http

from addons.compression.history import RewriteGate
from addons.compression.policy import (
    CompressionOutcome,
    Mode,
    Settings,
    compress_request,
    mode_for,
    settings_for,
)
from addons.config.rules import Rules
from addons.flows.meta import COMPRESSION, call_of, identity_of, set_call
from addons.routing.plan import json_bytes
from addons.rulebook import Rulebook
from addons.wire import tokens
from addons.wire.identity import session_key

logger = logging.getLogger(__name__)

_IN_THREAD_BYTES = 64 * 1024  # bigger bodies are compressed off the event loop
# Longest a request waits for its compression: past it, it is sent uncompressed (the thread finishes
# on its own; its result is dropped). A 32 MB body compresses in well under a second (bench/bodies.py).
COMPRESSION_TIME_S = 5.0
_NEVER_CAUGHT = (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError)
_SESSIONS_KEPT = 2000


class Compress:
    def __init__(self, rulebook: Rulebook, clock=time.monotonic):
        self._rulebook = rulebook
        self._clock = clock
        self._override: Mode | None = None
        self._sessions: collections.OrderedDict[str, RewriteGate] = collections.OrderedDict()
        self._counts: weakref.WeakKeyDictionary[http.HTTPFlow, asyncio.Future] = weakref.WeakKeyDictionary()
        self._settings: dict[Mode, Settings] = {}
        rulebook.on_change(self._adopt)

    def load(self, loader):
        loader.add_option("clutch_compression", str, "rules",
                          "Compression of tool outputs: 'rules' (the rules' compression section and profiles), "
                          "or off, cache_safe or max for every request.",
                          choices=["rules", "off", "cache_safe", "max"])
        # The vocabulary's build holds the GIL for 0.15-1 s (more on a busy machine): built here, before
        # mitmproxy listens, no request ever waits for it. (Built in a thread at `running`, it stalled
        # the event loop under the first requests; a rebuild on script reload is a cache hit.)
        started = time.perf_counter()
        tokens.encoding()
        logger.info("tokenizer %s ready in %.0f ms", tokens.DEFAULT_ENCODING, (time.perf_counter() - started) * 1000)

    def configure(self, updated):
        if "clutch_compression" in updated:
            value = ctx.options.clutch_compression
            if value not in ("rules", *Mode):
                raise exceptions.OptionsError(
                    f"clutch_compression must be rules, off, cache_safe or max, not {value!r}")
            self._override = None if value == "rules" else Mode(value)


    def _adopt(self, rules: Rules) -> None:
        self._settings = {mode: settings_for(rules.compression, mode) for mode in Mode}

    def mode_for(self, rules: Rules, agent: str, launch_profile: str | None) -> Mode:
        return self._override if self._override is not None else mode_for(rules, agent, launch_profile)

    # ------------------------------------------------------------ mitmproxy hooks

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        call = call_of(flow)
        if call is None or call.body is None:
            return
        rules = self._rulebook.rules
        identity = identity_of(flow)
        launch_profile = identity.tier if identity.tier and identity.tier.isdigit() else None
        mode = self.mode_for(rules, identity.agent, launch_profile)
        if mode is Mode.OFF:
            return
        settings = self._settings[mode]
        gate = self._gate(rules, call.body, session_key(identity, flow.request.headers)) if mode is Mode.MAX else None
        started = time.perf_counter()
        try:
            if len(flow.request.raw_content or b"") > _IN_THREAD_BYTES:
                outcome, content, note = await asyncio.wait_for(
                    asyncio.to_thread(_compress, call.dialect, call.body, settings, gate), COMPRESSION_TIME_S)
            else:
                outcome, content, note = _compress(call.dialect, call.body, settings, gate)
        except _NEVER_CAUGHT:
            raise
        except TimeoutError:
            logger.warning("compression of %s took longer than %g s; sent uncompressed", flow.id, COMPRESSION_TIME_S)
            flow.metadata[COMPRESSION] = {"mode": str(mode), "cuts": {}, "rewrites": 0, "note": (
                f"sent uncompressed: compression took longer than {COMPRESSION_TIME_S:g} s")}
            return
        except BaseException as e:  # noqa: BLE001 - a compressor bug (or a tokenizer panic) never costs the request
            logger.exception("compression failed on %s; sent uncompressed", flow.id)
            flow.metadata[COMPRESSION] = {"mode": str(mode), "cuts": {}, "rewrites": 0,
                                          "note": f"sent uncompressed: compression failed ({type(e).__name__})"}
            return
        elapsed_ms = (time.perf_counter() - started) * 1000
        flow.metadata[COMPRESSION] = {"mode": str(mode), "cuts": _kinds(outcome), "rewrites": len(outcome.rewrites),
                                      "ms": round(elapsed_ms, 2)}
        if note:
            flow.metadata[COMPRESSION]["note"] = note
        if content is not None:
            flow.request.headers.pop("content-encoding", None)
            flow.request.content = content
            set_call(flow, dataclasses.replace(call, body=outcome.body))
        self._counts[flow] = asyncio.ensure_future(asyncio.to_thread(_count, call.dialect, outcome))

    async def response(self, flow: http.HTTPFlow) -> None:
        await self._account(flow)

    async def error(self, flow: http.HTTPFlow) -> None:
        await self._account(flow)

    async def _account(self, flow: http.HTTPFlow) -> None:
        """Tokens before and after, into the flow's metadata, for the comment and the usage records."""
        pending = self._counts.pop(flow, None)
        summary = flow.metadata.get(COMPRESSION)
        if pending is None or summary is None:
            return
        try:
            after, saved, note = await pending
        except Exception:
            logger.exception("token count failed on %s", flow.id)
            return
        summary.update(tokens_before=after + saved, tokens_after=after, tokens_saved=saved)
        if note and not summary.get("note"):
            summary["note"] = note

    # ------------------------------------------------------------ rewrites, per session

    def _gate(self, rules: Rules, body: dict, session: str | None) -> RewriteGate | None:
        """The session's rewrite gate (None for `rewrites: always`, which needs no memory)."""
        section = rules.compression
        if section.rewrites == "always":
            return None
        key = session or _lineage(body)
        gate = self._sessions.get(key)
        if gate is None or (gate.policy, gate.cold_after_s) != (section.rewrites, section.cold_after_s):
            gate = self._sessions[key] = RewriteGate(section.rewrites, section.cold_after_s, self._clock)
            while len(self._sessions) > _SESSIONS_KEPT:
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(key)
        return gate


def _compress(dialect, body, settings: Settings,
              gate: RewriteGate | None) -> tuple[CompressionOutcome, bytes | None, str | None]:
    """The outcome, and, when it changed anything, the bytes to send (serialised here, so a body that
    cannot be serialised fails before the request is touched), and what was estimated, if anything:
    the compressor's counts share one tokenizer budget (tokens.metered)."""
    with tokens.metered() as meter:
        outcome = compress_request(dialect, body, settings, gate)
    return outcome, json_bytes(outcome.body) if outcome.changed else None, meter.note()


def _count(dialect, outcome: CompressionOutcome) -> tuple[int, int, str | None]:
    """(tokens of the request as sent, tokens the cuts saved, what was estimated): the whole request's
    count is what a provider bills, so it is tiktoken over the request (tokens.request_tokens), not a
    sum of cuts. The cuts are counted here too, under the same budget."""
    with tokens.metered() as meter:
        return tokens.request_tokens(dialect, outcome.body), outcome.tokens_saved, meter.note()


def _kinds(outcome: CompressionOutcome) -> dict[str, int]:
    return dict(collections.Counter(cut.kind for cut in outcome.cuts))


def _lineage(body: dict) -> str:
    """A session key for agents that name no session (identity.session_key finds none): the
    conversation's first message, which every later request of the conversation repeats."""
    messages = body.get("messages") or body.get("input") or []
    first = messages[0] if isinstance(messages, list) and messages else None
    return hashlib.sha256(json.dumps([body.get("system"), first], sort_keys=True, default=str).encode()).hexdigest()
