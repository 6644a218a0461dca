"""The engine over an MLA + MoE model (DeepSeek-V3 layout): latent cache, its accounting, prefix hits on latents,
batched decode of rows routed to different experts, greedy parity with transformers, the native step's fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from nanoseek.engine import Engine, Request, SamplingParams
from nanoseek.engine.latent_cache import LatentKVCache
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


def test_engine_greedy_matches_transformers_and_native_step_steps_aside(mla, engine, mla_moe_checkpoint) -> None:
    assert engine.native is None  # the C step covers Llama-family layers only: the model decodes
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
    chosen: list[torch.Tensor] = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: chosen.append(out[1].clone()) if isinstance(module, Router) else None
    )
    try:
        requests = [Request(ids, greedy(12)) for ids in prompts(mla.tokenizer, 4)]
        batched = [c.token_ids for c in engine.generate(requests)]
    finally:
        handle.remove()
    decode_steps = [indices for indices in chosen if indices.shape[0] == 4]  # 4 rows, one token each
    assert decode_steps and any(len({tuple(sorted(row.tolist())) for row in step}) > 1 for step in decode_steps)
    sequential = [engine.generate([request])[0].token_ids for request in requests]
    assert batched == sequential


def test_prefix_cache_hits_reuse_latents_and_count_cached_tokens(mla, engine) -> None:
    long_prompt = (prompts(mla.tokenizer, 1)[0] * 40)[:150]
    first = engine.generate([Request(long_prompt, greedy(8))])[0]
    second = engine.generate([Request(long_prompt, greedy(8))])[0]
    assert first.usage.cached_tokens == 0 and second.usage.cached_tokens == 128
    assert second.token_ids == first.token_ids
    block = next(iter(engine.prefix_store.blocks.values()))
    assert block.kv[0].shape == (1, 1, 64, 24)  # latents, not keys and values
    assert engine.stats()["prefix_cache_tokens"] == 128
