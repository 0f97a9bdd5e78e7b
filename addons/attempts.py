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
  `first_token_s` from the attempt's start is abandoned (`timeout_first_token`); the last candidate is
  committed instead, and the agent waits with Clutch;
* an error event, an empty answer, a missing forced tool call or a cut stream lets the cascade move on.

After it, nothing is restarted: a later failure (the idle timeout, a cut, an error event) ends the stream
with a well-formed error event in the agent's dialect, and the attempt is `broken`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections.abc import Callable
from typing import Any

from addons import dialects, failures, usage_blocks
from addons.plan import Plan, stream_translator, translate_answer
from addons.upstream import Timeouts, UpstreamClient, UpstreamError

MAX_ERROR_BODY = 1 << 20  # an error body is read whole, up to this much
MAX_KEPT_ARRAY = 4 << 20  # a streamed JSON array (Gemini) is kept for its usage up to this much
MAX_HELD = 1 << 20  # a stream held before its commit point: past this much it is committed as it is
ROUGH_COUNT_CHARS = 20_000  # an aborted stream's output above this is estimated at 4 characters a token
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
    usage: dict[str, Any] | None = None  # usage_blocks.Usage as a dict: the provider's counts, or estimated
    fallback: bool = False  # the target is not the request's primary (a retry of the primary is not a fallback)
    retry: bool = False  # a retry of the previous attempt's target, after a wait
    via: str | None = None  # "openrouter": OpenRouter's own fallback list answered with this target

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


