"""Engine test fixtures: a random tiny model whose greedy output varies from token to token.

The shared `tiny_checkpoint` is initialised with std 0.02, whose greedy continuation repeats one token;
batching and cache bugs hide behind such output, so the engine tests use std 0.3 (same shape, same
tokenizer recipe), where consecutive tokens differ and any wrong key or position changes the text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nanoseek.engine import Engine
from nanoseek.model.loader import load_checkpoint


@pytest.fixture(scope="session")
def engine_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nanoseek.model.random_init import make_random_checkpoint

    return make_random_checkpoint(
        tmp_path_factory.mktemp("engine_checkpoint"), shape="tiny", vocab_size=512, seed=1, init_std=0.3
    )


@pytest.fixture(scope="session")
def checkpoint(engine_checkpoint: Path):
    return load_checkpoint(engine_checkpoint)


@pytest.fixture
def make_engine(checkpoint) -> Iterator:
    """Build engines over the shared model; every engine is shut down after the test."""
    engines: list[Engine] = []

    def make(**kwargs) -> Engine:
        engine = Engine(checkpoint.model, checkpoint.tokenizer, **kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.shutdown()
