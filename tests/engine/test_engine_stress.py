"""A random mix of everything at once: sampling kinds, n, stop strings, grammars, long prompts, cancels.

Invariants: every sample ends with exactly one finish event, usage adds up, greedy requests equal their solo
runs whatever shared their batch, and the engine ends empty (no slot, reservation or queue entry leaks)."""

from __future__ import annotations

import asyncio
import random

import pytest

from nanoseek.engine import Constraint, Request, SamplingParams


@pytest.mark.slow
def test_random_mix_keeps_every_invariant(make_engine):
    engine = make_engine(max_batch=6, prefill_chunk=32, kv_budget_tokens=2048, max_queue=100)
    rng = random.Random(0)
    shared = [rng.randrange(3, 500) for _ in range(70)]
    requests = []
    for i in range(40):
        prompt = (shared if rng.random() < 0.4 else []) + [rng.randrange(3, 500) for _ in range(rng.randrange(1, 90))]
        kind = rng.randrange(5)
        params = SamplingParams(
            max_tokens=rng.randrange(1, 25),
            temperature=0 if kind == 0 else 1.0,
            seed=i,
            n=2 if kind == 1 else 1,
            stop=["a", "e "] if kind == 2 else [],
            logprobs=kind == 3,
            top_logprobs=3 * (kind == 3),
            constraint=Constraint.json_object() if kind == 4 else None,
            ignore_eos=kind == 0,
        )
        requests.append((Request(prompt, params, request_id=f"r{i}"), rng.random() < 0.2))

    async def run_all():
        async def one(request: Request, cancel_early: bool):
            events = []
            stream = engine.stream(request)
            async for event in stream:
                events.append(event)
                if cancel_early and sum(len(e.token_ids) for e in events) >= 2:
                    engine.cancel(request.request_id)
            return events

        return await asyncio.gather(*(one(r, c) for r, c in requests))

    results = asyncio.run(run_all())
    for (request, cancel_early), events in zip(requests, results):
        finished = [e for e in events if e.finish_reason is not None]
        assert sorted(e.index for e in finished) == list(range(request.params.n))
        usage = events[-1].usage
        assert usage is not None and usage.prompt_tokens == len(request.prompt_ids)
        assert usage.completion_tokens == sum(len(e.token_ids) for e in events)
        assert usage.cached_tokens % 64 == 0 and usage.cached_tokens <= len(request.prompt_ids)
        if request.params.temperature == 0 and not cancel_early:
            [solo] = make_engine().generate([request])
            assert [t for e in events for t in e.token_ids] == solo.token_ids
    stats = engine.stats()
    assert stats["running"] == stats["waiting"] == stats["kv_reserved_tokens"] == 0
    assert stats["cached_tokens"] > 0
