"""The Planner's lazy tool grammars: awaited on the event loop for up to `grammar_seconds` (not dropped after half
the plan limit, as they were under load), one build shared by identical requests at once (8 concurrent `auto`
requests with one tool list once queued 8 builds and got 503s), failures remembered, overruns joined."""

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


@pytest.fixture
def planner():
    planner = Planner(seconds=0.5, grammar_seconds=30.0)
    yield planner
    planner.shutdown()


def test_identical_lazy_grammars_share_one_build_awaited_past_the_plan_limit_without_planning_threads(planner):
    builds = Builds()

    async def scenario() -> list[str]:
        # eight requests (more than the 4 planning threads) wait for one build that takes longer than the plan limit
        waits = [asyncio.create_task(planner.await_grammar(planner.start_grammar("tools-a", builds.slow("tools-a"))))]
        waits += [
            asyncio.create_task(planner.await_grammar(planner.start_grammar("tools-a", builds.slow("x"))))
            for _ in range(7)
        ]
        await asyncio.sleep(1.0)  # twice the plan limit: the old optional grammar gave up after half of it
        plans = [planner.run(lambda: "planned") for _ in range(8)]  # the planning threads are free meanwhile
        assert await asyncio.gather(*plans) == ["planned"] * 8
        assert not any(wait.done() for wait in waits)
        builds.release.set()
        return await asyncio.gather(*waits)

    assert asyncio.run(scenario()) == ["tools-a"] * 8  # every request got the grammar
    assert builds.started == ["tools-a"]  # one build for the eight
    deadline = time.monotonic() + 10
    while planner.grammar_builds and time.monotonic() < deadline:  # the ended build is forgotten ...
        time.sleep(0.01)
    assert asyncio.run(planner.await_grammar(planner.start_grammar("tools-a", lambda: "again"))) == "again"  # ... so
    # a later request builds anew (xgrammar's compiler has it cached by then)


def test_a_build_that_overruns_the_wait_is_unavailable_and_joined_by_the_next_request(planner):
    planner.grammar_seconds = 0.5
    builds = Builds()

    async def scenario() -> None:
        started = time.monotonic()
        with pytest.raises(GrammarUnavailable) as skipped:
            await planner.await_grammar(planner.start_grammar("tools-a", builds.slow("tools-a")))
        assert skipped.value.reason == "timeout" and time.monotonic() - started < 5
        later = asyncio.create_task(planner.await_grammar(planner.start_grammar("tools-a", builds.slow("x"))))
        await asyncio.sleep(0.1)
        builds.release.set()  # the build that overran ends within the later request's wait
        assert await later == "tools-a"

    asyncio.run(scenario())
    assert builds.started == ["tools-a"]  # joined, not built again


def test_a_failed_build_is_unavailable_and_remembered(planner):
    calls: list[str] = []

    def failing() -> str:
        calls.append("built")
        raise APIError(400, "The engine cannot compile this request's grammar: no", param="tools")

    async def ask() -> GrammarUnavailable:
        with pytest.raises(GrammarUnavailable) as skipped:
            await planner.await_grammar(planner.start_grammar("tools-a", failing))
        return skipped.value

    first = asyncio.run(ask())
    assert first.reason == "compile_error" and "cannot compile" in first.detail
    assert asyncio.run(ask()).reason == "compile_error"
    assert calls == ["built"]  # the second request did not compile it again
    assert asyncio.run(planner.await_grammar(planner.start_grammar("tools-b", lambda: "b"))) == "b"  # others build
