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


def latent_attention(
    q: torch.Tensor,
    latents: torch.Tensor,
    value_dim: int,
    scale: float,
    mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """Attention of q [B, H, T, L+R] over one latent head [B, 1, S, L+R] whose first `value_dim` columns are the
    values; `mask` boolean (True = visible) or additive, broadcasting to [B, H, T, S]; `causal` for T == S.
    Written out rather than SDPA: with key and value widths unequal SDPA takes its math path, which expands the
    single latent head to every query head, and at a decode step that costs more than these four products."""
    scores = torch.matmul(q, latents.transpose(-1, -2)).mul_(scale)
    if causal:
        length = q.shape[2]
        mask = torch.ones(length, length, dtype=torch.bool, device=q.device).tril_()
    if mask is not None and mask.dtype == torch.bool:
        scores.masked_fill_(~mask, float("-inf"))
    elif mask is not None:
        scores += mask
    weights = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(weights, latents[..., :value_dim])


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
        # The queries' rotary parts and the shared key part as H + 1 heads: one rotation for all of them.
        rotary = torch.cat((q_pe, k_pe.unsqueeze(1)), dim=1)
        q_pe, k_pe = apply_rotary(self._rotary_layout(rotary), cos, sin).split([self.num_heads, 1], dim=1)
        if cache is None:
            kv = self.kv_b_proj(latent).view(batch, length, self.num_heads, -1).transpose(1, 2)
            k_nope, v = kv.split([self.nope_dim, self.v_dim], dim=-1)
            k = torch.cat((k_nope, k_pe.expand(-1, self.num_heads, -1, -1)), dim=-1)
            query = torch.cat((q_nope, q_pe), dim=-1)
            out = F.scaled_dot_product_attention(query, k, v, is_causal=length > 1, scale=self.scale)
        else:
            key_up, value_up = self.absorbed_projections()
            query = torch.cat((torch.matmul(q_nope, key_up), q_pe), dim=-1)  # [B, H, T, L + R]
            mixed = cache.attend_latent(
                self.layer_idx, query, torch.cat((latent, k_pe), dim=-1), self.kv_lora_rank, self.scale
            )
            out = torch.matmul(mixed, value_up)  # [B, H, T, v]
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))

    def absorbed_projections(self) -> tuple[torch.Tensor, torch.Tensor]:
        """kv_b_proj split per head into the key up-projection [H, nope, L] and the transposed value
        up-projection [H, L, v], contiguous. Without gradients they are kept until the weight changes: slicing
        them from the (column-major) weight at every step made each product copy its operand first."""
        weight = self.kv_b_proj.weight
        cached = self.__dict__.get("_absorbed")
        if cached is not None and cached[0] == (weight._version, weight.data_ptr()) and not torch.is_grad_enabled():
            return cached[1], cached[2]
        w_kv = weight.unflatten(0, (self.num_heads, self.nope_dim + self.v_dim))  # per head: key rows, value rows
        key_up, value_up = w_kv.split([self.nope_dim, self.v_dim], dim=1)
        key_up, value_up = key_up.contiguous(), value_up.transpose(1, 2).contiguous()
        if not torch.is_grad_enabled():
            self.__dict__["_absorbed"] = ((weight._version, weight.data_ptr()), key_up, value_up)
        return key_up, value_up


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

    # Up to this many tokens (a decode step) are routed in Python: the rule on a few lists of n_routed_experts
    # floats costs less than the dozen-odd tensor ops of the batched rule, each a fixed overhead on the CPU.
    python_rows = 8

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights [N, k] fp32, expert ids [N, k]) for tokens x [N, hidden]."""
        logits = F.linear(x.float(), self.weight.float())
        scores = logits.sigmoid() if self.sigmoid else logits.softmax(dim=-1)
        if x.shape[0] <= self.python_rows and not torch.is_grad_enabled() and not self.training:
            weights, indices = self.route_rows(scores.tolist())
            return torch.tensor(weights), torch.tensor(indices)
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

    def route_rows(self, scores: list[list[float]]) -> tuple[list[list[float]], list[list[int]]]:
        """The same rule as forward's tensor ops, token by token on Python lists."""
        bias = self.e_score_correction_bias.tolist() if self.sigmoid else [0.0] * self.num_experts
        size = self.num_experts // (self.groups or 1)
        all_weights, all_indices = [], []
        for row in scores:
            choice = [score + offset for score, offset in zip(row, bias)]
            allowed: list[int] | range = range(self.num_experts)
            if self.groups is not None:
                members = [choice[g * size : (g + 1) * size] for g in range(self.groups)]
                group_scores = [sum(sorted(m)[-2:]) if self.sigmoid else max(m) for m in members]
                kept = sorted(range(self.groups), key=group_scores.__getitem__, reverse=True)[: self.topk_group]
                allowed = [expert for group in kept for expert in range(group * size, (group + 1) * size)]
            chosen = sorted(allowed, key=choice.__getitem__, reverse=True)[: self.top_k]
            weights = [row[expert] for expert in chosen]
            if self.normalise:
                total = sum(weights) + 1e-20
                weights = [weight / total for weight in weights]
            all_weights.append([weight * self.scaling for weight in weights])
            all_indices.append(chosen)
        return all_weights, all_indices


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
        """sum_k weights[n, k] * expert_{indices[n, k]}(x[n]) for x [N, hidden]: one pass per expert over the
        tokens routed to it. The grouping is done on a Python list (one read of the ids): for a decode step of a
        few tokens, torch.where per expert, or gathering the chosen experts' weights (a copy of each), cost more
        than the experts' products themselves."""
        experts = self.num_experts
        # Up to 2 x experts tokens: past that, all experts' products (experts / top-k times the routed work) cost
        # more than the per-expert loop's fixed overhead (a prefill chunk).
        if (
            self.stacked
            and experts <= x.shape[0] * indices.shape[1]
            and x.shape[0] <= 2 * experts
            and not torch.is_grad_enabled()
        ):
            return self.all_experts(x, weights, indices)
        routed: dict[int, list[int]] = {}
        for flat_index, expert in enumerate(indices.flatten().tolist()):
            routed.setdefault(expert, []).append(flat_index)
        top_k = indices.shape[1]
        flat_weights = weights.flatten().to(x.dtype)
        out = torch.zeros_like(x)
        for expert, flat_indices in routed.items():
            if len(flat_indices) == 1:  # a slice, not an index: no gather for the common decode case
                token, where = flat_indices[0] // top_k, slice(flat_indices[0], flat_indices[0] + 1)
                rows, scale = x[token : token + 1], flat_weights[where, None]
            else:
                where = torch.tensor(flat_indices)
                token = where // top_k
                rows, scale = x[token], flat_weights[where, None]
            expert_out = self.expert(expert, rows) * scale
            if isinstance(token, int):
                out[token : token + 1] += expert_out
            else:
                out.index_add_(0, token, expert_out)
        return out

    # Whether the weights are the stacked tensors `all_experts` multiplies (quantized.py's QuantizedExperts: no).
    stacked = True

    @property
    def num_experts(self) -> int:
        return self.gate_up_proj.shape[0]

    def expert(self, index: int, rows: torch.Tensor) -> torch.Tensor:
        """Routed expert `index`'s SwiGLU output for rows [n, hidden], unweighted."""
        gate, up = F.linear(rows, self.gate_up_proj[index]).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.down_proj[index])

    def all_experts(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Every expert over every token, weighted by the routing (zero for experts not chosen): for a batched
        decode step, where the tokens hit most experts anyway, seven tensor ops instead of six per expert hit."""
        routing = torch.zeros(x.shape[0], self.gate_up_proj.shape[0], dtype=x.dtype)
        routing.scatter_(1, indices, weights.to(x.dtype))
        gate, up = torch.matmul(x, self.gate_up_proj.transpose(1, 2)).chunk(2, dim=-1)  # [E, N, I] each
        expert_out = torch.matmul(F.silu(gate) * up, self.down_proj.transpose(1, 2))  # [E, N, H]
        return (expert_out * routing.t().unsqueeze(-1)).sum(dim=0)


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
