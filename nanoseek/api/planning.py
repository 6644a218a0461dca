"""Request planning off the event loop: rendering, tokenizing and grammar building run in a small thread pool
under a time limit, so no single request can stall the server's other clients or its /health.

    planner = Planner(seconds=5.0, grammar_seconds=60.0)
    plan = await planner.run(lambda: plan_chat(body, served, thinking, settings, planner))   # inside a handler
    constraint = planner.grammar(key, build)     # inside the plan: refused at once if `key` failed before
    build = planner.start_grammar(key, build)    # inside the plan: auto's lazy tool grammar, in a grammar thread
    constraint = await planner.await_grammar(build)  # in the handler: GrammarUnavailable if it fails or overruns

A grammar the request cannot do without (`required`, a named function, a strict function, a response format) is
built in the planning thread: one that fails to build, or is still building when the time limit passes, is
remembered by its key (the request's tool schemas and grammar mode), so sending it again is a 400 at once instead
of another thread stuck compiling. xgrammar cannot be interrupted: a build that overran keeps its worker thread
until it ends, which is why the pools are bounded and overruns are remembered. xgrammar releases the GIL while it
compiles, so even that thread does not hold up the event loop.

`auto`'s lazy tool-call grammar over non-strict functions (which keeps the calls a model opens well-formed: the
shipped model's calls are right 48% of the time with it, 34% without) is waited for on the event loop, as vLLM and
llama.cpp wait for the grammar they compile: the request awaits its build, which runs in one of two grammar threads,
for up to `grammar_seconds` (60 s by default; at nice 19 beside a training run the shipped model's first tool
grammar took over 5 s), holding no planning thread meanwhile. Identical requests at once share one build (8
concurrent `auto` requests with one tool list once queued 8 builds behind the 2 grammar threads while holding
planning threads, and got 503s under load; xgrammar's compiler also compiles one grammar once for threads asking at
once). A build that fails is remembered by its key like the others; one that overruns goes on, and the next request
of its key joins it (and then finds it in the compiler's cache). When the grammar cannot be had, `await_grammar`
raises GrammarUnavailable and the caller serves the request without it, saying so (api/chat.py: a response header, a
log line and a counter in /metrics): DeepSeek's own API constrains no non-strict function, so such a request is
valid there and is not refused here. Before, a grammar not built within half of `plan_seconds` was dropped without a
word, so one request got checked calls and the next free text.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from nanoseek.api.errors import APIError

T = TypeVar("T")
REMEMBERED_FAILURES = 4096  # grammar keys; the oldest are forgotten first
_current = threading.local()  # the planning job a worker thread is running (its grammar key while it builds one)


class GrammarUnavailable(Exception):
    """Auto's lazy tool grammar cannot be had for this request: `reason` is "timeout" or "compile_error"."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class PlanningJob:
    def __init__(self) -> None:
        self.building: str | None = None  # the grammar key being built right now, if any


class Planner:
    def __init__(self, seconds: float, grammar_seconds: float = 60.0, workers: int = 4) -> None:
        self.seconds, self.grammar_seconds = seconds, grammar_seconds
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nanoseek-plan")
        self.grammar_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nanoseek-grammar")
        self.failed: OrderedDict[str, APIError] = OrderedDict()
        self.grammar_builds: dict[str, Future] = {}  # lazy grammars in flight (or queued), by key
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
        known = self.known_failure(key)
        if known is not None:
            raise known
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

    def start_grammar(self, key: str, build: Callable[[], T]) -> Future[T]:
        """Start `build` (auto's lazy tool grammar) in a grammar thread, or join the build of `key` in flight; a
        key whose build failed before gets its failure at once. The request awaits it with `await_grammar`."""
        known = self.known_failure(key)
        if known is not None:
            failed: Future[T] = Future()
            failed.set_exception(known)
            return failed
        with self.lock:
            future = self.grammar_builds.get(key)
            if future is None:
                future = self.grammar_builds[key] = self.grammar_pool.submit(build)
                started = True
            else:
                started = False
        if started:
            future.add_done_callback(lambda done: self._build_ended(key, done))  # outside the lock: it may run now
        return future

    async def await_grammar(self, build: Future[T]) -> T:
        """The result of a `start_grammar` build, awaited on the event loop for up to `grammar_seconds`;
        GrammarUnavailable if it fails or is not done by then (it goes on for the requests that share it)."""
        waited = asyncio.wrap_future(build)
        waited.add_done_callback(lambda done: done.cancelled() or done.exception())  # a late failure is not news
        finished, _ = await asyncio.wait({waited}, timeout=self.grammar_seconds)  # no cancel: others may share it
        if not finished:
            raise GrammarUnavailable("timeout", f"not compiled within {self.grammar_seconds:g} s")
        try:
            return waited.result()
        except APIError as error:
            raise GrammarUnavailable("compile_error", error.message) from None
        except Exception as error:  # noqa: BLE001 - xgrammar raises several types; the request goes on without it
            raise GrammarUnavailable("compile_error", f"{type(error).__name__}: {error}") from error

    def _build_ended(self, key: str, future: Future) -> None:
        with self.lock:
            if self.grammar_builds.get(key) is future:
                del self.grammar_builds[key]
        error = None if future.cancelled() else future.exception()
        if isinstance(error, APIError):
            self.remember(key, error)

    def known_failure(self, key: str) -> APIError | None:
        """A fresh copy of the error `key`'s grammar failed with before, if it did."""
        with self.lock:
            known = self.failed.get(key)
            if known is None:
                return None
            self.failed.move_to_end(key)
        return APIError(known.status, known.message, param=known.param, code=known.code)

    def remember(self, key: str, error: APIError) -> None:
        with self.lock:
            self.failed[key] = error
            while len(self.failed) > REMEMBERED_FAILURES:
                self.failed.popitem(last=False)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.grammar_pool.shutdown(wait=False, cancel_futures=True)
