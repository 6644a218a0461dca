"""Checkpoint files on disk: atomic writes (a reader sees the old file or the complete new one, never half of
it) and JSON objects read with an error that names the file.

    from nanoseek.fileio import atomic_path, read_json_object, write_json_atomic
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_json_atomic(directory / "config.json", {"model_type": "llama"})
    config = read_json_object(directory / "config.json", error=CheckpointError)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` to write; when the block succeeds it is synced to disk and renamed over
    `path`, when it fails it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # After the write: mkstemp makes 0600 files, and some writers (safetensors) replace the file with
        # another 0600 one. Checkpoints are meant to be shared and shipped.
        os.chmod(tmp, 0o644)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json_object(path: Path, error: type[Exception]) -> dict[str, Any]:
    """The JSON object in `path`; `error` (the caller's exception class) says what is wrong with the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object")
    return data


def append_to_json_list(path: Path, item: Any) -> list[Any]:
    """Add `item` to the JSON list in `path` (created when missing), rewritten atomically; returns the list."""
    items = json.loads(path.read_text()) if path.exists() else []
    items.append(item)
    write_json_atomic(path, items)
    return items


def utc_timestamp(seconds: float | None = None) -> str:
    """ISO 8601 UTC time (now, or `seconds` since the epoch) for the JSON logs written with these helpers."""
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
