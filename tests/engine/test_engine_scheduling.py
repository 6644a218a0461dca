"""Admission, the bounded queue, keep-alive events and cancellation freeing the cache."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from nanoseek.engine import EngineOverloaded, Request, SamplingParams


def long_request(request_id: str | None = None) -> Request:
    return Request(
        list(range(5, 40)), SamplingParams(max_tokens=2000, temperature=0, ignore_eos=True), request_id=request_id
    )


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def test_closing_the_stream_cancels_and_frees_the_cache_at_once(make_engine):
    engine = make_engine(max_batch=2)

    async def read_three_then_close() -> int:
        stream = engine.stream(long_request())
        seen = 0
        async for event in stream:
            seen += len(event.token_ids)
            if seen >= 3:
                assert engine.stats()["running"] == 1 and engine.stats()["kv_reserved_tokens"] > 0
                break
        await stream.aclose()
        return seen

    assert asyncio.run(read_three_then_close()) == 3
    wait_for(lambda: engine.stats()["running"] == 0)
    assert engine.stats()["kv_reserved_tokens"] == 0


def test_cancel_by_id_running_and_waiting(make_engine):
    engine = make_engine(max_batch=1, keepalive_interval=0.02)

    async def scenario() -> tuple[list, list]:
        running = engine.stream(long_request("first"))
        waiting = engine.stream(long_request("second"))
        first_events = [await running.__anext__()]
        queued = await waiting.__anext__()
        assert queued.queued and not queued.token_ids  # still waiting: a keep-alive event
        engine.cancel("second")
        second_events = [event async for event in waiting]
        engine.cancel("first")
        first_events += [event async for event in running]
        return first_events, second_events

    first_events, second_events = asyncio.run(scenario())
    assert second_events[-1].finish_reason == "cancelled" and second_events[-1].usage.completion_tokens == 0
    assert first_events[-1].finish_reason == "cancelled"
    assert first_events[-1].usage.completion_tokens == sum(len(e.token_ids) for e in first_events) < 2000
    wait_for(lambda: engine.stats()["running"] == 0 and engine.stats()["waiting"] == 0)
    assert engine.stats()["kv_reserved_tokens"] == 0


def test_full_queue_raises_engine_overloaded(make_engine):
    engine = make_engine(max_batch=1, max_queue=2)

    async def scenario() -> None:
        streams = [engine.stream(long_request(f"r{i}")) for i in range(2)]
        await streams[0].__anext__()  # r0 is running now, r1 waits
        streams.append(engine.stream(long_request("r2")))  # fills the queue (2 waiting)
        with pytest.raises(EngineOverloaded, match="max_queue=2"):
            engine.stream(long_request("r3"))
        for stream in streams:
            await stream.aclose()

    asyncio.run(scenario())
    wait_for(lambda: engine.stats()["running"] == 0 and engine.stats()["waiting"] == 0)
    # The engine keeps serving after refusing.
    assert engine.generate([Request([5, 6, 7], SamplingParams(max_tokens=3))])[0].usage.completion_tokens >= 1


def test_kv_budget_bounds_admission(make_engine):
    # Each request reserves 35 + 100 tokens; a 300-token budget admits two at a time although 4 slots are free.
    engine = make_engine(max_batch=4, kv_budget_tokens=300)
    peak = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak.append(engine.stats()["running"])
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    requests = [
        Request(list(range(5, 40)), SamplingParams(max_tokens=100, temperature=0, ignore_eos=True)) for _ in range(5)
    ]
    completions = engine.generate(requests)
    done.set()
    watcher.join()
    assert max(peak) == 2
    assert all(len(c.token_ids) == 100 for c in completions)
    assert len({tuple(c.token_ids) for c in completions}) == 1


def test_generate_from_several_threads_at_once(make_engine):
    engine = make_engine(max_batch=4)
    results: dict[int, list[int]] = {}

    def worker(i: int) -> None:
        results[i] = engine.generate(
            [Request([5 + i, 6, 7], SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))]
        )[0].token_ids

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    solo = [
        engine.generate([Request([5 + i, 6, 7], SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))])[
            0
        ].token_ids
        for i in range(6)
    ]
    assert [results[i] for i in range(6)] == solo


def test_shutdown_fails_pending_work_and_refuses_new(make_engine):
    engine = make_engine(max_batch=1)
    errors = []

    def blocked() -> None:
        try:
            engine.generate([long_request()])
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=blocked)
    thread.start()
    wait_for(lambda: engine.stats()["running"] == 1)
    engine.shutdown()
    thread.join(timeout=10)
    assert errors and "shut down" in str(errors[0])
    with pytest.raises(RuntimeError, match="shut down"):
        engine.generate([Request([5], SamplingParams(max_tokens=1))])


def test_shutdown_ends_open_streams_as_cancelled(make_engine):
    engine = make_engine(max_batch=1)

    async def scenario() -> list:
        events = []
        running, waiting = engine.stream(long_request("a")), engine.stream(long_request("b"))
        events.append(await running.__anext__())
        stopper = threading.Thread(target=engine.shutdown)
        stopper.start()
        events += [event async for event in running]
        tail = [event async for event in waiting]
        stopper.join()
        return events, tail

    events, tail = asyncio.run(scenario())
    assert events[-1].finish_reason == "cancelled" and events[-1].usage is not None
    assert tail[-1].finish_reason == "cancelled" and tail[-1].usage.completion_tokens == 0
