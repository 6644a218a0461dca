"""Request planning off the event loop: rendering and tokenizing run in a small thread pool under a time limit, and
grammars are built in grammar threads and awaited on the event loop, so no single request can stall the server's
other clients or its /health.

    planner = Planner(seconds=5.0, grammar_seconds=60.0)
    plan = await planner.run(lambda: plan_chat(body, served, thinking, settings, planner, client))  # in a handler
    build = planner.start_grammar(key, build, required=True, client=client)  # in the plan: starts or joins it
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

One client (an API key; the client's address on a server without keys) builds on at most half of each pool's
threads at once (2 required, 1 lazy): its further builds wait in a queue of its own, holding no thread, and start
as its builds end. Four deliberately slow strict schemas used to take all 4 required threads for minutes, and every
other client's JSON or `required` request then waited 60 s for a 400, remembered; now the other clients build on
the other 2 threads. A build that waited its turn past `grammar_seconds` without starting says nothing about its
schema: it is a 503 (retry; the build stays queued and the retry joins it), not remembered. A request that joins a
build waiting in another client's queue starts it on its own share, so nobody can park a schema others send behind
their own slow builds. xgrammar cannot abandon a compile (0.2.8 has no cancel or time limit), so a client that
holds several keys can still fill every thread; building in killable processes (a compiled grammar can be
serialized) would bound that too. A client's queue holds at most 4 builds per thread of its share (8 required, 4
lazy): each holds its request's tools and runs whether anyone still waits for it, so past that a new build is a
503 at once (a lazy one is skipped with reason `timeout`, as it would have waited past the limit).

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
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nanoseek.api.errors import APIError

T = TypeVar("T")
REMEMBERED_FAILURES = 4096  # grammar keys; the oldest are forgotten first
GRAMMAR_THREADS = {True: 4, False: 2}  # by `required`: the builds a request needs, and auto's lazy ones
# Builds one client may have waiting for its share of a pool, as a multiple of that share. Each holds its request's
# tools until it runs, and runs whether anyone still waits or not: past this a new build is refused at once (503).
QUEUED_PER_THREAD = 4


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


@dataclass
class Flight:
    """A grammar build in flight, shared by the requests of its key: charged to one client's share of its pool's
    threads (`submitted`), or waiting in that client's queue for one."""

    key: str
    build: Callable[[], Any]
    required: bool
    client: str
    future: Future = field(default_factory=Future)  # what its requests await
    submitted: bool = False
    started: bool = False  # in a grammar thread: only then does overrunning the limit say the schema is slow


