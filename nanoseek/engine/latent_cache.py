"""The engine's cache for multi-head latent attention (DeepSeek-V2/V3): compressed latents instead of keys and values.

An MLA layer needs, per token, only its normalised kv latent c (kv_lora_rank) and its rotary key part k_pe
(qk_rope_head_dim): the heads' keys and values are linear in c, and the model absorbs those up-projections into
the query and the output (nanoseek/model/deepseek.py). So each layer keeps one tensor
`[num_slots, 1, slot_capacity, kv_lora_rank + qk_rope_head_dim]` and attention is multi-query attention over it,
the values being the latents' first kv_lora_rank columns (a view, not a copy). Per token that is
`num_layers * (kv_lora_rank + qk_rope_head_dim)` values, against `num_layers * 2 * heads * head_dim` for MHA:
`bytes_per_token` (and so `Engine.stats()["kv_bytes_per_token"]`) counts exactly what is stored.

Everything else is SlotKVCache's: slots, lock-step and ragged decode batches (one "head" of width L + R), masks,
prefill chunks, packing copies, and the 64-token prefix blocks of PrefixStore, which here hold latents
(`[1, 1, 64, L + R]` per layer), so a prefix hit copies latents and the usage counters count the same tokens.

    cache = kv_cache_for(model.config, num_slots=32, slot_capacity=4096, dtype=torch.float32)
"""

from __future__ import annotations

import torch

from nanoseek.engine.kv_cache import BLOCK_TOKENS, PrefixBlock, SlotKVCache
from nanoseek.model.config import ModelConfig
from nanoseek.model.deepseek import latent_attention


def kv_cache_for(
    config: ModelConfig,
    num_slots: int,
    slot_capacity: int,
    dtype: torch.dtype,
    attention_dtype: torch.dtype | None = None,
) -> SlotKVCache:
    """The engine's cache for a model of `config`: latents for MLA (always in the model's dtype), keys and values
    otherwise, stored as `dtype` for a model that attends in `attention_dtype` (default: the same)."""
    if config.is_mla:
        return LatentKVCache(config.num_hidden_layers, config.latent_dim, num_slots, slot_capacity, dtype)
    return SlotKVCache(
        config.num_hidden_layers,
        config.num_key_value_heads,
        config.head_dim,
        num_slots,
        slot_capacity,
        dtype,
        attention_dtype,
    )


class LatentKVCache(SlotKVCache):
    def __init__(
        self, num_layers: int, latent_dim: int, num_slots: int, slot_capacity: int, dtype: torch.dtype
    ) -> None:
        super().__init__(num_layers, 1, latent_dim, num_slots, slot_capacity, dtype)
        self.values = []  # the parent's value maps were never written, so they never took memory
        self.bytes_per_token = num_layers * latent_dim * torch.finfo(dtype).bits // 8

    def attend(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise TypeError("a latent cache serves multi-head latent attention only (attend_latent)")

    def attend_latent(
        self, layer_idx: int, q: torch.Tensor, latent: torch.Tensor, value_dim: int, scale: float
    ) -> torch.Tensor:
        """Store the new tokens' latents [B, 1, T, L+R] and attend q [B, H, T, L+R] over each sequence's latents."""
        latents = self.latents(layer_idx)
        if self._prefill_slots is not None:
            slots, start, length = self._prefill_slots, self._prefill_start, latent.shape[2]
            latents[slots, :, start : start + length] = latent
            visible = latents[slots, :, : start + length]
        else:
            if self._uniform_write:
                position = self._key_length - 1
                latents[self._slots, :, position : position + 1] = latent
            else:
                latents.view(-1, self.head_dim).index_copy_(0, self._write_rows, latent.reshape(-1, self.head_dim))
            visible = latents[self._slots, :, : self._key_length]
        causal = self._causal and self._prefill_slots is not None
        return latent_attention(q, visible, value_dim, scale, self._mask, causal)

    def latents(self, layer_idx: int) -> torch.Tensor:
        return self.keys[layer_idx]

    # ---- slot bookkeeping: one tensor per layer instead of two ----------------------------------------

    def copy(self, source: int, target: int, length: int) -> None:
        for latents in self.keys:
            latents[target, :, :length] = latents[source, :, :length]

    def read_blocks(self, slot: int, first_block: int, num_blocks: int) -> list[torch.Tensor]:
        """Per layer, a `[1, num_blocks, 1, 64, L+R]` copy of the given whole blocks of a slot."""
        start, stop = first_block * BLOCK_TOKENS, (first_block + num_blocks) * BLOCK_TOKENS
        return [
            latents[slot, :, start:stop].view(1, 1, num_blocks, BLOCK_TOKENS, -1).transpose(1, 2).contiguous()
            for latents in self.keys
        ]

    def write_blocks(self, slot: int, blocks: list[PrefixBlock]) -> None:
        for index, block in enumerate(blocks):
            positions = slice(index * BLOCK_TOKENS, (index + 1) * BLOCK_TOKENS)
            for latents, stored in zip(self.keys, block.kv):
                latents[slot, :, positions] = stored[0]
