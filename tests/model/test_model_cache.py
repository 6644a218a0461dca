"""Cached incremental decoding gives the same logits as one full forward pass, in every chunking."""

from __future__ import annotations

import pytest
import torch
from random_models import random_model

from nanoseek.model.cache import SimpleKVCache


@pytest.mark.parametrize("chunks", [[1] * 24, [24], [7, 1, 1, 9, 6], [5, 19], [1, 23]])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_incremental_decoding_matches_full_forward(chunks: list[int], kv_heads: int) -> None:
    model = random_model(num_key_value_heads=kv_heads)
    ids = torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(1))
    cache = SimpleKVCache(model.config, batch_size=2, capacity=4)  # small: forces the cache to grow
    with torch.no_grad():
        full = model(ids)
        pieces, start = [], 0
        for size in chunks:
            pieces.append(model(ids[:, start : start + size], cache=cache))
            start += size
            assert cache.seq_len == start
    incremental = torch.cat(pieces, dim=1)
    assert full.abs().max() > 1.0
    assert (incremental - full).abs().max().item() <= 1e-4


def test_last_only_and_explicit_positions() -> None:
    model = random_model(rope_scaling={"rope_type": "linear", "factor": 2.0})
    ids = torch.randint(0, 200, (3, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
        last = model(ids, last_only=True)
        positions = torch.arange(10).expand(3, 10)
        explicit = model(ids, positions=positions)
        # Shifting every position by the same amount leaves relative attention (and logits) almost unchanged,
        # while a wrong position for one token changes them: positions are really used.
        shifted = model(ids, positions=positions + 100)
        scrambled = model(ids, positions=positions.flip(-1))
    assert last.shape == (3, 1, 200)
    assert torch.allclose(last[:, 0], full[:, -1], atol=1e-5)
    assert torch.allclose(explicit, full, atol=1e-6)
    assert torch.allclose(shifted, full, atol=1e-3)
    assert not torch.allclose(scrambled, full, atol=1e-2)


def test_bfloat16_model_runs_with_cache_close_to_fp32() -> None:
    model = random_model()
    ids = torch.randint(0, 200, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = model(ids)
        half = model.to(torch.bfloat16)
        cache = SimpleKVCache(half.config, dtype=torch.bfloat16)
        logits = torch.cat([half(ids[:, :8], cache=cache), half(ids[:, 8:], cache=cache)], dim=1)
    assert logits.dtype == torch.bfloat16
    assert (logits.float() - reference).abs().max().item() < 0.25 * reference.abs().max().item()
    assert (logits.float().argmax(-1) == reference.argmax(-1)).float().mean() > 0.8


def test_bad_input_is_named() -> None:
    model = random_model()
    with pytest.raises(ValueError, match="input_ids must be"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="positions shape"):
        model(torch.zeros(1, 4, dtype=torch.long), positions=torch.arange(3)[None])
