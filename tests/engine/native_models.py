"""What the native decode tests (test_native_decode.py, test_native_quantized.py) decode: random models with
non-trivial biases and norms, and three sequences prefilled at different positions in scattered cache slots."""

from __future__ import annotations

import torch

from nanoseek.engine import SamplingParams
from nanoseek.engine.kv_cache import SlotKVCache
from nanoseek.model.config import ModelConfig
from nanoseek.model.transformer import Transformer

SLOTS, LENGTHS = [4, 1, 3], [7, 12, 1]  # sequences at different positions in scattered slots


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)


def random_model(**shape) -> Transformer:
    """A model of `shape` (ModelConfig fields), vocabulary 300, every parameter perturbed (seeded)."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=300, max_position_embeddings=64, rms_norm_eps=1e-5, **shape)
    model = Transformer(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)  # non-trivial biases and norms too
    return model


def new_cache(config: ModelConfig, dtype: torch.dtype = torch.float32) -> SlotKVCache:
    return SlotKVCache(config.num_hidden_layers, config.num_key_value_heads, config.head_dim, 6, 64, dtype)


def prefill(model: Transformer, cache: SlotKVCache) -> None:
    """Random prompts of LENGTHS tokens into SLOTS (the same prompts for every call)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for slot, length in zip(SLOTS, LENGTHS):
            cache.begin_prefill(slot, 0, length)
            model(
                torch.randint(0, model.config.vocab_size, (1, length), generator=generator),
                torch.arange(length)[None],
                cache=cache,
            )
