"""An engine frees its model, packed weights and KV cache as soon as its last user drops it after shutdown.

Counting references must be enough: the cyclic garbage collector counts objects, not bytes, so an engine
left in a reference cycle can hold gigabytes for many steps before a collection comes (RL builds an engine
on a fresh merged model every step and was OOM-killed by it). The checks run with the collector disabled.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import weakref
from collections.abc import Iterator

import pytest

from nanoseek.engine import Engine, Request, SamplingParams
from nanoseek.engine.constraint import Constraint


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def use_and_shut_down(model, tokenizer) -> bool:
    """Greedy, sampled, grammar-constrained and streamed requests through an engine on `model`, then its
    shutdown; whether the native step decoded them."""
    engine = Engine(model, tokenizer, max_batch=4)
    engine.generate(
        [
            Request([5, 6, 7], SamplingParams(max_tokens=4, temperature=0)),
            Request([8, 9], SamplingParams(max_tokens=4, temperature=1.0, n=2, seed=1)),
            Request(
                [10, 11], SamplingParams(max_tokens=8, temperature=1.0, seed=2, constraint=Constraint.json_object())
            ),
        ]
    )

    async def stream() -> None:
        async for _ in engine.stream(Request([12, 13], SamplingParams(max_tokens=3, temperature=0))):
            pass

    asyncio.run(stream())
    native = engine.native is not None and engine.counters["decode_tokens"] > 0
    engine.shutdown()
    return native


def test_a_shut_down_engine_frees_its_model_once_dropped(checkpoint, no_cyclic_gc):
    model = copy.deepcopy(checkpoint.model)
    model_ref = weakref.ref(model)
    assert use_and_shut_down(model, checkpoint.tokenizer), "the native step should have decoded"
    del model
    assert model_ref() is None, "something still holds the model after the engine was shut down and dropped"
