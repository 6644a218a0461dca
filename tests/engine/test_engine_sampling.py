"""Per-request sampling inside a batch: seeds, temperature, top-k/top-p, penalties, n samples, logprobs."""

from __future__ import annotations

import math
import random

import pytest
import torch

from nanoseek.engine import Request, SamplingParams


def prompt_of(length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(3, 500) for _ in range(length)]


def test_seeded_sampling_is_reproducible_alone_and_batched(make_engine):
    engine = make_engine(max_batch=8)
    prompt = prompt_of(30, 0)
    params = SamplingParams(max_tokens=24, temperature=1.0, top_k=50, seed=1234, ignore_eos=True)
    [alone] = engine.generate([Request(prompt, params)])
    others = [
        Request(prompt_of(20 + i, i + 1), SamplingParams(max_tokens=30, temperature=0.7, ignore_eos=True))
        for i in range(5)
    ]
    batched = engine.generate(others[:2] + [Request(prompt, params)] + others[2:])[2]
    assert batched.token_ids == alone.token_ids
    [other_seed] = engine.generate(
        [Request(prompt, SamplingParams(max_tokens=24, temperature=1.0, top_k=50, seed=4321, ignore_eos=True))]
    )
    assert other_seed.token_ids != alone.token_ids


def test_plain_temperature_sampling_is_reproducible_batched_with_other_kinds_of_rows(make_engine):
    # Rows without top-k/top-p share one batched draw: a seeded one must not depend on its neighbours.
    engine = make_engine(max_batch=8)
    prompt = prompt_of(30, 3)
    params = SamplingParams(max_tokens=24, temperature=0.8, seed=99, ignore_eos=True)
    [alone] = engine.generate([Request(prompt, params)])
    neighbours = [
        SamplingParams(max_tokens=20, temperature=1.0, ignore_eos=True),
        SamplingParams(max_tokens=28, temperature=0.0, ignore_eos=True),
        SamplingParams(max_tokens=16, temperature=1.2, top_p=0.9, ignore_eos=True),
    ]
    requests = [Request(prompt_of(15 + i, 40 + i), p) for i, p in enumerate(neighbours)]
    assert engine.generate(requests[:2] + [Request(prompt, params)] + requests[2:])[2].token_ids == alone.token_ids


def test_sampled_tokens_follow_the_tempered_softmax_and_never_a_masked_token():
    from nanoseek.engine.sampling import RowSampler, sample_next

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, float("-inf"), 0.5]])
    for params in (SamplingParams(temperature=0.5), SamplingParams(temperature=1.0, top_p=0.999)):
        expected = torch.softmax(logits[0] / params.temperature, -1)
        counts = torch.zeros(6)
        samplers = [RowSampler(SamplingParams(**{**params.__dict__, "seed": 7}), i, 6) for i in range(4000)]
        for start in range(0, 4000, 500):  # rows of one batch, as the engine draws them
            chunk = samplers[start : start + 500]
            for token in sample_next(logits.repeat(len(chunk), 1), chunk):
                counts[token] += 1
        assert counts[4] == 0
        # Each frequency within 4 standard errors of its probability.
        tolerance = 4 * (expected * (1 - expected) / 4000).sqrt() + 1e-3
        assert ((counts / 4000 - expected).abs() <= tolerance).all(), (counts / 4000, expected)


def test_inverse_transform_never_picks_a_zero_weight_token_even_at_the_ends_of_the_unit_interval():
    import numpy as np

    from nanoseek.engine.sampling import pick_by_uniform

    rng = np.random.default_rng(0)
    for vocab in (5, 64, 100, 8192):
        weights = rng.random((40, vocab)).astype(np.float32) * (rng.random((40, vocab)) < 0.3)
        weights[:, -1] = 0.0  # the last token (and a padded block) masked
        weights[0] = 0.0
        weights[0, vocab // 2] = 1e-30  # one tiny survivor
        for u in (0.0, 0.5, 1.0 - 1e-12, float(np.nextafter(1.0, 0.0))):
            for row, token in enumerate(pick_by_uniform(weights, [u] * len(weights))):
                assert weights[row, token] > 0 or not weights[row].any(), (vocab, u, row, token)
        first_positive = [int(np.flatnonzero(w)[0]) for w in weights if w.any()]
        assert (
            pick_by_uniform(weights[[r for r in range(40) if weights[r].any()]], [0.0] * len(first_positive))
            == first_positive
        )


def test_top_k_one_and_tiny_top_p_are_greedy(make_engine):
    engine = make_engine()
    prompt = prompt_of(25, 5)
    greedy, top_k, top_p = engine.generate(
        [
            Request(prompt, SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)),
            Request(prompt, SamplingParams(max_tokens=16, temperature=1.5, top_k=1, ignore_eos=True)),
            Request(prompt, SamplingParams(max_tokens=16, temperature=1.5, top_p=1e-6, ignore_eos=True)),
        ]
    )
    assert greedy.token_ids == top_k.token_ids == top_p.token_ids


