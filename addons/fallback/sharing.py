"""A replica's side of the state it shares with the other replicas of a team gateway
(`clutch_state=redis://...`, shared_state.py): what it writes there as it learns it, what it reads
before each request, the quota steps it takes there, and what it does while Redis does not answer.

No mitmproxy; it runs on the gateway's event loop. The Resilience addon owns one and gives it the
breakers, quotas and sticky table it shares.

* **Before each request** (`look_ahead`, when the request hook takes the flow): one round trip reads
  the breakers, 429 cooldowns and free-model caps other replicas shared, the session's sticky entry,
  and takes the primary's quotas (an early take), while mitmproxy hands the flow to the engine. What
  this replica adopted and the shared state no longer holds (a reset elsewhere) ends here too.
* **As it learns** (the tables' on_open, on_close, on_hold, on_change): written in the background.
* **Quota steps** (`admitter`, `admit`): the early take serves the primary's first step; an unused
  one is given back (`give_back`).
* **Redis away** (`down`): every request goes on with this replica's own state, no request waits for
  Redis again, and a watcher asks it every PROBE_EVERY_S until it answers (`up`, then the `on_up`
  listeners: the budgets hand over what waited).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from addons.config.rules import Quota
from addons.config.server_urls import without_secrets
from addons.fallback.breakers import BreakerBoard
from addons.fallback.quotas import QuotaBook
from addons.fallback.shared_state import COOLDOWNS, FREE_CAPS, SharedState, SharedView
from addons.fallback.sticky import StickyTable
from addons.team.redis_link import RedisUnreachable

logger = logging.getLogger(__name__)

PROBE_EVERY_S = 0.5  # how often an unreachable shared state is asked again
HEARTBEAT_S = 2.0  # how often a shared state that answers is asked whether it still does
CLOSE_WAIT_S = 2.0  # writes in flight when the gateway stops, waited for at most this long


@dataclasses.dataclass
class EarlyTake:
    """A take of a request's primary quotas started when the request hook took the flow."""
    key: str
    shared: SharedState
    limits: list[tuple[str, Quota]]
    member: str
    taken: asyncio.Future  # None: taken; else the wait (nothing taken)
    used: bool = False  # the relay's admit awaited it
    given_back: bool = False


def _fail(early: EarlyTake | None, error: Exception) -> None:
    if early is not None and not early.taken.done():
        early.taken.set_exception(error)
        # retrieved here: a take nobody awaits (given back, or the request gone) must not log a warning
        early.taken.exception()


