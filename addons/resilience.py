"""Resilience: the circuit breakers, quotas and sticky sessions the cascade consults, their options,
and their state on disk (restored at start, so open breakers keep their remaining cooldown and quota
counts survive a restart).

A provider the rules redefine (base_url, dialects, hosts, key_env) or remove gives its targets a fresh
start: their breakers and 429 cooldowns are cleared, on a hot reload and, because the state file keeps
the definitions it was saved under, across a restart too. `reset` clears them by hand
(POST /breakers/reset, `xx breakers reset`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions

from addons.config.paths import places
from addons.config.rules import Quota, Rules
from addons.config.server_urls import without_secrets
from addons.config.statefile import load_json, save_json
from addons.fallback.breakers import BreakerBoard
from addons.fallback.quotas import QuotaBook
from addons.fallback.shared_state import COOLDOWNS, FREE_CAPS, SharedState, SharedView
from addons.fallback.sticky import StickyTable
from addons.rulebook import Rulebook
from addons.team.redis_link import RedisUnreachable
from addons.upstream.held_stream import Holds
from addons.web import breaker_reset

logger = logging.getLogger(__name__)

SAVE_EVERY_S = 1.0
PROBE_EVERY_S = 0.5  # how often an unreachable shared state is asked again
HEARTBEAT_S = 2.0  # how often a shared state that answers is asked whether it still does


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


class Resilience:
    def __init__(self, rulebook: Rulebook):
        self._rulebook = rulebook
        self.breakers = BreakerBoard()
        self.quotas = QuotaBook()
        self.sticky = StickyTable()
        self.state_dir: Path | None = None
        self.holds = Holds()
        self._saved = (-1, -1)
        self._saver: asyncio.Task | None = None
        # the providers' definitions the breakers and cooldowns were earned under; None until restored
        self._definitions: dict[str, dict] | None = None
        self.shared: SharedState | None = None  # team mode: the quotas every replica counts against
        self._shared_down: str | None = None  # why the shared state cannot be reached, while it cannot
        self._closing: asyncio.Task | None = None  # the previous shared state's connections, being closed
        self._background: set[asyncio.Task] = set()  # writes to the shared state, in flight
        self._prober: asyncio.Task | None = None  # the shared state's watcher (_heartbeat)
        self._on_shared_up: list[Callable[[], None]] = []
        self._flushers: list[Callable[[], Awaitable[None]]] = []
        self._adopted: dict[tuple[str, str], float] = {}  # ("breaker"|"cooldown"|"free_cap", key) -> until
        rulebook.on_change(self._rules_changed)

    def load(self, loader):
        loader.add_option("clutch_state_dir", str, "",
                          "Where breaker and quota state is kept across restarts. Empty: "
                          "$XDG_STATE_HOME/clutch (~/.local/state/clutch).")
        loader.add_option("clutch_breaker_failures", int, 3,
                          "Failures within the window that open a model's breaker (soft failures count half).")
        loader.add_option("clutch_breaker_window_ms", int, 60_000, "The breaker's failure window.")
        loader.add_option("clutch_breaker_cooldown_ms", int, 60_000,
                          "How long an open breaker keeps its model out before a single probe is let through.")
        loader.add_option("clutch_breaker_targets", int, 4096,
                          "Most targets the breakers remember at once (targets come from the model names agents "
                          "send); past it, closed breakers are forgotten first, open ones last.")
        loader.add_option("clutch_sticky_ms", int, 300_000,
                          "After a fallback, how long a session stays on the model that answered; 0 turns it off.")
        loader.add_option("clutch_silence_timeout_ms", int, 15_000,
                          "Before a streamed answer's first text, tool call or reasoning: how long it may send "
                          "nothing at all after its headers before the next candidate is tried (the last "
                          "candidate waits until clutch_idle_timeout_ms). Was clutch_commit_timeout_ms.")
        loader.add_option("clutch_first_token_timeout_ms", int, 60_000,
                          "Before a streamed answer's first text, tool call or reasoning: how long a stream that "
                          "sends only keep-alives is waited for before the next candidate is tried (the last "
                          "candidate is then committed and waited for).")
        loader.add_option("clutch_state", str, "",
                          "Where the state shared by every replica of a team gateway lives: empty for this process "
                          "alone (the default), or redis://[:password@]host:port/db (rediss:// for TLS). Shared: "
                          "rpm and rpd quotas, open breakers, 429 cooldowns, free-model daily caps, sticky "
                          "sessions, budget spending. Redis unreachable: this replica goes on alone "
                          "and says 'degraded' in /health.")
        loader.add_option("clutch_retries", int, 1,
                          "Retries of the last candidate after a retryable failure (with Retry-After or backoff).")

    def configure(self, updated):
        numbers = {"clutch_breaker_failures", "clutch_breaker_window_ms", "clutch_breaker_cooldown_ms",
                   "clutch_breaker_targets", "clutch_sticky_ms", "clutch_silence_timeout_ms",
                   "clutch_first_token_timeout_ms", "clutch_retries"}
        if updated & numbers:
            for name in numbers:
                minimum = 0 if name in ("clutch_sticky_ms", "clutch_retries") else 1
                if getattr(ctx.options, name) < minimum:
                    raise exceptions.OptionsError(f"{name} must be at least {minimum}")
            self.breakers.configure(ctx.options.clutch_breaker_failures, ctx.options.clutch_breaker_window_ms / 1000,
                                    ctx.options.clutch_breaker_cooldown_ms / 1000)
            self.breakers.max_targets = ctx.options.clutch_breaker_targets
            self.sticky.configure(ctx.options.clutch_sticky_ms / 1000)
            self.holds = Holds(ctx.options.clutch_silence_timeout_ms / 1000,
                               ctx.options.clutch_first_token_timeout_ms / 1000)
        if "clutch_state" in updated:
            url = ctx.options.clutch_state.strip()
            if url and not url.startswith(("redis://", "rediss://", "unix://")):
                raise exceptions.OptionsError(f"clutch_state: {without_secrets(url)!r} is not a redis:// URL (empty: "
                                              "this process alone)")
            try:
                shared = SharedState(url) if url else None
            except ValueError as e:
                raise exceptions.OptionsError(f"clutch_state: {without_secrets(url)} cannot be used: {e}") from None
            old_shared, self.shared, self._shared_down = self.shared, shared, None
            if self._prober is not None:
                self._prober.cancel()
                self._prober = None
            if old_shared is not None:
                self._close_later(old_shared)
            self._watch()
            if self.shared is not None:
                logger.info("quotas, breakers, cooldowns, sticky sessions and spending are shared on %s",
                            without_secrets(url))
            team = self.shared is not None
            self.breakers.on_open = self._share_open if team else None
            self.breakers.on_close = self._share_close if team else None
            self.quotas.on_hold = self._share_hold if team else None
            self.sticky.on_change = self._share_sticky if team else None
        if "clutch_state_dir" in updated:
            self.state_dir = Path(os.path.expanduser(ctx.options.clutch_state_dir)) if ctx.options.clutch_state_dir \
                else places().state
            self._restore()

    def admitter(self, early: EarlyTake | None) -> Callable[[str], Awaitable[float | None]]:
        """The relay's `admit` for one request: `early` serves the first take of its key."""
        async def admit(key: str) -> float | None:
            mine = early if early is not None and not early.used and early.key == key else None
            if mine is not None:
                mine.used = True
            return await self.admit(key, mine)
        return admit

    async def admit(self, key: str, early: EarlyTake | None = None) -> float | None:
        """Take a request from `key`'s quotas (None) or say how long they are used up for: on the shared
        state in team mode, on this process's book otherwise, and when the shared state cannot answer.
        `early`: the take_early of this key, awaited instead of a take of its own."""
        shared = self.shared
        if shared is None or self._shared_down or (early is not None and early.shared is not shared):
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
            self.shared_down(shared, e)
            return self.quotas.take(key)
        self.shared_up(shared)
        if wait is None:
            self.quotas.consume(key)  # this replica's view (/resilience) and its fallback when Redis is away
        return wait

    def give_back(self, early: EarlyTake | None) -> None:
        """An early take its request did not use (another candidate went first, or none was sent):
        undone on the shared state once it finished, in the background."""
        if early is None or early.given_back:
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
        if limits and self.quotas.hold_s(primary) is None:
            early = EarlyTake(primary, shared, limits, secrets.token_hex(8), asyncio.get_running_loop().create_future())
        sticky = (session, primary) if session and self.sticky.ttl_s > 0 else None
        return asyncio.ensure_future(self._look(shared, sticky, early)), early

    async def _look(self, shared: SharedState, sticky: tuple[str, str] | None, early: EarlyTake | None) -> None:
        try:
            view, entry, wait = await shared.look(sticky, early.limits if early else (), early.member if early else "")
        except RedisUnreachable as e:
            self.shared_down(shared, e)
            if early is not None:
                early.taken.set_exception(e)  # its admit takes from this replica's book instead
            return
        except Exception as e:  # a bug here must not cost the request: it goes on with this replica's state
            logger.exception("reading the shared state failed; this request uses this replica's own")
            if early is not None:
                early.taken.set_exception(RedisUnreachable(f"{type(e).__name__}: {e}"))
            return
        if early is not None:
            early.taken.set_result(wait)
        self.shared_up(shared)
        if view.stale:  # ended or nonsense: out of Redis, off the request's path
            self._in_background(shared, shared.forget_stale(view.stale))
        try:
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
        if self.shared is not None and not self._shared_down:
            self._in_background(self.shared, self.shared.breaker_opened(key, opened_at, until, reason))

    def _share_close(self, key: str) -> None:  # breakers.on_close
        if self.shared is not None and not self._shared_down:
            self._in_background(self.shared, self.shared.breakers_closed([key]))

    def _share_hold(self, kind: str, key: str, until: float) -> None:  # quotas.on_hold
        if self.shared is not None and not self._shared_down:
            table = COOLDOWNS if kind == "cooldown" else FREE_CAPS
            self._in_background(self.shared, self.shared.hold(table, key, until))

    def _share_sticky(self, session: str, primary: str, target: str | None, at: float) -> None:  # sticky.on_change
        if self.shared is not None and not self._shared_down:
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
                self.shared_down(shared, e)
            else:
                self.shared_up(shared)
        try:
            task = asyncio.get_running_loop().create_task(run())
        except RuntimeError:  # no event loop (a test calling the board directly): nothing to share with
            work.close()
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def shared_down(self, shared: SharedState, error: RedisUnreachable) -> None:
        """The shared state did not answer: requests go on with this replica's own state (no request waits
        for Redis again) while the watcher asks it every PROBE_EVERY_S until it answers."""
        if shared is not self.shared or self.shared is None:
            return  # a call on a shared state the options have replaced since
        if self._shared_down is None:
            logger.warning("shared state %s unreachable (%s): this replica counts quotas and keeps breakers "
                           "alone until it answers", without_secrets(self.shared.url), error)
        self._shared_down = f"shared state {without_secrets(self.shared.url)} unreachable: {str(error).split(':')[0]}"
        self._watch()

    def _watch(self) -> None:
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
            await asyncio.sleep(PROBE_EVERY_S if self._shared_down else HEARTBEAT_S)
            try:
                await shared.ping()
            except RedisUnreachable as e:
                self.shared_down(shared, e)
            else:
                self.shared_up(shared)

    def shared_up(self, shared: SharedState) -> None:
        if shared is not self.shared:
            return
        if self._shared_down is not None:
            logger.warning("shared state %s answers again", without_secrets(shared.url))
            self._shared_down = None
            for listener in self._on_shared_up:
                listener()

    def answering(self) -> SharedState | None:
        """Team mode: the shared state while it answers; None outside team mode and while it does not."""
        return self.shared if self.shared is not None and not self._shared_down else None

    def on_shared_up(self, listener: Callable[[], None]) -> None:
        """`listener()` runs on the event loop when the shared state answers again after it did not."""
        self._on_shared_up.append(listener)

    def problems(self) -> list[str]:
        """For /health: what keeps resilience from working as configured."""
        return [self._shared_down] if self._shared_down else []

    @property
    def retries(self) -> int:
        return ctx.options.clutch_retries

    def running(self):
        if self._saver is None:
            self._saver = asyncio.get_running_loop().create_task(self._save_periodically())
        self._watch()

    def before_close(self, flush: Callable[[], Awaitable[None]]) -> None:
        """`flush()` is awaited when the gateway stops, before the shared state's connections close."""
        self._flushers.append(flush)

    async def done(self):
        if self._saver is not None:
            self._saver.cancel()
        if self._prober is not None:
            self._prober.cancel()
        self.save()
        if self.shared is not None:
            for flush in self._flushers:
                try:
                    await flush()
                except Exception:  # closing goes on whatever a flusher does
                    logger.exception("handing what waits to the shared state failed")
            await self.shared.close()

    def _close_later(self, shared: SharedState) -> None:
        try:
            self._closing = asyncio.get_running_loop().create_task(shared.close())
        except RuntimeError:  # configured outside the event loop (a test): its connections go with it
            pass

    # ------------------------------------------------------------ state on disk

    def _paths(self) -> tuple[Path, Path]:
        assert self.state_dir is not None
        return self.state_dir / "breakers.json", self.state_dir / "quotas.json"

    def _restore(self) -> None:
        breakers, quotas = self._paths()
        data = load_json(breakers)
        if data:
            self.breakers.load(data)
        saved_under = data.get("providers") if isinstance(data, dict) else None
        data = load_json(quotas)
        if data:
            self.quotas.load(data)
        self._definitions = breaker_reset.definitions(self._rulebook.rules.providers)
        if isinstance(saved_under, dict):  # saved by a gateway on other rules: theirs are not ours
            self._fresh_start(breaker_reset.changed_providers(saved_under, self._definitions),
                              "since the state was saved")
        if any(s["state"] != "closed" for s in self.breakers.snapshot().values()):
            logger.info("restored breakers: %s", ", ".join(f"{k} {v['state']}" for k, v in
                                                           self.breakers.snapshot().items() if v["state"] != "closed"))
        self._saved = (self.breakers.version, self.quotas.version)

    def _rules_changed(self, rules: Rules) -> None:
        self.quotas.configure(rules.quotas)
        if self._definitions is None:
            return  # the state is not restored yet: _restore compares what it was saved under
        before, self._definitions = self._definitions, breaker_reset.definitions(rules.providers)
        changed = breaker_reset.changed_providers(before, self._definitions)
        if changed or set(self._definitions) != set(before):
            self._saved = (-1, -1)  # the state file records the definitions it was saved under
        self._fresh_start(changed, "in the reloaded rules")

    def _fresh_start(self, changed: dict[str, str], when: str) -> None:
        for provider, what in sorted(changed.items()):
            cleared = self.reset(provider)
            if cleared["breakers"] or cleared["cooldowns"] or cleared["free_daily_cap"]:
                logger.warning("provider %s: %s %s; its targets start fresh, cleared %s", provider, what, when,
                               breaker_reset.describe_reset(cleared))

    def reset(self, target: str | None = None) -> dict:
        """Clear the breakers and 429 cooldowns of every target (None), of a provider's models, or of one
        provider:model, and save at once (a restart must not bring them back). Returns what was cleared."""
        selected = breaker_reset.selector(target)
        cleared = {"breakers": self.breakers.reset(selected), **self.quotas.clear_cooldowns(selected)}
        self.save()
        if self.shared is not None and not self._shared_down:  # for every replica: those opened elsewhere too
            self._in_background(self.shared, self._clear_shared(self.shared, selected))
        return cleared

    def save(self) -> None:
        if self.state_dir is None:
            return
        versions = (self.breakers.version, self.quotas.version)
        if versions == self._saved:
            return
        breakers, quotas = self._paths()
        try:
            save_json(breakers, {**self.breakers.to_json(), "providers": self._definitions})
            save_json(quotas, self.quotas.to_json())
        except OSError as e:
            logger.warning("cannot save breaker and quota state in %s: %s", self.state_dir, e)
            return
        self._saved = versions

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(SAVE_EVERY_S)
            try:
                self.save()
            except Exception:  # the saver must outlive any surprise
                logger.exception("saving resilience state failed")

    def snapshot(self) -> dict:
        return {"breakers": self.breakers.snapshot(), "quotas": self.quotas.snapshot(),
                "sticky": self.sticky.snapshot(), "state_dir": str(self.state_dir)}
