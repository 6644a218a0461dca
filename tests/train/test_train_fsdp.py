"""Fully sharded training (FSDP2, nanoseek/train/sharded.py) through real runs of `nanoseek train` on the tiny recipe:
2 processes under torchrun (gloo) equal 1 process, and a 2-process run killed with kill -9 resumes from its
sharded checkpoint on 1 process (and on 2) with the uninterrupted run's losses.

nice -n 19 python3 -m pytest tests/train/test_train_fsdp.py -x -q
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nanoseek.train.config import LoopConfig
from nanoseek.train.loop import train
from nanoseek.train.packing import pack_stream
from nanoseek.train.sharded import DCP_DIR, META_NAME, latest_checkpoint
from tests.train.conftest import wait_for_log_lines

REPO = Path(__file__).resolve().parents[2]
STEPS = 40
SETTINGS = [
    *("--set", f"pretrain.steps={STEPS}", "--set", "pretrain.batch_size=2", "--set", "pretrain.eval_every=0"),
    *("--set", "pretrain.checkpoint_every=5", "--set", 'pretrain.sharding="fsdp"'),
]


def step_losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "pretrain" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(len(steps))), "log steps must be 0..n-1 without gaps"
    return [r["loss"] for r in steps]


def torchrun(out: Path, grad_accum: int) -> list[str]:
    return [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"),
        *("--master_port", str(29500 + (os.getpid() + grad_accum * 7) % 1000)),
        *("-m", "nanoseek.train.cli", "pretrain", "--recipe", "tiny", "--out", str(out), *SETTINGS),
        *("--set", f"pretrain.grad_accum={grad_accum}"),
    ]


def weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "pretrain" / "model" / "model.safetensors")


@pytest.mark.timeout(1800)  # a hang guard: three tiny runs at nice 19 beside a training run take minutes
def test_two_sharded_processes_equal_one_and_resume_on_one_after_kill_9(run_dir: Path, tmp_path: Path, run_train):
    # One process, the same global batch of 4 rows as 2 processes x 2 rows: the reference.
    single = tmp_path / "single"
    shutil.copytree(run_dir, single)
    one = run_train(
        ["pretrain", "--recipe", "tiny", "--out", str(single), *SETTINGS, "--set", "pretrain.grad_accum=2"], cwd=REPO
    )
    assert one.returncode == 0, one.stderr[-2000:]
    expected = step_losses(single)
    assert len(expected) == STEPS and expected[-1] < expected[0] - 0.5  # it really trained

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        torchrun(run_dir, grad_accum=1),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # kill -9 reaches torchrun and both of its workers
    )
    log = run_dir / "pretrain" / "log.jsonl"
    wait_for_log_lines(process, log, 12)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    logged_at_kill = len(log.read_text().splitlines())
    assert 12 <= logged_at_kill < STEPS, "the run must be killed mid-way"
    checkpoint = latest_checkpoint(run_dir / "pretrain")
    shards = sorted(p.name for p in checkpoint.glob("*.distcp"))
    assert len(shards) == 2, shards  # each process wrote its own shards
    killed_at = torch.load(checkpoint / META_NAME, weights_only=False)["step"]
    assert killed_at % 5 == 0 and 0 < killed_at <= logged_at_kill
    # What the two processes logged before the kill is the one process's curve.
    assert np.allclose(step_losses(run_dir)[:killed_at], expected[:killed_at], rtol=1e-5, atol=1e-6)

    # Resharded: the 2-process checkpoint resumes on 1 process (twice the accumulation, the same global batch).
    resharded = tmp_path / "resharded"
    shutil.copytree(run_dir, resharded)
    resumed = run_train(
        ["pretrain", "--recipe", "tiny", "--out", str(resharded), *SETTINGS, "--set", "pretrain.grad_accum=2"], cwd=REPO
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    losses = step_losses(resharded)
    assert len(losses) == STEPS
    assert np.isclose(losses[killed_at], expected[killed_at], rtol=1e-5, atol=1e-6)  # the next step's loss
    assert np.allclose(losses, expected, rtol=1e-5, atol=1e-6), (losses, expected)

    # And on 2 processes again, to the end: 40 steps of sharded training equal the one process's.
    finished = subprocess.run(
        torchrun(run_dir, grad_accum=1), cwd=REPO, env=env, capture_output=True, text=True, timeout=1200
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert np.allclose(step_losses(run_dir), expected, rtol=1e-5, atol=1e-6)
    reference = weights(single)
    for run in (run_dir, resharded):  # the exported model is the whole one, gathered from the shards
        exported = weights(run)
        assert max((reference[k] - exported[k]).abs().max().item() for k in reference) < 1e-5


def tiny_run() -> tuple:
    from nanoseek.model.config import ModelConfig
    from nanoseek.model.transformer import Transformer

    rows = pack_stream([(list(range(64)) * 4, [1] * 256)], seq_len=16)
    return Transformer(ModelConfig.from_shape("tiny", vocab_size=64)), rows


def test_a_sharded_checkpoint_refuses_another_global_batch_or_the_other_format(tmp_path: Path):
    model, rows = tiny_run()
    train(model, rows, None, LoopConfig(steps=2, batch_size=2, checkpoint_every=1, sharding="fsdp"), tmp_path)
    assert (tmp_path / DCP_DIR / "latest").read_text().strip() == "step-00000002"
    assert [p.name for p in (tmp_path / DCP_DIR).glob("step-*")] == ["step-00000002"]  # older steps deleted
    with pytest.raises(ValueError, match="global batch of 2 rows, this run has 4"):
        train(model, rows, None, LoopConfig(steps=3, batch_size=2, grad_accum=2, sharding="fsdp"), tmp_path)
    with pytest.raises(ValueError, match="sharding=fsdp"):
        train(model, rows, None, LoopConfig(steps=3, batch_size=2), tmp_path)
    longer = train(model, rows, None, LoopConfig(steps=3, batch_size=2, checkpoint_every=1, sharding="fsdp"), tmp_path)
    assert longer.step == 3


def test_sharding_must_be_ddp_or_fsdp():
    with pytest.raises(ValueError, match="sharding"):
        LoopConfig(steps=1, batch_size=1, sharding="zero3")
