"""One upstream attempt: send a candidate's request, judge its answer, hold the answer until its commit
point, and stream it to the agent.

No mitmproxy here: the relay (relay.py) decides which candidate to try next; this module carries one
attempt out on the agent's connection (a ResponseWriter) and reports a `Failure` when the cascade may
still move on, or None when the agent got an answer (whole, streamed, or ended by a well-formed error).

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
import json
import time
from collections.abc import Callable
from typing import Any

from addons.fallback.checks import StreamWatch, answer_model, from_answer
from addons.fallback.policy import Failure, from_status, from_transport, stalled
from addons.guard.key_mask import masked_url
from addons.routing.plan import Plan, stream_translator_for, translate_answer
from addons.upstream.client import Timeouts, UpstreamClient, UpstreamError
from addons.wire import answer_usage, dialects, usage_blocks

MAX_ERROR_BODY = 1 << 20  # an error body is read whole, up to this much
MAX_KEPT_ARRAY = 4 << 20  # a streamed JSON array (Gemini) is kept for its usage up to this much
MAX_HELD = 1 << 20  # a stream held before its commit point: past this much it is committed as it is
MAX_ANSWER = 16 << 20  # a whole (non-SSE) answer: past this much it is a bad answer, not read further
OPENROUTER_SKIPPED = "openrouter_fallback"  # Attempt.error of a model OpenRouter's own `models` list moved past
_DROPPED_RESPONSE = frozenset({b"transfer-encoding", b"content-length", b"connection", b"keep-alive"})
# Headers of the provider's answer that still hold once the body is translated.
_KEPT_WHEN_TRANSLATED = frozenset({b"retry-after", b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests",
                                   b"x-ratelimit-reset-requests", b"x-ratelimit-limit", b"x-ratelimit-remaining",
                                   b"x-ratelimit-reset", b"request-id", b"x-request-id", b"date"})


@dataclasses.dataclass
class Attempt:
    url: str
    target: str = ""  # provider:model the attempt is booked to: what was sent, or what OpenRouter says answered
    status: int | None = None
    error: str | None = None  # a failure kind: status, timeout_first_byte, empty, stream_cut, ...
    ttfb_s: float | None = None
    committed_s: float | None = None  # time from the attempt's start to the first byte sent to the agent
    chunks: int = 0
    bytes: int = 0
    events: int = 0  # complete SSE events, for streamed answers
    ended: str = "pending"  # complete | failed | aborted | broken | skipped
    soft: bool = False  # the failure was a soft one: an unusable 200 (empty, refused tool call, ...)
    started_at: float | None = None  # wall clock, epoch seconds
    duration_s: float | None = None  # from the attempt's start to its end (the last byte, or the failure)
    usage: dict[str, Any] | None = None  # usage_blocks.TokenUsage as a dict: the provider's counts, or estimated
    fallback: bool = False  # the target is not the request's primary (a retry of the primary is not a fallback)
    retry: bool = False  # a retry of the previous attempt's target, after a wait
    via: str | None = None  # "openrouter": OpenRouter's own fallback list answered with this target
    answered_model: str | None = None  # the model the answer says it came from (its `model` field)

    def __post_init__(self) -> None:
        self.url = masked_url(self.url)  # recorded, shown and logged: never with Gemini's ?key=

    def describe(self) -> str:
        who = f"{self.target.split(':', 1)[-1]} " if self.target else ""
        if self.ended == "skipped":
            return f"{who}skipped ({self.error})"
        if self.error == OPENROUTER_SKIPPED:
            return f"{who}failed at OpenRouter (its fallback list moved on)"
        outcome = str(self.status) if self.status is not None else (self.error or "?")
        if self.status is not None and self.error and self.error != "status":
            outcome += f" {self.error}"
        timing = ""
        if self.committed_s is not None:
            timing = f", committed in {self.committed_s:.2f} s"
        elif self.ttfb_s is not None:
            timing = f" in {self.ttfb_s * 1000:.0f} ms"
        events = f", {self.events} SSE events" if self.events else ""
        ended = f", {self.ended}" if self.ended in ("aborted", "broken") else ""
        retry = "retry: " if self.retry else ""
        via = " (OpenRouter fallback)" if self.via == "openrouter" else ""
        return f"{retry}{who}{outcome}{via}{timing}{events}{ended}"


# Called once per attempt with the model its answer says it came from, as soon as it is known (before the
# head goes to the agent when it comes early enough to be named in `x-clutch-model`, else later, and for
# a failed answer too): the relay books the attempt to the model OpenRouter's fallback list really used.
Credit = Callable[[Plan, Attempt, str], None]


@dataclasses.dataclass
class Holds:
    """How long an answer may be held before its commit point (module docstring)."""

    silence_s: float = 15.0
    first_token_s: float = 60.0


class AttemptRunner:
    def __init__(self, client: UpstreamClient, timeouts: Timeouts, holds: Holds, *,
                 clock: Callable[[], float] = time.monotonic):
        self.client, self.timeouts, self.holds, self.clock = client, timeouts, holds, clock

    async def run(self, job, plan: Plan, attempt: Attempt, out, *, last: bool,
                  credit: Credit) -> Failure | None:
        """One attempt of `job` (relay.Job) at `plan`; `last`: no other candidate is left after it."""
        started = self.clock()
        try:
            upstream = await self.client.send(job.method, plan.url, _identity_encoding(plan.headers) + job.trace,
                                              plan.body, self.timeouts)
        except UpstreamError as e:
            attempt.error, attempt.ended = e.kind, "failed"
            attempt.duration_s = self.clock() - started
            return from_transport(e.kind, str(e))
        except (ConnectionError, asyncio.CancelledError):
            attempt.ended = "aborted"  # the agent left before the provider's headers (a slow prefill)
            attempt.duration_s = self.clock() - started
            raise
        attempt.status = upstream.status
        attempt.ttfb_s = self.clock() - started
        step = _Step(self, job, plan, attempt, out, upstream, started, last, credit)
        try:
            return await step.run()
        except UpstreamError as e:
            if attempt.committed_s is None:  # still nothing sent to the agent: another model may answer
                attempt.error, attempt.ended = e.kind, "failed"
                return from_transport(e.kind, str(e))
            # a non-SSE body broke after its head went out: the agent sees a truncated answer
            attempt.error, attempt.ended = e.kind, "broken"
            raise ConnectionError(str(e)) from e
        except (ConnectionError, asyncio.CancelledError):
            if attempt.ended != "broken":
                attempt.ended = "aborted"  # the agent went away; stop paying for the generation
            raise
        finally:
            attempt.duration_s = self.clock() - started
            await upstream.close()


class _Step:
    """One attempt once the provider's head arrived."""

    def __init__(self, runner: AttemptRunner, job, plan: Plan, attempt: Attempt, out, upstream, started: float,
                 last: bool, credit: Credit):
        self.runner, self.job, self.plan, self.attempt, self.out = runner, job, plan, attempt, out
        self.upstream, self.started, self.last, self._credit = upstream, started, last, credit
        self.clock = runner.clock

    async def run(self) -> Failure | None:
        plan, attempt, upstream = self.plan, self.attempt, self.upstream
        if not 200 <= upstream.status < 300:  # every error status is a failure; the relay decides what next
            raw, _ = await _read_all(upstream, attempt, MAX_ERROR_BODY)
            failure = from_status(upstream.status, upstream.headers, raw,
                                  key_from_rules=plan.key_source != "agent")
            assert failure is not None
            attempt.error, attempt.ended = failure.kind, "failed"
            return failure
        if _is_event_stream(upstream.headers) and not _encoded(upstream.headers):
            return await self.stream()
        if self.job.stream:
            return await self.pipe()
        raw, over = await _read_all(upstream, attempt, MAX_ANSWER)
        if over:
            return self.too_large()
        if _encoded(upstream.headers):  # compressed despite identity: nothing to judge, passed on as it came
            await self.commit(None)
            await self.out.send(raw)
            await self.out.end()
            attempt.ended = "complete"
            return None
        return await self.deliver_whole(raw)

    def too_large(self) -> Failure:
        """An answer past MAX_ANSWER: not read further, judged like one that is not JSON."""
        failure = Failure("error_in_200", self.upstream.status, True, False,
                          f"the provider's answer is over {MAX_ANSWER >> 20} MB")
        self.attempt.error, self.attempt.ended = failure.kind, "failed"
        return failure

    # ------------------------------------------------------------ the head

    def credit(self, model: str | None) -> None:
        """The answer named its model: the relay books the attempt to it (once)."""
        if model and self.attempt.answered_model is None:
            self.attempt.answered_model = model
            self._credit(self.plan, self.attempt, model)

    async def commit(self, model: str | None) -> None:
        """The first byte to the agent: the response head, with what explains it."""
        job, plan, attempt, upstream = self.job, self.plan, self.attempt, self.upstream
        self.credit(model)
        attempt.committed_s = self.clock() - self.started
        served = [(b"x-clutch-model", attempt.target.encode()),
                  (b"x-clutch-attempts", str(job.tried).encode())]
        if plan.translated:
            kept = [(k, v) for k, v in _response_headers(upstream.headers) if k.lower() in _KEPT_WHEN_TRANSLATED]
            kind = b"text/event-stream" if _is_event_stream(upstream.headers) else b"application/json"
            headers = [(b"content-type", kind), *kept]
        else:
            headers = _response_headers(upstream.headers)
        await self.out.start(upstream.status, upstream.reason, headers + job.explain + served)
        job.served_by = attempt.target

    # ------------------------------------------------------------ whole answers

    async def deliver_whole(self, raw: bytes) -> Failure | None:
        """A whole 2xx answer: a failure if it is one (nothing sent), else committed and sent."""
        plan, attempt = self.plan, self.attempt
        answer = _parse_answer(raw)
        failure = _judge_whole(plan, raw, answer)
        model = answer_model(plan.upstream_dialect, answer) if isinstance(answer, dict) else None
        if failure is not None:
            self.credit(model)
            attempt.error, attempt.ended = failure.kind, "failed"
            # an empty or refused answer may still be billed
            attempt.usage = await answer_usage.of_whole(plan.upstream_dialect, answer)
            return failure
        await self.commit(model)
        await self.answer_whole(raw, self.upstream.status)
        attempt.ended = "complete"
        attempt.usage = await answer_usage.of_whole(plan.upstream_dialect, answer)
        return None

    async def answer_whole(self, raw: bytes, status: int) -> None:
        if self.plan.translated:
            _, raw = translate_answer(self.plan, raw, status)
        await self.out.send(raw)
        await self.out.end()

    async def pipe(self) -> Failure | None:
        """A streamed answer that is not SSE (Gemini's streamGenerateContent without alt=sse sends a JSON
        array piece by piece): judged by its first piece only, then passed on as it arrives."""
        attempt, out = self.attempt, self.out
        chunks = self.upstream.chunks().__aiter__()
        first = await anext(chunks, b"")
        attempt.chunks, attempt.bytes = 1, len(first)
        if first.lstrip().startswith(b"{"):  # one JSON object: a whole answer (or an error in a 200)
            rest = []
            async for chunk in chunks:
                attempt.chunks += 1
                attempt.bytes += len(chunk)
                if attempt.bytes > MAX_ANSWER:
                    return self.too_large()
                rest.append(chunk)
            return await self.deliver_whole(first + b"".join(rest))
        await self.commit(None)
        await out.send(first)
        kept = [first]  # the array's last element carries the usage; kept within a bound
        async for chunk in chunks:
            attempt.chunks += 1
            attempt.bytes += len(chunk)
            if attempt.bytes <= MAX_KEPT_ARRAY:
                kept.append(chunk)
            await out.send(chunk)
        await out.end()
        attempt.ended = "complete"
        if attempt.bytes <= MAX_KEPT_ARRAY:
            attempt.usage = answer_usage.as_dict(usage_blocks.usage_of_gemini_array(b"".join(kept)))
        return None

    # ------------------------------------------------------------ streams

    async def stream(self) -> Failure | None:
        job, plan, attempt, out = self.job, self.plan, self.attempt, self.out
        watch = StreamWatch(plan.upstream_dialect, plan.sent, key_from_rules=plan.key_source != "agent")
        translator = stream_translator_for(plan, job.include_usage) if plan.translated else None
        held: list[bytes] = []
        held_bytes = 0
        committed_at: float | None = None
        chunks = self.upstream.chunks().__aiter__()
        headers_at = self.clock()

        async def send(chunk: bytes) -> None:
            piece = translator.feed(chunk) if translator else chunk
            if piece:
                if translator:
                    attempt.events += piece.count(b"\n\n")
                await out.send(piece)

        async def commit() -> None:
            nonlocal committed_at
            await self.commit(watch.model)
            committed_at = self.clock()
            for piece in held:
                await send(piece)
            held.clear()

        pending: asyncio.Future | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(chunks, None))
                deadline, stall = self._deadline(watch, headers_at, committed_at)
                if deadline is not None:
                    done, _ = await asyncio.wait({pending}, timeout=max(0.0, deadline - self.clock()))
                    if not done:
                        if committed_at is not None:  # committed on keep-alives, and still no token
                            await self._break(watch, stall, self._stall_message(stall))
                            return None
                        if stall == "timeout_first_token" and self.last:
                            await commit()  # alive, and nobody else to ask: the agent waits with us
                            continue
                        attempt.error, attempt.ended = stall, "failed"
                        attempt.usage = answer_usage.reported(watch.usage)
                        return stalled(stall, self._stall_message(stall))
                chunk = await pending
                pending = None
                if chunk is None:
                    break
                attempt.chunks += 1
                attempt.bytes += len(chunk)
                watch.feed(chunk)
                self.credit(watch.model)
                if not translator:
                    attempt.events = watch.events
                if committed_at is not None:
                    if watch.overflowed:  # no event ends: what was sent is all the agent gets
                        await out.send(b"\n\n")  # ends the unfinished event, so the error event parses
                        await self._break(watch, "error_in_200", watch.failure.message)
                        return None
                    await send(chunk)
                    continue
                if watch.failure is not None:  # nothing reached the agent yet: another model may answer
                    attempt.error, attempt.ended = watch.failure.kind, "failed"
                    attempt.usage = answer_usage.reported(watch.usage)
                    return watch.failure
                held.append(chunk)
                held_bytes += len(chunk)
                if watch.committable or held_bytes > MAX_HELD:
                    await commit()
        except UpstreamError as e:
            if committed_at is None:
                attempt.error, attempt.ended = e.kind, "failed"
                attempt.usage = answer_usage.reported(watch.usage)
                return from_transport(e.kind, str(e))
            # past the commit point: never restart; tell the agent in its own dialect and end cleanly
            await self._break(watch, e.kind, f"upstream stream broke: {e}")
            return None
        except (ConnectionError, asyncio.CancelledError):
            attempt.usage = answer_usage.of_abandoned(watch.usage)  # what was generated until the agent left
            raise
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
        verdict = watch.finish()
        if committed_at is None:
            if verdict is None and not watch.complete:
                verdict = stalled("stream_cut", "the stream ended without its end marker (cut)")
            if verdict is not None:
                attempt.error, attempt.ended = verdict.kind, "failed"
                attempt.soft = verdict.soft
                attempt.usage = answer_usage.reported(watch.usage)  # an empty answer may still be billed
                return verdict
            await commit()
        elif verdict is None and not watch.complete:
            await self._break(watch, "stream_cut", "the upstream stream ended without finishing (cut): "
                                                   "the answer is incomplete")
            return None
        if translator:
            tail = translator.finish()
            if tail:
                attempt.events += tail.count(b"\n\n")
                await out.send(tail)
        await out.end()
        attempt.ended = "complete"
        attempt.usage = await answer_usage.of_stream(watch.usage)
        if verdict is not None:  # a failure after the commit point (a soft one, or an error event)
            attempt.error, attempt.soft = verdict.kind, verdict.soft
        return None

    def _deadline(self, watch: StreamWatch, headers_at: float,
                  committed_at: float | None) -> tuple[float | None, str]:
        """When the stream must have shown what it holds, and the stall it is past then (None: no limit
        but the idle timeout between pieces)."""
        holds = self.runner.holds
        if committed_at is not None:
            if watch.meaningful:
                return None, ""
            # committed on keep-alives alone (the last candidate): a token must follow within the idle timeout
            return committed_at + self.runner.timeouts.idle, "timeout_first_token"
        if self.attempt.bytes == 0:  # nothing at all since the headers
            return (None, "") if self.last else (headers_at + holds.silence_s, "timeout_silent")
        if not watch.meaningful:  # keep-alives, pings, a role-only delta: alive, but no token yet
            return headers_at + holds.first_token_s, "timeout_first_token"
        return None, ""  # content, held until the forced tool call begins (or the answer ends without one)

    def _stall_message(self, stall: str) -> str:
        holds = self.runner.holds
        if stall == "timeout_silent":
            return f"the stream sent nothing for {holds.silence_s:g} s after its headers"
        return "no text, tool call or reasoning in time (only keep-alives)"

    async def _break(self, watch: StreamWatch, kind: str, message: str) -> None:
        """A failure past the commit point: the agent's stream ends with an error event in its dialect."""
        self.attempt.error, self.attempt.ended = kind, "broken"
        await self.out.send(dialects.stream_error_event(self.job.client_dialect, f"Clutch: {message}"))
        await self.out.end()
        self.attempt.usage = await answer_usage.of_stream(watch.usage)


