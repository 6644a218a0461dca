"""Parity with transformers: HF-built random Llama/Qwen2 models load in nanoseek with the same logits, and
nanoseek-saved checkpoints load in AutoModelForCausalLM with the same logits and the same greedy tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from hf_reference import TOLERANCE, logit_gap, nanoseek_greedy, random_hf_model, sample_ids, transformers_greedy

from nanoseek import DEFAULT_MODEL_DIR
from nanoseek.model.checkpoint import save_model
from nanoseek.model.config import ModelConfig
from nanoseek.model.loader import load_model
from nanoseek.model.transformer import Transformer

VOCAB = 320
BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
)

# (name, model_type, extra config) covering GQA, tied/untied, biases, theta and every rotary scaling.
CASES = [
    ("llama-mha-untied", "llama", dict(num_key_value_heads=4)),
    ("llama-gqa-tied", "llama", dict(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=500000.0)),
    ("llama-mqa-bias", "llama", dict(num_key_value_heads=1, attention_bias=True, mlp_bias=True)),
    ("llama-headdim", "llama", dict(num_key_value_heads=2, head_dim=24)),
    ("llama-linear", "llama", dict(num_key_value_heads=2, rope_scaling={"rope_type": "linear", "factor": 4.0})),
    (
        "llama-yarn",
        "llama",
        dict(
            num_key_value_heads=2,
            rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128},
        ),
    ),
    (
        "llama-llama3",
        "llama",
        dict(
            num_key_value_heads=2,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        ),
    ),
    ("qwen2-gqa-untied", "qwen2", dict(num_key_value_heads=2, rope_theta=1000000.0)),
    (
        "qwen2-tied-yarn",
        "qwen2",
        dict(
            num_key_value_heads=1,
            tie_word_embeddings=True,
            rope_scaling={"type": "yarn", "factor": 2.0, "original_max_position_embeddings": 256},
        ),
    ),
]


def hf_model(model_type: str, extra: dict, seed: int = 0) -> torch.nn.Module:
    config_class = transformers.LlamaConfig if model_type == "llama" else transformers.Qwen2Config
    return random_hf_model(config_class(**BASE, **extra), seed)


@pytest.mark.parametrize("name,model_type,extra", CASES, ids=[c[0] for c in CASES])
def test_transformers_checkpoint_loads_with_same_logits(
    tmp_path: Path, name: str, model_type: str, extra: dict
) -> None:
    reference = hf_model(model_type, extra)
    reference.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    ids = sample_ids(VOCAB)
    with torch.no_grad():
        expected = reference(ids).logits
        got = model(ids)
    assert got.shape == expected.shape
    assert expected.abs().max() > 1.0  # the logits are not trivially near zero
    assert (got - expected).abs().max().item() <= TOLERANCE
    assert model.config.tie_word_embeddings == bool(extra.get("tie_word_embeddings", False))
    assert (model.lm_head.weight is model.embed_tokens.weight) == model.config.tie_word_embeddings


@pytest.mark.parametrize(
    "name,model_type,extra", [CASES[1], CASES[5], CASES[6], CASES[8]], ids=[CASES[i][0] for i in (1, 5, 6, 8)]
)
def test_nanoseek_checkpoint_loads_in_transformers_with_same_logits(
    tmp_path: Path, name: str, model_type: str, extra: dict
) -> None:
    source = hf_model(model_type, extra, seed=3)
    source.save_pretrained(tmp_path / "hf")
    model = load_model(tmp_path / "hf")
    save_model(model, tmp_path / "nanoseek")
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "nanoseek", dtype=torch.float32).eval()
    assert reference.config.model_type == model_type
    assert logit_gap(reference, model, sample_ids(VOCAB, seed=4)) <= TOLERANCE


def test_nanoseek_saved_checkpoint_greedy_generates_identically_in_transformers(tmp_path: Path) -> None:
    config = ModelConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(7)
    model = Transformer(config).eval()
    model.init_weights(std=0.3)  # a peaked distribution: greedy picks are far from ties
    save_model(model, tmp_path)
    prompt = sample_ids(VOCAB, batch=1, length=12, seed=8)
    ours = nanoseek_greedy(model, prompt, 32)
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    theirs = transformers_greedy(reference, prompt, 32)
    assert len(theirs) == 32
    assert ours == theirs
    assert len(set(ours)) > 3  # a real continuation, not one token repeated


def test_sharded_transformers_checkpoint_loads(tmp_path: Path) -> None:
    reference = hf_model("qwen2", dict(num_key_value_heads=2), seed=5)
    reference.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert logit_gap(reference, load_model(tmp_path), sample_ids(VOCAB, seed=6)) <= TOLERANCE


ROPE_VARIANTS = [
    {"rope_type": "linear", "factor": 3.0},
    {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64},
    {
        "rope_type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 128,
        "beta_fast": 16.0,
        "beta_slow": 2.0,
        "truncate": False,
    },
    {
        "rope_type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 128,
        "mscale": 0.707,
        "mscale_all_dim": 0.707,
    },
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128, "attention_factor": 1.5},
    {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
]


@pytest.mark.parametrize("scaling", ROPE_VARIANTS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_rotary_frequencies_match_transformers(scaling: dict) -> None:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from nanoseek.model.transformer import rotary_inv_freq

    hf_config = transformers.LlamaConfig(**BASE, rope_parameters={**scaling, "rope_theta": 50000.0})
    expected_inv_freq, expected_scale = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](hf_config, "cpu")
    ours = ModelConfig.from_hf(hf_config.to_dict())
    inv_freq, scale = rotary_inv_freq(ours)
    assert torch.equal(inv_freq, expected_inv_freq.float())
    assert scale == pytest.approx(expected_scale, rel=1e-12)


@pytest.mark.parametrize("which", ["random tiny", "embedded default"])
def test_checkpoint_with_tokenizer_loads_in_transformers(which: str, request: pytest.FixtureRequest) -> None:
    from nanoseek.model.loader import load_checkpoint

    path = request.getfixturevalue("tiny_checkpoint") if which == "random tiny" else DEFAULT_MODEL_DIR
    ours = load_checkpoint(path)
    reference = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    text = "def square(x):\n    return x * x  # 平方"
    ids = ours.tokenizer.encode(text)
    assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == ids
    assert logit_gap(reference, ours.model, torch.tensor([ids])) <= TOLERANCE


def test_the_embedded_default_model_ships_in_hugging_face_layout_within_30_mb() -> None:
    sizes = {path.name: path.stat().st_size for path in DEFAULT_MODEL_DIR.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    } <= set(sizes)
    assert sum(sizes.values()) <= 30e6
