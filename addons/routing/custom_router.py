"""The user's own router: a Python file named in the rules (`routes.custom`) that exposes

    def route(request: dict, context: RouterContext) -> str | None

returning a target (`provider:model`, or claude-code-router's `provider,model`) or None to let the
built-in rules decide. It runs in a worker thread with a time limit; anything it does wrong (an
exception, a timeout, a file that does not load) is logged and routing falls through: a broken
router must never break the agent (fail open, as claude-code-router does).

A call past its time limit cannot be stopped (Python threads cannot be killed), so its thread is
given up and a new one takes its place: a router that is slow on some requests never makes the
others wait for a free thread. Threads are bounded (MAX_THREADS): at the bound a thread given up is
no longer replaced, and once every thread is stuck the router is not asked at all, which the flow's
notes and the log say, until one of its slow calls ends.

Pure logic, no mitmproxy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import importlib.util
import inspect
import logging
import queue
import sys
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

WORKERS = 4  # threads that take router calls
# every router thread, those still running a call past its time limit included: a router that hangs
# for good costs at most this many threads, then it is no longer asked
MAX_THREADS = 20


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
class RouterVerdict:
    """What the rules' custom router answered for one request: a target, or None and why."""

    target: str | None
    note: str | None = None  # why nothing was used (error, timeout, bad return value)


class _Job:
    def __init__(self, fn, args) -> None:
        self.fn, self.args = fn, args
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.finished = False  # under _Workers._lock
        self.abandoned = False  # under _Workers._lock


class _Workers:
    """Threads for router calls that replace a thread whose call ran out of time, up to a bound.

    `serving` threads take new calls; `stuck` ones still run a call its caller gave up on. A thread
    whose abandoned call ends goes back to serving if the pool is short, else it ends."""

    def __init__(self, size: int, limit: int) -> None:
        self.size, self.limit = size, max(size, limit)
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.serving = 0
        self.stuck = 0
        self._closed = False

    def submit(self, fn, *args) -> _Job | None:
        """Queue a call; None when every thread is stuck on an abandoned call and none may be added."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the router's workers are shut down")
            self._fill()
            if self.serving == 0:
                return None
        job = _Job(fn, args)
        self._jobs.put(job)
        return job

    def abandon(self, job: _Job) -> bool:
        """The caller gave up on a running call: its thread no longer serves, another takes its place
        (within the bound). False when the call finished meanwhile (its result is there)."""
        with self._lock:
            if job.finished:
                return False
            job.abandoned = True
            self.serving -= 1
            self.stuck += 1
            self._fill()
            return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            threads = self.serving + self.stuck
        for _ in range(threads):
            self._jobs.put(None)

    def _fill(self) -> None:
        while self.serving < self.size and self.serving + self.stuck < self.limit and not self._closed:
            self.serving += 1
            threading.Thread(target=self._work, name="clutch-router", daemon=True).start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if not job.future.set_running_or_notify_cancel():
                continue  # its caller stopped waiting before it started
            error, result, back = None, None, True
            try:
                result = job.fn(*job.args)
            except BaseException as e:  # the user's code: handed to the caller as it is
                error = e
            with self._lock:
                job.finished = True
                if job.abandoned:
                    self.stuck -= 1
                    back = self.serving < self.size and not self._closed
                    if back:
                        self.serving += 1
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)
            if job.abandoned and not back:
                return


class CustomRouter:
    """Loads a router file (again when it changes) and calls it with a time limit."""

    def __init__(self, max_workers: int = WORKERS, max_threads: int = MAX_THREADS) -> None:
        self._workers = _Workers(max_workers, max_threads)
        self._lock = threading.Lock()
        self._loaded: dict[Path, tuple[tuple[int, int], Any]] = {}
        self._saturated = False  # said once in the log when it starts, and once when it ends

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

    async def run(self, path: Path, request: dict, context: RouterContext, timeout_s: float) -> RouterVerdict:
        job = self._submit(path, request, context)
        if isinstance(job, RouterVerdict):
            return job
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(job.future), timeout_s)
        except TimeoutError:
            return self._late(path, job, timeout_s)
        except Exception as e:  # the user's code: anything can happen, and routing must go on
            return self._failed(path, f"raised {type(e).__name__}: {e}")
        return _checked(path, result)

    def run_sync(self, path: Path, request: dict, context: RouterContext, timeout_s: float) -> RouterVerdict:
        job = self._submit(path, request, context)
        if isinstance(job, RouterVerdict):
            return job
        try:
            result = job.future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            return self._late(path, job, timeout_s)
        except Exception as e:
            return self._failed(path, f"raised {type(e).__name__}: {e}")
        return _checked(path, result)

    def _submit(self, path: Path, request: dict, context: RouterContext) -> _Job | RouterVerdict:
        job = self._workers.submit(self._call, path, request, context)
        if job is None:
            stuck = self._workers.stuck
            note = (f"custom router {path.name} not asked: {stuck} earlier calls are still running past "
                    f"their time limit, which is all the threads Clutch gives it; falling through to the rules")
            if not self._saturated:
                self._saturated = True
                logger.error("%s (further requests too, until one of those calls ends)", note)
            return RouterVerdict(None, note)
        if self._saturated:
            self._saturated = False
            logger.warning("custom router %s is asked again: a call that ran past its time limit ended", path.name)
        return job

    def _late(self, path: Path, job: _Job, timeout_s: float) -> RouterVerdict:
        if job.future.cancel():  # never started: every thread was busy
            return self._failed(path, f"had no free thread within {timeout_s:g} s")
        if self._workers.abandon(job):
            stuck = self._workers.stuck
            return self._failed(path, f"took longer than {timeout_s:g} s (left running: {stuck} such "
                                      f"call{'s' if stuck != 1 else ''}, at most {self._workers.limit})")
        try:  # it finished just now
            return _checked(path, job.future.result(0))
        except Exception as e:
            return self._failed(path, f"raised {type(e).__name__}: {e}")

    @staticmethod
    def _failed(path: Path, what: str) -> RouterVerdict:
        note = f"custom router {path.name} {what}; falling through to the rules"
        logger.warning("%s", note)
        return RouterVerdict(None, note)

    def close(self) -> None:
        self._workers.close()


async def _await(awaitable):
    return await awaitable


def _checked(path: Path, result: Any) -> RouterVerdict:
    if result is None:
        return RouterVerdict(None)
    if isinstance(result, str) and result.strip():
        return RouterVerdict(result.strip())
    note = f"custom router {path.name} returned {type(result).__name__}, not a 'provider:model' string; ignored"
    logger.warning("%s", note)
    return RouterVerdict(None, note)
