"""The Planner's grammars, awaited on the event loop for up to `grammar_seconds` (not cut at the plan limit, as they
were under load: the lazy tool grammar dropped without a word, a required one refused for good), one build shared by
identical requests at once (8 concurrent `auto` requests with one tool list once queued 8 builds and got 503s),
failures remembered, overruns joined (lazy) or refused at once while they run (required)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from nanoseek.api.errors import APIError
from nanoseek.api.planning import GrammarUnavailable, Planner


class Builds:
    """Grammar builds that the test holds until it releases them, counted by name."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = threading.Event()

    def slow(self, name: str):
        def build() -> str:
            self.started.append(name)
            self.release.wait(30)
            return name

        return build


def failing() -> str:
    raise APIError(400, "The engine cannot compile this request's grammar: no", param="tools")


@pytest.fixture
def planner():
    planner = Planner(seconds=0.5, grammar_seconds=30.0)
    yield planner
    planner.shutdown()


async def grammar(planner: Planner, key: str, build, required: bool = False, client: str = ""):
    return await planner.await_grammar(planner.start_grammar(key, build, required=required, client=client))


def wait_until_ended(planner: Planner) -> None:
    deadline = time.monotonic() + 10
    while planner.grammar_builds and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not planner.grammar_builds and not planner.charged and not planner.waiting  # no client's share is left held


async def started(builds: Builds, count: int) -> None:
    """Until `count` builds have started, then a while longer, in which no other may start."""
    deadline = time.monotonic() + 10
    while len(builds.started) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    assert len(builds.started) == count, builds.started


def test_identical_grammars_share_one_build_awaited_past_the_plan_limit_without_planning_threads(planner):
    builds = Builds()

    async def scenario() -> list[str]:
        # eight requests (more than the 4 planning threads) wait for one build that takes longer than the plan limit
        waits = [asyncio.create_task(grammar(planner, "tools-a", builds.slow(f"build {i}"))) for i in range(8)]
        await asyncio.sleep(1.0)  # twice the plan limit: the old optional grammar gave up after half of it
        plans = [planner.run(lambda: "planned") for _ in range(8)]  # the planning threads are free meanwhile
        assert await asyncio.gather(*plans) == ["planned"] * 8
        assert not any(wait.done() for wait in waits)
        builds.release.set()
        return await asyncio.gather(*waits)

    assert asyncio.run(scenario()) == ["build 0"] * 8  # every request got the grammar of the one build
    assert builds.started == ["build 0"]
    wait_until_ended(planner)  # the ended build is forgotten, so a later request builds anew (xgrammar has it cached)
    assert asyncio.run(grammar(planner, "tools-a", lambda: "again")) == "again"


def test_a_lazy_build_that_overruns_is_unavailable_and_joined_by_the_next_request(planner):
    planner.grammar_seconds = 0.5
    builds = Builds()

    async def scenario() -> None:
        with pytest.raises(GrammarUnavailable) as skipped:
            await grammar(planner, "tools-a", builds.slow("first"))
        assert skipped.value.reason == "timeout"
        later = asyncio.create_task(grammar(planner, "tools-a", builds.slow("second")))
        await asyncio.sleep(0.1)
        builds.release.set()  # the build that overran ends within the later request's wait
        assert await later == "first"

    asyncio.run(scenario())
    assert builds.started == ["first"]  # joined, not built again


def test_a_failed_lazy_build_is_unavailable_and_remembered(planner):
    calls: list[str] = []

    def counted() -> str:
        calls.append("built")
        return failing()

    for _ in range(2):
        with pytest.raises(GrammarUnavailable) as skipped:
            asyncio.run(grammar(planner, "tools-a", counted))
        assert skipped.value.reason == "compile_error" and "cannot compile" in skipped.value.detail
    assert calls == ["built"]  # the second request did not compile it again
    assert asyncio.run(grammar(planner, "tools-b", lambda: "b")) == "b"  # other tools build as usual


def test_a_required_build_that_fails_or_overruns_is_a_400_refused_at_once_while_it_runs(planner):
    with pytest.raises(APIError, match="cannot compile"):
        asyncio.run(grammar(planner, "strict-bad", failing, required=True))
    with pytest.raises(APIError, match="cannot compile"):  # remembered: refused at once, not built again
        asyncio.run(grammar(planner, "strict-bad", lambda: "never", required=True))

    planner.grammar_seconds = 0.5
    builds = Builds()
    with pytest.raises(APIError, match="within 0.5 s") as overran:
        asyncio.run(grammar(planner, "strict-slow", builds.slow("slow"), required=True))
    assert overran.value.status == 400 and overran.value.code == "invalid_tool_schema"
    started = time.monotonic()
    with pytest.raises(APIError, match="within 0.5 s"):  # while the build goes on: at once, and no second build
        asyncio.run(grammar(planner, "strict-slow", builds.slow("again"), required=True))
    assert time.monotonic() - started < 0.4 and builds.started == ["slow"]
    builds.release.set()
    wait_until_ended(planner)  # it ended well: the schemas are not refused any more, and compile from the cache
    assert asyncio.run(grammar(planner, "strict-slow", lambda: "cached", required=True)) == "cached"


