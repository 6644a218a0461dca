"""`nanoseek merge`: mergekit configs on tiny random checkpoints, checked against tensors computed by hand.

Each merged model differs from the shared base in one or two tensors whose values are written out below, so the
expected result of every method is worked out in the comments, not recomputed by the code under test.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from nanoseek.model.loader import load_checkpoint
from nanoseek.train.merge import MergeConfigError, merge_models
from nanoseek.train.merge import main as merge_main

NORM = "model.norm.weight"  # 64 values, all 1.0 in a fresh model
O_PROJ = "model.layers.0.self_attn.o_proj.weight"  # [64, 64]


def variant(base: Path, dest: Path, edits: dict[str, dict[int, float] | torch.Tensor]) -> Path:
    """A copy of the checkpoint `base` with some tensors replaced whole, or some of their entries overwritten."""
    shutil.copytree(base, dest)
    tensors = load_file(dest / "model.safetensors")
    for name, change in edits.items():
        if isinstance(change, torch.Tensor):
            tensors[name] = change
        else:
            for index, value in change.items():
                tensors[name][index] = value
    save_file(tensors, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def run(tmp_path: Path, config: dict, name: str) -> dict[str, torch.Tensor]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return weights(merge_models(path, tmp_path / name, quiet=True))


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_checkpoint) -> Path:
    folder = tmp_path_factory.mktemp("merge") / "base"
    shutil.copytree(tiny_checkpoint, folder)
    tensors = {name: t.float() for name, t in weights(folder).items()}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def one_hot(column: int, scale: float = 1.0) -> list[float]:
    row = [0.0] * 64
    row[column] = scale
    return row


def test_linear_is_the_weighted_mean_of_every_tensor(base, tmp_path):
    a = variant(base, tmp_path / "a", {NORM: {0: 2.0, 1: -1.0}})
    b = variant(base, tmp_path / "b", {NORM: {0: 6.0, 1: 3.0}})
    config = {
        "merge_method": "linear",
        "models": [{"model": str(a), "parameters": {"weight": 1.0}}, {"model": str(b), "parameters": {"weight": 3.0}}],
        "dtype": "float32",
    }
    merged = run(tmp_path, config, "linear")
    # (1 * 2 + 3 * 6) / 4 = 5 and (1 * -1 + 3 * 3) / 4 = 2; untouched entries stay 1.
    assert merged[NORM][:3].tolist() == [5.0, 2.0, 1.0]
    for name, tensor in weights(base).items():
        if name != NORM:
            torch.testing.assert_close(merged[name], tensor, rtol=0, atol=1e-7)


def test_ties_trims_elects_a_sign_and_averages_the_agreeing_deltas(base, tmp_path):
    # Deltas from the base (all ones) on the first four of 64 entries; density 3/64 keeps each model's 3 largest.
    a = variant(base, tmp_path / "a", {NORM: {0: 1.5, 1: 0.5, 2: 1.25, 3: 1.0625}})  # +0.5 -0.5 +0.25 (+0.0625 trimmed)
    b = variant(
        base, tmp_path / "b", {NORM: {0: 0.75, 1: 1.375, 2: 1.125, 3: 1.625}}
    )  # -0.25 +0.375 (+0.125 trimmed) +0.625
    config = {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [
            {"model": str(a), "parameters": {"weight": 1.0, "density": 3 / 64}},
            {"model": str(b), "parameters": {"weight": 1.0, "density": 3 / 64}},
        ],
        "dtype": "float32",
    }
    merged = run(tmp_path, config, "ties")
    # entry 0: sum +0.5 - 0.25 > 0 -> + wins, only a agrees: +0.5.  entry 1: -0.5 + 0.375 < 0 -> only a: -0.5.
    # entry 2: b's +0.125 was trimmed, a alone: +0.25.  entry 3: a's +0.0625 was trimmed, b alone: +0.625.
    expected = [1.5, 0.5, 1.25, 1.625] + [1.0] * 60
    torch.testing.assert_close(merged[NORM], torch.tensor(expected), rtol=0, atol=1e-6)


def o_proj_with_first_row(column: int) -> torch.Tensor:
    """An o_proj weight that is zero but for a single 1.0 in row 0."""
    weight = torch.zeros(64, 64)
    weight[0, column] = 1.0
    return weight


@pytest.mark.parametrize(
    ("t", "first_row", "norm"),
    [
        (0.0, one_hot(0), 1.0),
        (1.0, one_hot(1), 2.0),
        # mergekit interpolates each tensor as one vector. The o_proj weights are orthogonal unit vectors: the angle
        # is pi/2 and both coefficients sin(pi/4) / sin(pi/2) = sqrt(1/2). The norm weights (all 1 vs all 2) are
        # collinear, where SLERP falls back to linear interpolation: (1 + 2) / 2.
        (0.5, [math.sqrt(0.5), math.sqrt(0.5)] + [0.0] * 62, 1.5),
    ],
)
def test_slerp_interpolates_each_tensor_on_the_sphere(base, tmp_path, t, first_row, norm):
    a = variant(base, tmp_path / "a", {O_PROJ: o_proj_with_first_row(0), NORM: torch.ones(64)})
    b = variant(base, tmp_path / "b", {O_PROJ: o_proj_with_first_row(1), NORM: torch.full((64,), 2.0)})
    config = {
        "merge_method": "slerp",
        "base_model": str(a),
        "models": [{"model": str(a)}, {"model": str(b)}],
        "parameters": {"t": t},
        "dtype": "float32",
    }
    merged = run(tmp_path, config, "slerp")
    torch.testing.assert_close(merged[O_PROJ][0], torch.tensor(first_row), rtol=0, atol=1e-6)
    assert not merged[O_PROJ][1:].any()
    torch.testing.assert_close(merged[NORM], torch.full((64,), norm), rtol=0, atol=1e-6)


def test_merged_checkpoint_loads_in_nanoseek_and_replaces_the_previous_one(base, tmp_path):
    config = {"merge_method": "linear", "models": [{"model": str(base), "parameters": {"weight": 1.0}}]}
    path = tmp_path / "identity.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "merged"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier merge")
    assert merge_main([str(path), str(out), "--quiet"]) == 0  # `nanoseek merge CONFIG.yaml OUT_DIR`
    assert not (out / "stale.txt").exists()
    checkpoint = load_checkpoint(out, dtype="float32")
    original = load_checkpoint(base, dtype="float32")
    ids = torch.tensor([[5, 9, 17, 33]])
    torch.testing.assert_close(checkpoint.model(ids), original.model(ids))
    assert checkpoint.tokenizer.chat_template == original.tokenizer.chat_template
    assert not list(tmp_path.glob(".merged.merge-*"))


def test_missing_model_folder_is_refused_before_merging(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"merge_method": "linear", "models": [{"model": "runs/no-such-model"}]}))
    with pytest.raises(MergeConfigError, match="runs/no-such-model"):
        merge_models(path, tmp_path / "out")
    result = subprocess.run(
        [sys.executable, "-m", "nanoseek.cli", "merge", str(path), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,  # a few seconds of CPU (mergekit's imports), but at nice 19 on a crowded machine it waited 120 s
    )
    assert result.returncode == 2
    assert "not a local folder" in result.stderr
    assert not (tmp_path / "out").exists()
