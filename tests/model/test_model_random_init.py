"""Random checkpoints: deterministic, complete HF layout, real tokenizer; and the `nanoseek info` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nanoseek.model import info
from nanoseek.model.checkpoint import load_checkpoint
from nanoseek.model.random_init import make_random_checkpoint


def test_same_seed_same_files_other_seed_other_weights(tmp_path: Path, tiny_checkpoint: Path) -> None:
    again = make_random_checkpoint(tmp_path / "again", shape="tiny", vocab_size=512, seed=0)
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ):
        assert (again / name).read_bytes() == (tiny_checkpoint / name).read_bytes(), name
    other = make_random_checkpoint(
        tmp_path / "other",
        shape="tiny",
        vocab_size=512,
        seed=1,
        model_type="qwen2",
        tie_word_embeddings=False,
        num_hidden_layers=3,
    )
    first, second = load_checkpoint(tiny_checkpoint).model, load_checkpoint(other).model
    assert not torch.equal(first.embed_tokens.weight, second.embed_tokens.weight)
    assert second.config.model_type == "qwen2" and second.config.num_hidden_layers == 3
    assert second.lm_head.weight is not second.embed_tokens.weight


def test_parameter_count_matches_config(tiny_checkpoint: Path) -> None:
    model = load_checkpoint(tiny_checkpoint).model
    unique = {id(p): p for p in model.parameters()}.values()
    assert sum(p.numel() for p in unique) == model.config.num_parameters()


def test_tokenizer_is_a_trained_bpe_with_deepseek_specials(tiny_checkpoint: Path) -> None:
    tokenizer = load_checkpoint(tiny_checkpoint).tokenizer
    code = "def add(a, b):\n    return a + b\n"
    ids = tokenizer.encode(code)
    assert len(ids) < len(code.encode()) / 2  # merges were learned from the stdlib corpus
    assert tokenizer.decode(ids) == code
    assert tokenizer.encode("<｜User｜>") == [tokenizer.token_id("<｜User｜>")]


def test_info_prints_summary_and_greedy_sample(tiny_checkpoint: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nanoseek.cli", "info", "--model", str(tiny_checkpoint), "--max-tokens", "5"],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "model_type      llama (LlamaForCausalLM)" in out
    assert "parameters      106.82K (106,816)" in out
    assert "4 heads, 2 KV heads, head_dim 16" in out
    assert "512 tokenizer ids" in out
    assert "greedy sample   (5 tokens" in out


def test_info_names_a_bad_model_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert info.main(["--model", str(tmp_path / "missing")]) == 2
    assert f"no checkpoint directory at {tmp_path / 'missing'}" in capsys.readouterr().err


def test_info_summary_only(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert info.main(["--model", str(tiny_checkpoint), "--no-sample", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "bfloat16 in memory, float32 on disk" in out and "greedy sample" not in out
