"""Continuous batching is invisible in the output: batched greedy == one-at-a-time greedy, token for token."""

from __future__ import annotations

import asyncio
import random

import torch

from nanoseek.engine import Request, SamplingParams


def reference_greedy(model, prompt: list[int], max_tokens: int) -> list[int]:
    """Greedy decoding by recomputing the whole sequence every step: no cache, no batch, obviously right."""
    sequence = list(prompt)
    with torch.no_grad():
        for _ in range(max_tokens):
            sequence.append(int(model(torch.tensor([sequence]))[0, -1].argmax()))
    return sequence[len(prompt) :]


def random_prompts(count: int, seed: int, vocab: int = 500) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(rng.randrange(1, 90))] for _ in range(count)]


def test_batched_greedy_equals_one_at_a_time_with_joins_and_leaves(make_engine, checkpoint):
    # 3 slots for 8 requests of different prompt and output lengths, prompts prefilled in chunks of 16:
    # requests join while others are mid-prefill or mid-decode and leave at different steps.
    engine = make_engine(max_batch=3, prefill_chunk=16)
    prompts = random_prompts(8, seed=0)
    budgets = [5, 17, 9, 30, 2, 12, 25, 7]
    requests = [
        Request(p, SamplingParams(max_tokens=m, temperature=0, ignore_eos=True)) for p, m in zip(prompts, budgets)
    ]
    completions = engine.generate(requests)
    for prompt, budget, completion in zip(prompts, budgets, completions):
        assert completion.token_ids == reference_greedy(checkpoint.model, prompt, budget)
        assert completion.finish_reason == "length"
        assert completion.usage.prompt_tokens == len(prompt) and completion.usage.completion_tokens == budget
    assert engine.stats()["running"] == 0 and engine.stats()["kv_reserved_tokens"] == 0


def test_streams_joining_mid_flight_match_solo_runs(make_engine):
    engine = make_engine(max_batch=4, prefill_chunk=8)
    prompts = random_prompts(5, seed=1)
    solo = [
        engine.generate([Request(p, SamplingParams(max_tokens=20, temperature=0, ignore_eos=True))])[0] for p in prompts
    ]

    async def run_staggered() -> list[list[int]]:
        async def one(prompt: list[int], delay: float) -> list[int]:
            await asyncio.sleep(delay)
            tokens: list[int] = []
            async for event in engine.stream(
                Request(prompt, SamplingParams(max_tokens=20, temperature=0, ignore_eos=True))
            ):
                tokens += event.token_ids
            return tokens

        return await asyncio.gather(*(one(p, 0.01 * i) for i, p in enumerate(prompts)))

    streamed = asyncio.run(run_staggered())
    assert streamed == [c.token_ids for c in solo]
    assert engine.counters["decode_tokens"] > 0


def test_stream_text_concatenates_to_the_decoded_tokens(make_engine, checkpoint):
    engine = make_engine()
    prompt = checkpoint.tokenizer.encode("你好 def main():")

    async def collect():
        return [event async for event in engine.stream(Request(prompt, SamplingParams(max_tokens=25, seed=3)))]

    events = asyncio.run(collect())
    tokens = [t for e in events for t in e.token_ids]
    assert "".join(e.text for e in events) == checkpoint.tokenizer.decode(
        [t for t in tokens if t not in engine.eos_token_ids]
    )
    assert events[-1].finish_reason in ("stop", "length") and events[-1].usage is not None
    assert all(e.usage is None for e in events[:-1])


def test_equal_length_prompts_prefilled_together_match_reference(make_engine, checkpoint):
    # Equal-length prompts submitted together share one prefill forward (several per step within the
    # chunk budget); an n=2 request makes their first slots non-contiguous; a 40-token prompt with a
    # 32-token chunk is prefilled in two parts and is not batched with the others mid-way.
    engine = make_engine(max_batch=16, prefill_chunk=32)
    rng = random.Random(7)
    prompts = [[rng.randrange(3, 500) for _ in range(8)] for _ in range(6)] + [
        [rng.randrange(3, 500) for _ in range(40)]
    ]
    params = [
        SamplingParams(max_tokens=6, temperature=0, ignore_eos=True, n=2 if i == 1 else 1) for i in range(len(prompts))
    ]
    completions = engine.generate([Request(p, s) for p, s in zip(prompts, params)])
    for prompt, completion in zip(prompts, completions):
        expected = reference_greedy(checkpoint.model, prompt, 6)
        assert [output.token_ids for output in completion.outputs] == [expected] * len(completion.outputs)
    assert engine.stats()["prefill_tokens"] == 6 * 8 + 40
    assert engine.stats()["running"] == 0 and engine.stats()["kv_reserved_tokens"] == 0
