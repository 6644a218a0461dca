"""SimpleKVCache: a contiguous, growing key/value cache for one batch of equal-length sequences.

It implements the model's cache protocol (`attend(layer_idx, q, k, v)`, see transformer.py; for MLA models
`attend_latent`, see deepseek.py, with only the compressed latents stored) for parity tests and the batch-1
decode benchmark. Serving uses the engine's own slot/prefix-aware cache instead.

    cache = SimpleKVCache(model.config, batch_size=1)
    logits = model(prompt_ids, cache=cache, last_only=True)        # prefill
    logits = model(next_ids, cache=cache, last_only=True)          # one decode step, positions continue
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nanoseek.model.config import ModelConfig
from nanoseek.model.deepseek import latent_attention


class SimpleKVCache:
    def __init__(
        self,
        config: ModelConfig,
        batch_size: int = 1,
        capacity: int = 256,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        self.num_layers = config.num_hidden_layers
        self.grouped = config.num_attention_heads != config.num_key_value_heads
        shape = (batch_size, config.num_key_value_heads, max(capacity, 1), config.head_dim)
        if config.is_mla:  # one latent "head" per token; the values are its first kv_lora_rank columns
            shape = (batch_size, 1, max(capacity, 1), config.latent_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(self.num_layers)]
        self.values = [] if config.is_mla else [torch.empty(shape, dtype=dtype, device=device) for _ in self.keys]
        self.lengths = [0] * self.num_layers

    @property
    def seq_len(self) -> int:
        """Tokens held (by every layer once a forward pass has finished)."""
        return self.lengths[0]

    def _grow(self, layer_idx: int, needed: int) -> None:
        # Doubling keeps the amortised copy cost per token constant.
        old_keys = self.keys[layer_idx]
        old_values = self.values[layer_idx] if self.values else None
        capacity = max(needed, 2 * old_keys.shape[2])
        used = self.lengths[layer_idx]
        new_shape = (*old_keys.shape[:2], capacity, old_keys.shape[3])
        self.keys[layer_idx] = old_keys.new_empty(new_shape)
        self.keys[layer_idx][:, :, :used] = old_keys[:, :, :used]
        if self.values:
            self.values[layer_idx] = old_values.new_empty(new_shape)
            self.values[layer_idx][:, :, :used] = old_values[:, :, :used]

    def _store(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor | None) -> tuple[int, int]:
        """Append the new tokens' keys (and values) of one layer; (start, end) of their positions."""
        start = self.lengths[layer_idx]
        end = start + k.shape[2]
        if end > self.keys[layer_idx].shape[2]:
            self._grow(layer_idx, end)
        self.keys[layer_idx][:, :, start:end] = k
        if v is not None:
            self.values[layer_idx][:, :, start:end] = v
        self.lengths[layer_idx] = end
        return start, end

    @staticmethod
    def _chunk_mask(start: int, end: int, device: torch.device) -> torch.Tensor:
        """A later chunk of several tokens: query i (at position start+i) sees keys 0..start+i."""
        return torch.arange(end, device=device)[None, :] <= torch.arange(start, end, device=device)[:, None]

    def attend_latent(
        self, layer_idx: int, q: torch.Tensor, latent: torch.Tensor, value_dim: int, scale: float
    ) -> torch.Tensor:
        start, end = self._store(layer_idx, latent, None)
        keys, new = self.keys[layer_idx][:, :, :end], end - start
        mask = self._chunk_mask(start, end, q.device) if new > 1 and start > 0 else None
        return latent_attention(q, keys, value_dim, scale, mask, causal=new > 1 and start == 0)

    def attend(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        start, end = self._store(layer_idx, k, v)
        new = end - start
        keys, values = self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]
        if new == 1 or start == 0:
            # One new token sees everything; a first chunk is plain causal attention.
            return F.scaled_dot_product_attention(q, keys, values, is_causal=new > 1, enable_gqa=self.grouped)
        mask = self._chunk_mask(start, end, q.device)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=self.grouped)
