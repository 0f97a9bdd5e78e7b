"""Rulebook: loads the rules file, and reloads it when it changes without ever losing good rules.

At start-up an invalid file aborts with file, line and field; on a hot reload the same message is
logged and the last good rules stay in force. claude-code-proxy's environment variables (BIG_MODEL,
ROUTER_THINK, ...) are applied on top of every load (overrides.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from mitmproxy import ctx, exceptions

from addons.config.overrides import apply_overrides
from addons.config.rules import DEFAULT_RULES_PATH, Rules, RulesError, load_rules

logger = logging.getLogger(__name__)


class Rulebook:
    def __init__(self) -> None:
        self.rules: Rules = load_rules(DEFAULT_RULES_PATH)
        self.path: Path = DEFAULT_RULES_PATH
        self.loaded_at: float = time.time()
        self.last_error: str | None = None
        self.overrides: dict[str, str] = {}  # claude-code-proxy environment variables in force
        self._stamp: tuple[int, int] | None = None
        self._listeners: list[Callable[[Rules], None]] = []
        self._watcher: asyncio.Task | None = None

    def load(self, loader):
        loader.add_option("clutch_rules", str, "",
                          f"Rules file (YAML). Empty: the embedded default, {DEFAULT_RULES_PATH.name}.")
        loader.add_option("clutch_rules_poll_ms", int, 1000,
                          "How often to check the rules file for changes; 0 turns hot reload off.")

    def on_change(self, listener: Callable[[Rules], None]) -> None:
        """Call `listener(rules)` now and whenever new rules take effect."""
        self._listeners.append(listener)
        listener(self.rules)

    def configure(self, updated):
        if "clutch_rules" in updated:
            wanted = ctx.options.clutch_rules
            path = Path(os.path.expanduser(wanted)) if wanted else DEFAULT_RULES_PATH
            try:
                self._adopt(path.resolve())
            except RulesError as e:
                logger.error("invalid rules: %s", e)
                raise exceptions.OptionsError(f"Invalid rules: {e}") from None
        if "clutch_rules_poll_ms" in updated and ctx.options.clutch_rules_poll_ms < 0:
            raise exceptions.OptionsError("clutch_rules_poll_ms must be 0 (off) or a positive number")

    def running(self):
        # sync on purpose: on a hot reload of the script mitmproxy calls `running` synchronously, so an
        # async one fails inside its watcher, silently, and the script is never reloaded again
        if ctx.options.clutch_rules_poll_ms > 0 and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def done(self):
        if self._watcher is not None:
            self._watcher.cancel()

    def reload_if_changed(self) -> bool:
        """Reload when the file changed; keep the last good rules if the new file is invalid."""
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return False
        try:
            self._adopt(self.path)
        except RulesError as e:
            self._stamp = stamp  # report a broken file once, not on every poll
            self.last_error = str(e)
            logger.error("rules not reloaded, the last good rules stay in force: %s", e)
            return False
        logger.info("rules reloaded from %s", self.path)
        return True

    def _adopt(self, path: Path) -> None:
        stamp = _stamp(path)
        rules, overrides = apply_overrides(load_rules(path))
        self.rules, self.path, self._stamp, self.overrides = rules, path, stamp, overrides
        self.loaded_at, self.last_error = time.time(), None
        for listener in self._listeners:
            listener(rules)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(max(ctx.options.clutch_rules_poll_ms, 50) / 1000)
            try:
                self.reload_if_changed()
            except Exception:  # the watcher must outlive any surprise
                logger.exception("rules watcher failed")


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
