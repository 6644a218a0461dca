"""GGUF's `deepseek2` architecture (DeepSeek-V2, V2.5, V3 and their Lite models as llama.cpp stores them) in and out.

gguf_checkpoint.py hands a `deepseek2` file's config and tensors here. llama.cpp's converter stores a DeepSeek
model as MLA with the absorption split done: kv_b_proj becomes, per head, `attn_k_b` (the key up-projection,
transposed: [H, kv_lora_rank, nope]) and `attn_v_b` ([H, v, kv_lora_rank]), and the metadata describes the
attention as one "kv head" whose keys are the latent plus the rotary part (key_length = kv_lora_rank + rope,
value_length = kv_lora_rank) and the per-head sizes as key_length_mla / value_length_mla. Older files keep the
unsplit `attn_kv_b` and give the per-head sizes in key_length / value_length; both read. Routed experts are
stacked per layer (`ffn_{gate,up,down}_exps`, [E, rows, in]), the router is `ffn_gate_inp`, V3's aux-loss-free
bias `exp_probs_b.bias`, the shared experts `ffn_*_shexp`; `expert_gating_func` tells softmax (V2) from sigmoid
(V3), `expert_group_count` / `expert_group_used_count` the group limits (llama.cpp ranks a group by its two best
experts, as V3 does, so a V2 group-limited model, which ranks by the best one, reads back exactly here but routes
differently in llama.cpp). Rotary dimensions are DeepSeek's
interleaved pairs, what llama.cpp's NORM rotary rotates, so no rows are permuted (a half-split nanoseek model is
written with its rotary rows interleaved). Of YaRN's two mscales the file keeps mscale_all_dim (yarn_log_multiplier
is 0.1 x it); DeepSeek's releases set mscale to the same value, and so does what is read back.

    config = deepseek2_config(file)              # file: gguf_checkpoint.GGUFFile
    state = deepseek2_state(file, config)        # nanoseek parameter name -> float32 tensor
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nanoseek.model.checkpoint import CheckpointError
from nanoseek.model.config import ModelConfig

ARCHITECTURE = "deepseek2"
SOFTMAX, SIGMOID = 1, 2  # gguf.ExpertGatingFuncType

# Per layer: GGUF tensor (after "blk.N.") -> nanoseek parameter (after "layers.N."), one to one.
LAYER_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q_a.weight": "self_attn.q_a_proj.weight",
    "attn_q_a.bias": "self_attn.q_a_proj.bias",
    "attn_q_a_norm.weight": "self_attn.q_a_layernorm.weight",
    "attn_q_b.weight": "self_attn.q_b_proj.weight",
    "attn_kv_a_mqa.weight": "self_attn.kv_a_proj_with_mqa.weight",
    "attn_kv_a_mqa.bias": "self_attn.kv_a_proj_with_mqa.bias",
    "attn_kv_a_norm.weight": "self_attn.kv_a_layernorm.weight",
    "attn_kv_b.weight": "self_attn.kv_b_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_down.weight": "mlp.down_proj.weight",
    "ffn_gate_inp.weight": "mlp.gate.weight",
    "exp_probs_b.bias": "mlp.gate.e_score_correction_bias",
    "ffn_down_exps.weight": "mlp.experts.down_proj",
    "ffn_down_shexp.weight": "mlp.shared_experts.down_proj.weight",
}
# nanoseek's fused gate/up weights: (gate part, up part), concatenated along `dim`.
FUSED_TENSORS = {
    "mlp.gate_up_proj.weight": ("ffn_gate.weight", "ffn_up.weight", 0),
    "mlp.experts.gate_up_proj": ("ffn_gate_exps.weight", "ffn_up_exps.weight", 1),
    "mlp.shared_experts.gate_up_proj.weight": ("ffn_gate_shexp.weight", "ffn_up_shexp.weight", 0),
}
SPLIT_KV_B = ("attn_k_b.weight", "attn_v_b.weight")
GLOBAL_TENSORS = {"token_embd.weight": "embed_tokens.weight", "output_norm.weight": "norm.weight"}
OUTPUT_TENSOR = "output.weight"


def deepseek2_config(file: Any) -> ModelConfig:
    """The ModelConfig of a `deepseek2` file (gguf_checkpoint.GGUFFile): V3 when its experts score by sigmoid."""
    value = file.arch_value
    required = ("embedding_length", "block_count", "attention.head_count", "attention.kv_lora_rank")
    missing = [f"{ARCHITECTURE}.{key}" for key in required if value(key) is None]
    if missing:
        raise CheckpointError(f"{file.path}: metadata lacks {', '.join(missing)}")
    embedding = file.tensors.get("token_embd.weight")
    if embedding is None:
        raise CheckpointError(f"{file.path}: tensor 'token_embd.weight' is missing")
    rank, rope = int(value("attention.kv_lora_rank")), int(value("rope.dimension_count", 64))
    if value("attention.key_length_mla") is not None:  # the split (absorption) layout
        key_length, value_length = int(value("attention.key_length_mla")), int(value("attention.value_length_mla"))
    else:  # legacy files: per-head sizes in key_length / value_length
        key_length, value_length = int(value("attention.key_length")), int(value("attention.value_length"))
    experts = int(value("expert_count", 0))
    sigmoid = experts and int(value("expert_gating_func", SOFTMAX)) == SIGMOID
    groups, groups_used = int(value("expert_group_count", 1) or 1), int(value("expert_group_used_count", 1) or 1)
    routing: dict[str, Any] = {}
    if experts:
        routing = dict(
            n_routed_experts=experts,
            num_experts_per_tok=int(value("expert_used_count")),
            n_shared_experts=int(value("expert_shared_count", 0)),
            moe_intermediate_size=int(value("expert_feed_forward_length")),
            first_k_dense_replace=int(value("leading_dense_block_count", 0)),
            routed_scaling_factor=float(value("expert_weights_scale", 1.0)),
            norm_topk_prob=bool(value("expert_weights_norm", False)),
            n_group=groups,
            topk_group=groups_used,
        )
        if not sigmoid and groups > 1:
            routing["topk_method"] = "group_limited_greedy"
    blocks = int(value("block_count"))
    try:
        return ModelConfig(
            model_type="deepseek_v3" if sigmoid else "deepseek_v2",
            vocab_size=int(value("vocab_size", embedding.shape[0])),
            hidden_size=int(value("embedding_length")),
            intermediate_size=int(value("feed_forward_length", value("expert_feed_forward_length", 1))),
            num_hidden_layers=blocks,
            num_attention_heads=int(value("attention.head_count")),
            q_lora_rank=int(value("attention.q_lora_rank", 0) or 0) or None,
            kv_lora_rank=rank,
            qk_nope_head_dim=key_length - rope,
            qk_rope_head_dim=rope,
            v_head_dim=value_length,
            max_position_embeddings=int(value("context_length", 4096)),
            rms_norm_eps=float(value("attention.layer_norm_rms_epsilon", 1e-6)),
            rope_theta=float(value("rope.freq_base", 10000.0)),
            rope_scaling=yarn_scaling(file),
            attention_bias="blk.0.attn_kv_a_mqa.bias" in file.tensors,
            tie_word_embeddings=OUTPUT_TENSOR not in file.tensors,
            bos_token_id=file.metadata.get("tokenizer.ggml.bos_token_id"),
            eos_token_id=file.metadata.get("tokenizer.ggml.eos_token_id"),
            pad_token_id=file.metadata.get("tokenizer.ggml.padding_token_id"),
            **routing,
        )
    except ValueError as exc:
        raise CheckpointError(f"{file.path}: {exc}") from None


def yarn_scaling(file: Any) -> dict[str, Any] | None:
    """DeepSeek's YaRN rope_scaling from rope.scaling.* and yarn_log_multiplier (0.1 x mscale_all_dim)."""
    value = file.arch_value
    kind, factor = value("rope.scaling.type", "none"), value("rope.scaling.factor")
    if kind == "none" or factor in (None, 1.0):
        return None
    if kind != "yarn":
        raise CheckpointError(f"{file.path}: {ARCHITECTURE} with rotary scaling {kind!r} is not supported (yarn is)")
    scaling: dict[str, Any] = {
        "rope_type": "yarn",
        "factor": float(factor),
        "original_max_position_embeddings": int(value("rope.scaling.original_context_length")),
    }
    log_multiplier = value("rope.scaling.yarn_log_multiplier")
    if log_multiplier:
        scaling["mscale"] = scaling["mscale_all_dim"] = round(float(log_multiplier) / 0.1, 6)
    for key, name in (("beta_fast", "yarn_beta_fast"), ("beta_slow", "yarn_beta_slow")):
        if value(f"rope.scaling.{name}") is not None:
            scaling[key] = float(value(f"rope.scaling.{name}"))
    return scaling


