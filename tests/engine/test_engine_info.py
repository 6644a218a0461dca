"""`nanoseek info`: a checkpoint's summary and a greedy sample through the engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nanoseek.engine import info


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
    assert "decode step     native C step, fp32\n" in out  # the test machines have a C compiler


def test_info_names_a_bad_model_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert info.main(["--model", str(tmp_path / "missing")]) == 2
    assert f"no checkpoint directory at {tmp_path / 'missing'}" in capsys.readouterr().err


def test_info_summary_only(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert info.main(["--model", str(tiny_checkpoint), "--no-sample", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "bfloat16 in memory, float32 on disk" in out and "greedy sample" not in out
