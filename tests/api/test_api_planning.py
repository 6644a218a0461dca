"""The Planner's optional grammars: identical requests at once share one build and its deadline (8 concurrent `auto`
requests with one tool list used to queue 8 builds and wait half the limit each, and got 503s under load)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from nanoseek.api.planning import Planner


def test_identical_optional_grammars_at_once_are_built_once_and_waited_for_until_one_deadline():
    planner = Planner(seconds=4.0)  # an optional grammar may take half: 2 s
    builds: list[str] = []
    release = threading.Event()

    def slow_build(name: str):
        def build() -> str:
            builds.append(name)
            release.wait(30)  # overruns the deadline (until the test releases it)
            return name

        return build

    def ask(key: str, delay: float) -> tuple[str | None, float]:
        time.sleep(delay)
        return planner.optional_grammar(key, slow_build(key)), time.monotonic()

    try:
        with ThreadPoolExecutor(8) as pool:
            # four at once, four more 1.5 s later: the later ones wait only for what is left of the first deadline
            results = list(pool.map(ask, ["tools-a"] * 8, [0.0] * 4 + [1.5] * 4))
        assert builds == ["tools-a"]  # one build for the eight requests, not one each behind two grammar threads
        assert all(grammar is None for grammar, _ in results)  # not ready in time: they go on without it
        first, late = [ended for _, ended in results[:4]], [ended for _, ended in results[4:]]
        assert max(late) - max(first) < 1.0, results  # not 2 s more each (relative times: the machine may be busy)
        release.set()
        deadline = time.monotonic() + 10
        while planner.optional_builds and time.monotonic() < deadline:  # the overrunning build ends and is forgotten
            time.sleep(0.01)
        assert not planner.optional_builds

        def fast(name: str):
            return lambda: builds.append(name) or name

        assert planner.optional_grammar("tools-a", fast("tools-a")) == "tools-a"  # a new request builds anew
        assert planner.optional_grammar("tools-b", fast("tools-b")) == "tools-b"  # another key: its own build
        assert builds == ["tools-a", "tools-a", "tools-b"]
    finally:
        release.set()
        planner.shutdown()
