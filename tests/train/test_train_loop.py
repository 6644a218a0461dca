"""The training loop through real runs of `nanoseek train` on the tiny recipe: learning, kill -9 resume, DDP.

nice -n 10 python3 -m pytest tests/train -x -q
"""

from __future__ import annotations

import json
import math
import os
import pickle
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
from nanoseek.train.optim import learning_rate
from nanoseek.train.packing import PackedRows, pack_documents, pack_stream
from tests.train.conftest import wait_for_log_lines

REPO = Path(__file__).resolve().parents[2]


def step_losses(run: Path, stage: str = "pretrain") -> list[float]:
    rows = [json.loads(line) for line in (run / stage / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(len(steps))), "log steps must be 0..n-1 without gaps"
    return [r["loss"] for r in steps]


def test_learning_rate_warms_up_then_decays_to_floor():
    config = LoopConfig(steps=100, batch_size=1, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    rates = [learning_rate(config, s) for s in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))
    assert learning_rate(config, 100) == pytest.approx(1e-4)


def test_packing_keeps_conversations_whole_and_pads_are_never_targets():
    documents = [([5] * 30, [0] * 10 + [1] * 20), ([6] * 40, [1] * 40), ([7] * 20, [0] * 20)]
    rows = pack_documents(documents, seq_len=63, pad_id=2)
    assert rows.tokens.shape == (2, 64)
    assert list(rows.tokens[0, :30]) == [5] * 30 and rows.tokens[0, 30] == 2  # the 40-token doc didn't fit
    assert list(rows.tokens[1, :60]) == [6] * 40 + [7] * 20
    assert rows.loss_mask[rows.tokens == 2].sum() == 0
    assert rows.target_tokens() == 20 + 40 - 1  # row 1's first token is never a target (no left context)
    stream = pack_stream([(list(range(100)), [1] * 100)], seq_len=10)
    assert len(stream) == 9 and stream.tokens[1, 0] == stream.tokens[0, -1] == 10


def test_batches_are_a_function_of_the_step():
    rows = PackedRows(np.arange(50 * 9, dtype=np.int32).reshape(50, 9), np.ones((50, 9), np.uint8))
    first = [rows.rows_for(step, 8, seed=3) for step in range(12)]
    again = [rows.rows_for(step, 8, seed=3) for step in range(12)]
    assert all((a == b).all() for a, b in zip(first, again))
    epoch = np.concatenate(first)[:50]
    assert sorted(epoch) == list(range(50)), "each epoch visits every row once"
    assert not (rows.rows_for(0, 8, seed=4) == first[0]).all()


def test_a_few_steps_lower_the_held_out_loss(tmp_path: Path):
    from nanoseek.model.config import ModelConfig
    from nanoseek.model.transformer import Transformer

    rng = np.random.default_rng(0)
    # A learnable language: each document counts up from a random start, modulo the vocabulary.
    docs = [((np.arange(40) + rng.integers(64)) % 64).tolist() for _ in range(120)]
    rows = pack_stream([(d, [1] * len(d)) for d in docs[:100]], seq_len=32)
    heldout = pack_stream([(d, [1] * len(d)) for d in docs[100:]], seq_len=32)
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_shape("tiny", vocab_size=64))
    model.init_weights()
    config = LoopConfig(steps=40, batch_size=8, lr=1e-2, warmup_steps=4, eval_every=40, eval_rows=16)
    from nanoseek.train.loop import evaluate

    before = evaluate(model, heldout, 16, 8, bf16=False)
    result = train(model, rows, heldout, config, tmp_path / "out", title="test")
    assert before > 3.5  # ~ln(64) for a random model
    assert result.eval_loss < 0.6 * before, (before, result.eval_loss)
    assert (tmp_path / "out" / "loss.png").stat().st_size > 1000
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert {"loss", "lr", "tok_per_s", "grad_norm"} <= set(log[0]) and log[-1]["eval_loss"] == result.eval_loss


