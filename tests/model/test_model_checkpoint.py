"""Checkpoint I/O: round trips in every dtype, atomic saves, and clear errors for broken checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from random_models import random_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from nanoseek.model import checkpoint as checkpoint_module
from nanoseek.model.checkpoint import CheckpointError, save_model
from nanoseek.model.loader import load_checkpoint, load_model
from nanoseek.model.transformer import Transformer


def small_model(**overrides: object) -> Transformer:
    """Shapes the error messages below name (hidden 32, intermediate 48, 16 key rows)."""
    return random_model(std=0.1, vocab_size=128, hidden_size=32, intermediate_size=48, **overrides)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    save_model(small_model(tie_word_embeddings=False, model_type="qwen2"), tmp_path / "ckpt")
    return tmp_path / "ckpt"


def assert_same_weights(a: Transformer, b: Transformer) -> None:
    state_b = b.state_dict()
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, state_b[name]), name


def test_round_trip_keeps_hf_names_and_every_weight(saved: Path) -> None:
    model = small_model(tie_word_embeddings=False, model_type="qwen2")
    with safe_open(saved / "model.safetensors", framework="pt") as f:
        names = set(f.keys())
        assert f.metadata() == {"format": "pt"}
    assert {
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.bias",
        "model.layers.1.mlp.gate_proj.weight",
        "model.layers.1.mlp.up_proj.weight",
        "lm_head.weight",
        "model.embed_tokens.weight",
        "model.norm.weight",
    } <= names
    assert not any("qkv" in n or "gate_up" in n for n in names)
    assert "model.layers.0.self_attn.o_proj.bias" not in names  # qwen2 has no o_proj bias
    loaded = load_model(saved)
    assert loaded.config == model.config
    assert_same_weights(model, loaded)
    # Decode layout (transformer.use_column_major_weights) survives loading; files stay row-major HF tensors.
    assert loaded.lm_head.weight.t().is_contiguous() and loaded.layers[0].mlp.down_proj.weight.t().is_contiguous()
    assert not [p for p in saved.iterdir() if p.name.endswith(".tmp")]
    assert json.loads((saved / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_round_trip(tmp_path: Path, dtype: str) -> None:
    model = small_model(tie_word_embeddings=True)
    save_model(model, tmp_path, dtype=dtype)
    stored = load_file(tmp_path / "model.safetensors")
    assert {t.dtype for t in stored.values()} == {getattr(torch, dtype)}
    assert "lm_head.weight" not in stored  # tied: transformers leaves it out too
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == dtype
    as_stored = load_model(tmp_path)
    assert as_stored.dtype == getattr(torch, dtype)
    assert as_stored.lm_head.weight is as_stored.embed_tokens.weight
    upcast = load_model(tmp_path, dtype=torch.float32)
    expected = model.to(getattr(torch, dtype)).float()
    assert_same_weights(expected, upcast)


def rewrite_weights(directory: Path, change) -> None:
    tensors = load_file(directory / "model.safetensors")
    change(tensors)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def test_missing_tensor_is_named(saved: Path) -> None:
    rewrite_weights(saved, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"'model\.layers\.1\.mlp\.up_proj\.weight' is missing"):
        load_model(saved)


def test_wrong_shape_is_named(saved: Path) -> None:
    rewrite_weights(saved, lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": torch.zeros(8, 32)}))
    with pytest.raises(CheckpointError, match=r"k_proj\.weight' has shape \(8, 32\).*\(16, 32\)"):
        load_model(saved)


def test_config_that_disagrees_with_weights_is_named(saved: Path) -> None:
    config = json.loads((saved / "config.json").read_text())
    config["intermediate_size"] = 64
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"gate_proj\.weight' has shape \(48, 32\).*\(64, 32\)"):
        load_model(saved)


def test_unexpected_tensor_is_named(saved: Path) -> None:
    rewrite_weights(saved, lambda t: t.update({"model.layers.2.mlp.up_proj.weight": torch.zeros(48, 32)}))
    with pytest.raises(CheckpointError, match=r"does not have: model\.layers\.2\.mlp\.up_proj\.weight"):
        load_model(saved)


@pytest.mark.parametrize("model_type", ["gpt2", None])
def test_unknown_model_type_is_named(saved: Path, model_type: str | None) -> None:
    config = json.loads((saved / "config.json").read_text())
    config["model_type"] = model_type
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"unknown model_type {model_type!r}.*llama, qwen2"):
        load_model(saved)


@pytest.mark.parametrize("keep_fraction", [0.5, 0.999, 0.0001])
def test_truncated_safetensors_is_named(saved: Path, keep_fraction: float) -> None:
    weights = saved / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*(truncated|corrupt)"):
        load_model(saved)


def test_missing_files_and_bad_json_are_named(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint directory at"):
        load_model(tmp_path / "does-not-exist")
    with pytest.raises(CheckpointError, match="is a file"):
        load_model(saved / "config.json")
    with pytest.raises(CheckpointError, match="unsupported dtype 'float64'"):
        load_model(saved, dtype="float64")
    (saved / "model.safetensors").rename(saved / "elsewhere.safetensors")
    with pytest.raises(CheckpointError, match="neither model.safetensors nor"):
        load_model(saved)
    (saved / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_model(saved)


def test_hub_id_without_a_reachable_hub_is_a_clear_error(tmp_path: Path) -> None:
    # A real subprocess, so that huggingface_hub reads HF_HUB_OFFLINE fresh and nothing touches the network.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    code = (
        "from nanoseek.model.checkpoint import CheckpointError\n"
        "from nanoseek.model.loader import load_model\n"
        "try:\n    load_model('nanoseek-test/no-such-model')\n"
        "except CheckpointError as e:\n    print('ERROR:', e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "ERROR: 'nanoseek-test/no-such-model' is not a local directory" in result.stdout
    assert "could not be fetched" in result.stdout


def test_a_missing_local_path_is_not_fetched_as_a_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23: `runs/sft` (a run not trained yet) went to the hub as the id "runs/sft"."""
    import huggingface_hub

    fetched: list[str] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **_: fetched.append(repo_id))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(CheckpointError, match="^no checkpoint directory at runs/sft "):
        load_model("runs/sft")
    assert fetched == []


