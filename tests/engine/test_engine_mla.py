"""The engine over an MLA + MoE model (DeepSeek-V3 layout): latent cache, its accounting, prefix hits on latents,
batched decode of rows routed to different experts, greedy parity with transformers through the native C step and
the same tokens from the PyTorch model, which takes over once a weight changes; short prompts prefilled
through the native step; a q8_0 model (quantized feed-forward) on the step's quantized kernels, batched as alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from nanoseek.engine import Engine, Request, SamplingParams
from nanoseek.engine.latent_cache import LatentKVCache
from nanoseek.engine.native_latent import LatentNativeDecoder
from nanoseek.model.config import ModelConfig
from nanoseek.model.deepseek import Router
from nanoseek.model.loader import load_checkpoint
from nanoseek.model.transformer import Transformer


@pytest.fixture(scope="module")
def mla(mla_moe_checkpoint: Path):
    return load_checkpoint(mla_moe_checkpoint)


@pytest.fixture
def engine(mla):
    engine = Engine(mla.model, mla.tokenizer, max_batch=4, kv_budget_tokens=1024)
    yield engine
    engine.shutdown()


def prompts(tokenizer, count: int) -> list[list[int]]:
    texts = ["def add(a, b):", "import json\n", "class Stack:", "# Sorting a list", "x = [1, 2,"]
    return [tokenizer.encode(text, add_bos=True) for text in texts[:count]]


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)


def test_engine_greedy_through_the_native_step_matches_transformers(mla, engine, mla_moe_checkpoint) -> None:
    assert isinstance(engine.native, LatentNativeDecoder)
    assert isinstance(engine.cache, LatentKVCache)
    prompt = prompts(mla.tokenizer, 1)[0]
    [completion] = engine.generate([Request(prompt, greedy(32))])
    reference = transformers.AutoModelForCausalLM.from_pretrained(mla_moe_checkpoint, dtype=torch.float32).eval()
    ids = torch.tensor([prompt])
    expected = reference.generate(
        ids, max_new_tokens=32, do_sample=False, attention_mask=torch.ones_like(ids), eos_token_id=None, pad_token_id=0
    )[0, len(prompt) :].tolist()
    assert completion.token_ids == expected
    assert len(set(expected)) > 4


def test_kv_bytes_per_token_are_latents_under_a_quarter_of_mha(mla, engine) -> None:
    config = mla.model.config
    mha_config = ModelConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
    )
    mha = Engine(Transformer(mha_config), mla.tokenizer, max_batch=4, kv_budget_tokens=1024)
    try:
        mha_bytes = mha.stats()["kv_bytes_per_token"]
    finally:
        mha.shutdown()
    latent_bytes = engine.stats()["kv_bytes_per_token"]
    assert latent_bytes == config.num_hidden_layers * (config.kv_lora_rank + config.qk_rope_head_dim) * 4
    assert latent_bytes <= 0.25 * mha_bytes
    assert not engine.cache.values and engine.cache.keys[0].shape[1:] == (1, 1024, 24)


def test_batched_decode_of_rows_routed_to_different_experts_equals_sequential(mla, engine) -> None:
    # The PyTorch model's routers show the rows' experts; the native step must give the same tokens.
    plain = Engine(mla.model, mla.tokenizer, max_batch=4, kv_budget_tokens=1024, native_decode=False)
    chosen: list[torch.Tensor] = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: chosen.append(out[1].clone()) if isinstance(module, Router) else None
    )
    requests = [Request(ids, greedy(12)) for ids in prompts(mla.tokenizer, 4)]
    try:
        batched = [c.token_ids for c in plain.generate(requests)]
    finally:
        handle.remove()
        plain.shutdown()
    decode_steps = [indices for indices in chosen if indices.shape[0] == 4]  # 4 rows, one token each
    assert decode_steps and any(len({tuple(sorted(row.tolist())) for row in step}) > 1 for step in decode_steps)
    assert [c.token_ids for c in engine.generate(requests)] == batched
    assert [engine.generate([request])[0].token_ids for request in requests] == batched


def test_prompts_of_up_to_four_steps_are_prefilled_through_the_native_step(mla, engine) -> None:
    native = engine.runner.native
    assert native.short_prompt_steps == 4 and engine.runner.max_batch == 4
    rows_per_step: list[int] = []
    step = native.step
    native.step = lambda tokens, positions, slots: rows_per_step.append(len(tokens)) or step(tokens, positions, slots)
    text = (prompts(mla.tokenizer, 1)[0] * 10)[:17]
    short, long = Request(text[:14], greedy(1)), Request(text, greedy(1))  # one token: no decode step
    assert engine.generate([short])[0].token_ids and rows_per_step == [4, 4, 4, 2]
    assert engine.generate([long])[0].token_ids and rows_per_step == [4, 4, 4, 2]  # 17 tokens: the PyTorch forward
    plain = Engine(mla.model, mla.tokenizer, max_batch=4, kv_budget_tokens=1024, native_decode=False)
    try:
        expected = [plain.generate([Request(request.prompt_ids, greedy(12))])[0].token_ids for request in (short, long)]
    finally:
        plain.shutdown()
    assert [engine.generate([Request(r.prompt_ids, greedy(12))])[0].token_ids for r in (short, long)] == expected


def test_a_weight_change_sends_decoding_back_to_the_model(mla, engine) -> None:
    request = Request(prompts(mla.tokenizer, 1)[0], greedy(12))
    before = engine.generate([request])[0].token_ids
    router = mla.model.layers[1].mlp.gate
    with torch.no_grad():
        router.weight.mul_(-1.0)  # every token of layer 1 now routes elsewhere (RL training the served model)
    try:
        assert engine.runner.native_rows() == 0
        after = engine.generate([request])[0].token_ids
        plain = Engine(mla.model, mla.tokenizer, max_batch=4, kv_budget_tokens=1024, native_decode=False)
        try:
            expected = plain.generate([request])[0].token_ids
        finally:
            plain.shutdown()
    finally:
        with torch.no_grad():
            router.weight.mul_(-1.0)
    assert after == expected != before


def test_prefix_cache_hits_reuse_latents_and_count_cached_tokens(mla, engine) -> None:
    long_prompt = (prompts(mla.tokenizer, 1)[0] * 40)[:150]
    first = engine.generate([Request(long_prompt, greedy(8))])[0]
    second = engine.generate([Request(long_prompt, greedy(8))])[0]
    assert first.usage.cached_tokens == 0 and second.usage.cached_tokens == 128
    assert second.token_ids == first.token_ids
    block = next(iter(engine.prefix_store.blocks.values()))
    assert block.kv[0].shape == (1, 1, 64, 24)  # latents, not keys and values
    assert engine.stats()["prefix_cache_tokens"] == 128


def test_a_q8_0_model_decodes_on_the_quantized_step_and_rows_batched_as_alone(mla_moe_checkpoint) -> None:
    # `--dtype q8_0`: the feed-forward weights (dense MLP, shared and routed experts) quantized, decoded by the latent
    # step's quantized kernels, prompts prefilled through it too; rows routed apart give the same tokens batched.
    checkpoint = load_checkpoint(mla_moe_checkpoint, dtype="q8_0")
    engine = Engine(checkpoint.model, checkpoint.tokenizer, max_batch=4, kv_budget_tokens=1024)
    try:
        assert isinstance(engine.native, LatentNativeDecoder) and "q8_0" in engine.native.kernel
        requests = [Request(ids, greedy(12)) for ids in prompts(checkpoint.tokenizer, 4)]
        batched = [c.token_ids for c in engine.generate(requests)]
        assert [engine.generate([request])[0].token_ids for request in requests] == batched
        assert len({tuple(tokens) for tokens in batched}) == 4
    finally:
        engine.shutdown()
