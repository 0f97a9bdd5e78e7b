"""A streamed (SSE) answer of one attempt, held until its commit point, then streamed to the agent.

No mitmproxy here: attempts.py hands over an attempt whose provider sent a 2xx event stream; this
module reads it, and reports a `Failure` while the cascade may still move on, or None once the agent
got the answer (or a well-formed error event ending it).

The commit point: a streamed answer is held (nothing reaches the agent) until its first text, tool call
or reasoning delta, or, when the request forces a tool call, until that call begins. Before it:

* a stream that sends nothing at all after its headers for `silence_s` is abandoned (`timeout_silent`),
  unless it is the last candidate, which waits until the idle timeout;
* a stream that shows life (keep-alive comments, pings, a role-only delta) but nothing meaningful for
  `first_token_s` after its headers is abandoned (`timeout_first_token`); the last candidate is committed
  instead, and the agent waits with Clutch, for a token within the idle timeout;
* an error event, an empty answer, a missing forced tool call or a cut stream lets the cascade move on.

After it, nothing is restarted: a later failure (the idle timeout, a cut, an error event) ends the stream
with a well-formed error event in the agent's dialect, and the attempt is `broken`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from addons.fallback.policy import Failure, from_transport, stalled
from addons.fallback.stream_watch import StreamWatch
from addons.routing.plan import Plan, stream_translator_for
from addons.upstream.client import UpstreamError
from addons.wire import answer_usage, dialects

if TYPE_CHECKING:
    from addons.upstream.attempts import Attempt

MAX_HELD = 1 << 20  # a stream held before its commit point: past this much it is committed as it is

# What one step of reading decided: (the attempt is over, its outcome); _READ_ON reads on.
_Next = tuple[bool, Failure | None]
_READ_ON: _Next = (False, None)


@dataclasses.dataclass
class Holds:
    """How long an answer may be held before its commit point (module docstring)."""

    silence_s: float = 15.0
    first_token_s: float = 60.0


class Answering(Protocol):
    """The attempt a stream belongs to (attempts.py): what it sent, its record, the agent's connection
    and the provider's answer, and how the response head goes out."""

    job: Any  # relay.Job: the agent's dialect, whether it wants usage in the stream
    plan: Plan
    attempt: Attempt
    out: Any  # the agent's connection (a ResponseWriter)
    upstream: Any  # the provider's answer (its chunks)
    last: bool  # no other candidate is left after this one
    clock: Callable[[], float]

    async def commit(self, model: str | None) -> None: ...

    def credit(self, model: str | None) -> None: ...