class Sharing:
    def __init__(self, breakers: BreakerBoard, quotas: QuotaBook, sticky: StickyTable) -> None:
        self.breakers, self.quotas, self.sticky = breakers, quotas, sticky
        self.shared: SharedState | None = None  # None: this process alone
        self._unreachable: str | None = None  # why the shared state cannot be reached, while it cannot
        self._closing: asyncio.Task | None = None  # the previous shared state's connections, being closed
        self._background: set[asyncio.Task] = set()  # writes to the shared state, in flight
        self._prober: asyncio.Task | None = None  # the shared state's watcher (_heartbeat)
        self._on_up: list[Callable[[], None]] = []
        self._flushers: list[Callable[[], Awaitable[None]]] = []
        self._adopted: dict[tuple[str, str], float] = {}  # ("breaker"|"cooldown"|"free_cap", key) -> until
        self._looks = 0  # looks started
        self._applied = 0  # the newest look whose view was adopted

    def use(self, shared: SharedState | None) -> None:
        """Share on `shared` from now on (None: this process alone); the previous one is closed."""
        old, self.shared, self._unreachable = self.shared, shared, None
        if self._prober is not None:
            self._prober.cancel()
            self._prober = None
        if old is not None:
            try:
                self._closing = asyncio.get_running_loop().create_task(old.close())
            except RuntimeError:  # configured outside the event loop (a test): its connections go with it
                pass
        self.watch()
        team = shared is not None
        self.breakers.on_open = self._share_open if team else None
        self.breakers.on_close = self._share_close if team else None
        self.quotas.on_hold = self._share_hold if team else None
        self.sticky.on_change = self._share_sticky if team else None

    def answering(self) -> SharedState | None:
        """The shared state while it answers; None outside team mode and while it does not."""
        return self.shared if self.shared is not None and not self._unreachable else None

    def on_up(self, listener: Callable[[], None]) -> None:
        """`listener()` runs on the event loop when the shared state answers again after it did not."""
        self._on_up.append(listener)

    def before_close(self, flush: Callable[[], Awaitable[None]]) -> None:
        """`flush()` is awaited when the gateway stops, before the shared state's connections close."""
        self._flushers.append(flush)

    def problems(self) -> list[str]:
        return [self._unreachable] if self._unreachable else []

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
        if self.shared is None:
            return
        for flush in self._flushers:
            try:
                await flush()
            except Exception:  # closing goes on whatever a flusher does
                logger.exception("handing what waits to the shared state failed")
        if self._background:  # give-backs, shared breakers and sticky entries in flight
            await asyncio.wait(list(self._background), timeout=CLOSE_WAIT_S)
        await self.shared.close()

    def clear(self, selected: Callable[[str], bool]) -> None:
        """A reset (breaker_reset.selector): the matching entries leave the shared state too, for every
        replica (those that adopted them drop them at their next request)."""
        shared = self.answering()
        if shared is not None:
            self._in_background(shared, self._clear_shared(shared, selected))

    # ------------------------------------------------------------ before each request

    def admitter(self, early: EarlyTake | None) -> Callable[[str], Awaitable[float | None]]:
        """The relay's `admit` for one request: `early` serves the first take, if it is of its key; a
        first take of another key (a sticky target, the primary's breaker open here) gives it back at
        once rather than when the request ends, which may be minutes later."""
        async def admit(key: str) -> float | None:
            mine = None
            if early is not None and not early.used and not early.given_back:
                if early.key == key:
                    mine = early
                    mine.used = True
                else:
                    self.give_back(early)
            return await self.admit(key, mine)
        return admit

    async def admit(self, key: str, early: EarlyTake | None = None) -> float | None:
        """Take a request from `key`'s quotas (None) or say how long they are used up for: on the shared
        state in team mode, on this process's book otherwise, and when the shared state cannot answer.
        `early`: look_ahead's early take of this key, awaited instead of a take of its own."""
        shared = self.shared
        if early is not None and early.shared is not shared:  # clutch_state changed since: take anew
            self.give_back(early)
            early = None
        if shared is None or self._unreachable:
            self.give_back(early)
            return self.quotas.take(key)
        hold = self.quotas.hold_s(key)
        if hold is not None:
            self.give_back(early)
            return hold
        try:
            # a take that finished during the hop: awaiting a done future does not yield to the loop
            wait = await (early.taken if early is not None else shared.take(self.quotas.limits(key)))
        except RedisUnreachable as e:
            self.down(shared, e)
            return self.quotas.take(key)
        self.up(shared)
        if wait is None:
            self.quotas.consume(key)  # this replica's view (/resilience) and its fallback when Redis is away
        return wait

    def give_back(self, early: EarlyTake | None, unless_used: bool = False) -> None:
        """An early take its request did not use (another candidate went first, or none was sent):
        undone on the shared state once it finished, in the background."""
        if early is None or early.given_back or (unless_used and early.used):
            return
        early.given_back = True

        def undo(taken: asyncio.Future) -> None:
            if taken.cancelled() or taken.exception() is not None or taken.result() is not None:
                return  # nothing was taken
            self._in_background(early.shared, early.shared.give_back(early.limits, early.member))
        early.taken.add_done_callback(undo)

    def look_ahead(self, primary: str, session: str | None) -> tuple[asyncio.Future | None, EarlyTake | None]:
        """Team mode, when the request hook takes a flow: in one round trip that runs while mitmproxy
        hands the flow to the engine, take here what other replicas shared (the breakers they opened,
        their 429 cooldowns and free-model caps, and the target that last answered this session for
        `primary`), and take the primary's quotas, so that none of this replica's requests is spent
        finding out again and sending needs no turn of the event loop. Returns the future the engine
        awaits before it orders the candidates (it never fails), and the quotas' early take (None when
        there is nothing to take). (None, None) outside team mode and while the shared state does not
        answer."""
        shared = self.answering()
        if shared is None:
            return None, None
        limits = [(key, quota) for key, quota in self.quotas.limits(primary) if quota.rpm or quota.rpd]
        early = None
        stuck = session is not None and self.sticky.get(session, primary) is not None  # another target goes first
        if limits and self.quotas.hold_s(primary) is None and not self.breakers.is_open(primary) and not stuck:
            early = EarlyTake(primary, shared, limits, secrets.token_hex(8), asyncio.get_running_loop().create_future())
        sticky = (session, primary) if session and self.sticky.ttl_s > 0 else None
        self._looks += 1
        return asyncio.ensure_future(self._look(shared, sticky, early, self._looks)), early

    async def _look(self, shared: SharedState, sticky: tuple[str, str] | None, early: EarlyTake | None,
                    number: int) -> None:
        try:
            view, entry, wait = await shared.look(sticky, early.limits if early else (), early.member if early else "")
        except RedisUnreachable as e:
            self.down(shared, e)
            _fail(early, e)  # its admit takes from this replica's book instead
            return
        except Exception as e:  # a bug here must not cost the request: it goes on with this replica's state
            logger.exception("reading the shared state failed; this request uses this replica's own")
            _fail(early, RedisUnreachable(f"{type(e).__name__}: {e}"))
            return
        except BaseException:  # cancelled (the gateway stops): the take's outcome is unknown, so none
            _fail(early, RedisUnreachable("cancelled"))
            raise
        if early is not None:
            early.taken.set_result(wait)
        self.up(shared)
        if view.stale:  # ended or nonsense: out of Redis, off the request's path
            self._in_background(shared, shared.forget_stale(view.stale))
        try:
            if number > self._applied:  # a look that answers after a newer one must not undo it
                self._applied = number
                self._adopt(view)
            if sticky is not None:
                self.sticky.adopt(*sticky, entry)
        except Exception:
            logger.exception("taking the shared state failed; this request uses this replica's own")

    def _adopt(self, view: SharedView) -> None:
        """Take what the view holds; what this replica adopted earlier and the view no longer holds was
        reset on another replica (or ended, or Redis lost it): it ends here too."""
        adopted: dict[tuple[str, str], float] = {}
        for target, entry in list(view.breakers.items())[:self.breakers.max_targets // 2]:
            if self.breakers.adopt(target, entry["opened_at"], entry["until"], entry["reason"]):
                adopted[("breaker", target)] = entry["until"]
        for kind, held in (("cooldown", view.cooldowns), ("free_cap", view.free_caps)):
            for key, until in held.items():
                if (set_until := self.quotas.adopt(kind, key, until)) is not None:
                    adopted[(kind, key)] = set_until
        for (kind, key), until in self._adopted.items():
            held_now = view.breakers if kind == "breaker" else view.cooldowns if kind == "cooldown" else view.free_caps
            if key in held_now:
                adopted.setdefault((kind, key), until)  # still shared: still adopted
            elif kind == "breaker":
                self.breakers.drop_adopted(key, until)
            else:
                self.quotas.drop_adopted(kind, key, until)
        self._adopted = adopted

    # ------------------------------------------------------------ the shared state's plumbing

    def _share_open(self, key: str, opened_at: float, until: float, reason: str) -> None:  # breakers.on_open
        if self.shared is not None and not self._unreachable:
            self._in_background(self.shared, self.shared.breaker_opened(key, opened_at, until, reason))

    def _share_close(self, key: str) -> None:  # breakers.on_close
        if self.shared is not None and not self._unreachable:
            self._in_background(self.shared, self.shared.breakers_closed([key]))

    def _share_hold(self, kind: str, key: str, until: float) -> None:  # quotas.on_hold
        if self.shared is not None and not self._unreachable:
            table = COOLDOWNS if kind == "cooldown" else FREE_CAPS
            self._in_background(self.shared, self.shared.hold(table, key, until))

    def _share_sticky(self, session: str, primary: str, target: str | None, at: float) -> None:  # sticky.on_change
        if self.shared is not None and not self._unreachable:
            self._in_background(self.shared, self.shared.stick(session, primary, target, at, self.sticky.ttl_s))

    async def _clear_shared(self, shared: SharedState, selected) -> None:
        view = await shared.view()
        await shared.breakers_closed([target for target in view.breakers if selected(target)])
        await shared.holds_ended(COOLDOWNS, [key for key in view.cooldowns if selected(key)])
        await shared.holds_ended(FREE_CAPS, [key for key in view.free_caps if selected(key)])

    def _in_background(self, shared: SharedState, work: Coroutine[Any, Any, None]) -> None:
        async def run() -> None:
            try:
                await work
            except RedisUnreachable as e:
                self.down(shared, e)
            else:
                self.up(shared)
        try:
            task = asyncio.get_running_loop().create_task(run())
        except RuntimeError:  # no event loop (a test calling the board directly): nothing to share with
            work.close()
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def down(self, shared: SharedState, error: RedisUnreachable) -> None:
        """The shared state did not answer: requests go on with this replica's own state (no request waits
        for Redis again) while the watcher asks it every PROBE_EVERY_S until it answers."""
        if shared is not self.shared or self.shared is None:
            return  # a call on a shared state the options have replaced since
        if self._unreachable is None:
            logger.warning("shared state %s unreachable (%s): this replica counts quotas and keeps breakers "
                           "alone until it answers", without_secrets(self.shared.url), error)
        self._unreachable = f"shared state {without_secrets(self.shared.url)} unreachable: {str(error).split(':')[0]}"
        self.watch()

    def watch(self) -> None:
        """One task per shared state asks it every HEARTBEAT_S (every PROBE_EVERY_S while it does not
        answer), so /health says `degraded` within seconds of Redis going away, traffic or not."""
        if self.shared is None or (self._prober is not None and not self._prober.done()):
            return
        try:
            self._prober = asyncio.get_running_loop().create_task(self._heartbeat(self.shared))
        except RuntimeError:  # no event loop yet (options set before mitmproxy runs): `running` starts it
            pass

    async def _heartbeat(self, shared: SharedState) -> None:
        while self.shared is shared:
            await asyncio.sleep(PROBE_EVERY_S if self._unreachable else HEARTBEAT_S)
            try:
                await shared.ping()
            except RedisUnreachable as e:
                self.down(shared, e)
            else:
                self.up(shared)

    def up(self, shared: SharedState) -> None:
        if shared is not self.shared:
            return
        if self._unreachable is not None:
            logger.warning("shared state %s answers again", without_secrets(shared.url))
            self._unreachable = None
            for listener in self._on_up:
                listener()
