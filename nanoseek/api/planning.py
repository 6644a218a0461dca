"""Request planning off the event loop: rendering, tokenizing and grammar building run in a small thread pool
under a time limit, so no single request can stall the server's other clients or its /health.

    planner = Planner(seconds=5.0)
    plan = await planner.run(lambda: plan_chat(body, served, thinking, settings, planner))   # inside a handler
    constraint = planner.grammar(key, build)     # inside the plan: refused at once if `key` failed before
    constraint = planner.optional_grammar(key, build)  # one it can do without: None if not ready in half the limit

A grammar that fails to build, or is still building when the time limit passes, is remembered by its key (the
request's tool schemas and grammar mode), so sending it again is a 400 at once instead of another thread stuck
compiling. xgrammar cannot be interrupted: a build that overran keeps its worker thread until it ends, which is
why the pool is bounded and overruns are remembered. xgrammar releases the GIL while it compiles, so even that
thread does not hold up the event loop.

Identical requests at once share one optional build and its deadline (half the limit from when it was started): 8
concurrent `auto` requests with one tool list used to queue 8 builds behind the 2 grammar threads and wait half
the limit each, in planning threads whose queue wait counts towards the limit, and got 503s under load. (xgrammar's
compiler already compiles one grammar once when several threads ask at once: measured, 8 threads asking for one
new tool grammar cost the CPU of one compile, 4 different grammars four times that.)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from nanoseek.api.errors import APIError

T = TypeVar("T")
REMEMBERED_FAILURES = 4096  # grammar keys; the oldest are forgotten first
_current = threading.local()  # the planning job a worker thread is running (its grammar key while it builds one)


class PlanningJob:
    def __init__(self) -> None:
        self.building: str | None = None  # the grammar key being built right now, if any


class Planner:
    def __init__(self, seconds: float, workers: int = 4) -> None:
        self.seconds = seconds
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nanoseek-plan")
        self.optional_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nanoseek-grammar")
        self.failed: OrderedDict[str, APIError] = OrderedDict()
        self.optional_builds: dict[str, tuple[Future, float]] = {}  # in flight, by key: (build, when it started)
        self.lock = threading.Lock()

    async def run(self, plan: Callable[[], T]) -> T:
        """`plan()` in a worker thread; its APIError as is; 400 (for a grammar, then remembered) or 503 when it
        takes longer than the limit (the queue wait counts: a busy pool is the server's overload)."""
        job = PlanningJob()

        def work() -> T:
            _current.job = job
            try:
                return plan()
            finally:
                _current.job = None

        future = asyncio.get_running_loop().run_in_executor(self.pool, work)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.seconds)
        except TimeoutError:
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # its late failure is not news
            key = job.building
            if key is None:
                raise APIError(
                    503,
                    f"Server Overloaded: preparing this request took longer than {self.seconds:g} s; retry later.",
                    headers={"Retry-After": "1"},
                ) from None
            error = APIError(
                400,
                f"The request's tool schemas or response format could not be compiled into a grammar within "
                f"{self.seconds:g} s; simplify them (e.g. smaller repetition counts in `pattern`).",
                param="tools",
                code="invalid_tool_schema",
            )
            self.remember(key, error)
            raise error from None

    def grammar(self, key: str, build: Callable[[], T]) -> T:
        """Run `build` (a grammar build inside a plan) unless `key` failed before; remember its APIError."""
        with self.lock:
            known = self.failed.get(key)
            if known is not None:
                self.failed.move_to_end(key)
        if known is not None:
            raise APIError(known.status, known.message, param=known.param, code=known.code)
        job: PlanningJob | None = getattr(_current, "job", None)
        if job is not None:
            job.building = key
        try:
            return build()
        except APIError as error:
            self.remember(key, error)
            raise
        finally:
            if job is not None:
                job.building = None

    def optional_grammar(self, key: str, build: Callable[[], T]) -> T | None:
        """A grammar the request can do without (auto's lazy tool-call grammar over non-strict functions, which
        only keeps calls well-formed): `build` in a grammar thread, shared by the requests of the same `key` that
        come while it runs, each waiting for it until half the time limit after it started; None if it fails or
        is not ready by then, and the request goes on unconstrained, as such requests were before. A build that
        overran still finishes, so the engine's compiler has it cached for the next request."""
        with self.lock:
            shared = self.optional_builds.get(key)
            if shared is None:
                shared = self.optional_builds[key] = (self.optional_pool.submit(build), time.monotonic())
        future, started = shared
        future.add_done_callback(lambda done: self._forget_optional(key, done))  # outside the lock: it may run now
        try:
            return future.result(timeout=max(0.0, started + self.seconds / 2 - time.monotonic()))
        except Exception:  # noqa: BLE001 - a timeout, or a grammar that does not compile: serve without it
            return None

    def _forget_optional(self, key: str, future: Future) -> None:
        with self.lock:
            if key in self.optional_builds and self.optional_builds[key][0] is future:
                del self.optional_builds[key]

    def remember(self, key: str, error: APIError) -> None:
        with self.lock:
            self.failed[key] = error
            while len(self.failed) > REMEMBERED_FAILURES:
                self.failed.popitem(last=False)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.optional_pool.shutdown(wait=False, cancel_futures=True)