# ---------------------------------------------------------------- helpers


_NOT_JSON = object()


def _parse_answer(raw: bytes) -> Any:
    """The answer parsed once, for judging it and reading its usage; _NOT_JSON when it is not JSON."""
    try:
        return json.loads(raw)
    except ValueError:
        return _NOT_JSON


def _judge_whole(plan: Plan, raw: bytes, answer: Any) -> Failure | None:
    if answer is _NOT_JSON:
        return Failure("error_in_200", 200, True, False, "the provider's answer is not JSON",
                       body=raw[:4096])
    if not isinstance(answer, dict):
        return Failure("error_in_200", 200, True, False, "the provider's answer is not a JSON object",
                       body=raw[:4096])
    return from_answer(plan.upstream_dialect, answer, plan.sent, key_from_rules=plan.key_source != "agent")


async def _read_all(upstream, attempt: Attempt, limit: int) -> tuple[bytes, bool]:
    """The body, up to `limit` bytes, and whether there was more: reading stops there (an endless
    body would otherwise hold the attempt until the idle timeout and its bytes in memory)."""
    parts, size = [], 0
    async for chunk in upstream.chunks():
        attempt.chunks += 1
        attempt.bytes += len(chunk)
        if size + len(chunk) > limit:
            parts.append(chunk[:limit - size])
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), False


def _identity_encoding(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Ask for uncompressed answers: the relay reads every answer to judge it (commit point, soft
    failures, error bodies), and LLM answers are small next to their prompts."""
    return [(k, v) for k, v in headers if k.lower() != b"accept-encoding"] + [(b"accept-encoding", b"identity")]


def _encoded(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"content-encoding" and v.strip().lower() not in (b"", b"identity") for k, v in headers)


def _is_event_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"content-type" and b"text/event-stream" in v for k, v in headers)


def _response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.lower() not in _DROPPED_RESPONSE]
