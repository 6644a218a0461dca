"""What a `--model` value means, and the model it loads: the one place that knows every checkpoint format.

A value is, in the order tried: a named model (`named.py`: fetched on first use, then a GGUF file), a GGUF file
(`gguf_checkpoint.py`), a LoRA adapter directory (`adapter.py`: its base loaded through here, the adapter merged
in), a Hugging Face checkpoint folder (`checkpoint.py`), or a Hugging Face hub id ("org/name", fetched into the
hub's cache when huggingface_hub can reach it). The format readers import nothing from here, so no reader
imports another back; a quantized dtype (q8_0, q4_1) loads any of them in float32 and quantizes it
(`quantized.py`).

    from nanoseek.model.loader import load_checkpoint, load_model
    ckpt = load_checkpoint("smollm2-135m-instruct")       # model + tokenizer + generation config + chat template
    model = load_model("path/to/dir", dtype="bfloat16")
    model = load_model("path/to/dir", dtype="q8_0")       # projections quantized at load time
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from nanoseek.model.adapter import adapter_info, is_adapter_dir, load_adapted_checkpoint
from nanoseek.model.checkpoint import CONFIG_FILE, Checkpoint, CheckpointError, load_hf_checkpoint, load_hf_model
from nanoseek.model.gguf_checkpoint import is_gguf_file, load_gguf_checkpoint, load_gguf_model, open_gguf
from nanoseek.model.named import named_models, resolve_model
from nanoseek.model.quantized import QUANTIZED_DTYPES, QuantizationError, quantize_model
from nanoseek.model.transformer import Transformer

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_model(path: str | os.PathLike[str], dtype: str | torch.dtype | None = None) -> Transformer:
    """The Transformer of a checkpoint folder, hub id, GGUF file or named model; `dtype` None keeps the dtype
    that config.json declares (for GGUF: float32, projections stored in Q8_0/Q4_0/Q4_1 blocks kept in them)."""
    if dtype in QUANTIZED_DTYPES:
        return quantized(load_model(path, dtype="float32"), dtype, path)
    source = resolve_model(path)
    if is_gguf_file(source):
        return load_gguf_model(open_gguf(source), dtype)
    return load_hf_model(resolve_checkpoint_dir(source), dtype)


def load_checkpoint(path: str | os.PathLike[str], dtype: str | torch.dtype | None = None) -> Checkpoint:
    """Model, tokenizer, generation config and chat template of any `--model` value (the module docstring's
    list): a LoRA adapter directory comes back with its base's weights and the adapter merged."""
    if dtype in QUANTIZED_DTYPES:  # whatever the source: loaded in fp32, its projections quantized
        checkpoint = load_checkpoint(path, dtype="float32")
        quantized(checkpoint.model, dtype, path)
        return checkpoint
    source = resolve_model(path)
    if is_gguf_file(source):
        return load_gguf_checkpoint(source, dtype)
    directory = resolve_checkpoint_dir(source)
    if is_adapter_dir(directory):  # the merge runs in float32, whatever dtype the result is cast to
        base = load_checkpoint(adapter_info(directory)["base"], dtype="float32")
        return load_adapted_checkpoint(directory, base, dtype)
    return load_hf_checkpoint(directory, dtype)


def quantized(model: Transformer, dtype: str, path: str | os.PathLike[str]) -> Transformer:
    try:
        return quantize_model(model, dtype)
    except QuantizationError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def resolve_checkpoint_dir(path_or_hub_id: str | os.PathLike[str]) -> Path:
    """A local checkpoint directory; a hub id ("org/name") only if huggingface_hub can fetch it."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_hub_id)
    if path.exists():
        raise CheckpointError(
            f"checkpoint path {text} is a file but not a GGUF file; pass a GGUF file or the directory that holds "
            f"{CONFIG_FILE}"
        )
    # "runs/sft" looks like a hub id too; when its first part is a local folder it means the local path
    if not HUB_ID.match(text) or Path(text.split("/", 1)[0]).expanduser().is_dir():
        raise CheckpointError(
            f"no checkpoint directory at {text} (nor a GGUF file, nor a named model: {', '.join(named_models())})"
        )
    try:
        from huggingface_hub import snapshot_download  # only for a hub id: its import costs start-up time

        return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt"]))
    except Exception as exc:  # offline mode, no network, unknown repo, gated repo: all mean "not available"
        raise CheckpointError(
            f"{text!r} is not a local directory, and as a Hugging Face hub id it could not be fetched "
            f"(no hub reachable or repository unavailable: {type(exc).__name__}: {exc})"
        ) from exc
