"""The engine's attempts: send a request to the cascade's targets one after another, hold each answer
until its commit point, and stream the first acceptable one to the agent.

No mitmproxy here: the Engine addon hands over the agent's connection (a ResponseWriter), the
candidates and a way to build each target's upstream request.

Commit point: an attempt is held (nothing reaches the agent) until its first meaningful event (text,
tool call or reasoning delta), or until `commit_timeout_s` passed, so reasoning models are not held
silent. A failure before that (an error status, an error event, an empty answer, a timeout) lets the
cascade move on; after it, nothing is ever restarted: a later failure reaches the agent as a
well-formed stream error in its own dialect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from addons import dialects, failures, translate_errors, usage_blocks
from addons.cascade import backoff_s
from addons.plan import Plan, PlanError, stream_translator, translate_answer
from addons.rules import Dialect, ModelTarget
from addons.upstream import Timeouts, UpstreamClient, UpstreamError

logger = logging.getLogger(__name__)

MAX_ERROR_BODY = 1 << 20  # an error body is read whole, up to this much
MAX_KEPT_ARRAY = 4 << 20  # a streamed JSON array (Gemini) is kept for its usage up to this much
_DROPPED_RESPONSE = frozenset({b"transfer-encoding", b"content-length", b"connection", b"keep-alive"})
# Headers of the provider's answer that still hold once the body is translated.
_KEPT_WHEN_TRANSLATED = frozenset({b"retry-after", b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests",
                                   b"x-ratelimit-reset-requests", b"x-ratelimit-limit", b"x-ratelimit-remaining",
                                   b"x-ratelimit-reset", b"request-id", b"x-request-id", b"date"})


@dataclasses.dataclass
class Attempt:
    url: str
    target: str = ""
    status: int | None = None
    error: str | None = None  # a failure kind: status, timeout_first_byte, empty, stream_error, ...
    ttfb_s: float | None = None
    committed_s: float | None = None  # time from the attempt's start to the first byte sent to the agent
    chunks: int = 0
    bytes: int = 0
    events: int = 0  # complete SSE events, for streamed answers
    ended: str = "pending"  # complete | failed | aborted | broken | skipped
    soft: bool = False  # the failure was a soft one: an unusable 200 (empty, refused tool call, ...)
    started_at: float | None = None  # wall clock, epoch seconds
    duration_s: float | None = None  # from the attempt's start to its end (the last byte, or the failure)
    usage: dict[str, Any] | None = None  # usage_blocks.Usage as a dict: the provider's counts, or estimated

    def describe(self) -> str:
        who = f"{self.target.split(':', 1)[-1]} " if self.target else ""
        if self.ended == "skipped":
            return f"{who}skipped ({self.error})"
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
        return f"{who}{outcome}{timing}{events}{ended}"


@dataclasses.dataclass
class Job:
    """One agent request as the relay needs it."""

    method: str
    client_dialect: Dialect
    request: dict[str, Any] | None  # the agent's parsed body (for tool_choice and soft-failure checks)
    stream: bool
    primary: ModelTarget
    candidates: list[ModelTarget]
    plan_for: Callable[[ModelTarget], Plan]  # raises PlanError when a target cannot be used
    attempts: list[Attempt]
    explain: list[tuple[bytes, bytes]]  # headers that explain the routing decision
    trace: list[tuple[bytes, bytes]]  # extra headers sent upstream
    session: str | None
    native: bool  # OpenRouter's own fallback list is injected
    skipped: list[tuple[ModelTarget, str]] = dataclasses.field(default_factory=list)
    quota_wait_s: float | None = None
    include_usage: bool = False
    served_by: str | None = None  # the target whose answer reached the agent
    sticky: str | None = None  # the target stickiness put first


class Relay:
    def __init__(self, client: UpstreamClient, timeouts: Timeouts, *, breakers, quotas, sticky,
                 commit_timeout_s: float, retries: int, clock: Callable[[], float] = time.monotonic):
        self.client, self.timeouts = client, timeouts
        self.breakers, self.quotas, self.sticky = breakers, quotas, sticky
        self.commit_timeout_s, self.retries = commit_timeout_s, retries
        self.clock = clock

    async def serve(self, job: Job, out) -> None:
        failed: list[tuple[failures.Failure, Dialect]] = []
        remaining = list(job.candidates)
        natively_tried: set[ModelTarget] = set()
        retried = 0
        if not remaining:
            await self._refuse(job, out)
            return
        while remaining:
            target = remaining[0]
            key = str(target)
            try:
                plan = job.plan_for(target)
            except PlanError as e:
                job.attempts.append(Attempt("", key, error=e.kind, ended="skipped"))
                failed.append((failures.Failure("config", None, True, False, str(e), counts_for_breaker=False),
                               job.client_dialect))
                remaining.pop(0)
                continue
            if not self.breakers.allow(key):  # another request took the half-open probe meanwhile
                job.attempts.append(Attempt(plan.url, key, error="breaker open", ended="skipped"))
                remaining.pop(0)
                continue
            self.quotas.consume(key)
            listed = (plan.sent or {}).get("models")
            if job.native and isinstance(listed, list):  # OpenRouter tries these itself before it answers
                natively_tried.update(ModelTarget(target.provider, m) for m in listed if isinstance(m, str))
            attempt = Attempt(plan.url, key, started_at=time.time())
            job.attempts.append(attempt)
            failure = await self._attempt(job, plan, attempt, out)
            if failure is None:
                self._served(job, target, attempt)
                return
            attempt.soft = failure.soft  # an unusable 200 (empty, an error inside it) rather than an error status
            failed.append((failure, plan.upstream_dialect))
            self._learn(target, failure)
            if not failure.retryable:
                await self._fail(job, out, failure, plan.upstream_dialect)
                return
            last = len(remaining) == 1
            if last and retried < self.retries and not failure.rampup and not failure.free_daily_cap:
                wait = backoff_s(failure.retry_after_s, retried)
                if wait is not None and self.breakers.allow(key):
                    self.breakers.release(key)
                    retried += 1
                    logger.info("retrying %s in %.1f s after %s", key, wait, failure.message)
                    await asyncio.sleep(wait)
                    continue
            remaining.pop(0)
            if failure.free_daily_cap:  # per account: every other free model of the provider is capped too
                remaining = [t for t in remaining if not (t.provider == target.provider and t.model.endswith(":free"))]
            remaining = [t for t in remaining if t not in natively_tried]
        if failed:
            worst, dialect = _most_informative(failed)
            await self._fail(job, out, worst, dialect)
        else:
            await self._refuse(job, out)

    # ------------------------------------------------------------ one attempt

    async def _attempt(self, job: Job, plan: Plan, attempt: Attempt, out) -> failures.Failure | None:
        started = self.clock()
        try:
            upstream = await self.client.send(job.method, plan.url, _identity_encoding(plan.headers) + job.trace,
                                              plan.body, self.timeouts)
        except UpstreamError as e:
            attempt.error, attempt.ended = e.kind, "failed"
            attempt.duration_s = self.clock() - started
            return failures.from_transport(e.kind, str(e))
        attempt.status = upstream.status
        attempt.ttfb_s = self.clock() - started
        try:
            if not 200 <= upstream.status < 300:
                raw = await _read_all(upstream, attempt, MAX_ERROR_BODY)
                failure = failures.from_status(upstream.status, upstream.headers, raw,
                                               key_from_rules=plan.key_source != "agent")
                if failure is not None:
                    attempt.error, attempt.ended = failure.kind, "failed"
                    return failure
                # an error status that is nobody's failure to retry (4xx from the agent's own mistake)
                await self._commit(job, plan, attempt, out, upstream, started)
                await self._answer_whole(job, plan, out, raw, upstream.status)
                return None
            if _is_event_stream(upstream.headers) and not _encoded(upstream.headers):
                return await self._stream(job, plan, attempt, out, upstream, started)
            if job.stream:
                return await self._pipe(job, plan, attempt, out, upstream, started)
            raw = await _read_all(upstream, attempt)
            if _encoded(upstream.headers):  # compressed despite identity: nothing to judge, passed on as it came
                await self._commit(job, plan, attempt, out, upstream, started)
                await out.send(raw)
                await out.end()
                attempt.ended = "complete"
                return None
            return await self._deliver_whole(job, plan, attempt, out, upstream, started, raw)
        except UpstreamError as e:
            if attempt.committed_s is None:  # still nothing sent to the agent: another model may answer
                attempt.error, attempt.ended = e.kind, "failed"
                return failures.from_transport(e.kind, str(e))
            # a non-SSE body broke after its head went out: the agent sees a truncated answer
            attempt.error, attempt.ended = e.kind, "broken"
            self.breakers.failure(attempt.target, 1.0, e.kind)
            raise ConnectionError(str(e)) from e
        except (ConnectionError, asyncio.CancelledError):
            if attempt.ended != "broken":
                attempt.ended = "aborted"  # the agent went away; stop paying for the generation
            self.breakers.release(attempt.target)
            raise
        finally:
            attempt.duration_s = self.clock() - started
            await upstream.close()

    async def _pipe(self, job: Job, plan: Plan, attempt: Attempt, out, upstream, started) -> failures.Failure | None:
        """A streamed answer that is not SSE (Gemini's streamGenerateContent without alt=sse sends a JSON
        array piece by piece): judged by its first piece only, then passed on as it arrives."""
        chunks = upstream.chunks().__aiter__()
        first = await anext(chunks, b"")
        attempt.chunks, attempt.bytes = 1, len(first)
        if first.lstrip().startswith(b"{"):  # one JSON object: a whole answer (or an error in a 200)
            rest = [chunk async for chunk in chunks]
            attempt.chunks += len(rest)
            raw = first + b"".join(rest)
            attempt.bytes = len(raw)
            return await self._deliver_whole(job, plan, attempt, out, upstream, started, raw)
        await self._commit(job, plan, attempt, out, upstream, started)
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
            attempt.usage = _usage_dict(usage_blocks.from_gemini_array(b"".join(kept)))
        return None

    async def _stream(self, job: Job, plan: Plan, attempt: Attempt, out, upstream, started) -> failures.Failure | None:
        watch = failures.StreamWatch(plan.upstream_dialect, plan.sent, key_from_rules=plan.key_source != "agent")
        translator = stream_translator(plan, job.include_usage) if plan.translated else None
        held: list[bytes] = []
        committed = False
        chunks = upstream.chunks().__aiter__()
        deadline = started + self.commit_timeout_s

        async def send(chunk: bytes) -> None:
            piece = translator.feed(chunk) if translator else chunk
            if piece:
                if translator:
                    attempt.events += piece.count(b"\n\n")
                await out.send(piece)

        try:
            pending: asyncio.Future | None = None
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(chunks, None))
                if not committed:
                    done, _ = await asyncio.wait({pending}, timeout=max(0.0, deadline - self.clock()))
                    if not done:  # a long silence (a reasoning model thinking): commit, the agent waits with us
                        await self._commit(job, plan, attempt, out, upstream, started)
                        committed = True
                        for chunk in held:
                            await send(chunk)
                        held.clear()
                        continue
                chunk = await pending
                pending = None
                if chunk is None:
                    break
                attempt.chunks += 1
                attempt.bytes += len(chunk)
                watch.feed(chunk)
                if not translator:
                    attempt.events = watch.events
                if committed:
                    await send(chunk)
                    continue
                if watch.failure is not None and not watch.meaningful:
                    attempt.error, attempt.ended = watch.failure.kind, "failed"
                    return watch.failure
                held.append(chunk)
                if watch.meaningful:
                    await self._commit(job, plan, attempt, out, upstream, started)
                    committed = True
                    for piece in held:
                        await send(piece)
                    held.clear()
        except UpstreamError as e:
            if not committed:
                attempt.error, attempt.ended = e.kind, "failed"
                return failures.from_transport(e.kind, str(e))
            # past the commit point: never restart; tell the agent in its own dialect and end cleanly
            attempt.error, attempt.ended = e.kind, "broken"
            await out.send(dialects.stream_error_event(job.client_dialect, f"upstream stream broke: {e}"))
            await out.end()
            attempt.usage = await _stream_usage(watch)
            return None
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
        verdict = watch.finish()
        if not committed:
            if verdict is not None:
                attempt.error, attempt.ended = verdict.kind, "failed"
                return verdict
            await self._commit(job, plan, attempt, out, upstream, started)
            for chunk in held:
                await send(chunk)
        if translator:
            tail = translator.finish()
            if tail:
                attempt.events += tail.count(b"\n\n")
                await out.send(tail)
        await out.end()
        attempt.ended = "complete"
        attempt.usage = await _stream_usage(watch)
        if verdict is not None:  # a failure after the commit point (a soft one, or an error event)
            attempt.error, attempt.soft = verdict.kind, verdict.soft
        return None

    async def _commit(self, job: Job, plan: Plan, attempt: Attempt, out, upstream, started: float) -> None:
        """The first byte to the agent: the response head, with what explains it."""
        attempt.committed_s = self.clock() - started
        served = [(b"x-clutch-model", attempt.target.encode()),
                  (b"x-clutch-attempts", str(sum(a.ended != "skipped" for a in job.attempts)).encode())]
        if plan.translated:
            kept = [(k, v) for k, v in _response_headers(upstream.headers) if k.lower() in _KEPT_WHEN_TRANSLATED]
            kind = b"text/event-stream" if _is_event_stream(upstream.headers) else b"application/json"
            headers = [(b"content-type", kind), *kept]
        else:
            headers = _response_headers(upstream.headers)
        await out.start(upstream.status, upstream.reason, headers + job.explain + served)
        job.served_by = attempt.target

    async def _deliver_whole(self, job: Job, plan: Plan, attempt: Attempt, out, upstream, started: float,
                             raw: bytes) -> failures.Failure | None:
        """A whole 2xx answer: a failure if it is one (nothing sent), else committed and sent."""
        answer = _parse_answer(raw)
        failure = _judge_whole(plan, raw, answer)
        if failure is not None:
            attempt.error, attempt.ended = failure.kind, "failed"
            attempt.usage = await _whole_usage(plan, answer)  # an empty or refused answer may still be billed
            return failure
        await self._commit(job, plan, attempt, out, upstream, started)
        await self._answer_whole(job, plan, out, raw, upstream.status)
        attempt.ended = "complete"
        attempt.usage = await _whole_usage(plan, answer)
        return None

    async def _answer_whole(self, job: Job, plan: Plan, out, raw: bytes, status: int) -> None:
        if plan.translated:
            _, raw = translate_answer(plan, raw, status)
        await out.send(raw)
        await out.end()

    # ------------------------------------------------------------ outcomes

    def _served(self, job: Job, target: ModelTarget, attempt: Attempt) -> None:
        """The agent got this target's answer; a failure after the commit point still counts against it."""
        if attempt.error:
            self.breakers.failure(str(target), 0.5 if attempt.soft else 1.0, attempt.error)
            if job.session:
                self.sticky.forget(job.session, str(job.primary))
            return
        self.breakers.success(str(target))
        if job.session:
            self.sticky.set(job.session, str(job.primary), str(target))

    def _learn(self, target: ModelTarget, failure: failures.Failure) -> None:
        key = str(target)
        if failure.counts_for_breaker:
            self.breakers.failure(key, 0.5 if failure.soft else 1.0, failure.kind)
        else:
            self.breakers.release(key)
        if failure.status == 429:
            self.quotas.cooldown(key, failure.retry_after_s)
        if failure.free_daily_cap:
            self.quotas.free_daily_cap(target.provider)

    async def _fail(self, job: Job, out, failure: failures.Failure, upstream_dialect: Dialect) -> None:
        """Every candidate failed (or one failed for good): the most useful error, in the agent's dialect."""
        status = failure.status or (504 if failure.kind.startswith("timeout") else 502)
        if not 400 <= status < 600:  # an error event or an empty answer inside a 200
            status = 502
        if failure.body and failure.status:
            body = failure.body if upstream_dialect is job.client_dialect else \
                translate_errors.translate_error(failure.body, status, job.client_dialect)
        else:
            body = dialects.error_body(job.client_dialect, status, f"Clutch: {failure.message}")
        headers = [(b"content-type", b"application/json"), (b"x-clutch-error", failure.kind.encode()),
                   (b"x-clutch-attempts", str(sum(a.ended != "skipped" for a in job.attempts)).encode())]
        retry = failures.retry_after_header(failure)
        if retry:
            headers.append((b"retry-after", retry.encode()))
        await out.start(status, "Clutch: every candidate failed", headers + job.explain)
        await out.send(body)
        await out.end()

    async def _refuse(self, job: Job, out) -> None:
        """Nothing could be tried: every candidate's breaker is open or its quota used up."""
        reasons = "; ".join(f"{t}: {why}" for t, why in job.skipped) or "no candidate"
        if job.quota_wait_s is not None:
            status, wait = 429, job.quota_wait_s
        else:
            status = 503
            waits = [self.breakers.retry_after(str(t)) for t, _ in job.skipped]
            wait = min((w for w in waits if w), default=None)
        headers = [(b"content-type", b"application/json"), (b"x-clutch-error", b"no_candidate")]
        if wait is not None:
            headers.append((b"retry-after", str(max(1, math.ceil(wait))).encode()))
        message = f"Clutch: no model can take this request now ({reasons})"
        await out.start(status, "Clutch: no candidate", headers + job.explain)
        await out.send(dialects.error_body(job.client_dialect, status, message))
        await out.end()