def test_failed_save_leaves_the_previous_checkpoint_intact(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = (saved / "model.safetensors").read_bytes()

    def failing_save_file(tensors: dict, filename: str, metadata: dict) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", failing_save_file)
    with pytest.raises(OSError, match="disk full"):
        save_model(small_model(tie_word_embeddings=False, model_type="qwen2", num_hidden_layers=1), saved)
    assert (saved / "model.safetensors").read_bytes() == before
    assert not [p for p in saved.iterdir() if p.name.endswith(".tmp")]
    assert load_model(saved).config.num_hidden_layers == 2


def test_tiny_checkpoint_loads_with_tokenizer_and_template(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    config = ckpt.model.config
    assert config.vocab_size == ckpt.tokenizer.vocab_size
    assert (config.bos_token_id, config.eos_token_id) == (ckpt.tokenizer.bos_id, ckpt.tokenizer.eos_id)
    assert ckpt.generation_config["eos_token_id"] == ckpt.tokenizer.eos_id
    assert ckpt.chat_template and "<｜Assistant｜>" in ckpt.chat_template
    ids = ckpt.tokenizer.encode(ckpt.tokenizer.render_chat([{"role": "user", "content": "hi"}]))
    with torch.no_grad():
        logits = ckpt.model(torch.tensor([ids]), last_only=True)
    assert logits.shape == (1, 1, config.vocab_size) and torch.isfinite(logits).all()
    copy = tmp_path / "copy"
    shutil.copytree(tiny_checkpoint, copy)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        load_checkpoint(copy)
