"""Thinking budgets (engine/thinking.py): a cap forces the end of a thought, a minimum turns an early end into
the extension ("Wait") and the thought goes on. Greedy decoding of the random tiny model gives a fixed
reference sequence; any token of it can play the part of `</think>`."""

from __future__ import annotations

import pytest

from nanoseek.engine import Request, SamplingParams
from nanoseek.engine.thinking import ThoughtBudget

PROMPT = [5, 17, 42, 99, 7, 64, 300]


def greedy(engine, max_tokens: int = 24, **budget) -> list[int]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True, **budget)
    [completion] = engine.generate([Request(PROMPT, params)])
    return completion.token_ids


def test_cap_forces_the_end_token_after_that_many_thought_tokens(make_engine):
    engine = make_engine(max_batch=4)
    reference = greedy(engine)
    end = next(t for t in range(3, 512) if t not in reference)  # a token the model would never pick here
    capped = greedy(engine, think_end_token=end, max_thinking_tokens=5)
    assert capped[:5] == reference[:5]
    assert capped[5] == end  # forced, then the model answers on its own
    assert greedy(engine, think_end_token=end, max_thinking_tokens=0)[0] == end
    # n samples each keep their own count
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=3, n=3, think_end_token=end, max_thinking_tokens=4)
    [completion] = engine.generate([Request(PROMPT, params)])
    assert [output.token_ids[4] for output in completion.outputs] == [end] * 3


def test_minimum_replaces_an_early_end_with_the_extension_and_the_thought_goes_on(make_engine):
    engine = make_engine(max_batch=4)
    reference = greedy(engine)
    end = reference[2]  # the model ends its "thought" after two tokens
    assert end not in reference[:2]
    extension = [t for t in range(3, 512) if t not in reference][:2]
    extended = greedy(
        engine, think_end_token=end, min_thinking_tokens=6, max_thinking_tokens=9, thinking_extension_ids=extension
    )
    assert extended[:4] == reference[:2] + extension
    thought = extended[: extended.index(end)]
    assert 6 <= len(thought) <= 9  # extended past the early end, and still capped
    # without bounds the engine leaves the model alone
    assert greedy(engine, think_end_token=end) == reference


def test_budget_parameters_are_validated():
    with pytest.raises(ValueError, match="think_end_token"):
        SamplingParams(max_thinking_tokens=8)
    with pytest.raises(ValueError, match="exceeds"):
        SamplingParams(think_end_token=9, max_thinking_tokens=4, min_thinking_tokens=8, thinking_extension_ids=[3])
    with pytest.raises(ValueError, match="thinking_extension_ids"):
        SamplingParams(think_end_token=9, min_thinking_tokens=8)
    with pytest.raises(ValueError, match="thinking_extension_ids"):
        SamplingParams(think_end_token=9, min_thinking_tokens=8, thinking_extension_ids=[4, 9])


def test_forced_extension_stops_at_the_cap():
    budget = ThoughtBudget(
        SamplingParams(
            think_end_token=9, max_thinking_tokens=3, min_thinking_tokens=3, thinking_extension_ids=[4, 5, 6]
        )
    )
    assert [budget.steer(t) for t in (1, 9, 9, 9, 7)] == [1, 4, 5, 9, 7]  # cap wins over the extension's tail