def deepseek2_state(file: Any, config: ModelConfig) -> dict[str, torch.Tensor]:
    """nanoseek parameter name -> float32 tensor, from the file's tensors (every one of them used)."""
    used: set[str] = set()

    def read(name: str) -> torch.Tensor:
        if name not in file.tensors:
            raise CheckpointError(f"{file.path}: tensor {name!r} is missing")
        used.add(name)
        return file.tensors[name].dequantize()

    state = {nanoseek: read(stored) for stored, nanoseek in GLOBAL_TENSORS.items()}
    if not config.tie_word_embeddings:
        state["lm_head.weight"] = read(OUTPUT_TENSOR)
    heads, nope, values = config.num_attention_heads, config.qk_nope_head_dim, config.v_head_dim
    for layer in range(config.num_hidden_layers):
        prefix = f"blk.{layer}."
        for stored, nanoseek in LAYER_TENSORS.items():
            if prefix + stored in file.tensors:
                state[f"layers.{layer}.{nanoseek}"] = read(prefix + stored)
        for nanoseek, (gate, up, dim) in FUSED_TENSORS.items():
            if prefix + gate in file.tensors:
                state[f"layers.{layer}.{nanoseek}"] = torch.cat((read(prefix + gate), read(prefix + up)), dim=dim)
        if prefix + SPLIT_KV_B[0] in file.tensors:
            key_up = read(prefix + SPLIT_KV_B[0])  # [H, kv_lora_rank, nope]
            value_up = read(prefix + SPLIT_KV_B[1])  # [H, v, kv_lora_rank]
            if key_up.shape != (heads, config.kv_lora_rank, nope) or value_up.shape[:2] != (heads, values):
                raise CheckpointError(
                    f"{file.path}: {prefix}attn_k_b {tuple(key_up.shape)} / attn_v_b {tuple(value_up.shape)} do not "
                    f"fit {heads} heads of nope {nope}, v {values}, kv_lora_rank {config.kv_lora_rank}"
                )
            kv_b = torch.cat((key_up.transpose(1, 2), value_up), dim=1)  # per head: key rows, then value rows
            state[f"layers.{layer}.self_attn.kv_b_proj.weight"] = kv_b.reshape(heads * (nope + values), -1)
    unused = sorted(set(file.tensors) - used)
    if unused:
        raise CheckpointError(
            f"{file.path}: {len(unused)} tensor(s) a {config.model_type} model of this shape does not have: "
            f"{', '.join(unused[:5])}"
        )
    return state


