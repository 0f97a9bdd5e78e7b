"""One upstream attempt: send a candidate's request, judge its answer, and deliver it to the agent: a
whole answer once it is judged, a streamed one through its commit point (held_stream.py).

No mitmproxy here: the relay (relay.py) decides which candidate to try next; this module carries one
attempt out on the agent's connection (a ResponseWriter) and reports a `Failure` when the cascade may
still move on, or None when the agent got an answer (whole, streamed, or ended by a well-formed error).
An `Attempt` is its record: what the usage rows, the journal and the `x-clutch-*` headers say about it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from addons.fallback.checks import answer_model, from_answer
from addons.fallback.policy import Failure, from_status, from_transport
from addons.guard.key_mask import masked_url
from addons.routing.plan import Plan, translate_answer
from addons.upstream.client import Timeouts, UpstreamClient, UpstreamError
from addons.upstream.held_stream import HeldStream, Holds
from addons.wire import answer_usage, usage_blocks

MAX_ERROR_BODY = 1 << 20  # an error body is read whole, up to this much
MAX_KEPT_ARRAY = 4 << 20  # a streamed JSON array (Gemini) is kept for its usage up to this much
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
        """An SSE answer: held until its commit point, then streamed (held_stream.py)."""
        return await HeldStream(self, self.runner.holds, self.runner.timeouts.idle).run()


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