class Planner:
    def __init__(self, seconds: float, grammar_seconds: float = 60.0, workers: int = 4) -> None:
        self.seconds, self.grammar_seconds = seconds, grammar_seconds
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nanoseek-plan")
        self.grammar_pools = {
            True: ThreadPoolExecutor(max_workers=GRAMMAR_THREADS[True], thread_name_prefix="nanoseek-grammar"),
            False: ThreadPoolExecutor(max_workers=GRAMMAR_THREADS[False], thread_name_prefix="nanoseek-lazy-grammar"),
        }
        self.client_share = {required: max(1, threads // 2) for required, threads in GRAMMAR_THREADS.items()}
        self.client_queue = {required: QUEUED_PER_THREAD * share for required, share in self.client_share.items()}
        self.failed: OrderedDict[str, APIError] = OrderedDict()  # and required builds that overran, while they run
        self.grammar_builds: dict[str, Flight] = {}  # in flight (running, or waiting for a thread), by key
        self.charged: Counter[tuple[bool, str]] = Counter()  # builds submitted, by (pool, client), until they end
        self.waiting: defaultdict[tuple[bool, str], deque[Flight]] = defaultdict(deque)  # over a client's share
        self.closed = False
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

    def start_grammar(self, key: str, build: Callable[[], Any], required: bool, client: str = "") -> GrammarBuild:
        """Start `build` in a grammar thread on `client`'s share (or queue it until the client's builds leave it
        room), or join the build of `key` in flight; a key that failed before (or whose required build overran
        and still runs) gets its error at once. Awaited with `await_grammar`."""
        refused = self.known_failure(key)
        with self.lock:
            flight = self.grammar_builds.get(key)
            queued = len(self.waiting.get((required, client), ()))
            if refused is None and flight is None and queued >= self.client_queue[required]:
                refused = APIError(
                    503,
                    f"Server Overloaded: this client already has {self.client_queue[required]} grammar builds waiting "
                    f"for its {self.client_share[required]} grammar threads; retry later.",
                    headers={"Retry-After": "1"},
                )
            if refused is not None:
                failed: Future = Future()
                failed.set_exception(refused)
                return GrammarBuild(key, failed, required)
            if flight is None:
                flight = self.grammar_builds[key] = Flight(key, build, required, client)
                self.waiting[(required, client)].append(flight)
            elif not flight.submitted and self.charged[(required, client)] < self.client_share[required]:
                self._dequeue(flight)  # queued behind another client's builds: this one's share starts it
                flight.client = client
                self.waiting[(required, client)].appendleft(flight)
            ready = self._take_turns(required, client)
        for flight_ready in ready:  # outside the lock: a build's end may run its callback at once
            self._submit(flight_ready)
        return GrammarBuild(key, flight.future, required)

    async def await_grammar(self, build: GrammarBuild) -> Any:
        """The result of a `start_grammar` build, awaited on the event loop for up to `grammar_seconds`. Required:
        its APIError, or a 400 when it overruns (a 503 if it never had a thread); lazy: GrammarUnavailable in all
        these cases. It goes on either way."""
        waited = asyncio.wrap_future(build.future)
        waited.add_done_callback(lambda done: done.cancelled() or done.exception())  # a late failure is not news
        finished, _ = await asyncio.wait({waited}, timeout=self.grammar_seconds)  # no cancel: others may share it
        if not finished and not build.required:
            raise GrammarUnavailable("timeout", f"not compiled within {self.grammar_seconds:g} s")
        if not finished:
            raise self._overran(build)
        try:
            return waited.result()
        except APIError as error:
            if build.required:
                raise
            # a 503 is a full queue: the build would have waited past the limit, as a timeout does
            raise GrammarUnavailable("timeout" if error.status == 503 else "compile_error", error.message) from None
        except Exception as error:  # noqa: BLE001 - xgrammar raises several types; the request goes on without it
            if build.required:
                raise
            raise GrammarUnavailable("compile_error", f"{type(error).__name__}: {error}") from error

    def _overran(self, build: GrammarBuild) -> APIError:
        """The error of a required build not done within `grammar_seconds`: a 400, its key refused at once while it
        runs; a 503 when it never had a thread, which says nothing about its schemas (it stays queued for a retry)."""
        with self.lock:
            flight = self.grammar_builds.get(build.key)
            flight = flight if flight is not None and flight.future is build.future else None
            if flight is not None and not flight.started:
                return APIError(
                    503,
                    f"Server Overloaded: the request's grammar waited {self.grammar_seconds:g} s for a grammar "
                    f"thread (a client builds {self.client_share[True]} at once); retry later.",
                    headers={"Retry-After": "1"},
                )
            error = APIError(
                400,
                f"The request's tool schemas or response format could not be compiled into a grammar within "
                f"{self.grammar_seconds:g} s; simplify them (e.g. smaller repetition counts in `pattern`).",
                param="tools",
                code="invalid_tool_schema",
            )
            if flight is not None:  # refused at once while it runs
                self._remember(build.key, error)
            return error

    def _take_turns(self, required: bool, client: str) -> list[Flight]:  # with the lock held
        """The client's waiting builds that its share of the pool now has room for, charged to it."""
        share, waiting, ready = (required, client), self.waiting[(required, client)], []
        while waiting and not self.closed and self.charged[share] < self.client_share[required]:
            flight = waiting.popleft()
            flight.submitted = True
            self.charged[share] += 1
            ready.append(flight)
        if not waiting:
            del self.waiting[share]
        return ready

    def _dequeue(self, flight: Flight) -> None:  # with the lock held
        share = (flight.required, flight.client)
        self.waiting[share].remove(flight)
        if not self.waiting[share]:
            del self.waiting[share]

    def _submit(self, flight: Flight) -> None:
        def run() -> Any:
            flight.started = True
            return flight.build()

        ran = self.grammar_pools[flight.required].submit(run)
        ran.add_done_callback(lambda ran: self._build_ended(flight, ran))

    def _build_ended(self, flight: Flight, ran: Future) -> None:
        error = None if ran.cancelled() else ran.exception()
        if ran.cancelled() or flight.future.cancelled():  # the server shuts down (or its waiter cancelled it)
            flight.future.cancel()
        elif error is not None:
            flight.future.set_exception(error)
        else:
            flight.future.set_result(ran.result())
        share = (flight.required, flight.client)
        with self.lock:
            if self.grammar_builds.get(flight.key) is flight:
                del self.grammar_builds[flight.key]
            if isinstance(error, APIError):
                self._remember(flight.key, error)
            elif error is None and not ran.cancelled():
                self.failed.pop(flight.key, None)  # an overrun refused while it ran: it is built now
            self.charged[share] -= 1
            if not self.charged[share]:
                del self.charged[share]
            ready = self._take_turns(*share)
        for next_flight in ready:
            self._submit(next_flight)

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
        with self.lock:
            self.closed = True
            queued = [flight for waiting in self.waiting.values() for flight in waiting]
            self.waiting.clear()
        for flight in queued:
            flight.future.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)
        for pool in self.grammar_pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
