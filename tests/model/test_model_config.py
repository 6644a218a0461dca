"""ModelConfig <-> HF config.json: both rotary layouts, round trips, and errors that name the field."""

from __future__ import annotations

import pytest

from nanoseek.model.config import ModelConfig

LLAMA = dict(
    model_type="llama", vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4
)


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(**LLAMA),
        ModelConfig(**{**LLAMA, "model_type": "qwen2"}, num_key_value_heads=2, tie_word_embeddings=True),
        ModelConfig(
            **LLAMA,
            attention_bias=True,
            mlp_bias=True,
            head_dim=8,
            eos_token_id=[1, 2],
            dtype="bfloat16",
            rope_scaling={
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 1024,
                "beta_fast": 16,
            },
        ),
    ],
    ids=["llama", "qwen2", "llama-yarn-bias"],
)
def test_round_trip(config: ModelConfig) -> None:
    assert ModelConfig.from_hf(config.to_hf()) == config


def test_legacy_and_v5_rotary_layouts_agree() -> None:
    legacy = ModelConfig.from_hf({**LLAMA, "rope_theta": 500000, "rope_scaling": {"type": "linear", "factor": 2}})
    v5 = ModelConfig.from_hf({**LLAMA, "rope_parameters": {"rope_type": "linear", "factor": 2, "rope_theta": 500000.0}})
    assert legacy == v5
    assert legacy.rope_theta == 500000.0 and legacy.rope_scaling == {"rope_type": "linear", "factor": 2}
    plain = ModelConfig.from_hf({**LLAMA, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}})
    assert plain.rope_scaling is None and plain.rope_theta == 1e6


def test_qwen2_always_has_qkv_bias_and_llama_bias_covers_output() -> None:
    qwen = ModelConfig.from_hf({**LLAMA, "model_type": "qwen2"})
    assert (qwen.qkv_bias, qwen.o_bias) == (True, False)
    llama = ModelConfig.from_hf({**LLAMA, "attention_bias": True})
    assert (llama.qkv_bias, llama.o_bias) == (True, True)
    assert ModelConfig.from_hf(LLAMA).head_dim == 16 and ModelConfig.from_hf(LLAMA).num_key_value_heads == 4


def test_yarn_defaults_follow_transformers() -> None:
    config = ModelConfig.from_hf(
        {
            **LLAMA,
            "max_position_embeddings": 8192,
            "rope_scaling": {"rope_type": "yarn", "original_max_position_embeddings": 2048},
        }
    )
    assert config.rope_scaling["factor"] == 4.0


@pytest.mark.parametrize(
    "change,message",
    [
        ({"model_type": "mistral"}, "unknown model_type 'mistral'"),
        ({"hidden_act": "gelu"}, "unsupported hidden_act 'gelu'"),
        ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads 3"),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "unsupported rope_type 'dynamic'"),
        ({"rope_scaling": {"rope_type": "linear"}}, "needs a positive 'factor'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "needs 'low_freq_factor'"),
        ({"model_type": "qwen2", "use_sliding_window": True}, "use_sliding_window"),
        ({"hidden_size": 66}, "not a multiple of num_attention_heads"),
        ({"vocab_size": None}, "lacks required field"),
    ],
)
def test_bad_config_names_the_problem(change: dict, message: str) -> None:
    hf = {**LLAMA, **change}
    hf = {k: v for k, v in hf.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_hf(hf)


def test_shapes_and_parameter_count() -> None:
    config = ModelConfig.from_shape("bench25m", vocab_size=8192, tie_word_embeddings=True)
    assert 20e6 < config.num_parameters() < 30e6
    with pytest.raises(ValueError, match="unknown shape 'huge'"):
        ModelConfig.from_shape("huge", 100)