# Called just before an answer's head goes to the agent, with the model the answer says it came from:
# the relay books the attempt to the model OpenRouter's fallback list really used.
CommitHook = Callable[[Plan, Attempt, "str | None"], None]


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
                  on_commit: CommitHook) -> failures.Failure | None:
        """One attempt of `job` (relay.Job) at `plan`; `last`: no other candidate is left after it."""
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
        step = _Step(self, job, plan, attempt, out, upstream, started, last, on_commit)
        try:
            return await step.run()
        except UpstreamError as e:
            if attempt.committed_s is None:  # still nothing sent to the agent: another model may answer
                attempt.error, attempt.ended = e.kind, "failed"
                return failures.from_transport(e.kind, str(e))
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
                 last: bool, on_commit: CommitHook):
        self.runner, self.job, self.plan, self.attempt, self.out = runner, job, plan, attempt, out
        self.upstream, self.started, self.last, self.on_commit = upstream, started, last, on_commit
        self.clock = runner.clock

    async def run(self) -> failures.Failure | None:
        plan, attempt, upstream = self.plan, self.attempt, self.upstream
        if not 200 <= upstream.status < 300:
            raw = await _read_all(upstream, attempt, MAX_ERROR_BODY)
            failure = failures.from_status(upstream.status, upstream.headers, raw,
                                           key_from_rules=plan.key_source != "agent")
            if failure is not None:
                attempt.error, attempt.ended = failure.kind, "failed"
                return failure
            # an error status that is nobody's failure to retry (4xx from the agent's own mistake)
            await self.commit(None)
            await self.answer_whole(raw, upstream.status)
            return None
        if _is_event_stream(upstream.headers) and not _encoded(upstream.headers):
            return await self.stream()
        if self.job.stream:
            return await self.pipe()
        raw = await _read_all(upstream, attempt)
        if _encoded(upstream.headers):  # compressed despite identity: nothing to judge, passed on as it came
            await self.commit(None)
            await self.out.send(raw)
            await self.out.end()
            attempt.ended = "complete"
            return None
        return await self.deliver_whole(raw)

    # ------------------------------------------------------------ the head

    async def commit(self, model: str | None) -> None:
        """The first byte to the agent: the response head, with what explains it."""
        job, plan, attempt, upstream = self.job, self.plan, self.attempt, self.upstream
        self.on_commit(plan, attempt, model)
        attempt.committed_s = self.clock() - self.started
        served = [(b"x-clutch-model", attempt.target.encode()),
                  (b"x-clutch-attempts", str(sum(a.ended != "skipped" for a in job.attempts)).encode())]
        if plan.translated:
            kept = [(k, v) for k, v in _response_headers(upstream.headers) if k.lower() in _KEPT_WHEN_TRANSLATED]
            kind = b"text/event-stream" if _is_event_stream(upstream.headers) else b"application/json"
            headers = [(b"content-type", kind), *kept]
        else:
            headers = _response_headers(upstream.headers)
        await self.out.start(upstream.status, upstream.reason, headers + job.explain + served)
        job.served_by = attempt.target

    # ------------------------------------------------------------ whole answers

    async def deliver_whole(self, raw: bytes) -> failures.Failure | None:
        """A whole 2xx answer: a failure if it is one (nothing sent), else committed and sent."""
        plan, attempt = self.plan, self.attempt
        answer = _parse_answer(raw)
        failure = _judge_whole(plan, raw, answer)
        if failure is not None:
            attempt.error, attempt.ended = failure.kind, "failed"
            attempt.usage = await _whole_usage(plan, answer)  # an empty or refused answer may still be billed
            return failure
        model = failures.answer_model(plan.upstream_dialect, answer) if isinstance(answer, dict) else None
        await self.commit(model)
        await self.answer_whole(raw, self.upstream.status)
        attempt.ended = "complete"
        attempt.usage = await _whole_usage(plan, answer)
        return None

    async def answer_whole(self, raw: bytes, status: int) -> None:
        if self.plan.translated:
            _, raw = translate_answer(self.plan, raw, status)
        await self.out.send(raw)
        await self.out.end()

    async def pipe(self) -> failures.Failure | None:
        """A streamed answer that is not SSE (Gemini's streamGenerateContent without alt=sse sends a JSON
        array piece by piece): judged by its first piece only, then passed on as it arrives."""
        attempt, out = self.attempt, self.out
        chunks = self.upstream.chunks().__aiter__()
        first = await anext(chunks, b"")
        attempt.chunks, attempt.bytes = 1, len(first)
        if first.lstrip().startswith(b"{"):  # one JSON object: a whole answer (or an error in a 200)
            rest = [chunk async for chunk in chunks]
            attempt.chunks += len(rest)
            raw = first + b"".join(rest)
            attempt.bytes = len(raw)
            return await self.deliver_whole(raw)
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
            attempt.usage = _usage_dict(usage_blocks.from_gemini_array(b"".join(kept)))
        return None

    # ------------------------------------------------------------ streams

    async def stream(self) -> failures.Failure | None:
        job, plan, attempt, out = self.job, self.plan, self.attempt, self.out
        watch = failures.StreamWatch(plan.upstream_dialect, plan.sent, key_from_rules=plan.key_source != "agent")
        translator = stream_translator(plan, job.include_usage) if plan.translated else None
        held: list[bytes] = []
        held_bytes = 0
        committed = False
        chunks = self.upstream.chunks().__aiter__()
        headers_at = self.clock()

        async def send(chunk: bytes) -> None:
            piece = translator.feed(chunk) if translator else chunk
            if piece:
                if translator:
                    attempt.events += piece.count(b"\n\n")
                await out.send(piece)

        async def commit() -> None:
            nonlocal committed
            await self.commit(watch.model)
            committed = True
            for piece in held:
                await send(piece)
            held.clear()

        pending: asyncio.Future | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(chunks, None))
                if not committed:
                    deadline, stall = self._hold_deadline(watch, headers_at)
                    timeout = None if deadline is None else max(0.0, deadline - self.clock())
                    done, _ = await asyncio.wait({pending}, timeout=timeout)
                    if not done:
                        if stall == "timeout_first_token" and self.last:
                            await commit()  # alive, and nobody else to ask: the agent waits with us
                            continue
                        attempt.error, attempt.ended = stall, "failed"
                        attempt.usage = _reported(watch)
                        return failures.stalled(stall, self._stall_message(stall))
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
                if watch.failure is not None:  # nothing reached the agent yet: another model may answer
                    attempt.error, attempt.ended = watch.failure.kind, "failed"
                    attempt.usage = _reported(watch)
                    return watch.failure
                held.append(chunk)
                held_bytes += len(chunk)
                if watch.committable or held_bytes > MAX_HELD:
                    await commit()
        except UpstreamError as e:
            if not committed:
                attempt.error, attempt.ended = e.kind, "failed"
                attempt.usage = _reported(watch)
                return failures.from_transport(e.kind, str(e))
            # past the commit point: never restart; tell the agent in its own dialect and end cleanly
            await self._break(watch, e.kind, f"upstream stream broke: {e}")
            return None
        except (ConnectionError, asyncio.CancelledError):
            attempt.usage = _usage_dict(_rough_usage(watch))  # what was generated until the agent left
            raise
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
        verdict = watch.finish()
        if not committed:
            if verdict is None and not watch.complete:
                verdict = failures.stalled("stream_cut", "the stream ended without its end marker (cut)")
            if verdict is not None:
                attempt.error, attempt.ended = verdict.kind, "failed"
                attempt.soft = verdict.soft
                attempt.usage = _reported(watch)  # an empty answer may still be billed: keep what was reported
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
        attempt.usage = await _stream_usage(watch)
        if verdict is not None:  # a failure after the commit point (a soft one, or an error event)
            attempt.error, attempt.soft = verdict.kind, verdict.soft
        return None

    def _hold_deadline(self, watch: failures.StreamWatch, headers_at: float) -> tuple[float | None, str]:
        """When the held stream must have reached its commit point, and the stall it is then."""
        holds = self.runner.holds
        if self.attempt.bytes == 0:  # nothing at all since the headers
            return (None, "") if self.last else (headers_at + holds.silence_s, "timeout_silent")
        if not watch.meaningful:  # keep-alives, pings, a role-only delta: alive, but no token yet
            return self.started + holds.first_token_s, "timeout_first_token"
        return None, ""  # content, held until the forced tool call begins (or the answer ends without one)

    def _stall_message(self, stall: str) -> str:
        holds = self.runner.holds
        if stall == "timeout_silent":
            return f"the stream sent nothing for {holds.silence_s:g} s after its headers"
        return f"no text, tool call or reasoning within {holds.first_token_s:g} s (only keep-alives)"

    async def _break(self, watch: failures.StreamWatch, kind: str, message: str) -> None:
        """A failure past the commit point: the agent's stream ends with an error event in its dialect."""
        self.attempt.error, self.attempt.ended = kind, "broken"
        await self.out.send(dialects.stream_error_event(self.job.client_dialect, f"Clutch: {message}"))
        await self.out.end()
        self.attempt.usage = await _stream_usage(watch)


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


def _reported(watch: failures.StreamWatch) -> dict[str, Any] | None:
    """A failed stream's usage as the provider reported it (an empty answer can be billed), no estimate."""
    return _usage_dict(watch.usage.result())


def _rough_usage(watch: failures.StreamWatch) -> usage_blocks.Usage:
    """The usage of a stream the agent left: reported counts, the rest estimated without leaving the event
    loop (tiktoken for a short output, four characters a token past ROUGH_COUNT_CHARS)."""
    usage = watch.usage
    if usage.output_chars <= ROUGH_COUNT_CHARS:
        return usage.usage_or_estimate(None)
    reported = usage.result()
    if reported is not None and reported.output_tokens is not None:
        return reported
    guess = math.ceil(usage.output_chars / 4)
    if reported is None:
        return usage_blocks.Usage(None, guess, None, None, None, None, estimated=True)
    return dataclasses.replace(reported, output_tokens=guess, estimated=True)


def _usage_dict(usage: usage_blocks.Usage | None) -> dict[str, Any] | None:
    return dataclasses.asdict(usage) if usage is not None else None


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
