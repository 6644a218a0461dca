"""Random checkpoints: deterministic, complete HF layout, real tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from nanoseek.model.loader import load_checkpoint
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
