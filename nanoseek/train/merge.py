"""Merge fine-tuned models into one, as DeepSeek-V2.5 merged its chat and coder models: `nanoseek merge`.

    nanoseek merge CONFIG.yaml OUT_DIR          # e.g. docs/runs/.../merge-ties.yaml -> runs/merged-ties

CONFIG is a mergekit configuration, unchanged (https://github.com/arcee-ai/mergekit: `merge_method` linear, ties,
slerp, dare_ties, task_arithmetic, ...; `base_model`; `models` with per-model `parameters` such as `weight` and
`density`; `parameters` such as `t`; `dtype`), and mergekit does the tensor arithmetic: its methods are the
reference implementations, so nanoseek does not re-implement them. What nanoseek adds around it:

* every model a config names must be a local Hugging Face folder (or `FOLDER+LORA_FOLDER`, mergekit's syntax for
  a base with a peft adapter applied), checked before anything runs: a missing folder is otherwise taken for a
  Hugging Face Hub id and fails slowly on a machine without internet;
* the merge is written to a staging folder beside OUT_DIR, loaded back with nanoseek's own loader (a merge that
  nanoseek cannot serve fails here, not at serve time), then swapped into place: OUT_DIR holds the previous
  result or the complete new one, never half of one.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

from nanoseek.model.loader import load_checkpoint


class MergeConfigError(ValueError):
    """A merge configuration nanoseek refuses to run (the message names the problem)."""


def load_merge_config(path: Path):
    """Parse and validate CONFIG.yaml with mergekit's own schema; every referenced folder must exist."""
    from mergekit.config import MergeConfiguration  # heavy (transformers, datasets): imported when merging

    try:
        raw = yaml.safe_load(Path(path).read_text())
        config = MergeConfiguration.model_validate(raw)
    except (OSError, yaml.YAMLError, ValueError) as error:
        raise MergeConfigError(f"{path}: not a valid mergekit configuration: {error}") from None
    for reference in config.referenced_models():
        for part in (reference.model, reference.lora):
            if part is not None and not Path(part.path).is_dir():
                raise MergeConfigError(
                    f"{path}: model {part.path!r} is not a local folder (nanoseek merges local Hugging Face "
                    "folders; convert a GGUF file first with `nanoseek convert`)"
                )
    return config


def merge_models(config_path: Path, out_dir: Path, *, quiet: bool = False) -> Path:
    """Run the merge CONFIG describes into OUT_DIR (atomically) and check that nanoseek loads the result."""
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    config = load_merge_config(config_path)
    out_dir = Path(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.merge-tmp")
    shutil.rmtree(staging, ignore_errors=True)
    options = MergeOptions(copy_tokenizer=True, safe_serialization=True, quiet=quiet, write_model_card=True)
    run_merge(config, str(staging), options, config_source=Path(config_path).read_text())
    load_checkpoint(staging, dtype="float32")  # raises CheckpointError naming what nanoseek cannot load
    for path in staging.iterdir():
        path.chmod(0o644)
    previous = out_dir.with_name(f".{out_dir.name}.merge-old")
    shutil.rmtree(previous, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(previous)
    staging.rename(out_dir)
    shutil.rmtree(previous, ignore_errors=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nanoseek merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="a mergekit YAML configuration")
    parser.add_argument("out", type=Path, help="folder to write the merged Hugging Face checkpoint to")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        merge_models(args.config, args.out, quiet=args.quiet)
    except MergeConfigError as error:
        print(f"nanoseek merge: {error}", file=sys.stderr)
        return 2
    print(f"merged checkpoint written to {args.out}")
    return 0
