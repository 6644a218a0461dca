"""Random-initialised checkpoints with a real tokenizer, for tests and benchmarks (nothing is downloaded).

`make_random_checkpoint` trains a byte-level BPE tokenizer (nanoseek.tokenizer, DeepSeek special tokens and
chat template) on a fixed set of Python standard-library sources, builds a model of a named shape from
config.SHAPES with that vocabulary, initialises it from `seed`, and saves both in Hugging Face layout, so the
result loads in nanoseek (`load_checkpoint`) and in transformers alike.

    python -m nanoseek.model.random_init /tmp/tiny --shape tiny --vocab-size 512
"""

from __future__ import annotations

import argparse
import os
import sysconfig
from pathlib import Path
from typing import Any

import torch

from nanoseek.model.checkpoint import save_checkpoint
from nanoseek.model.config import SHAPES, SUPPORTED_MODEL_TYPES, ModelConfig
from nanoseek.model.transformer import Transformer
from nanoseek.tokenizer.tokenizer import Tokenizer

# Plain, stable modules that every CPython 3.11+ ships: ~250 KB of code, docstrings and comments.
CORPUS_MODULES = (
    "textwrap.py",
    "string.py",
    "json/decoder.py",
    "json/encoder.py",
    "heapq.py",
    "bisect.py",
    "contextlib.py",
    "functools.py",
    "fractions.py",
    "shlex.py",
    "difflib.py",
)
# A little non-ASCII text so that multi-byte characters get merges of their own, as in real chat data.
EXTRA_TEXT = (
    "你好，世界！这是一个测试。深度思考模式。 Grüße, naïve café — “quotes” and emoji 🙂🚀.\n"
    "def add(a: int, b: int) -> int:\n    return a + b\n"
)


def stdlib_corpus() -> list[str | Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files: list[str | Path] = [stdlib / name for name in CORPUS_MODULES if (stdlib / name).is_file()]
    if not files:
        raise FileNotFoundError(f"none of the corpus modules {CORPUS_MODULES} exist under {stdlib}")
    return files + [EXTRA_TEXT] * 20


def make_random_checkpoint(
    path: str | os.PathLike[str],
    shape: str = "tiny",
    vocab_size: int = 512,
    seed: int = 0,
    *,
    model_type: str | None = None,
    tie_word_embeddings: bool = True,
    init_std: float = 0.02,
    dtype: str = "float32",
    **overrides: Any,
) -> Path:
    """Save a random model of `shape` plus a BPE tokenizer with about `vocab_size` ids under `path`.

    The model's vocab_size equals the tokenizer's actual size (the trainer may stop short of `vocab_size`
    on a small corpus). `model_type` None keeps the shape's (llama unless the shape names one). `overrides` go to ModelConfig (e.g. num_hidden_layers=4, max_position_embeddings=…).
    The same arguments give the same files, byte for byte."""

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPES)}")
    tokenizer = Tokenizer.train(stdlib_corpus(), vocab_size)
    config = ModelConfig.from_shape(
        shape,
        tokenizer.vocab_size,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
        **({"model_type": model_type} if model_type else {}),
        **overrides,
    )
    with torch.random.fork_rng():  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        model = Transformer(config)
        model.init_weights(std=init_std)
    return save_checkpoint(model.eval(), tokenizer, path, dtype=dtype)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanoseek.model.random_init", description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="output directory")
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-type", default=None, choices=list(SUPPORTED_MODEL_TYPES), help="default: the shape's")
    parser.add_argument("--untied", action="store_true", help="separate output projection")
    parser.add_argument("--init-std", type=float, default=0.02)
    args = parser.parse_args(argv)
    out = make_random_checkpoint(
        args.path,
        args.shape,
        args.vocab_size,
        args.seed,
        model_type=args.model_type,
        tie_word_embeddings=not args.untied,
        init_std=args.init_std,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
