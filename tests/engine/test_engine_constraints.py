"""Grammar-constrained decoding: random models produce schema-valid JSON (or run out of tokens), per sequence."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoseek.engine import Constraint, Request, SamplingParams


def prompt_of(length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(3, 500) for _ in range(length)]


scalar_schemas = st.one_of(
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.integers(-50, 50).flatmap(
        lambda low: st.integers(low, low + 100).map(lambda high: {"type": "integer", "minimum": low, "maximum": high})
    ),
    st.lists(st.text("abcxyz", min_size=1, max_size=4), min_size=1, max_size=4, unique=True).map(
        lambda values: {"enum": values}
    ),
    st.just({"type": "string", "pattern": "^[a-c]{1,3}$"}),
)
property_names = st.text("abcdefgh", min_size=1, max_size=5)
schemas = st.recursive(
    scalar_schemas,
    lambda inner: st.one_of(
        st.dictionaries(property_names, inner, min_size=1, max_size=3).map(
            lambda props: {
                "type": "object",
                "properties": props,
                "required": sorted(props),
                "additionalProperties": False,
            }
        ),
        inner.map(lambda items: {"type": "array", "items": items}),
    ),
    max_leaves=4,
)


@pytest.fixture(scope="module")
def shared_engine(checkpoint):
    from nanoseek.engine import Engine

    engine = Engine(checkpoint.model, checkpoint.tokenizer, max_batch=16)
    yield engine
    engine.shutdown()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(schemas, min_size=8, max_size=8), st.integers(0, 2**31))
def test_schema_constrained_output_always_validates(shared_engine, schema_list, seed):
    max_tokens = 40
    requests = [
        Request(
            prompt_of(10, seed + i),
            SamplingParams(
                max_tokens=max_tokens, temperature=1.0, seed=seed + i, constraint=Constraint.json_schema(schema)
            ),
        )
        for i, schema in enumerate(schema_list)
    ]
    # Free sequences share the batch with the constrained ones.
    requests.append(Request(prompt_of(10, seed), SamplingParams(max_tokens=10, temperature=1.0, seed=seed)))
    completions = shared_engine.generate(requests)
    for schema, completion in zip(schema_list, completions):
        if completion.finish_reason == "length":  # the only way out without a complete document
            assert len(completion.token_ids) == max_tokens
            continue
        assert completion.finish_reason == "stop"
        jsonschema.validate(json.loads(completion.text), schema)


def test_json_object_mode_and_a_free_neighbour(shared_engine):
    prompt = prompt_of(12, 1)
    requests = []
    for seed in range(8):  # hot sampling: a random model then closes its objects soon enough
        requests.append(
            Request(
                prompt, SamplingParams(max_tokens=60, temperature=2.0, seed=seed, constraint=Constraint.json_object())
            )
        )
        requests.append(Request(prompt, SamplingParams(max_tokens=20, temperature=2.0, seed=seed, ignore_eos=True)))
    completions = shared_engine.generate(requests)
    constrained, free = completions[0::2], completions[1::2]
    for completion in constrained:
        assert completion.text.startswith("{")
        if completion.finish_reason == "stop":
            assert isinstance(json.loads(completion.text), dict)
        else:
            assert completion.finish_reason == "length" and len(completion.token_ids) == 60
    assert any(c.finish_reason == "stop" for c in constrained), "no json_object sample finished within 60 tokens"
    assert all(len(c.token_ids) == 20 for c in free)


def test_ebnf_grammar_applies_only_after_the_trigger_token(shared_engine):
    prompt = prompt_of(12, 2)
    [free] = shared_engine.generate([Request(prompt, SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))])
    trigger = free.token_ids[0]  # greedy emits it first, unconstrained
    [completion] = shared_engine.generate(
        [
            Request(
                prompt,
                SamplingParams(
                    max_tokens=20,
                    temperature=0,
                    constraint=Constraint.ebnf('root ::= "yes" | "no"'),
                    constraint_after_token=trigger,
                ),
            )
        ]
    )
    assert completion.token_ids[0] == trigger
    tail = shared_engine.tokenizer.decode(completion.token_ids[1:-1])
    assert tail in ("yes", "no") and completion.finish_reason == "stop"


def test_structural_tag_constrains_the_tagged_segment(shared_engine):
    tag = {
        "type": "structural_tag",
        "format": {
            "type": "tag",
            "begin": "<call>",
            "end": "</call>",
            "content": {
                "type": "json_schema",
                "json_schema": {
                    "type": "object",
                    "properties": {"ok": {"type": "boolean"}},
                    "required": ["ok"],
                    "additionalProperties": False,
                },
            },
        },
    }
    [completion] = shared_engine.generate(
        [
            Request(
                prompt_of(8, 3),
                SamplingParams(max_tokens=40, temperature=0.5, seed=1, constraint=Constraint.structural_tag(tag)),
            )
        ]
    )
    assert completion.text.startswith("<call>{")
    if completion.finish_reason == "stop":
        body = completion.text.removeprefix("<call>").removesuffix("</call>")
        assert json.loads(body)["ok"] in (True, False)


def test_a_lazy_grammar_leaves_the_text_before_its_trigger_as_sampled(shared_engine):
    """Before the trigger every token is allowed: a top-p draw (which always asks the grammar) stands as drawn, so
    a seeded request writes what it writes unconstrained, without the cost of listing every allowed token."""
    never = "<never-written>"  # a trigger the random model does not write in 24 tokens
    tag = {
        "type": "structural_tag",
        "format": {
            "type": "triggered_tags",
            "triggers": [never],
            "tags": [{"type": "tag", "begin": never, "content": {"type": "const_string", "value": "x"}, "end": "."}],
        },
    }
    params = dict(max_tokens=24, temperature=0.9, top_p=0.8, seed=7, ignore_eos=True)
    free, lazy = shared_engine.generate(
        [
            Request(prompt_of(8, 5), SamplingParams(**params)),
            Request(prompt_of(8, 5), SamplingParams(**params, constraint=Constraint.structural_tag(tag))),
        ]
    )
    assert never not in free.text and lazy.text == free.text and len(lazy.token_ids) == 24


@pytest.mark.parametrize(
    "factory, argument, message",
    [
        (Constraint.json_schema, {"type": "object", "properties": {"a": {"type": "nonsense"}}}, "schema"),
        (Constraint.ebnf, "root ::= ", "EBNF"),
        (Constraint.structural_tag, {"type": "structural_tag", "format": {"type": "bogus"}}, "structural tag"),
    ],
)
def test_invalid_constraints_are_rejected_with_a_named_problem(factory, argument, message):
    with pytest.raises(ValueError, match=message):
        factory(argument)


@pytest.mark.parametrize("top_k", [0, 2])
def test_constrained_sampling_follows_the_masked_distribution(make_engine, checkpoint, top_k):
    """Plain rows draw first and consult the grammar only when it rejects the draw, top-k rows draw among the
    allowed tokens; either way the first token must come from the model's distribution restricted to what the
    grammar allows (p(t) / p(allowed)), for top-k cut to the k most likely allowed tokens. The grammar allows
    the model's most likely token and two less likely ones but not the second most likely, so a top-k row that
    drew from the whole vocabulary first would favour the first token."""
    import re

    import torch

    from nanoseek.engine.constraint import GrammarBackend, allowed_token_ids

    tokenizer = checkpoint.tokenizer
    prompt = prompt_of(12, 11)
    with torch.no_grad():
        probs = torch.softmax(checkpoint.model(torch.tensor([prompt]))[0, -1].float(), -1)
    ranked = [
        int(t) for t in probs.argsort(descending=True) if re.fullmatch(r"[A-Za-z ]+", tokenizer.decode([int(t)]) or "")
    ]
    texts = [tokenizer.decode([t]) for t in (ranked[0], ranked[2], ranked[3])]
    constraint = Constraint.regex("|".join(re.escape(text) for text in texts))
    backend = GrammarBackend(tokenizer, probs.shape[0], [tokenizer.eos_id], 1)
    allowed = torch.from_numpy(
        allowed_token_ids(backend.matcher(constraint, [tokenizer.eos_id]), backend.bitmask, 0, probs.shape[0])
    )
    assert ranked[0] in allowed and ranked[1] not in allowed
    expected = torch.zeros_like(probs)
    expected[allowed] = probs[allowed]
    if top_k:
        expected[expected < expected.topk(top_k).values[-1]] = 0.0
    expected /= expected.sum()
    engine = make_engine(max_batch=16)
    draws = 16 * 125
    completions = engine.generate(
        [
            Request(
                prompt,
                SamplingParams(max_tokens=1, temperature=1.0, top_k=top_k, n=16, seed=seed, constraint=constraint),
            )
            for seed in range(draws // 16)
        ]
    )
    counts = torch.zeros_like(probs)
    for output in (output for completion in completions for output in completion.outputs):
        counts[output.token_ids[0]] += 1
    assert counts[expected == 0].sum() == 0  # never a token the grammar (or top-k) rules out
    tolerance = 4 * (expected * (1 - expected) / draws).sqrt() + 1e-3
    assert ((counts / draws - expected).abs() <= tolerance).all(), (counts[allowed] / draws, expected[allowed])
    # Greedy: the best allowed token.
    [greedy] = engine.generate([Request(prompt, SamplingParams(max_tokens=1, temperature=0.0, constraint=constraint))])
    assert greedy.token_ids[0] == int(allowed[probs[allowed].argmax()])
