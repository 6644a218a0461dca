"""The nanoseek transformer: one readable decoder-only model of the Llama family (Llama, Qwen2).

RMSNorm -> rotary GQA attention -> residual -> RMSNorm -> SwiGLU MLP -> residual, repeated; then a final norm
and the output projection (tied to the embeddings or not). Numerics follow transformers' `modeling_llama.py`
so that logits match it to ~1e-6 in fp32 (tests/model/test_model_parity.py).

Tuned for CPU decoding, where a step of a small model is one matrix-vector product per weight matrix plus
per-op overhead: q/k/v are one fused projection and gate/up another (checkpoint.py splits and joins them at
the file boundary so files keep HF tensor names), weights are stored column-major for fast GEMV (see
`Transformer.use_column_major_weights`), rotary is applied to q and k in one go from a precomputed table,
and attention is `scaled_dot_product_attention` with native GQA (no repeated k/v).

Each `Block` holds an attention part and an MLP part that `make_attention` / `make_mlp` choose per layer from
the config: for `deepseek_v2` / `deepseek_v3` they are multi-head latent attention and DeepSeekMoE (deepseek.py),
with the same call signatures.

Cache protocol (docs/ARCHITECTURE.md): with a cache, each attention layer calls
`cache.attend(layer_idx, q [B,Hq,T,D], k [B,Hkv,T,D], v [B,Hkv,T,D]) -> [B,Hq,T,D]` with rotary already
applied to the new tokens' q and k; the cache stores k/v, masks, and returns the attention output. MLA layers
call `cache.attend_latent(...)` instead and the cache stores compressed latents (deepseek.py).

    python -m nanoseek.model.transformer     # runs a random tiny model once and prints the logits' shape
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from nanoseek.model.config import ModelConfig
from nanoseek.model.deepseek import LatentAttention, MoE
from nanoseek.model.layers import MLP, Linear, RMSNorm, apply_rotary


class AttentionCache(Protocol):
    def attend(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...


def rotary_inv_freq(config: ModelConfig) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [D/2] and the cos/sin scale for plain, linear, YaRN and Llama-3 rotary embeddings,
    computed as transformers' `modeling_rope_utils` does (same formulas, same defaults)."""
    dim = config.head_dim
    base = config.rope_theta
    # device="cpu" explicitly: models are built under torch.device("meta") when loaded from a checkpoint.
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float() / dim))
    scaling = config.rope_scaling
    if scaling is None:
        return inv_freq, 1.0
    rope_type, factor = scaling["rope_type"], float(scaling["factor"])
    if rope_type == "linear":
        return inv_freq / factor, 1.0
    if rope_type == "llama3":
        old_context = scaling["original_max_position_embeddings"]
        low_freq, high_freq = scaling["low_freq_factor"], scaling["high_freq_factor"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_context / low_freq, inv_freq / factor, inv_freq)
        smooth = (old_context / wavelen - low_freq) / (high_freq - low_freq)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = ~(wavelen < old_context / high_freq) * ~(wavelen > old_context / low_freq)
        return torch.where(is_medium, smoothed, scaled), 1.0
    # YaRN: interpolate low frequencies, keep high ones, blend linearly in between; scale cos/sin.
    original_context = scaling["original_max_position_embeddings"]
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = _yarn_mscale(factor)
    beta_fast, beta_slow = scaling.get("beta_fast") or 32, scaling.get("beta_slow") or 1

    def correction_dim(num_rotations: float) -> float:
        return dim * math.log(original_context / (num_rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low)).clamp(0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2, device="cpu").float() / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    keep = 1 - ramp
    return interpolation * (1 - keep) + extrapolation * keep, float(attention_factor)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


class RotaryTable:
    """cos/sin for every position up to the longest seen so far, grown by doubling; kept per dtype.

    The sin table carries the sign of `rotate_half`, so rotation is `x*cos + roll(x, D/2)*sin_signed`, applied
    to q and k heads together: four ops per layer instead of transformers' seven for each of q and k, with
    bit-identical results (negation is exact)."""

    def __init__(self, config: ModelConfig) -> None:
        self.inv_freq, self.scale = rotary_inv_freq(config)
        self.tables: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, length: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.tables.get(dtype, (None, None))
        if cos is None or cos.shape[0] < length or cos.device != device:
            size = max(length, 2 * (cos.shape[0] if cos is not None else 0), 256)
            positions = torch.arange(size, dtype=torch.int64, device=device).float()
            freqs = positions[:, None] * self.inv_freq.to(device)[None, :]
            angles = torch.cat((freqs, freqs), dim=-1)
            half = angles.shape[-1] // 2
            sign = torch.cat((-torch.ones(half, device=device), torch.ones(half, device=device)))
            cos = (angles.cos() * self.scale).to(dtype)
            sin = (angles.sin() * self.scale * sign).to(dtype)
            self.tables[dtype] = (cos, sin)
        return cos, sin


