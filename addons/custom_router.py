"""The user's own router: a Python file named in the rules (`routes.custom`) that exposes

    def route(request: dict, context: RouterContext) -> str | None

returning a target (`provider:model`, or claude-code-router's `provider,model`) or None to let the
built-in rules decide. It runs in a worker thread with a time limit; anything it does wrong (an
exception, a timeout, a file that does not load) is logged and routing falls through: a broken
router must never break the agent (fail open, as claude-code-router does).

Pure logic, no mitmproxy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import importlib.util
import inspect
import logging
import sys
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RouterContext:
    """What a custom router may read besides the request body. No keys or headers: nothing secret."""

    agent: str
    session: str | None
    dialect: str
    provider: str  # the provider the agent called
    model: str | None  # the model the agent asked for
    tokens: int | None  # token count, when the rules' long_context route needed it
    signals: tuple[str, ...]  # task triggers present: image, web_search, think, toolcall, background, ...


@dataclasses.dataclass
class Outcome:
    target: str | None
    note: str | None = None  # why nothing was used (error, timeout, bad return value)


class CustomRouter:
    """Loads a router file (again when it changes) and calls it with a time limit."""

    def __init__(self, max_workers: int = 4) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="clutch-router")
        self._lock = threading.Lock()
        self._loaded: dict[Path, tuple[tuple[int, int], Any]] = {}

    def function(self, path: Path):
        """The file's `route` function, or raise with a message fit for the log."""
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._loaded.get(path)
            if cached and cached[0] == stamp:
                return cached[1]
        name = f"clutch_custom_router_{abs(hash(path))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules.pop(name, None)
        route = getattr(module, "route", None)
        if not callable(route):
            raise AttributeError(f"{path} defines no route(request, context) function")
        with self._lock:
            self._loaded[path] = (stamp, route)
        return route

    def _call(self, path: Path, request: dict, context: RouterContext) -> Any:
        route = self.function(path)
        result = route(request, context)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        return result

    async def run(self, path: Path, request: dict, context: RouterContext, timeout_s: float) -> Outcome:
        future = self._pool.submit(self._call, path, request, context)
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        except TimeoutError:
            return self._failed(path, f"took longer than {timeout_s:g} s")
        except Exception as e:  # the user's code: anything can happen, and routing must go on
            return self._failed(path, f"raised {type(e).__name__}: {e}")
        return _checked(path, result)

    def run_sync(self, path: Path, request: dict, context: RouterContext, timeout_s: float) -> Outcome:
        future = self._pool.submit(self._call, path, request, context)
        try:
            result = future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            return self._failed(path, f"took longer than {timeout_s:g} s")
        except Exception as e:
            return self._failed(path, f"raised {type(e).__name__}: {e}")
        return _checked(path, result)

    @staticmethod
    def _failed(path: Path, what: str) -> Outcome:
        note = f"custom router {path.name} {what}; falling through to the rules"
        logger.warning("%s", note)
        return Outcome(None, note)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


async def _await(awaitable):
    return await awaitable


def _checked(path: Path, result: Any) -> Outcome:
    if result is None:
        return Outcome(None)
    if isinstance(result, str) and result.strip():
        return Outcome(result.strip())
    note = f"custom router {path.name} returned {type(result).__name__}, not a 'provider:model' string; ignored"
    logger.warning("%s", note)
    return Outcome(None, note)
