"""Fixtures for the training tests: a tiny run directory (tokenizer + packed pretraining rows) built once.

Building the tiny recipe's data takes a few seconds (BPE on a little stdlib text, FIM and Q&A draws); the
tests that train copy it into their own run directories instead of rebuilding it each time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def wait_for_log_lines(process: subprocess.Popen, log: Path, lines: int) -> None:
    """Until the run in `process` has written `lines` lines to `log`, however slowly a loaded machine runs it (at
    nice 19 beside a training run, the 2-3 minutes these waits once allowed were not always enough to start
    torch): the test's own timeout stops a run that hangs. Fails if the run ends first, leaving nothing to
    interrupt mid-way."""
    while not log.exists() or len(log.read_text().splitlines()) < lines:
        assert process.poll() is None, f"the run ended (exit {process.returncode}) before it logged {lines} lines"
        time.sleep(0.01)


def _run_train(args: list[str], cwd: Path, timeout: float = 1200) -> subprocess.CompletedProcess:
    # `timeout` stops a hung run, no speed check: at nice 19 beside a training run, starting torch alone can take
    # minutes
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "nanoseek.train.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def run_train():
    """Run `python -m nanoseek.train.cli ARGS` in a real subprocess (one thread: on a crowded 2-core machine
    two threads wait on each other's barriers and run ~3x slower, see BENCHMARKS.md)."""
    return _run_train


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory holding the tiny recipe's tokenizer and packed pretraining rows (not yet trained)."""
    from nanoseek.train.recipe import load_recipe
    from nanoseek.train.stages import build_rows, load_tokenizer, tokenizer_stage

    out = tmp_path_factory.mktemp("tiny_run")
    recipe = load_recipe("tiny")
    tokenizer_stage(recipe, out)
    train_rows, eval_rows = build_rows("pretrain", recipe, load_tokenizer(out), out)
    (out / "pretrain").mkdir()
    train_rows.save(out / "pretrain" / "train_rows.npz")
    eval_rows.save(out / "pretrain" / "eval_rows.npz")
    return out


@pytest.fixture
def run_dir(tiny_data: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny run directory for one test."""
    target = tmp_path / "run"
    shutil.copytree(tiny_data, target)
    return target
