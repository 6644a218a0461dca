"""The file-level train/held-out split of the Python standard library, shared by training and evaluation.

Training (tokenizer, pretraining corpus, code SFT) reads only `stdlib_files("train")`; the FIM suite masks
code in `stdlib_files("heldout")` and in `third_party_files()`, installed packages nanoseek never trains on.
A file's split is a hash of its path relative to the stdlib root, so it is the same on every machine with
the same Python minor version:

    python -m nanoseek.tasks.stdlib_split        # prints the counts and a few held-out files
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sysconfig
from functools import lru_cache
from pathlib import Path

from nanoseek.tasks.item import VALUE_SPLITS, Split, check_split

HELDOUT_PERCENT = 10
# Test suites, IDLE's and 2to3's tests, generated codec tables and build config carry little code worth learning.
EXCLUDED_TOP_DIRS = {"test", "idlelib", "encodings", "site-packages", "dist-packages", "__pycache__", "__phello__"}
EXCLUDED_ANY_DIRS = {"test", "tests", "idle_test", "__pycache__"}
# Pure-Python packages that nanoseek depends on (so they are always installed) and never trains on.
THIRD_PARTY_PACKAGES = ("jinja2", "tqdm", "httpx", "platformdirs", "yaml", "markupsafe")
THIRD_PARTY_TAG = "third-party:"


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def split_of_file(relative_path: str) -> Split:
    digest = hashlib.sha256(f"stdlib:{relative_path}".encode()).hexdigest()
    return "heldout" if int(digest[:8], 16) % 100 < HELDOUT_PERCENT else "train"


@lru_cache(maxsize=1)
def _all_stdlib_files() -> tuple[tuple[str, Path], ...]:
    """Every stdlib source file outside the excluded folders, which are never entered: site-packages holds far
    more files than the stdlib (walking it took minutes on a busy machine)."""
    root = stdlib_root()
    found = []
    for directory, subdirectories, files in os.walk(root):
        top = Path(directory) == root
        subdirectories[:] = [
            name
            for name in subdirectories
            if name not in EXCLUDED_ANY_DIRS and not (top and (name in EXCLUDED_TOP_DIRS or name.startswith("config-")))
        ]
        found += [Path(directory) / name for name in files if name.endswith(".py")]
    return tuple((path.relative_to(root).as_posix(), path) for path in sorted(found))


def stdlib_files(split: str) -> list[Path]:
    """Standard-library source files of `split` ("train" or "heldout"), sorted."""
    check_split(split, VALUE_SPLITS)
    return [path for relative, path in _all_stdlib_files() if split_of_file(relative) == split]


@lru_cache(maxsize=1)
def _third_party_names() -> dict[Path, str]:
    names: dict[Path, str] = {}
    for package in THIRD_PARTY_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in map(Path, spec.submodule_search_locations):
            for path in sorted(location.rglob("*.py")):
                if "__pycache__" not in path.parts:
                    names[path] = f"{THIRD_PARTY_TAG}{path.relative_to(location.parent).as_posix()}"
    return names


def third_party_files() -> list[Path]:
    """Source files of installed third-party packages that training never reads (held-out only)."""
    return list(_third_party_names())


def source_name(path: Path) -> str:
    """A machine-independent name: the stdlib-relative path, or `third-party:package/module.py`."""
    third_party = _third_party_names()
    return third_party[path] if path in third_party else path.relative_to(stdlib_root()).as_posix()


def split_of_source(name: str) -> Split:
    return "heldout" if name.startswith(THIRD_PARTY_TAG) else split_of_file(name)


if __name__ == "__main__":
    train, heldout = stdlib_files("train"), stdlib_files("heldout")
    print(f"stdlib root {stdlib_root()}: {len(train)} train files, {len(heldout)} held-out files")
    print(f"third-party held-out files: {len(third_party_files())}")
    for path in heldout[:10]:
        print("  heldout:", path.relative_to(stdlib_root()))