class HeldStream:
    def __init__(self, answering: Answering, holds: Holds, idle_s: float) -> None:
        plan = answering.plan
        self.answering, self.holds, self.idle_s = answering, holds, idle_s
        self.attempt, self.out, self.clock = answering.attempt, answering.out, answering.clock
        self.watch = StreamWatch(plan.upstream_dialect, plan.sent, key_from_rules=plan.key_source != "agent")
        self.translator = stream_translator_for(plan, answering.job.include_usage) if plan.translated else None
        self.held: list[bytes] = []
        self.held_bytes = 0
        self.committed_at: float | None = None
        self.chunks = answering.upstream.chunks().__aiter__()
        self.headers_at = self.clock()
        self.pending: asyncio.Future | None = None

    async def run(self) -> Failure | None:
        try:
            while True:
                deadline, stall = self._deadline()
                if deadline is None and self.pending is None:
                    chunk = await anext(self.chunks, None)  # no hold to time: no task of its own per chunk
                else:
                    if self.pending is None:
                        self.pending = asyncio.ensure_future(anext(self.chunks, None))
                    if deadline is not None and not await self._arrives_by(deadline):
                        over, outcome = await self._stalled(stall)
                        if over:
                            return outcome
                        continue
                    chunk = await self.pending
                    self.pending = None
                if chunk is None:
                    break
                over, outcome = await self._take(chunk)
                if over:
                    return outcome
        except UpstreamError as e:
            if self.committed_at is None:
                return self._failed(from_transport(e.kind, str(e)))
            # past the commit point: never restart; tell the agent in its own dialect and end cleanly
            await self._break(e.kind, f"upstream stream broke: {e}")
            return None
        except (ConnectionError, asyncio.CancelledError):
            self.attempt.usage = answer_usage.of_abandoned(self.watch.usage)  # generated until the agent left
            raise
        finally:
            if self.pending is not None and not self.pending.done():
                self.pending.cancel()
        return await self._ended()

    # ------------------------------------------------------------ reading

    async def _arrives_by(self, deadline: float) -> bool:
        assert self.pending is not None
        done, _ = await asyncio.wait({self.pending}, timeout=max(0.0, deadline - self.clock()))
        return bool(done)

    async def _stalled(self, stall: str) -> _Next:
        """Nothing arrived by the deadline of `stall`."""
        if self.committed_at is not None:  # committed on keep-alives, and still no token
            await self._break(stall, self._stall_message(stall))
            return True, None
        if stall == "timeout_first_token" and self.answering.last:
            await self._commit()  # alive, and nobody else to ask: the agent waits with us
            return _READ_ON
        return True, self._failed(stalled(stall, self._stall_message(stall)))

    async def _take(self, chunk: bytes) -> _Next:
        """One chunk: watched, then sent on (committed), or held (not yet)."""
        attempt, watch = self.attempt, self.watch
        attempt.chunks += 1
        attempt.bytes += len(chunk)
        watch.feed(chunk)
        self.answering.credit(watch.model)
        if not self.translator:
            attempt.events = watch.events
        if self.committed_at is not None:
            if watch.overflowed:  # no event ends: what was sent is all the agent gets
                assert watch.failure is not None  # an overflow is one
                await self.out.send(b"\n\n")  # ends the unfinished event, so the error event parses
                await self._break("error_in_200", watch.failure.message)
                return True, None
            await self._send(chunk)
            return _READ_ON
        if watch.failure is not None:  # nothing reached the agent yet: another model may answer
            return True, self._failed(watch.failure)
        self.held.append(chunk)
        self.held_bytes += len(chunk)
        if watch.committable or self.held_bytes > MAX_HELD:
            await self._commit()
        return _READ_ON

    async def _ended(self) -> Failure | None:
        """The provider ended the stream: before the commit point it is judged like a whole answer (an
        unusable one lets the cascade move on); after it, an unfinished one ends with an error event."""
        attempt, watch = self.attempt, self.watch
        verdict = watch.finish()
        if self.committed_at is None:
            if verdict is None and not watch.complete:
                verdict = stalled("stream_cut", "the stream ended without its end marker (cut)")
            if verdict is not None:
                return self._failed(verdict)
            await self._commit()
        elif verdict is None and not watch.complete:
            await self._break("stream_cut", "the upstream stream ended without finishing (cut): "
                                            "the answer is incomplete")
            return None
        if self.translator and (tail := self.translator.finish()):
            attempt.events += tail.count(b"\n\n")
            await self.out.send(tail)
        await self.out.end()
        attempt.ended = "complete"
        attempt.usage = await answer_usage.of_stream(watch.usage)
        if verdict is not None:  # a failure after the commit point (a soft one, or an error event)
            attempt.error, attempt.soft = verdict.kind, verdict.soft
        return None

    # ------------------------------------------------------------ to the agent

    async def _send(self, chunk: bytes) -> None:
        piece = self.translator.feed(chunk) if self.translator else chunk
        if piece:
            if self.translator:
                self.attempt.events += piece.count(b"\n\n")
            await self.out.send(piece)

    async def _commit(self) -> None:
        """The commit point: the head goes out, then what was held."""
        await self.answering.commit(self.watch.model)
        self.committed_at = self.clock()
        for piece in self.held:
            await self._send(piece)
        self.held.clear()

    def _failed(self, failure: Failure) -> Failure:
        """Nothing reached the agent: the cascade may move on. An unusable answer may still be billed."""
        self.attempt.error, self.attempt.ended = failure.kind, "failed"
        self.attempt.soft = failure.soft
        self.attempt.usage = answer_usage.reported(self.watch.usage)
        return failure

    async def _break(self, kind: str, message: str) -> None:
        """A failure past the commit point: the agent's stream ends with an error event in its dialect."""
        self.attempt.error, self.attempt.ended = kind, "broken"
        await self.out.send(dialects.stream_error_event(self.answering.job.client_dialect, f"Clutch: {message}"))
        await self.out.end()
        self.attempt.usage = await answer_usage.of_stream(self.watch.usage)

    # ------------------------------------------------------------ the holds

    def _deadline(self) -> tuple[float | None, str]:
        """When the stream must have shown what it holds, and the stall it is past then (None: no limit
        but the idle timeout between pieces)."""
        if self.committed_at is not None:
            if self.watch.meaningful:
                return None, ""
            # committed on keep-alives alone (the last candidate): a token must follow within the idle timeout
            return self.committed_at + self.idle_s, "timeout_first_token"
        if self.attempt.bytes == 0:  # nothing at all since the headers
            return (None, "") if self.answering.last else (self.headers_at + self.holds.silence_s, "timeout_silent")
        if not self.watch.meaningful:  # keep-alives, pings, a role-only delta: alive, but no token yet
            return self.headers_at + self.holds.first_token_s, "timeout_first_token"
        return None, ""  # content, held until the forced tool call begins (or the answer ends without one)

    def _stall_message(self, stall: str) -> str:
        if stall == "timeout_silent":
            return f"the stream sent nothing for {self.holds.silence_s:g} s after its headers"
        return "no text, tool call or reasoning in time (only keep-alives)"
