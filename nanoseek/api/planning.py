"""Request planning off the event loop: rendering and tokenizing run in a small thread pool under a time limit, and
grammars are built in grammar threads and awaited on the event loop, so no single request can stall the server's
other clients or its /health.

    planner = Planner(seconds=5.0, grammar_seconds=60.0)
    plan = await planner.run(lambda: plan_chat(body, served, thinking, settings, planner))   # inside a handler
    build = planner.start_grammar(key, build, required=True)  # inside the plan: starts it, or joins the same one
    constraint = await planner.await_grammar(build)           # in the handler, holding no thread while it waits

A request waits for its grammar as vLLM and llama.cpp make it wait for the grammar they compile, for up to
`grammar_seconds` (60 s by default; at nice 19 beside a training run the first tool grammar over SmolLM2's 49k-token
vocabulary took over 5 s, which the old limit of `plan_seconds` turned into a 400 for good). Identical requests at
once share one build (8 concurrent `auto` requests with one tool list once queued 8 builds while holding planning
threads, and got 503s under load; xgrammar's compiler also compiles one grammar once for threads asking at once).
xgrammar cannot be interrupted and releases the GIL while it compiles: a build that overruns keeps its thread until
it ends, which is why the pools are bounded, and holds up nobody else.

A grammar the request cannot do without (`required`, a named function, a strict function, a response format) that
fails to build is a 400, remembered by its key (the model, the tool schemas and the grammar mode), so sending it again
is refused at once; one that overruns is a 400 too, and its key is refused at once while that build goes on (once it
ends, the next request finds it in the compiler's cache). These builds have 4 threads of their own, so slow schemas
sent on purpose cannot starve the grammar below.

`auto`'s lazy tool-call grammar over non-strict functions (which keeps the calls a model opens well-formed:
run 7's calls were right 48% of the time with it, 34% without) has 2 threads. When it cannot be had (it fails,
and is remembered, or overruns, and the next request of its key joins the build), `await_grammar` raises
GrammarUnavailable and the caller serves the request without it, saying so (api/chat.py: a response header, a log
line and a counter in /metrics): DeepSeek's own API constrains no non-strict function, so such a request is valid
there and is not refused here. Before, a lazy grammar not built within half of `plan_seconds` was dropped without a
word, so one request got checked calls and the next free text.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from nanoseek.api.errors import APIError

T = TypeVar("T")
REMEMBERED_FAILURES = 4096  # grammar keys; the oldest are forgotten first


class GrammarUnavailable(Exception):
    """Auto's lazy tool grammar cannot be had for this request: `reason` is "timeout" or "compile_error"."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class GrammarBuild:
    """A request's grammar being built (`Planner.start_grammar`); `required` unless it is auto's lazy one."""

    key: str
    future: Future
    required: bool


class Planner:
    def __init__(self, seconds: float, grammar_seconds: float = 60.0, workers: int = 4) -> None:
        self.seconds, self.grammar_seconds = seconds, grammar_seconds
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nanoseek-plan")
        self.grammar_pools = {  # by `required`
            True: ThreadPoolExecutor(max_workers=4, thread_name_prefix="nanoseek-grammar"),
            False: ThreadPoolExecutor(max_workers=2, thread_name_prefix="nanoseek-lazy-grammar"),
        }
        self.failed: OrderedDict[str, APIError] = OrderedDict()  # and required builds that overran, while they run
        self.grammar_builds: dict[str, Future] = {}  # in flight (or queued), by key
        self.lock = threading.Lock()

    async def run(self, plan: Callable[[], T]) -> T:
        """`plan()` in a worker thread; its APIError as is; 503 when it takes longer than the limit (the queue
        wait counts: a busy pool is the server's overload)."""
        future = asyncio.get_running_loop().run_in_executor(self.pool, plan)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.seconds)
        except TimeoutError:
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # its late failure is not news
            raise APIError(
                503,
                f"Server Overloaded: preparing this request took longer than {self.seconds:g} s; retry later.",
                headers={"Retry-After": "1"},
            ) from None

    def start_grammar(self, key: str, build: Callable[[], Any], required: bool) -> GrammarBuild:
        """Start `build` in a grammar thread, or join the build of `key` in flight; a key that failed before (or
        whose required build overran and still runs) gets its error at once. Awaited with `await_grammar`."""
        known = self.known_failure(key)
        if known is not None:
            failed: Future = Future()
            failed.set_exception(known)
            return GrammarBuild(key, failed, required)
        with self.lock:
            future = self.grammar_builds.get(key)
            if future is None:
                future = self.grammar_builds[key] = self.grammar_pools[required].submit(build)
                started = True
            else:
                started = False
        if started:
            future.add_done_callback(lambda done: self._build_ended(key, done))  # outside the lock: it may run now
        return GrammarBuild(key, future, required)

    async def await_grammar(self, build: GrammarBuild) -> Any:
        """The result of a `start_grammar` build, awaited on the event loop for up to `grammar_seconds`. Required:
        its APIError, or a 400 when it overruns; lazy: GrammarUnavailable in both cases. It goes on either way."""
        waited = asyncio.wrap_future(build.future)
        waited.add_done_callback(lambda done: done.cancelled() or done.exception())  # a late failure is not news
        finished, _ = await asyncio.wait({waited}, timeout=self.grammar_seconds)  # no cancel: others may share it
        if not finished and build.required:
            error = APIError(
                400,
                f"The request's tool schemas or response format could not be compiled into a grammar within "
                f"{self.grammar_seconds:g} s; simplify them (e.g. smaller repetition counts in `pattern`).",
                param="tools",
                code="invalid_tool_schema",
            )
            with self.lock:
                if self.grammar_builds.get(build.key) is build.future:  # refused at once while it runs
                    self._remember(build.key, error)
            raise error
        if not finished:
            raise GrammarUnavailable("timeout", f"not compiled within {self.grammar_seconds:g} s")
        try:
            return waited.result()
        except APIError as error:
            if build.required:
                raise
            raise GrammarUnavailable("compile_error", error.message) from None
        except Exception as error:  # noqa: BLE001 - xgrammar raises several types; the request goes on without it
            if build.required:
                raise
            raise GrammarUnavailable("compile_error", f"{type(error).__name__}: {error}") from error

    def _build_ended(self, key: str, future: Future) -> None:
        error = None if future.cancelled() else future.exception()
        with self.lock:
            if self.grammar_builds.get(key) is future:
                del self.grammar_builds[key]
            if isinstance(error, APIError):
                self._remember(key, error)
            elif error is None and not future.cancelled():
                self.failed.pop(key, None)  # an overrun refused while it ran: it is built now

    def known_failure(self, key: str) -> APIError | None:
        """A fresh copy of the error `key`'s grammar failed with before, if it did."""
        with self.lock:
            known = self.failed.get(key)
            if known is None:
                return None
            self.failed.move_to_end(key)
        return APIError(known.status, known.message, param=known.param, code=known.code)

    def _remember(self, key: str, error: APIError) -> None:  # with the lock held
        self.failed[key] = error
        while len(self.failed) > REMEMBERED_FAILURES:
            self.failed.popitem(last=False)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for pool in self.grammar_pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