@pytest.mark.timeout(1800)  # a hang guard: three tiny runs at nice 19 beside a training run take minutes
def test_resume_after_kill_9_reproduces_the_uninterrupted_loss_curve(run_dir: Path, tmp_path: Path, run_train):
    settings = ["--set", "pretrain.steps=60", "--set", "pretrain.checkpoint_every=7", "--set", "pretrain.eval_every=0"]
    uninterrupted = tmp_path / "uninterrupted"
    shutil.copytree(run_dir, uninterrupted)
    done = run_train(["pretrain", "--recipe", "tiny", "--out", str(uninterrupted), *settings], cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = step_losses(uninterrupted)
    assert len(expected) == 60

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "nanoseek.train.cli", "pretrain", "--recipe", "tiny", "--out", str(run_dir), *settings],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = run_dir / "pretrain" / "log.jsonl"
    wait_for_log_lines(process, log, 20)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    logged_at_kill = len(log.read_text().splitlines())
    assert 20 <= logged_at_kill < 60, "the run must be killed mid-way"
    checkpoint_step = torch.load(run_dir / "pretrain" / "checkpoint.pt", weights_only=False)["step"]
    assert checkpoint_step % 7 == 0 and 0 < checkpoint_step <= logged_at_kill

    resumed = run_train(["pretrain", "--recipe", "tiny", "--out", str(run_dir), *settings], cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert step_losses(run_dir) == expected  # bit for bit: same batches, same optimizer state
    from safetensors.torch import load_file

    a = load_file(uninterrupted / "pretrain" / "model" / "model.safetensors")
    b = load_file(run_dir / "pretrain" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Both sessions are on the run's wall clock: the killed one without its seconds.
    killed, finished = json.loads((run_dir / "wall_clock.json").read_text())[-2:]
    assert killed["stage"] == finished["stage"] == "pretrain"
    assert killed["seconds"] is None and finished["seconds"] > 0

    # Killed after the last checkpoint but before its export: rerunning the finished stage exports it.
    shutil.rmtree(run_dir / "pretrain" / "model")
    again = run_train(["pretrain", "--recipe", "tiny", "--out", str(run_dir), *settings], cwd=REPO)
    assert again.returncode == 0, again.stderr[-2000:]
    c = load_file(run_dir / "pretrain" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert json.loads((run_dir / "pretrain" / "model" / "generation_config.json").read_text())["trained_steps"] == 60


def test_two_process_ddp_equals_one_process_on_the_same_global_batch(run_dir: Path, tmp_path: Path, run_train):
    common = ["--set", "pretrain.steps=6", "--set", "pretrain.batch_size=2", "--set", "pretrain.eval_every=0"]
    single = tmp_path / "single"
    shutil.copytree(run_dir, single)
    one = run_train(
        ["pretrain", "--recipe", "tiny", "--out", str(single), *common, "--set", "pretrain.grad_accum=2"], cwd=REPO
    )
    assert one.returncode == 0, one.stderr[-2000:]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(29500 + os.getpid() % 1000),
            "-m",
            "nanoseek.train.cli",
            "pretrain",
            "--recipe",
            "tiny",
            "--out",
            str(run_dir),
            *common,
            "--set",
            "pretrain.grad_accum=1",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one_losses, two_losses = step_losses(single), step_losses(run_dir)
    assert len(one_losses) == len(two_losses) == 6
    assert np.allclose(one_losses, two_losses, rtol=1e-5, atol=1e-6), (one_losses, two_losses)
    assert not math.isclose(one_losses[0], one_losses[-1])  # it really trained
    from safetensors.torch import load_file

    a = load_file(single / "pretrain" / "model" / "model.safetensors")
    b = load_file(run_dir / "pretrain" / "model" / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


@pytest.mark.slow
def test_pretrain_then_sft_then_export_gives_a_servable_checkpoint(run_dir: Path, tmp_path: Path, run_train):
    from nanoseek.model.loader import load_checkpoint

    for stage in ("pretrain", "sft"):
        done = run_train([stage, "--recipe", "tiny", "--out", str(run_dir)], cwd=REPO)
        assert done.returncode == 0, done.stderr[-2000:]
    sft_log = [json.loads(line) for line in (run_dir / "sft" / "log.jsonl").read_text().splitlines()]
    assert any("eval_loss" in row for row in sft_log)
    dest = tmp_path / "default_model"
    dest.mkdir()
    (dest / "README.md").write_text("model card\n")
    exported = run_train(["export", "--recipe", "tiny", "--out", str(run_dir), "--to", str(dest)], cwd=REPO)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "README.md",
    } <= {p.name for p in dest.iterdir()}
    assert (dest / "README.md").read_text() == "model card\n"
    checkpoint = load_checkpoint(dest)
    assert checkpoint.model.dtype == torch.bfloat16 and checkpoint.chat_template
    assert json.loads((dest / "config.json").read_text())["model_type"] == "llama"
    missing = run_train(["sft", "--recipe", "tiny", "--out", str(tmp_path / "empty")], cwd=REPO)
    assert missing.returncode == 1 and "nanoseek train tokenizer" in missing.stderr


def test_resume_refuses_changed_settings_but_accepts_a_longer_run(tmp_path: Path):
    from nanoseek.model.config import ModelConfig
    from nanoseek.model.transformer import Transformer

    rows = pack_stream([(list(range(64)) * 4, [1] * 256)], seq_len=16)
    model = Transformer(ModelConfig.from_shape("tiny", vocab_size=64))
    config = LoopConfig(steps=2, batch_size=2, checkpoint_every=1)
    train(model, rows, None, config, tmp_path)
    with pytest.raises(ValueError, match="lr"):
        train(model, rows, None, LoopConfig(steps=2, batch_size=2, checkpoint_every=1, lr=1.0), tmp_path)
    longer = train(model, rows, None, LoopConfig(steps=4, batch_size=2, checkpoint_every=1), tmp_path)
    assert longer.step == 4 and len(step_losses_of(tmp_path)) == 4


class Planted:
    """A pickle that runs code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_resuming_never_runs_code_planted_in_a_checkpoint(tmp_path: Path):
    from nanoseek.model.config import ModelConfig
    from nanoseek.model.transformer import Transformer

    marker = tmp_path / "planted-code-ran"
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"step": 0, "config": {}, "payload": Planted(marker)}, run / "checkpoint.pt")
    rows = pack_stream([(list(range(64)) * 4, [1] * 256)], seq_len=16)
    model = Transformer(ModelConfig.from_shape("tiny", vocab_size=64))
    with pytest.raises(pickle.UnpicklingError):
        train(model, rows, None, LoopConfig(steps=2, batch_size=2, checkpoint_every=1), run)
    assert not marker.exists()


def test_a_checkpoint_with_numpy_rng_keys_as_an_array_still_resumes(tmp_path: Path):
    """Checkpoints written before the keys were saved as a tensor (a real run's, docs/runs/2026-12-06-smol) resume
    with the same continuation as the current format."""
    from nanoseek.model.config import ModelConfig
    from nanoseek.model.transformer import Transformer

    rows = pack_stream([(list(range(64)) * 4, [1] * 256)], seq_len=16)
    runs = {}
    for layout in ("tensor", "ndarray"):
        out = tmp_path / layout
        torch.manual_seed(0)
        model = Transformer(ModelConfig.from_shape("tiny", vocab_size=64))
        train(model, rows, None, LoopConfig(steps=2, batch_size=2, checkpoint_every=1), out)
        if layout == "ndarray":
            state = torch.load(out / "checkpoint.pt", weights_only=False)
            name, keys, *rest = state["rng"]["numpy"]
            state["rng"]["numpy"] = (name, keys.numpy(), *rest)
            torch.save(state, out / "checkpoint.pt")
        train(model, rows, None, LoopConfig(steps=4, batch_size=2, checkpoint_every=1), out)
        runs[layout] = step_losses_of(out)
    assert len(runs["ndarray"]) == 4 and runs["ndarray"] == runs["tensor"]


def step_losses_of(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]


def test_auto_precision_times_both_keeps_the_seed_and_sticks_on_resume(tmp_path: Path, monkeypatch):
    from nanoseek.model.config import ModelConfig
    from nanoseek.model.transformer import Transformer
    from nanoseek.train import throughput

    rows = pack_stream([(list(range(64)) * 4, [1] * 256)], seq_len=16)
    model = Transformer(ModelConfig.from_shape("tiny", vocab_size=64))
    probed = []
    real_probe = throughput.faster_precision

    def probe(*args, **kwargs):
        choice, rates = real_probe(*args, **kwargs)
        probed.append((choice, rates))
        return choice, rates

    monkeypatch.setattr("nanoseek.train.loop.faster_precision", probe)  # the loop's own reference
    weights_before = [p.detach().clone() for p in model.parameters()]
    auto = LoopConfig(steps=2, batch_size=2, checkpoint_every=1, bf16="auto", seed=5)
    first = train(model, rows, None, auto, tmp_path / "auto")
    [(choice, rates)] = probed
    assert set(rates) == {"fp32", "bf16"} and all(rate > 0 for rate in rates.values())
    assert choice == (rates["bf16"] > throughput.BF16_MARGIN * rates["fp32"])  # bf16 only when clearly faster
    logged = [json.loads(line) for line in (tmp_path / "auto" / "log.jsonl").read_text().splitlines()]
    assert {row["bf16"] for row in logged if "loss" in row} == {choice}

    # The probe trains a copy: the same run with that precision fixed gives the same losses.
    fixed = Transformer(ModelConfig.from_shape("tiny", vocab_size=64))
    with torch.no_grad():
        for param, value in zip(fixed.parameters(), weights_before):
            param.copy_(value)
    train(
        fixed,
        rows,
        None,
        LoopConfig(steps=2, batch_size=2, checkpoint_every=1, bf16=choice, seed=5),
        tmp_path / "fixed",
    )
    assert step_losses_of(tmp_path / "auto") == step_losses_of(tmp_path / "fixed")

    # A resumed auto run keeps the checkpoint's precision without timing again.
    longer = train(
        model, rows, None, LoopConfig(steps=3, batch_size=2, checkpoint_every=1, bf16="auto", seed=5), tmp_path / "auto"
    )
    assert len(probed) == 1 and longer.step == 3 and first.step == 2
    logged = [json.loads(line) for line in (tmp_path / "auto" / "log.jsonl").read_text().splitlines()]
    assert [row["bf16"] for row in logged if "loss" in row] == [choice] * 3
    with pytest.raises(ValueError, match="bf16"):
        LoopConfig(steps=1, batch_size=1, bf16="true")


@pytest.mark.timeout(1800)  # a hang guard, as above
def test_ctrl_c_saves_a_resumable_checkpoint_and_says_how_to_resume(run_dir: Path, run_train):
    # checkpoint_every beyond the run: the only checkpoint before the end is the one Ctrl-C makes
    settings = [
        "--set",
        "pretrain.steps=30",
        "--set",
        "pretrain.checkpoint_every=100",
        "--set",
        "pretrain.eval_every=0",
    ]
    command = ["pretrain", "--recipe", "tiny", "--out", str(run_dir), *settings]
    process = subprocess.Popen(
        [sys.executable, "-m", "nanoseek.train.cli", *command],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = run_dir / "pretrain" / "log.jsonl"
    wait_for_log_lines(process, log, 5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=1200)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "checkpoint is saved" in stderr and "Resume with the same command: nanoseek train pretrain" in stderr
    stopped_at = torch.load(run_dir / "pretrain" / "checkpoint.pt", weights_only=False)["step"]
    assert 5 <= stopped_at < 30 and len(step_losses(run_dir)) == stopped_at
    assert (run_dir / "pretrain" / "model" / "model.safetensors").exists()  # the stage's model is exported too

    resumed = run_train(command, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(step_losses(run_dir)) == 30