class Attention(nn.Module):
    """Grouped-query self-attention with one fused q/k/v projection."""

    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        )
        qkv_dim = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        self.qkv_proj = Linear(config.hidden_size, qkv_dim, bias=config.qkv_bias)
        self.o_proj = Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.o_bias)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: AttentionCache | None
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        qkv = self.qkv_proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)
        rotated_heads = self.num_heads + self.num_kv_heads
        q, k = apply_rotary(qkv[:, :rotated_heads], cos, sin).split([self.num_heads, self.num_kv_heads], dim=1)
        v = qkv[:, rotated_heads:]
        if cache is None:
            out = F.scaled_dot_product_attention(
                q, k, v, is_causal=length > 1, enable_gqa=self.num_heads != self.num_kv_heads
            )
        else:
            out = cache.attend(self.layer_idx, q, k, v)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


def make_attention(config: ModelConfig, layer_idx: int) -> nn.Module:
    if config.is_mla:
        return LatentAttention(config, layer_idx)
    return Attention(config, layer_idx)


def make_mlp(config: ModelConfig, layer_idx: int) -> nn.Module:
    if config.is_moe_layer(layer_idx):
        return MoE(config, layer_idx)
    return MLP(config, layer_idx)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = make_attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = make_mlp(config, layer_idx)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: AttentionCache | None
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # An explicit (empty) weight skips nn.Embedding's own normal_ init, which on the meta device (used by
        # checkpoint loading) imports torch._dynamo: seconds of start-up for nothing. init_weights fills it.
        self.embed_tokens = nn.Embedding(
            config.vocab_size, config.hidden_size, _weight=torch.empty(config.vocab_size, config.hidden_size)
        )
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()
        self.use_column_major_weights()
        self.rotary = RotaryTable(config)
        if self.embed_tokens.weight.device.type != "meta":
            self.init_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    @torch.no_grad()
    def use_column_major_weights(self) -> None:
        """Store every projection/embedding matrix [out, in] column-major: same shape, names and values, but
        `weight.t()` is contiguous. A decode step multiplies one row by each matrix, and MKL on this AMD CPU
        runs that GEMV faster over a contiguous [in, out] operand: whole-model batch-1 decoding gained
        1.05-1.31x over row-major weights (ablation column of benchmarks/decode_batch1.py, BENCHMARKS.md).
        Training sees the same values (only the memory layout differs); checkpoints are written row-major."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and module.weight.is_contiguous():
                module.weight.data = module.weight.data.t().contiguous().t()

    def pack_for_inference(self, limit_bytes: int = 1 << 30) -> bool:
        """Give every projection a oneDNN-packed copy of its weight for gradient-free forwards (`Linear`).
        The copy doubles the projections' memory, so models whose projections exceed `limit_bytes` stay
        unpacked. Returns whether the model is packed."""
        linears = [m for m in self.modules() if isinstance(m, Linear)]
        if sum(m.weight.numel() * m.weight.element_size() for m in linears) > limit_bytes:
            return False
        return all([m.pack() for m in linears])

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        """transformers' initialisation: normal(0, std) weights, zero biases, unit norms (uses torch's RNG)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
            elif module is not self and hasattr(module, "init_weights"):  # DeepSeekMoE's router and experts
                module.init_weights(std)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of activations, norms and the KV cache (a quantized model's projections are blocks)."""
        return self.norm.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: AttentionCache | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits [B, T, V] (or [B, 1, V] with `last_only`) for `input_ids` [B, T].

        `positions` [B, T] are the rotary positions; by default 0..T-1, or, with a cache that has `seq_len`
        (SimpleKVCache), continuing after the tokens it already holds. The engine passes them explicitly."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        length = input_ids.shape[1]
        x = self.embed_tokens(input_ids)
        if positions is None:
            start = 0
            if cache is not None:
                if not hasattr(cache, "seq_len"):
                    raise ValueError("pass positions explicitly: this cache does not expose seq_len")
                start = cache.seq_len
            cos, sin = self.rotary.get(start + length, x.dtype, x.device)
            cos, sin = cos[start : start + length], sin[start : start + length]  # [T, D] broadcasts over B and H
        else:
            if positions.shape != input_ids.shape:
                raise ValueError(
                    f"positions shape {tuple(positions.shape)} != input_ids shape {tuple(input_ids.shape)}"
                )
            # A cache that bounds positions (the engine's slots) spares reading positions.max(): a value read
            # from a tensor would split a compiled decode step (engine compile_decode) in two.
            bound = getattr(cache, "position_limit", None)
            cos, sin = self.rotary.get(bound or int(positions.max()) + 1, x.dtype, x.device)
            cos, sin = cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)  # [B, 1, T, D]
        for layer in self.layers:
            x = layer(x, cos, sin, cache)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.norm(x))


if __name__ == "__main__":
    tiny = ModelConfig.from_shape("tiny", vocab_size=256)
    model = Transformer(tiny)
    model.init_weights()
    print(model(torch.randint(0, 256, (2, 7))).shape)