def test_penalties_follow_the_openai_formula(make_engine, checkpoint):
    engine = make_engine()
    prompt = prompt_of(12, 6)
    frequency, presence = 1.5, 0.7
    [penalised] = engine.generate(
        [
            Request(
                prompt,
                SamplingParams(
                    max_tokens=20,
                    temperature=0,
                    frequency_penalty=frequency,
                    presence_penalty=presence,
                    ignore_eos=True,
                ),
            )
        ]
    )
    # Reference: recompute everything, subtract the penalties over the generated tokens, take the argmax.
    sequence, counts = list(prompt), torch.zeros(checkpoint.model.config.vocab_size)
    with torch.no_grad():
        for _ in range(20):
            logits = checkpoint.model(torch.tensor([sequence]))[0, -1]
            token = int((logits - frequency * counts - presence * (counts > 0).float()).argmax())
            counts[token] += 1
            sequence.append(token)
    assert penalised.token_ids == sequence[len(prompt) :]


def test_n_samples_share_one_prefill(make_engine):
    engine = make_engine()
    prompt = prompt_of(70, 7)
    [completion] = engine.generate(
        [Request(prompt, SamplingParams(n=4, max_tokens=10, temperature=1.0, seed=5, ignore_eos=True))]
    )
    assert engine.counters["prefill_tokens"] == len(prompt)  # once, not four times
    assert [o.index for o in completion.outputs] == [0, 1, 2, 3]
    assert len({tuple(o.token_ids) for o in completion.outputs}) > 1  # independent streams
    assert completion.usage.completion_tokens == 40 and completion.usage.prompt_tokens == 70
    # Sample i of a seeded n-request is reproducible.
    [again] = engine.generate(
        [Request(prompt, SamplingParams(n=4, max_tokens=10, temperature=1.0, seed=5, ignore_eos=True))]
    )
    assert [o.token_ids for o in again.outputs] == [o.token_ids for o in completion.outputs]


def test_logprobs_are_the_model_distribution(make_engine, checkpoint):
    engine = make_engine()
    prompt = prompt_of(15, 8)
    [completion] = engine.generate(
        [Request(prompt, SamplingParams(max_tokens=3, temperature=0, logprobs=True, top_logprobs=20, ignore_eos=True))]
    )
    with torch.no_grad():
        expected = torch.log_softmax(checkpoint.model(torch.tensor([prompt]))[0, -1], dim=-1)
    first = completion.logprobs[0]
    assert first.token_id == completion.token_ids[0]
    assert first.logprob == pytest.approx(float(expected[first.token_id]), abs=1e-4)
    assert len(first.top_logprobs) == 20
    values = [t.logprob for t in first.top_logprobs]
    assert values == sorted(values, reverse=True)
    assert first.top_logprobs[0].token_id == first.token_id  # greedy picked the top one
    assert values[-1] == pytest.approx(float(expected.topk(20).values[-1]), abs=1e-4)
    assert bytes(first.bytes).decode("utf-8", "replace") == first.token or first.token.endswith("\ufffd")
    assert all(math.isfinite(t.logprob) for t in completion.logprobs)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(temperature=-1), "temperature"),
        (dict(top_p=0), "top_p"),
        (dict(top_logprobs=21, logprobs=True), "top_logprobs"),
        (dict(max_tokens=0), "max_tokens"),
        (dict(frequency_penalty=3), "frequency_penalty"),
        (dict(stop=[""]), "stop"),
        (dict(top_logprobs=2), "logprobs"),
        (dict(n=0), "n must"),
    ],
)
def test_bad_parameters_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**bad)


def test_bad_requests_are_rejected_before_queueing(make_engine):
    engine = make_engine(kv_budget_tokens=256)
    with pytest.raises(ValueError, match="empty"):
        engine.generate([Request([], SamplingParams())])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.generate([Request([1, 10**6], SamplingParams())])
    with pytest.raises(ValueError, match="prompt has 300 tokens"):
        engine.generate([Request([5] * 300, SamplingParams())])
    with pytest.raises(ValueError, match="kv_budget_tokens"):
        engine.generate([Request([5] * 10, SamplingParams(max_tokens=100, n=3))])
    assert engine.stats()["waiting"] == 0 and engine.stats()["running"] == 0


def test_bfloat16_checkpoint_samples_and_reports_logprobs(engine_checkpoint):
    from nanoseek.engine import Constraint, Engine

    engine = Engine.from_checkpoint(engine_checkpoint, dtype="bfloat16", max_batch=4)
    try:
        assert engine.cache.keys[0].dtype == torch.bfloat16
        prompt = prompt_of(30, 9)
        completions = engine.generate(
            [
                Request(
                    prompt,
                    SamplingParams(
                        max_tokens=8, temperature=0.9, top_p=0.9, seed=1, logprobs=True, top_logprobs=2, ignore_eos=True
                    ),
                ),
                Request(prompt, SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)),
                Request(
                    prompt, SamplingParams(max_tokens=30, temperature=0.9, seed=2, constraint=Constraint.json_object())
                ),
            ]
        )
        assert [len(c.token_ids) for c in completions[:2]] == [8, 8]
        assert all(math.isfinite(entry.logprob) for entry in completions[0].logprobs)
        assert completions[2].text.startswith("{")
    finally:
        engine.shutdown()
