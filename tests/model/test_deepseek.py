"""DeepSeek-V2/V3 (MLA + DeepSeekMoE): parity with transformers both ways, the latent cache's absorbed attention,
routing (group-limited, V3's correction bias), checkpoint details and config checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from hf_reference import TOLERANCE, logit_gap, nanoseek_greedy, random_hf_model, sample_ids, transformers_greedy
from safetensors.torch import load_file, save_file

from nanoseek.model.cache import SimpleKVCache
from nanoseek.model.checkpoint import CheckpointError, save_model
from nanoseek.model.config import ModelConfig
from nanoseek.model.deepseek import Router
from nanoseek.model.loader import load_model
from nanoseek.model.transformer import Transformer

VOCAB = 160
BASE = dict(
    vocab_size=VOCAB,
    hidden_size=48,
    intermediate_size=80,
    moe_intermediate_size=24,
    num_hidden_layers=3,
    num_attention_heads=4,
    kv_lora_rank=16,
    q_lora_rank=None,
    qk_nope_head_dim=8,
    qk_rope_head_dim=8,
    v_head_dim=12,
    n_routed_experts=8,
    n_shared_experts=1,
    num_experts_per_tok=2,
    first_k_dense_replace=1,
    max_position_embeddings=256,
)
YARN = {
    "rope_type": "yarn",
    "factor": 4.0,
    "original_max_position_embeddings": 64,
    "mscale": 0.707,
    "mscale_all_dim": 0.707,
    "rope_theta": 10000.0,
}
# (name, version, extra config): V2 greedy and group-limited softmax routing, V3 sigmoid group-limited routing,
# low-rank and full q projections, YaRN with mscale, interleaved and half-split rotary, several shared experts.
CASES = [
    ("v2-greedy", 2, dict()),
    ("v2-group-qlora", 2, dict(topk_method="group_limited_greedy", n_group=4, topk_group=2, q_lora_rank=20)),
    ("v2-yarn-scaled", 2, dict(routed_scaling_factor=16.0, n_shared_experts=2, rope_parameters=YARN)),
    ("v3-group", 3, dict(n_group=4, topk_group=2, routed_scaling_factor=2.5)),
    ("v3-qlora-yarn-halfsplit", 3, dict(q_lora_rank=24, n_group=2, topk_group=1, rope_interleave=False)),
    ("v3-yarn-unnormalised", 3, dict(n_group=1, topk_group=1, norm_topk_prob=False, rope_parameters=YARN)),
]


def hf_model(version: int, extra: dict, seed: int = 0) -> torch.nn.Module:
    config_class = transformers.DeepseekV3Config if version == 3 else transformers.DeepseekV2Config
    # sdpa: transformers' eager attention repeats keys num_attention_heads // num_key_value_heads times, and the V3
    # config leaves num_key_value_heads at its default (128), so 4 heads repeat them 0 times
    return random_hf_model(config_class(**{**BASE, **extra}), seed, attn_implementation="sdpa")


@pytest.mark.parametrize("name,version,extra", CASES, ids=[c[0] for c in CASES])
def test_transformers_checkpoint_loads_with_same_logits_with_and_without_latent_cache(
    tmp_path: Path, name: str, version: int, extra: dict
) -> None:
    reference = hf_model(version, extra)
    reference.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert model.config.model_type == f"deepseek_v{version}"
    ids = sample_ids(VOCAB)
    with torch.no_grad():
        expected = reference(ids).logits
        got = model(ids)
        # The cached path attends over compressed latents with the absorbed projections: prefill, a later
        # chunk, then single tokens.
        cache = SimpleKVCache(model.config, batch_size=2)
        pieces = [model(ids[:, :25], cache=cache), model(ids[:, 25:36], cache=cache)]
        pieces += [model(ids[:, i : i + 1], cache=cache) for i in range(36, 40)]
    assert expected.abs().max() > 1.0  # the logits are not trivially near zero
    assert (got - expected).abs().max().item() <= TOLERANCE
    assert (torch.cat(pieces, dim=1) - expected).abs().max().item() <= TOLERANCE
    assert cache.keys[0].shape[-1] == model.config.kv_lora_rank + model.config.qk_rope_head_dim
    assert not cache.values  # values are the latents' first kv_lora_rank columns, not stored twice


@pytest.mark.parametrize("name,version,extra", [CASES[1], CASES[4]], ids=[CASES[1][0], CASES[4][0]])
def test_nanoseek_checkpoint_loads_in_transformers_with_same_logits_and_greedy_tokens(
    tmp_path: Path, name: str, version: int, extra: dict
) -> None:
    hf_model(version, extra, seed=3).save_pretrained(tmp_path / "hf")
    model = load_model(tmp_path / "hf")
    save_model(model, tmp_path / "nanoseek")
    saved = load_file(tmp_path / "nanoseek" / "model.safetensors")
    assert "model.layers.2.mlp.experts.7.down_proj.weight" in saved  # per expert, as DeepSeek's files
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "nanoseek", dtype=torch.float32).eval()
    ids = sample_ids(VOCAB, seed=4)
    assert logit_gap(reference, model, ids) <= TOLERANCE
    ours = nanoseek_greedy(model, ids[:1, :12], 32)
    assert ours == transformers_greedy(reference, ids[:1, :12], 32)
    assert len(set(ours)) > 3


def test_group_limited_routing_restricts_experts_to_the_best_groups() -> None:
    config = ModelConfig(model_type="deepseek_v3", **{**BASE, "n_group": 4, "topk_group": 1})
    router = Router(config)
    router.init_weights(std=1.0)
    tokens = torch.randn(64, BASE["hidden_size"], generator=torch.Generator().manual_seed(2))
    _, indices = router(tokens)
    assert (indices[:, 0] // 2 == indices[:, 1] // 2).all()  # both experts from the one chosen group of two
    unlimited = Router(ModelConfig(model_type="deepseek_v3", **{**BASE, "n_group": 4, "topk_group": 4}))
    unlimited.load_state_dict(router.state_dict())
    assert not (unlimited(tokens)[1][:, 0] // 2 == unlimited(tokens)[1][:, 1] // 2).all()


def test_v3_correction_bias_steers_choice_not_weights_and_balances_in_training() -> None:
    config = ModelConfig(model_type="deepseek_v3", **{**BASE, "n_group": 1, "topk_group": 1, "norm_topk_prob": False})
    router = Router(config)
    router.init_weights(std=1.0)
    tokens = torch.randn(256, BASE["hidden_size"], generator=torch.Generator().manual_seed(3))
    weights, indices = router(tokens)
    router.e_score_correction_bias[5] = 10.0  # expert 5 now always chosen, weighted by its plain score
    biased_weights, biased_indices = router(tokens)
    assert (biased_indices == 5).any(dim=1).all()
    expected = torch.sigmoid(tokens @ router.weight.t())[:, 5] * config.routed_scaling_factor
    assert torch.allclose(biased_weights[biased_indices == 5], expected)
    router.e_score_correction_bias[5] = 0.4  # overloaded, but within reach of the balancing rule
    router.train()
    for _ in range(1000):  # 1e-3 per step
        router(tokens)
    load = torch.bincount(router(tokens)[1].flatten(), minlength=8).float()
    assert router.e_score_correction_bias[5] < 0.4 and load.max() < 1.5 * load.mean()


def test_parameter_counts_and_multi_token_prediction_layers_skipped(tmp_path: Path) -> None:
    config = ModelConfig(model_type="deepseek_v3", **{**BASE, "n_group": 2, "topk_group": 1})
    model = Transformer(config)
    assert sum(p.numel() for p in model.parameters()) == config.num_parameters()
    routed_off = 2 * 3 * config.hidden_size * config.moe_intermediate_size * (8 - 2)
    assert config.num_parameters(active=True) == config.num_parameters() - routed_off
    save_model(model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["model.layers.3.eh_proj.weight"] = torch.zeros(4, 4)  # a V3 file's next-token-prediction module
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert torch.equal(load_model(tmp_path).lm_head.weight, model.lm_head.weight)


@pytest.mark.parametrize(
    "extra,message",
    [
        (dict(model_type="deepseek_v3", n_group=3, topk_group=1), "n_group dividing"),
        (dict(model_type="deepseek_v2", topk_method="noaux_tc"), "topk_method"),
        (dict(model_type="deepseek_v2", num_experts_per_tok=9), "num_experts_per_tok 9 > n_routed_experts 8"),
        (dict(model_type="deepseek_v3", n_group=8, topk_group=2), "two best experts"),
    ],
)
def test_bad_deepseek_configs_are_refused(extra: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{**BASE, **extra})


def test_config_round_trips_and_refuses_other_scoring(tmp_path: Path) -> None:
    hf_model(3, CASES[3][2]).save_pretrained(tmp_path)
    config = load_model(tmp_path).config
    assert ModelConfig.from_hf(config.to_hf()) == config
    assert (config.n_group, config.topk_group, config.topk_method) == (4, 2, "noaux_tc")
    with pytest.raises(ValueError, match="scoring_func 'softmax'"):
        ModelConfig.from_hf({**config.to_hf(), "scoring_func": "softmax"})
    (tmp_path / "config.json").write_text(
        (tmp_path / "config.json").read_text().replace('"n_group": 4', '"n_group": 3')
    )
    with pytest.raises(CheckpointError, match="n_group dividing"):
        load_model(tmp_path)


def test_expert_paths_agree_and_a_batch_routes_rows_to_different_experts() -> None:
    """Per-expert loop (prefill, single rows) and all experts at once (batched decode) give the same sums."""
    config = ModelConfig(model_type="deepseek_v3", **{**BASE, "n_group": 4, "topk_group": 2})
    moe = Transformer(config).layers[1].mlp
    moe.gate.init_weights(std=1.0)
    tokens = torch.randn(6, BASE["hidden_size"], generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        weights, indices = moe.gate(tokens)
        together = moe.experts(tokens, weights, indices)  # 6 x 2 >= 8 experts: all at once
        one_by_one = torch.cat(
            [moe.experts(tokens[i : i + 1], weights[i : i + 1], indices[i : i + 1]) for i in range(6)]
        )
    assert len({tuple(sorted(row)) for row in indices.tolist()}) > 1
    assert torch.allclose(together, one_by_one, atol=1e-6)
    assert together.abs().max() > 1e-3
