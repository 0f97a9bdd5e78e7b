"""The engine's cascade: try a request's candidates one after another (attempts.py carries each attempt
out), learn from every outcome (breakers, quotas, stickiness), and when nothing worked, tell the agent
why in its own dialect.

No mitmproxy here: the Engine addon hands over the agent's connection (a ResponseWriter), the
candidates and a way to build each target's upstream request.

* What is booked is what was sent: an attempt, its breaker and its quota belong to the provider:model
  its request went to, and when OpenRouter's own `models` list answered from a later entry, to the model
  the answer names; the entries OpenRouter moved past count as failures of theirs.
* A 404 is a configuration mistake of that target (its model name or URL): the cascade moves on, but
  the target is never retried and its breaker is not charged; the final error names target and URL.
* When every candidate failed (or one failed for good), the agent gets one error in its own dialect
  (final_error.py: what it says, its status), with a Retry-After whenever Clutch knows when a candidate
  frees up (a Retry-After it was given, a quota's cooldown, an open breaker's probe).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from addons.config.rules import ModelTarget
from addons.fallback.breakers import HALF_OPEN
from addons.fallback.cascade import backoff_s
from addons.fallback.policy import Failure
from addons.routing.plan import Plan, PlanError
from addons.upstream.attempts import OPENROUTER_SKIPPED, Attempt, AttemptRunner
from addons.upstream.client import Timeouts, UpstreamClient
from addons.upstream.final_error import Failed, final_error, retry_headers
from addons.upstream.held_stream import Holds
from addons.wire import dialects
from addons.wire.dialects import Dialect

logger = logging.getLogger(__name__)

__all__ = ["Attempt", "Holds", "Job", "Relay"]


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
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)  # the relay finished with it

    @property
    def tried(self) -> int:
        """Upstream attempts so far (`x-clutch-attempts`): a candidate left out is none."""
        return sum(a.ended != "skipped" for a in self.attempts)


class Relay:
    def __init__(self, client: UpstreamClient, timeouts: Timeouts, *, breakers, quotas, sticky,
                 holds: Holds, retries: int, clock: Callable[[], float] = time.monotonic,
                 admit: Callable[[str], Awaitable[float | None]] | None = None):
        self.breakers, self.quotas, self.sticky = breakers, quotas, sticky
        # takes a request from the target's quotas (None) or says how long they are used up for: the
        # local book's take by default, shared state's (every replica's requests) in team mode
        self._admit = admit or _local_admit(quotas)
        self.retries = retries
        self.runner = AttemptRunner(client, timeouts, holds, clock=clock)

    async def serve(self, job: Job, out) -> None:
        """Serve `job` on `out`; a failure of Clutch's own logic fails this request visibly, in the agent's
        dialect, and frees what the attempt held (a half-open breaker's probe)."""
        try:
            await self._serve(job, out)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as e:
            logger.exception("the relay failed on a request to %s", job.primary)
            for attempt in job.attempts:
                if attempt.ended == "pending":
                    attempt.error, attempt.ended = "internal_error", "failed"
                    self.breakers.release(attempt.target)
            message = f"Clutch: internal error while relaying this request ({type(e).__name__}); see the gateway log"
            if not out.started:
                await out.start(500, "Clutch internal error", [(b"content-type", b"application/json"),
                                                               (b"x-clutch-error", b"internal_error"), *job.explain])
                await out.send(dialects.error_body(job.client_dialect, 500, message))
            elif not out.sent_all:
                await out.send(dialects.stream_error_event(job.client_dialect, message))
            if not out.sent_all:
                await out.end()

    async def _serve(self, job: Job, out) -> None:
        if not job.candidates:
            await self._refuse(job, out)
            return
        failed: list[Failed] = []
        remaining = list(job.candidates)
        natively_tried: set[ModelTarget] = set()
        retried = 0
        previous: str | None = None
        while remaining:
            target = remaining[0]
            plan = self._plan(job, target, failed)
            key = booked(plan, target) if plan is not None else ""
            if plan is None or not self._allowed(job, plan, target, key) \
                    or not await self._taken(job, plan, target, key):
                remaining.pop(0)
                continue
            attempt = Attempt(plan.url, key, started_at=time.time(), fallback=key != str(job.primary),
                              retry=key == previous)
            previous = key
            job.attempts.append(attempt)
            failure = await self._attempt(job, plan, attempt, out, last=len(remaining) == 1)
            if failure is None:
                self._served(job, attempt)
                return
            attempt.soft = failure.soft  # an unusable 200 (empty, an error inside it) rather than an error status
            failed.append(Failed(attempt.target, failure, plan.upstream_dialect, plan.url, plan.changed))
            self._learn(attempt.target, target.provider, failure, failed[-1].url)
            natively_tried |= _natively_tried(job, plan, attempt, failure)
            if not failure.retryable:  # the request's own fault: the agent gets the provider's own answer
                await self._fail(job, out, failed[-1:], alone=True)
                return
            if len(remaining) == 1 and (wait := self._retry_wait(key, failure, retried)) is not None:
                retried += 1
                logger.info("retrying %s in %.1f s after %s", key, wait, failure.message)
                await asyncio.sleep(wait)
                continue
            remaining = _left_after(remaining, target, failure, natively_tried)
        if failed:
            await self._fail(job, out, failed)
        else:
            await self._refuse(job, out)

    # ------------------------------------------------------------ one candidate

    def _plan(self, job: Job, target: ModelTarget, failed: list[Failed]) -> Plan | None:
        """The target's upstream request; None when it cannot be built (a `config` failure of its own)."""
        try:
            return job.plan_for(target)
        except PlanError as e:
            job.attempts.append(Attempt("", str(target), error=e.kind, ended="skipped"))
            failed.append(Failed(str(target), Failure("config", None, True, False, str(e),
                                                      counts_for_breaker=False), job.client_dialect))
            return None

    def _allowed(self, job: Job, plan: Plan, target: ModelTarget, key: str) -> bool:
        """May `key` be tried? Its breaker says no when another request took the half-open probe meanwhile."""
        if self.breakers.allow(key):
            return True
        job.attempts.append(Attempt(plan.url, key, error="breaker open", ended="skipped"))
        job.skipped.append((target, "breaker open"))
        return False

    async def _taken(self, job: Job, plan: Plan, target: ModelTarget, key: str) -> bool:
        """Take a request from `key`'s quotas just before it is sent: the cascade's order only looked, and
        requests that arrive together must not all pass that look (nor, in team mode, every replica's)."""
        probe = self.breakers.state(key) == HALF_OPEN  # `_allowed` just handed this request the probe
        try:
            wait = await self._admit(key)
        except BaseException:  # cancelled meanwhile (the agent left, the gateway stops), or a bug
            if probe:
                self.breakers.release(key)
            raise
        if wait is None:
            return True
        if probe:
            self.breakers.release(key)  # the probe goes unused: another request may take it
        job.attempts.append(Attempt(plan.url, key, error="over quota", ended="skipped"))
        job.skipped.append((target, f"over quota ({wait:.0f} s)"))
        job.quota_wait_s = wait if job.quota_wait_s is None else min(job.quota_wait_s, wait)
        return False

    async def _attempt(self, job: Job, plan: Plan, attempt: Attempt, out, *, last: bool) -> Failure | None:
        """One attempt. When the agent leaves meanwhile, the breaker's probe is freed, or charged when a
        whole answer broke after its head went out."""
        try:
            return await self.runner.run(job, plan, attempt, out, last=last,
                                         credit=lambda p, a, m: self._credit_native(job, p, a, m))
        except (ConnectionError, asyncio.CancelledError):
            if attempt.ended == "broken":  # a whole answer broke after its head went out
                self.breakers.failure(attempt.target, 1.0, attempt.error or "broken")
            else:
                self.breakers.release(attempt.target)
            raise

    def _retry_wait(self, key: str, failure: Failure, retried: int) -> float | None:
        """How long to wait before the last candidate is tried again; None when it is not (no retries left,
        a ramp-up, a free daily cap or a configuration error, no backoff, or its breaker says no)."""
        if retried >= self.retries or failure.rampup or failure.free_daily_cap or failure.misconfigured:
            return None
        wait = backoff_s(failure.retry_after_s, retried)
        if wait is None or not self.breakers.allow(key):
            return None
        self.breakers.release(key)
        return wait

    # ------------------------------------------------------------ outcomes

    def _credit_native(self, job: Job, plan: Plan, attempt: Attempt, model: str) -> None:
        """OpenRouter answered from a later entry of its `models` list: book the attempt to that model, and
        the entries before it as failures of theirs (OpenRouter moved past them; why, it does not say)."""
        order = native_order(job, plan)
        index = listed_index(order, model) if len(order) > 1 else None
        if not index:
            return
        position = job.attempts.index(attempt)
        for offset, name in enumerate(order[:index]):
            key = f"{plan.provider}:{name}"
            job.attempts.insert(position + offset, Attempt(
                plan.url, key, error=OPENROUTER_SKIPPED, ended="failed", started_at=attempt.started_at,
                fallback=key != str(job.primary)))
            self.breakers.failure(key, 1.0, "OpenRouter's fallback list moved past it")
        attempt.target, attempt.via = f"{plan.provider}:{order[index]}", "openrouter"
        attempt.fallback = attempt.target != str(job.primary)
        self.quotas.consume(attempt.target)
        if attempt.committed_s is not None:  # named after the head went out (x-clutch-model named the primary)
            job.served_by = attempt.target
        logger.info("OpenRouter answered %s from its fallback list %s", attempt.target, ", ".join(order))

    def _served(self, job: Job, attempt: Attempt) -> None:
        """The agent got this attempt's answer; a failure after the commit point still counts against it."""
        if attempt.error:
            self.breakers.failure(attempt.target, 0.5 if attempt.soft else 1.0, attempt.error)
            if job.session:
                self.sticky.forget(job.session, str(job.primary))
            return
        self.breakers.success(attempt.target)
        if job.session:
            self.sticky.set(job.session, str(job.primary), attempt.target)

    def _learn(self, key: str, provider: str, failure: Failure, url: str) -> None:
        if failure.counts_for_breaker:
            self.breakers.failure(key, 0.5 if failure.soft else 1.0, failure.kind)
        else:
            self.breakers.release(key)
        if failure.misconfigured:
            logger.warning("%s answered 404 at %s (%s): a configuration error; check its model name and the "
                           "provider's base_url in the rules", key, url, failure.message)
        if failure.status == 429:
            self.quotas.cooldown(key, failure.retry_after_s)
        if failure.free_daily_cap:
            self.quotas.free_daily_cap(provider)

    async def _fail(self, job: Job, out, failed: list[Failed], alone: bool = False) -> None:
        """The request failed (every candidate, or one for good): one error in the agent's dialect
        (final_error.py), with a Retry-After when Clutch knows when a candidate frees up."""
        status, worst, body = final_error(job.client_dialect, failed, job.skipped, alone)
        headers = [(b"content-type", b"application/json"), (b"x-clutch-error", worst.kind.encode()),
                   (b"x-clutch-attempts", str(job.tried).encode())]
        headers += retry_headers(self._free_again_s(job, failed))
        await out.start(status, "Clutch: every candidate failed", headers + job.explain)
        await out.send(body)
        await out.end()

    def _free_again_s(self, job: Job, failed: list[Failed]) -> float | None:
        """The soonest moment Clutch knows a candidate frees up: a Retry-After it was given, a quota's
        cooldown, an open breaker's probe."""
        waits = [f.failure.retry_after_s for f in failed]
        for key in {f.target for f in failed} | {str(t) for t, _ in job.skipped}:
            waits += [self.quotas.wait_s(key), self.breakers.retry_after(key) if self.breakers.is_open(key) else None]
        found = [w for w in waits if w is not None]
        return min(found) if found else None

    async def _refuse(self, job: Job, out) -> None:
        """Nothing could be tried: every candidate's breaker is open or its quota used up."""
        reasons = "; ".join(f"{t}: {why}" for t, why in job.skipped) or "no candidate"
        wait: float | None
        if job.quota_wait_s is not None:
            status, wait = 429, job.quota_wait_s
        else:
            status = 503
            waits = [self.breakers.retry_after(str(t)) for t, _ in job.skipped]
            wait = min((w for w in waits if w), default=None)
        headers = [(b"content-type", b"application/json"), (b"x-clutch-error", b"no_candidate")]
        headers += retry_headers(wait)
        message = f"Clutch: no model can take this request now ({reasons})"
        await out.start(status, "Clutch: no candidate", headers + job.explain)
        await out.send(dialects.error_body(job.client_dialect, status, message))
        await out.end()


def _local_admit(quotas) -> Callable[[str], Awaitable[float | None]]:
    async def admit(key: str) -> float | None:
        return quotas.take(key)
    return admit


def booked(plan: Plan, target: ModelTarget) -> str:
    """The provider:model an attempt at `target` is booked to: what its request really goes to."""
    return f"{plan.provider}:{plan.model}" if plan.model else str(target)


def native_order(job: Job, plan: Plan) -> list[str]:
    """The models OpenRouter tries for this plan, in order: its `model` first when the `models` list (Clutch's,
    or the agent's own) does not name it, then the list. Empty when no list was sent natively."""
    listed = (plan.sent or {}).get("models") if job.native else None
    if not isinstance(listed, list):
        return []
    names = [m for m in listed if isinstance(m, str) and m]
    return ([plan.model] if plan.model and plan.model not in names else []) + names


def _left_after(remaining: list[ModelTarget], target: ModelTarget, failure: Failure,
                natively_tried: set[ModelTarget]) -> list[ModelTarget]:
    """The candidates still to try once the first, `target`, failed: without the ones OpenRouter's own
    list already went through, and after a free daily cap without the provider's other free models."""
    left = remaining[1:]
    if failure.free_daily_cap:  # per account: every other free model of the provider is capped too
        left = [t for t in left if not (t.provider == target.provider and t.model.endswith(":free"))]
    return [t for t in left if t not in natively_tried]


def _natively_tried(job: Job, plan: Plan, attempt: Attempt, failure: Failure) -> set[ModelTarget]:
    """The candidates OpenRouter itself went through before this failure came back: all of its list when
    it answered an error status (it does so when every entry failed), the entries up to the one whose
    answer failed, and none after a stall or a broken connection (OpenRouter never got past the first)."""
    order = native_order(job, plan)
    if len(order) < 2:
        return set()
    if failure.kind == "status":
        upto = len(order)
    elif attempt.answered_model and (index := listed_index(order, attempt.answered_model)) is not None:
        upto = index + 1
    else:
        return set()
    return {ModelTarget(plan.provider, name) for name in order[:upto]}


def listed_index(listed: list[str], model: str) -> int | None:
    """Which entry of OpenRouter's `models` list an answer's `model` names: the exact id, else the same id
    without its variant (":free", ":nitro"), else the longest id the answer extends with a version suffix
    ("vendor/name" answered as "vendor/name-2025-08-06"). None when it names none of them."""
    bases = [entry.split(":", 1)[0] for entry in listed]
    base = model.split(":", 1)[0]
    for candidates in (listed, bases):
        if model in candidates:
            return candidates.index(model)
        if base in candidates:
            return candidates.index(base)
    extended = [(len(entry), index) for index, entry in enumerate(bases) if base.startswith(entry + "-")]
    return max(extended)[1] if extended else None