def interleaved_rows(rows: int, rope: int, head_width: int) -> np.ndarray:
    """Row order that lays each head's last `rope` rows (of every `head_width`) out as interleaved pairs: a
    half-split model's rows k and k + rope/2 become rows 2k and 2k + 1."""
    order = np.arange(rows)
    half = rope // 2
    split = np.stack((np.arange(half), np.arange(half) + half), axis=1).reshape(-1)  # 0, h, 1, h+1, ...
    for start in range(head_width - rope, rows, head_width):
        order[start : start + rope] = start + split
    return order


def deepseek2_arrays(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The model's weights under GGUF `deepseek2` names as float32 arrays (kv_b_proj split into attn_k_b and
    attn_v_b, experts stacked, gate and up apart)."""
    config = model.config
    state = {name: tensor.detach().to("cpu", torch.float32) for name, tensor in model.state_dict().items()}
    heads, nope, values, rope = (
        config.num_attention_heads,
        config.qk_nope_head_dim,
        config.v_head_dim,
        config.qk_rope_head_dim,
    )
    if not config.rope_interleave:  # GGUF's rotary parts are interleaved pairs (llama.cpp's NORM rotary)
        for name, tensor in list(state.items()):
            if name.endswith(("q_proj.weight", "q_b_proj.weight")):
                state[name] = tensor[interleaved_rows(tensor.shape[0], rope, config.qk_head_dim)]
            elif name.endswith(("kv_a_proj_with_mqa.weight", "kv_a_proj_with_mqa.bias")):
                state[name] = tensor[interleaved_rows(tensor.shape[0], rope, tensor.shape[0])]
    arrays = {stored: state[nanoseek] for stored, nanoseek in GLOBAL_TENSORS.items()}
    if not config.tie_word_embeddings:
        arrays[OUTPUT_TENSOR] = state["lm_head.weight"]
    for layer in range(config.num_hidden_layers):
        local = {name.split(".", 2)[2]: t for name, t in state.items() if name.startswith(f"layers.{layer}.")}
        prefix = f"blk.{layer}."
        for stored, nanoseek in LAYER_TENSORS.items():
            if nanoseek in local and stored != "attn_kv_b.weight":
                arrays[prefix + stored] = local[nanoseek]
        for nanoseek, (gate, up, dim) in FUSED_TENSORS.items():
            if nanoseek in local:
                arrays[prefix + gate], arrays[prefix + up] = local[nanoseek].chunk(2, dim=dim)
        kv_b = local["self_attn.kv_b_proj.weight"].view(heads, nope + values, -1)
        arrays[prefix + SPLIT_KV_B[0]] = kv_b[:, :nope].transpose(1, 2)
        arrays[prefix + SPLIT_KV_B[1]] = kv_b[:, nope:]
    return {name: np.ascontiguousarray(tensor.numpy()) for name, tensor in arrays.items()}


def deepseek2_metadata(config: ModelConfig) -> dict[str, Any]:
    """The {deepseek2}.* metadata that describes `config`, as llama.cpp's converter writes it."""
    arch = ARCHITECTURE
    metadata: dict[str, Any] = {
        f"{arch}.context_length": config.max_position_embeddings,
        f"{arch}.embedding_length": config.hidden_size,
        f"{arch}.block_count": config.num_hidden_layers,
        f"{arch}.feed_forward_length": config.intermediate_size,
        f"{arch}.attention.head_count": config.num_attention_heads,
        f"{arch}.attention.head_count_kv": 1,  # MLA with absorption: one latent "kv head"
        f"{arch}.attention.key_length": config.kv_lora_rank + config.qk_rope_head_dim,
        f"{arch}.attention.value_length": config.kv_lora_rank,
        f"{arch}.attention.key_length_mla": config.qk_head_dim,
        f"{arch}.attention.value_length_mla": config.v_head_dim,
        f"{arch}.attention.q_lora_rank": config.q_lora_rank or 0,
        f"{arch}.attention.kv_lora_rank": config.kv_lora_rank,
        f"{arch}.attention.layer_norm_rms_epsilon": float(config.rms_norm_eps),
        f"{arch}.rope.freq_base": float(config.rope_theta),
        f"{arch}.rope.dimension_count": config.qk_rope_head_dim,
        f"{arch}.vocab_size": config.vocab_size,
        f"{arch}.leading_dense_block_count": config.first_k_dense_replace
        if config.is_moe
        else config.num_hidden_layers,
    }
    if config.is_moe:
        groups = config.n_group if config.group_limited else 1
        metadata |= {
            f"{arch}.expert_count": config.n_routed_experts,
            f"{arch}.expert_used_count": config.num_experts_per_tok,
            f"{arch}.expert_shared_count": config.n_shared_experts,
            f"{arch}.expert_feed_forward_length": config.moe_intermediate_size,
            f"{arch}.expert_weights_scale": float(config.routed_scaling_factor),
            f"{arch}.expert_weights_norm": bool(config.norm_topk_prob and config.model_type == "deepseek_v3"),
            f"{arch}.expert_gating_func": SIGMOID if config.model_type == "deepseek_v3" else SOFTMAX,
            f"{arch}.expert_group_count": groups,
            f"{arch}.expert_group_used_count": config.topk_group if groups > 1 else 1,
        }
    scaling = config.rope_scaling
    if scaling:
        if scaling["rope_type"] != "yarn" or scaling.get("mscale", 1.0) != scaling.get("mscale_all_dim", 1.0):
            raise CheckpointError(
                f"{arch} files keep YaRN with mscale == mscale_all_dim only (DeepSeek's), not {scaling}"
            )
        metadata[f"{arch}.rope.scaling.type"] = "yarn"
        metadata[f"{arch}.rope.scaling.factor"] = float(scaling["factor"])
        metadata[f"{arch}.rope.scaling.original_context_length"] = scaling["original_max_position_embeddings"]
        if scaling.get("mscale_all_dim"):
            metadata[f"{arch}.rope.scaling.yarn_log_multiplier"] = 0.1 * float(scaling["mscale_all_dim"])
    return metadata
