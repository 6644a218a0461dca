"""DeepSeek-V2/V3 layers: multi-head latent attention (MLA) and the DeepSeekMoE feed-forward.

`transformer.Block` picks these per layer (`make_attention` / `make_mlp`) for `model_type` `deepseek_v2` and
`deepseek_v3`; the math follows transformers' `modeling_deepseek_v2.py` / `modeling_deepseek_v3.py` so logits
match to ~1e-6 in fp32 (tests/model/test_deepseek_parity.py).

MLA. Queries come from one projection (`q_proj`) or a low-rank pair (`q_a_proj` -> RMSNorm -> `q_b_proj`);
keys and values from one compressed latent per token: `kv_a_proj_with_mqa` gives the latent c (kv_lora_rank,
RMS-normed) and a rotary key part k_pe (qk_rope_head_dim) that all heads share; `kv_b_proj` expands c into each
head's key part k_nope and value. Without a cache (training, parity) the layer expands keys and values and runs
plain causal attention. With a cache it never expands them: the up-projections are absorbed into the query and
the output, so the cache holds only [c, k_pe] (kv_lora_rank + qk_rope_head_dim per token per layer) and
attention is multi-query attention over those latents:

    score_h(t, s) = q_nope_h(t) . (W_UK_h c(s)) + q_pe_h(t) . k_pe(s) = [W_UK_h^T q_nope_h(t), q_pe_h(t)] . [c(s), k_pe(s)]
    out_h(t)      = W_UV_h (sum_s p_h(t, s) c(s))

Cache protocol for MLA (docs/ARCHITECTURE.md): `cache.attend_latent(layer_idx, q [B,H,T,L+R], latent [B,1,T,L+R],
value_dim L, scale) -> [B,H,T,L]`: store the new tokens' latents, attend, return the weighted latent sum.

Rotary: DeepSeek lays the rotary dimensions out as interleaved pairs (x0, x1), (x2, x3), ...; taking the even then
the odd columns turns that into the half-split layout `transformer.apply_rotary` rotates. q_pe and k_pe are
permuted alike, so their dot products are the interleaved rotation's exactly.

DeepSeekMoE. A router scores the n_routed_experts (V2: softmax; V3: sigmoid, choosing with the aux-loss-free
`e_score_correction_bias` added and weighting without it), optionally limits a token to its topk_group best
expert groups, takes the top num_experts_per_tok, scales their weights by routed_scaling_factor (V3 first
renormalises them when norm_topk_prob), and adds always-on shared experts. Expert weights are stored stacked
as transformers 5 holds them (`experts.gate_up_proj` [E, 2I, H], `experts.down_proj` [E, H, I]); checkpoint.py
writes them per expert, as DeepSeek's files and transformers' save_pretrained do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nanoseek.model.config import ModelConfig
from nanoseek.model.layers import MLP, Linear, RMSNorm, apply_rotary


def yarn_softmax_scale(config: ModelConfig) -> float:
    """1/sqrt(qk_head_dim), times mscale(factor, mscale_all_dim)^2 under YaRN (DeepSeek's long-context configs)."""
    scale = config.qk_head_dim**-0.5
    scaling = config.rope_scaling
    if scaling is not None and scaling.get("mscale_all_dim"):
        factor, mscale_all_dim = float(scaling["factor"]), float(scaling["mscale_all_dim"])
        if factor > 1:
            mscale = 0.1 * mscale_all_dim * math.log(factor) + 1.0
            scale *= mscale * mscale
    return scale


class LatentAttention(nn.Module):
    """Multi-head latent attention; parameter names are transformers' (q_a_proj, kv_b_proj, ...)."""

    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.nope_dim, self.rope_dim, self.v_dim = config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim
        self.kv_lora_rank = config.kv_lora_rank
        self.interleaved = config.rope_interleave
        q_out = self.num_heads * config.qk_head_dim
        if config.q_lora_rank is None:
            self.q_proj = Linear(config.hidden_size, q_out, bias=False)
        else:
            self.q_a_proj = Linear(config.hidden_size, config.q_lora_rank, bias=config.attention_bias)
            self.q_a_layernorm = RMSNorm(config.q_lora_rank, 1e-6)  # transformers' default eps, not rms_norm_eps
            self.q_b_proj = Linear(config.q_lora_rank, q_out, bias=False)
        self.kv_a_proj_with_mqa = Linear(config.hidden_size, config.latent_dim, bias=config.attention_bias)
        self.kv_a_layernorm = RMSNorm(config.kv_lora_rank, 1e-6)
        self.kv_b_proj = Linear(config.kv_lora_rank, self.num_heads * (self.nope_dim + self.v_dim), bias=False)
        self.o_proj = Linear(self.num_heads * self.v_dim, config.hidden_size, bias=config.attention_bias)
        self.scale = yarn_softmax_scale(config)

    def _rotary_layout(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x[..., 0::2], x[..., 1::2]), dim=-1) if self.interleaved else x

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache=None) -> torch.Tensor:
        batch, length, _ = x.shape
        if hasattr(self, "q_proj"):
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(batch, length, self.num_heads, -1).transpose(1, 2)
        q_nope, q_pe = q.split([self.nope_dim, self.rope_dim], dim=-1)
        compressed = self.kv_a_proj_with_mqa(x)
        latent, k_pe = compressed.split([self.kv_lora_rank, self.rope_dim], dim=-1)
        latent = self.kv_a_layernorm(latent).unsqueeze(1)  # [B, 1, T, L]
        q_pe = apply_rotary(self._rotary_layout(q_pe), cos, sin)
        k_pe = apply_rotary(self._rotary_layout(k_pe.unsqueeze(1)), cos, sin)  # [B, 1, T, R]
        # kv_b_proj's rows per head: nope_dim key rows, then v_dim value rows.
        w_kv = self.kv_b_proj.weight.unflatten(0, (self.num_heads, self.nope_dim + self.v_dim))
        w_uk, w_uv = w_kv.split([self.nope_dim, self.v_dim], dim=1)  # [H, nope, L], [H, v, L]
        if cache is None:
            kv = self.kv_b_proj(latent).view(batch, length, self.num_heads, -1).transpose(1, 2)
            k_nope, v = kv.split([self.nope_dim, self.v_dim], dim=-1)
            k = torch.cat((k_nope, k_pe.expand(-1, self.num_heads, -1, -1)), dim=-1)
            query = torch.cat((q_nope, q_pe), dim=-1)
            out = F.scaled_dot_product_attention(query, k, v, is_causal=length > 1, scale=self.scale)
        else:
            query = torch.cat((torch.matmul(q_nope, w_uk), q_pe), dim=-1)  # [B, H, T, L + R]
            mixed = cache.attend_latent(
                self.layer_idx, query, torch.cat((latent, k_pe), dim=-1), self.kv_lora_rank, self.scale
            )
            out = torch.matmul(mixed, w_uv.transpose(1, 2))  # [B, H, T, v]
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class Router(nn.Module):
    """Chooses each token's routed experts and their weights (transformers' DeepseekV2/V3TopkRouter).

    V3 balances load without an auxiliary loss: in training, after each forward, experts that got more than the
    mean number of tokens have their selection bias lowered by `bias_update_rate` and the others raised (the
    DeepSeek-V3 report's rule, per forward instead of per optimizer step). The bias only steers the choice, it
    never weights an expert's output, so it takes no gradient."""

    bias_update_rate = 1e-3

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.sigmoid = config.model_type == "deepseek_v3"
        self.num_experts, self.top_k = config.n_routed_experts, config.num_experts_per_tok
        self.groups = config.n_group if config.group_limited else None
        self.topk_group = config.topk_group
        self.normalise = config.norm_topk_prob and self.sigmoid  # transformers' V2 never renormalises
        self.scaling = config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(self.num_experts, config.hidden_size))
        if self.sigmoid:
            self.register_buffer("e_score_correction_bias", torch.zeros(self.num_experts))

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        self.weight.normal_(0.0, std)
        if self.sigmoid:
            self.e_score_correction_bias.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights [N, k] fp32, expert ids [N, k]) for tokens x [N, hidden]."""
        logits = F.linear(x.float(), self.weight.float())
        scores = logits.sigmoid() if self.sigmoid else logits.softmax(dim=-1)
        choice = scores + self.e_score_correction_bias if self.sigmoid else scores
        if self.groups is not None:
            grouped = choice.view(-1, self.groups, self.num_experts // self.groups)
            # V3 ranks a group by its two best experts, V2 by its best one.
            group_scores = grouped.topk(2, dim=-1)[0].sum(dim=-1) if self.sigmoid else grouped.amax(dim=-1)
            kept_groups = group_scores.topk(self.topk_group, dim=-1, sorted=False)[1]
            group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept_groups, True)
            expert_mask = group_mask.repeat_interleave(self.num_experts // self.groups, dim=1)
            # V2 zeroes the other groups' scores (a softmax score is positive), V3 excludes them outright.
            choice = choice.masked_fill(~expert_mask, float("-inf") if self.sigmoid else 0.0)
        indices = choice.topk(self.top_k, dim=-1, sorted=False)[1]
        weights = scores.gather(1, indices)
        if self.normalise:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        if self.sigmoid and self.training:
            with torch.no_grad():
                load = torch.bincount(indices.flatten(), minlength=self.num_experts).float()
                self.e_score_correction_bias += self.bias_update_rate * torch.sign(load.mean() - load)
        return weights * self.scaling, indices


class Experts(nn.Module):
    """The routed experts' SwiGLU weights, stacked: gate_up_proj [E, 2I, H] (gate rows, then up), down_proj [E, H, I]."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        experts, hidden, inner = config.n_routed_experts, config.hidden_size, config.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(experts, 2 * inner, hidden))
        self.down_proj = nn.Parameter(torch.empty(experts, hidden, inner))

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        self.gate_up_proj.normal_(0.0, std)
        self.down_proj.normal_(0.0, std)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """sum_k weights[n, k] * expert_{indices[n, k]}(x[n]) for x [N, hidden]."""
        out = torch.zeros_like(x)
        if x.shape[0] * indices.shape[1] <= self.gate_up_proj.shape[0]:
            # A few tokens (decode): gather the chosen experts' weights and run them as one batched product,
            # a fixed handful of ops instead of a handful per expert hit.
            rows = x.unsqueeze(1).unsqueeze(-1)  # [N, 1, H, 1]
            gate, up = torch.matmul(self.gate_up_proj[indices], rows).squeeze(-1).chunk(2, dim=-1)  # [N, k, I]
            hidden = (F.silu(gate) * up).unsqueeze(-1)
            expert_out = torch.matmul(self.down_proj[indices], hidden).squeeze(-1)  # [N, k, H]
            return (expert_out * weights.unsqueeze(-1).to(x.dtype)).sum(dim=1)
        # Many tokens (prefill, training): one pass per expert over the tokens routed to it.
        for expert in indices.unique().tolist():
            token, slot = torch.where(indices == expert)
            gate, up = F.linear(x[token], self.gate_up_proj[expert]).chunk(2, dim=-1)
            expert_out = F.linear(F.silu(gate) * up, self.down_proj[expert])
            out.index_add_(0, token, expert_out * weights[token, slot, None].to(x.dtype))
        return out


class MoE(nn.Module):
    """DeepSeekMoE: shared experts that every token uses plus top-k routed ones."""

    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.gate = Router(config)
        self.experts = Experts(config)
        self.shared_experts = None
        if config.n_shared_experts:
            self.shared_experts = MLP(config, layer_idx, config.moe_intermediate_size * config.n_shared_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.shape[-1])
        weights, indices = self.gate(tokens)
        out = self.experts(tokens, weights, indices).view(x.shape)
        return out if self.shared_experts is None else out + self.shared_experts(x)
