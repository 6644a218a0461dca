"""Export a trained stage's model as a shippable Hugging Face checkpoint (e.g. the embedded default model).

    nanoseek train export --out runs/default --stage-dir sft --to nanoseek/default_model --dtype bfloat16
    python -m nanoseek.train.export SRC_MODEL_DIR DEST_DIR [--dtype bfloat16]

Writes config.json, model.safetensors, generation_config.json, tokenizer.json and tokenizer_config.json
(with the chat template) into a temporary sibling directory, then swaps it into place, so DEST is never
half-written: a reader sees the old checkpoint or the new one. A README.md model card already in DEST is
kept. Fails if the weights would exceed the size budget of the embedded model.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from nanoseek.model.checkpoint import save_checkpoint
from nanoseek.model.loader import load_checkpoint
from nanoseek.tokenizer.chat_format import CHAT_TEMPLATE
from nanoseek.tokenizer.special_tokens import SPECIAL_TOKENS
from nanoseek.tokenizer.tokenizer import Tokenizer

MAX_EMBEDDED_BYTES = 30 * 1024 * 1024
KEPT_FILES = ("README.md",)


def refresh_chat_template(tokenizer: Tokenizer) -> None:
    """Ship the current nanoseek chat template with a nanoseek tokenizer.

    The template is frozen into tokenizer_config.json when the tokenizer stage runs; if the chat format's
    Jinja twin was fixed since (same rendering, portable Jinja), the export carries the current one, so the
    served model is rendered by `render_chat` exactly like every other nanoseek checkpoint."""
    if all(tokenizer.backend.token_to_id(token) == i for i, token in enumerate(SPECIAL_TOKENS)):
        tokenizer.chat_template = CHAT_TEMPLATE


def export_model(source: Path, dest: Path, dtype: str = "bfloat16", max_bytes: int = MAX_EMBEDDED_BYTES) -> Path:
    source, dest = Path(source), Path(dest)
    if not (source / "model.safetensors").exists():
        raise FileNotFoundError(f"no model.safetensors in {source}: train that stage first")
    checkpoint = load_checkpoint(source, dtype="float32")
    refresh_chat_template(checkpoint.tokenizer)
    staging = dest.with_name(f".{dest.name}.export-tmp")
    shutil.rmtree(staging, ignore_errors=True)
    save_checkpoint(
        checkpoint.model,
        checkpoint.tokenizer,
        staging,
        dtype=dtype,
        generation_config={
            k: v
            for k, v in checkpoint.generation_config.items()
            if k not in ("bos_token_id", "eos_token_id", "pad_token_id")
        },
    )
    for path in staging.iterdir():
        path.chmod(0o644)  # temp files are created 0600; a package shipped to other users must be readable
    size = sum(p.stat().st_size for p in staging.iterdir())
    if size > max_bytes:
        shutil.rmtree(staging)
        raise ValueError(
            f"exported checkpoint is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB "
            "budget: export in bfloat16 or train a smaller shape"
        )
    for name in KEPT_FILES:
        if (dest / name).exists():
            shutil.copy2(dest / name, staging / name)
    old = dest.with_name(f".{dest.name}.export-old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(staging, dest)
    shutil.rmtree(old, ignore_errors=True)
    print(f"exported {source} -> {dest} ({dtype}, {size / 2**20:.1f} MiB)")
    return dest


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    export_model(args.source, args.dest, args.dtype)