def test_a_client_builds_on_half_the_threads_and_its_other_builds_wait_their_turn(planner):
    """Four slow schemas from one client once took all four required threads, and everyone else's grammar waited
    for a 400: now two run, two wait in the client's own queue, and another client's build starts at once."""
    builds = Builds()

    async def scenario() -> list[str]:
        slow = [
            asyncio.create_task(grammar(planner, f"slow-{i}", builds.slow(f"slow {i}"), required=True, client="greedy"))
            for i in range(4)
        ]
        await started(builds, 2)
        assert await grammar(planner, "json", lambda: "json", required=True, client="other") == "json"
        assert await grammar(planner, "tools", lambda: "lazy", client="other") == "lazy"
        builds.release.set()  # the client's builds end, and its queued ones start in turn
        return await asyncio.gather(*slow)

    assert asyncio.run(scenario()) == [f"slow {i}" for i in range(4)]
    assert sorted(builds.started) == [f"slow {i}" for i in range(4)]
    wait_until_ended(planner)


def test_a_build_that_never_had_a_thread_is_a_503_not_remembered_and_another_client_starts_it(planner):
    planner.grammar_seconds = 0.5
    builds = Builds()

    async def scenario() -> None:
        running = [
            asyncio.create_task(grammar(planner, f"slow-{i}", builds.slow(f"slow {i}"), required=True, client="greedy"))
            for i in range(2)
        ]
        await started(builds, 2)
        with pytest.raises(APIError, match="waited 0.5 s for a grammar thread") as queued:
            await grammar(planner, "shared", lambda: "shared", required=True, client="greedy")
        assert queued.value.status == 503 and queued.value.headers["Retry-After"]
        for overran in running:  # these ran past the limit: their schemas are slow, and refused while they run
            with pytest.raises(APIError, match="within 0.5 s"):
                await overran
        # the queued build says nothing about its schemas: another client sending them starts it on its own share
        planner.grammar_seconds = 30.0  # time for its thread to run it on a loaded machine
        assert await grammar(planner, "shared", lambda: "built again", required=True, client="other") == "shared"

    asyncio.run(scenario())
    builds.release.set()
    wait_until_ended(planner)


def test_a_client_with_a_full_queue_gets_a_503_at_once_and_other_clients_still_build(planner):
    """Queued builds hold their requests' tools and run whether anyone still waits: one client may queue 4 per
    thread of its share, and its next new schema is refused at once (a lazy one is skipped, as a timeout) instead of
    growing the queue; a schema already queued can still be joined, and other clients build as before."""
    builds = Builds()
    share, queue = planner.client_share[True], planner.client_queue[True]

    async def scenario() -> None:
        held = [
            asyncio.create_task(grammar(planner, f"slow-{i}", builds.slow(f"slow {i}"), required=True, client="greedy"))
            for i in range(share + queue)
        ]
        await started(builds, share)
        assert len(planner.waiting[(True, "greedy")]) == queue
        began = time.monotonic()
        with pytest.raises(APIError, match=f"already has {queue} grammar builds waiting") as refused:
            await grammar(planner, "one-more", lambda: "never built", required=True, client="greedy")
        assert refused.value.status == 503 and refused.value.headers["Retry-After"]
        assert time.monotonic() - began < planner.grammar_seconds / 2  # at once, not after waiting its turn
        assert "one-more" not in planner.grammar_builds and not planner.known_failure("one-more")
        joined = asyncio.create_task(
            grammar(planner, f"slow-{share}", lambda: "unused", required=True, client="greedy")
        )
        assert await grammar(planner, "json", lambda: "json", required=True, client="other") == "json"
        builds.release.set()
        assert await asyncio.gather(*held) == [f"slow {i}" for i in range(share + queue)]
        assert await joined == f"slow {share}"

    asyncio.run(scenario())
    wait_until_ended(planner)


def test_a_lazy_build_past_a_full_queue_is_skipped_as_a_timeout(planner):
    builds = Builds()
    share, queue = planner.client_share[False], planner.client_queue[False]

    async def scenario() -> None:
        held = [
            asyncio.create_task(grammar(planner, f"lazy-{i}", builds.slow(f"lazy {i}"), client="greedy"))
            for i in range(share + queue)
        ]
        await started(builds, share)
        with pytest.raises(GrammarUnavailable) as skipped:
            await grammar(planner, "one-more", lambda: "never built", client="greedy")
        assert skipped.value.reason == "timeout"
        builds.release.set()
        await asyncio.gather(*held)

    asyncio.run(scenario())
    wait_until_ended(planner)
