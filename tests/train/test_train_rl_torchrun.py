"""The RL stage under torchrun (nanoseek/train/rl.py, data parallel): `nanoseek train rl` on 2 processes (gloo)
equals 1 process within float tolerance, and its checkpoint resumes on 1 process to the one-process run's
weights. The reward is one a random tiny model learns (tests/train/rl_stage_worker.py), so every step updates.

nice -n 19 python3 -m pytest tests/train/test_train_rl_torchrun.py -x -q
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.rl_stage_worker import LEARNING_RATE, train_rl_stage

REPO = Path(__file__).resolve().parents[2]


def new_run(tiny_checkpoint: Path, run: Path) -> Path:
    """A run directory whose SFT stage is the tiny random checkpoint."""
    shutil.copytree(tiny_checkpoint, run / "sft" / "model")
    (run / "tokenizer").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_checkpoint / name, run / "tokenizer" / name)
    return run


def log_rows(run: Path) -> list[dict]:
    """The RL log without its wall-clock fields (the one thing two runs may not share)."""
    rows = [json.loads(line) for line in (run / "rl" / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in rows]


def exported(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "rl" / "model" / "model.safetensors")


def assert_close_rows(got: list[dict], expected: list[dict]) -> None:
    assert [sorted(r) for r in got] == [sorted(r) for r in expected]
    for row, reference in zip(got, expected):
        for key, value in reference.items():
            assert row[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (key, row, reference)


def assert_close_weights(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Equal to float tolerance, as AdamW makes it: a weight moves by about the learning rate a step whatever its
    gradient's size, so where a gradient is near zero its summation-order noise (processes sum their shares)
    shows at a fraction of the rate (measured: up to 1.4e-3 of it, in 0.4% of the weights; 1e-6 elsewhere)."""
    assert got.keys() == expected.keys()
    assert max((got[k] - expected[k]).abs().max().item() for k in expected) < 1e-2 * LEARNING_RATE


@pytest.mark.timeout(900)
def test_rl_on_two_processes_equals_one_and_resumes_on_one(tiny_checkpoint: Path, tmp_path: Path):
    # One process, 2 steps then resumed to 4: the reference.
    single = new_run(tiny_checkpoint, tmp_path / "single")
    assert train_rl_stage(single, 2) == 0
    after_two, rows_two = exported(single), log_rows(single)
    assert train_rl_stage(single, 4) == 0
    after_four, rows_four = exported(single), log_rows(single)
    start = load_file(tiny_checkpoint / "model.safetensors")
    assert max((after_two[k] - start[k]).abs().max().item() for k in start) > 1e-3, "RL never moved the weights"
    assert [r["step"] for r in rows_four if "reward" in r] == [0, 1, 2, 3]
    assert [r["step"] for r in rows_four if "heldout_accuracy" in r] == [0, 2, 4]

    # Two processes, each sampling half of every step's prompts, for the same 2 steps.
    split = new_run(tiny_checkpoint, tmp_path / "split")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"),
        *("--master_port", str(29500 + os.getpid() % 1000 + 17)),
        *("-m", "tests.train.rl_stage_worker", str(split), "2"),
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_close_rows(log_rows(split), rows_two)
    assert all(r["groups_learning"] > 0 for r in rows_two if "reward" in r)  # both steps really updated
    assert_close_weights(exported(split), after_two)

    # The 2-process checkpoint goes on in 1 process: the same next steps and weights as the one-process run.
    assert train_rl_stage(split, 4) == 0
    assert_close_rows(log_rows(split), rows_four)
    assert_close_weights(exported(split), after_four)