# ---------------------------------------------------------------- helpers


_NOT_JSON = object()


def _parse_answer(raw: bytes) -> Any:
    """The answer parsed once, for judging it and reading its usage; _NOT_JSON when it is not JSON."""
    try:
        return json.loads(raw)
    except ValueError:
        return _NOT_JSON


def _judge_whole(plan: Plan, raw: bytes, answer: Any) -> failures.Failure | None:
    if answer is _NOT_JSON:
        return failures.Failure("error_in_200", 200, True, False, "the provider's answer is not JSON",
                                body=raw[:4096])
    if not isinstance(answer, dict):
        return None
    return failures.from_answer(plan.upstream_dialect, answer, plan.sent, key_from_rules=plan.key_source != "agent")


async def _whole_usage(plan: Plan, answer: Any) -> dict[str, Any] | None:
    if not isinstance(answer, dict):
        return None
    usage = usage_blocks.from_answer(plan.upstream_dialect, answer)
    if usage is None:  # the provider said nothing: counted from the answer's text (in a thread), flagged
        text = usage_blocks.answer_text(plan.upstream_dialect, answer)
        usage = await asyncio.to_thread(usage_blocks.estimate, None, text)
    return _usage_dict(usage)


async def _stream_usage(watch: failures.StreamWatch) -> dict[str, Any] | None:
    """The stream's reported usage; what it lacks is counted with tiktoken in a thread (a long answer
    takes milliseconds), after the agent has the whole answer."""
    reported = watch.usage.result()
    if reported is not None and reported.input_tokens is not None and reported.output_tokens is not None:
        return _usage_dict(reported)
    return _usage_dict(await asyncio.to_thread(watch.usage.usage_or_estimate, None))


def _usage_dict(usage: usage_blocks.Usage | None) -> dict[str, Any] | None:
    return dataclasses.asdict(usage) if usage is not None else None


def _most_informative(failed: list[tuple[failures.Failure, Dialect]]) -> tuple[failures.Failure, Dialect]:
    best = failures.most_informative([f for f, _ in failed])
    return next(pair for pair in failed if pair[0] is best)


async def _read_all(upstream, attempt: Attempt, limit: int | None = None) -> bytes:
    parts, size = [], 0
    async for chunk in upstream.chunks():
        attempt.chunks += 1
        size += len(chunk)
        if limit is None or size <= limit:
            parts.append(chunk)
    attempt.bytes += size
    return b"".join(parts)


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
