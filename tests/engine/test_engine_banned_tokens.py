"""Banned tokens (`SamplingParams.banned_token_ids`, what keeps `<think>`/`</think>` out of a reply with thinking
off): never emitted, even where one is the model's argmax, on every sampling path (greedy, plain temperature,
top-k, top-p, grammar-constrained, the first token from a prefix-cache hit's stored logits) and over both decode
steps, the native C step and the PyTorch model, which only compute the logits the sampler reads."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import pytest
import torch

from nanoseek.api.thinking import choose_thinking, non_thinking_bans
from nanoseek.engine import Constraint, Request, SamplingParams
from nanoseek.engine.constraint import GrammarBackend, allowed_token_ids
from nanoseek.tokenizer.output_parser import think_token_ids
from nanoseek.tokenizer.tokenizer import Tokenizer

PROMPT = [5, 17, 42, 99, 7, 64, 300]


@pytest.fixture(params=["native", "pytorch"])
def engine(request, make_engine):
    engine = make_engine(max_batch=16, native_decode=request.param == "native")
    assert (engine.native is not None) == (request.param == "native"), engine.decode_path
    return engine


def greedy(max_tokens: int = 24, **fields) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True, **fields)


def test_greedy_takes_the_best_token_that_is_not_banned(engine):
    [reference] = engine.generate([Request(PROMPT, greedy())])
    banned = list(dict.fromkeys(reference.token_ids))[:3]  # the first is the argmax of the first step
    params = greedy(banned_token_ids=banned, logprobs=True, top_logprobs=20)
    [completion] = engine.generate([Request(PROMPT, params)])
    assert not set(completion.token_ids) & set(banned)
    # each token is the best one not banned; the reported logprobs are the model's own, banned tokens included
    assert completion.logprobs[0].top_logprobs[0].token_id == banned[0]
    for entry in completion.logprobs:
        assert entry.token_id == next(t.token_id for t in entry.top_logprobs if t.token_id not in banned)


def test_a_prefix_cache_hit_bans_from_the_stored_logits_without_changing_them(engine):
    prompt = (PROMPT * 10)[:64]  # one whole block: the second request's first token comes from stored logits
    [reference] = engine.generate([Request(prompt, greedy(4))])
    [banned] = engine.generate([Request(prompt, greedy(4, banned_token_ids=[reference.token_ids[0]]))])
    assert banned.usage.cached_tokens == 64 and banned.token_ids[0] != reference.token_ids[0]
    [again] = engine.generate([Request(prompt, greedy(4))])
    assert again.token_ids == reference.token_ids


@pytest.mark.parametrize(
    "sampling", [{"temperature": 0.5}, {"temperature": 1.0, "top_k": 8}, {"temperature": 1.0, "top_p": 0.8}]
)
def test_sampled_tokens_are_never_banned_ones_the_model_draws_most(engine, sampling):
    free = SamplingParams(max_tokens=12, n=16, seed=3, ignore_eos=True, **sampling)
    [unbanned] = engine.generate([Request(PROMPT, free)])
    drawn = Counter(token for output in unbanned.outputs for token in output.token_ids)
    banned = [token for token, _ in drawn.most_common(4)]
    assert sum(drawn[token] for token in banned) >= 16  # what the ban must keep out is drawn often when free
    [completion] = engine.generate([Request(PROMPT, dataclasses.replace(free, banned_token_ids=banned))])
    assert not {token for output in completion.outputs for token in output.token_ids} & set(banned)


GRAMMAR_PROMPT = [22, 256, 169, 162, 431, 242, 28]  # the model's most likely next token is a word piece ("ve")


def test_a_grammar_row_never_takes_a_banned_token_its_grammar_allows(engine, checkpoint):
    """The grammar allows the model's most likely token (p ~ 0.67) and the next two word-like ones; banned, the
    first gives way to the best of the rest in a greedy row and never comes out of sampled rows. A grammar that
    allows nothing but banned tokens ends the reply without one."""
    tokenizer = checkpoint.tokenizer
    with torch.no_grad():
        logits = checkpoint.model(torch.tensor([GRAMMAR_PROMPT]))[0, -1].float()
    ranked = [
        int(t) for t in logits.argsort(descending=True) if re.fullmatch(r"[A-Za-z ]+", tokenizer.decode([int(t)]) or "")
    ]
    assert ranked[0] == int(logits.argmax())
    constraint = Constraint.regex("|".join(re.escape(tokenizer.decode([t])) for t in ranked[:3]))
    backend = GrammarBackend(tokenizer, logits.shape[0], [tokenizer.eos_id], 1)
    allowed = allowed_token_ids(backend.matcher(constraint, [tokenizer.eos_id]), backend.bitmask, 0, logits.shape[0])
    allowed = set(allowed.tolist())
    banned = [ranked[0]]
    expected = max(allowed - set(banned), key=lambda t: logits[t])
    params = greedy(1, constraint=constraint, banned_token_ids=banned)
    assert engine.generate([Request(GRAMMAR_PROMPT, params)])[0].token_ids == [expected]
    for sampling in ({"temperature": 1.0}, {"temperature": 1.0, "top_p": 0.9}):
        params = SamplingParams(max_tokens=1, n=16, seed=1, constraint=constraint, banned_token_ids=banned, **sampling)
        [completion] = engine.generate([Request(GRAMMAR_PROMPT, params)])
        assert {output.token_ids[0] for output in completion.outputs} <= allowed - set(banned)
    for sampling in ({"temperature": 0}, {"temperature": 1.0, "seed": 1}):
        params = SamplingParams(max_tokens=4, constraint=constraint, banned_token_ids=sorted(allowed), **sampling)
        [completion] = engine.generate([Request(GRAMMAR_PROMPT, params)])
        assert not set(completion.token_ids) & allowed and completion.finish_reason == "stop"


def test_banned_ids_are_validated(make_engine):
    with pytest.raises(ValueError, match="banned_token_ids must be non-negative"):
        SamplingParams(banned_token_ids=[-1])
    with pytest.raises(ValueError, match="the thinking budget forces"):
        SamplingParams(think_end_token=9, max_thinking_tokens=4, banned_token_ids=[9])
    with pytest.raises(ValueError, match="the thinking budget forces"):
        SamplingParams(think_end_token=9, min_thinking_tokens=2, thinking_extension_ids=[4], banned_token_ids=[4])
    engine = make_engine()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.generate([Request(PROMPT, greedy(banned_token_ids=[engine.vocab_size]))])


CHATML = (
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_think_tokens_are_banned_only_with_thinking_off_and_where_the_chat_template_writes_them(checkpoint):
    tokenizer = checkpoint.tokenizer
    think_ids = [tokenizer.token_id("<think>"), tokenizer.token_id("</think>")]
    assert think_token_ids(tokenizer) == think_ids
    assert non_thinking_bans(choose_thinking(False), think_ids) == {"banned_token_ids": think_ids}
    assert non_thinking_bans(choose_thinking(True), think_ids) == {}  # a template may leave the model to open one
    # a ChatML checkpoint: the same vocabulary, a template that never writes a thought
    chatml = Tokenizer(tokenizer.backend, {**tokenizer.config, "chat_template": CHATML})
    assert think_token_ids(chatml) == []
    assert non_thinking_bans(choose_thinking(False), think_token_ids(chatml)) == {}
