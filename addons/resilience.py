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
import logging
import os
from pathlib import Path

from mitmproxy import ctx, exceptions

from addons.config.paths import places
from addons.config.rules import Rules
from addons.config.server_urls import without_secrets
from addons.config.statefile import load_json, save_json
from addons.fallback.breakers import BreakerBoard
from addons.fallback.quotas import QuotaBook
from addons.fallback.shared_state import SharedState
from addons.fallback.sharing import Sharing
from addons.fallback.sticky import StickyTable
from addons.rulebook import Rulebook
from addons.upstream.held_stream import Holds
from addons.web import breaker_reset

logger = logging.getLogger(__name__)

SAVE_EVERY_S = 1.0


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
        # team mode: what this replica shares with the others on Redis (clutch_state)
        self.sharing = Sharing(self.breakers, self.quotas, self.sticky)
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
            self.sharing.use(shared)
            if shared is not None:
                logger.info("quotas, breakers, cooldowns, sticky sessions and spending are shared on %s",
                            without_secrets(url))
        if "clutch_state_dir" in updated:
            self.state_dir = Path(os.path.expanduser(ctx.options.clutch_state_dir)) if ctx.options.clutch_state_dir \
                else places().state
            self._restore()

    def problems(self) -> list[str]:
        """For /health: what keeps resilience from working as configured."""
        return self.sharing.problems()

    @property
    def retries(self) -> int:
        return ctx.options.clutch_retries

    def running(self):
        if self._saver is None:
            self._saver = asyncio.get_running_loop().create_task(self._save_periodically())
        self.sharing.watch()

    async def done(self):
        if self._saver is not None:
            self._saver.cancel()
        self.save()
        await self.sharing.close()

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
        self.sharing.clear(selected)  # for every replica: those opened elsewhere too
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
