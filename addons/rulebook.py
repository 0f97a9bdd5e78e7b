"""Rulebook: the rules in force (the embedded defaults with the user's file over them) and the
provider keys, reloaded when either file changes without ever losing good rules.

The user's file is `clutch_rules`, else `$XDG_CONFIG_HOME/clutch/rules.yaml` when it exists
(addons/config/layering.py says how it is layered); the keys come from the environment, then the
keys file (addons/config/keyfile.py). claude-code-proxy's environment variables (BIG_MODEL,
ROUTER_THINK, ...) are applied on top of every load (overrides.py).

At start-up a broken rules or keys file ends mitmdump before it listens: the one line
`file:line: field: message` on stderr and exit status 1, because a gateway on other rules than the
user wrote would route traffic wrongly, and a traceback hides the line that matters. On a hot reload
the same message is logged and the last good rules stay in force. A provider the rules route to whose
key is set nowhere is a warning, once per provider: without it the first sign is a 502.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mitmproxy import ctx, exceptions

from addons.config.keyfile import ProviderKeys, missing_keys, read_keys_file
from addons.config.layering import RulesSource, load_layered, rules_source
from addons.config.overrides import apply_overrides
from addons.config.paths import places
from addons.config.rules import DEFAULT_RULES_PATH, Rules, RulesError

logger = logging.getLogger(__name__)


class Rulebook:
    def __init__(self) -> None:
        self.source = RulesSource(None, False)
        self.rules: Rules = load_layered(self.source)
        self.path: Path = DEFAULT_RULES_PATH  # the user's file, or the defaults when there is none
        self.keys = ProviderKeys({}, None, os.environ)
        self.loaded_at: float = time.time()
        self.last_error: str | None = None
        self.overrides: dict[str, str] = {}  # claude-code-proxy environment variables in force
        self._stamps: tuple = ()
        self._listeners: list[Callable[[Rules], None]] = []
        self._watcher: asyncio.Task | None = None
        self._warned: set[str] = set()  # providers already named in a missing-key warning

    def load(self, loader):
        loader.add_option("clutch_rules", str, "",
                          "Rules file (YAML), layered over the embedded defaults. Empty: "
                          "$XDG_CONFIG_HOME/clutch/rules.yaml when it exists, else the defaults alone.")
        loader.add_option("clutch_rules_poll_ms", int, 1000,
                          "How often to check the rules file for changes; 0 turns hot reload off.")

    def on_change(self, listener: Callable[[Rules], None]) -> None:
        """Call `listener(rules)` now and whenever new rules take effect."""
        self._listeners.append(listener)
        listener(self.rules)

    def configure(self, updated):
        if "clutch_rules" in updated:
            source = rules_source(ctx.options.clutch_rules)
            try:
                self._adopt(source)
            except RulesError as e:
                if _starting():
                    # once, on stderr, and no listening proxy: mitmproxy would log a traceback, start
                    # on the defaults and only then exit
                    sys.stdout.flush()  # mitmproxy's log lines first, whole: one file may hold both
                    print(e, file=sys.stderr, flush=True)
                    raise SystemExit(1) from None
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

    @property
    def layers(self) -> list[Path]:
        """The files the rules in force come from, bottom first."""
        return [DEFAULT_RULES_PATH, *([self.path] if self.path != DEFAULT_RULES_PATH else [])]

    @property
    def keys_path(self) -> Path:
        return places().keys

    def reload_if_changed(self) -> bool:
        """Reload when the user's rules file or the keys file changed (appeared, went); keep the last
        good rules and keys if the new ones are invalid."""
        stamps = self._stamps_now(self.source)
        if stamps == self._stamps:
            return False
        try:
            self._adopt(self.source)
        except RulesError as e:
            self._stamps = stamps  # report a broken file once, not on every poll
            self.last_error = str(e)
            logger.error("rules not reloaded, the last good rules stay in force: %s", e)
            return False
        logger.info("rules reloaded from %s", self.source.describe())
        return True

    def reload_now(self) -> None:
        """Adopt the user's file at once, not at the next poll (the rules page just saved it); on a
        RulesError (the keys file, an override) the last good rules stay, as on a reload."""
        try:
            self._adopt(self.source)
        except RulesError as e:
            self.last_error = str(e)
            logger.error("rules not reloaded, the last good rules stay in force: %s", e)
            raise
        logger.info("rules reloaded from %s (saved by the rules page)", self.source.describe())

    def _adopt(self, source: RulesSource) -> None:
        stamps = self._stamps_now(source)
        rules, overrides = apply_overrides(load_layered(source))
        keys_path = self.keys_path
        keys = ProviderKeys(read_keys_file(keys_path), keys_path, os.environ)
        self.rules, self.source, self.path, self.keys = rules, source, source.shown, keys
        self._stamps, self.overrides = stamps, overrides
        self.loaded_at, self.last_error = time.time(), None
        for listener in self._listeners:
            listener(rules)
        for missing in missing_keys(rules, keys):
            if missing.provider not in self._warned:
                self._warned.add(missing.provider)
                logger.warning(missing.describe(keys_path))

    def _stamps_now(self, source: RulesSource) -> tuple:
        return _stamp(source.user), _stamp(self.keys_path)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(max(ctx.options.clutch_rules_poll_ms, 50) / 1000)
            try:
                self.reload_if_changed()
            except Exception:  # the watcher must outlive any surprise
                logger.exception("rules watcher failed")


def _starting() -> bool:
    """Whether mitmdump is still starting up with Clutch as its script (not an in-process test master,
    not a hot reload of the script or an option changed in mitmweb while the proxy runs)."""
    loader = ctx.master.addons.get("scriptloader")
    return loader is not None and not getattr(loader, "is_running", True)


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_mode
