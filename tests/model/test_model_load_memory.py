"""Loading a checkpoint in fp32 or bf16 leaves one copy of its weights resident, and never holds two whole ones.

Measured in a fresh process each (a process's resident set is what a server pays), on a random Llama of ~100 MB
in fp32, written as a Q8_0 GGUF file (dequantized at load, as `--dtype float32|bfloat16` does with SmolLM2's
Q4_1 file) and as a Hugging Face folder. Before checkpoint.empty_weights, the process kept 2.0-2.6x the weights
(freed temporaries left in glibc's heap, the folder's safetensors mapping alive) and peaked at 2.5x.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType
from gguf.quants import quantize

from nanoseek.model.checkpoint import save_model
from nanoseek.model.gguf_checkpoint import gguf_architecture, gguf_model_metadata, gguf_tensor_arrays, write_gguf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from random_models import random_model  # noqa: E402

MEASURE = """
import gc, json, sys
import torch
from nanoseek.model.loader import load_model

def status():
    with open("/proc/self/status") as lines:
        return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in lines) if k in ("VmRSS", "VmHWM")}

gc.collect()
before = status()
model = load_model(sys.argv[1], dtype=sys.argv[2])
gc.collect()
after = status()
weights = sum(p.numel() * p.element_size() for p in {p.data_ptr(): p for p in model.parameters()}.values())
print(json.dumps({"before": before["VmRSS"], "steady": after["VmRSS"], "peak": after["VmHWM"], "weights": weights}))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    # 8k vocabulary, 6 layers of hidden 512: 26M parameters, tied embeddings, as SmolLM2's layout.
    model = random_model(
        std=0.02,
        vocab_size=8192,
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
    )
    root = tmp_path_factory.mktemp("load_memory")
    blocks = {
        name: (quantize(array, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0)
        if array.ndim == 2
        else (array, None)
        for name, array in gguf_tensor_arrays(model).items()
    }
    gguf = write_gguf(root / "model.gguf", gguf_architecture(model.config), gguf_model_metadata(model.config), blocks)
    return {"gguf": gguf, "folder": save_model(model, root / "folder")}


@pytest.mark.parametrize("source", ["gguf", "folder"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_loaded_weights_are_resident_once(files, source, dtype):
    path = files[source]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), dtype], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    weights, before = measured["weights"], measured["before"]
    file_bytes = sum(f.stat().st_size for f in ([path] if path.is_file() else path.iterdir()))
    # Steady: the weights once, plus a little (the loader's last temporaries, Python objects).
    assert measured["steady"] - before <= 1.2 * weights + (8 << 20), measured
    # Peak: below two whole copies (the file's pages count while it is mapped).
    assert measured["peak"] - before <= 2 * weights + file_bytes, measured
