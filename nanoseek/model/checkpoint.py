"""Hugging Face checkpoint I/O: read and write nanoseek models in the folder layout transformers reads and writes.

A checkpoint directory holds `config.json` (model_type llama, qwen2, deepseek_v2 or deepseek_v3), `model.safetensors` (or shards with
`model.safetensors.index.json`), `generation_config.json`, and the tokenizer files (`tokenizer.json`,
`tokenizer_config.json` with the chat template) that `nanoseek.tokenizer.Tokenizer` reads and writes.
Files keep HF tensor names: the fused q/k/v and gate/up projections of transformer.py are split on save and
joined on load, and DeepSeekMoE's stacked expert weights are written per expert (`mlp.experts.{e}.gate_proj`, ...). Every file is written atomically (temporary file + rename), so an interrupted save never
leaves a half-written checkpoint behind.

This module reads one format, a local folder; what a `--model` value means (a folder, a hub id, a GGUF file, a
named model, an adapter) is decided in `nanoseek.model.loader`, which imports this reader and the others.

    from nanoseek.model.checkpoint import load_hf_checkpoint, load_hf_model, save_model
    ckpt = load_hf_checkpoint(Path("path/to/dir"))    # model + tokenizer + generation config + chat template
    model = load_hf_model(Path("path/to/dir"), dtype="bfloat16")
    save_model(model, "out_dir", dtype="float32")
"""

from __future__ import annotations

import ctypes
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nanoseek.fileio import atomic_path, read_json_object, write_json_atomic
from nanoseek.model.config import ModelConfig
from nanoseek.model.transformer import Transformer
from nanoseek.tokenizer.tokenizer import Tokenizer, TokenizerError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
GENERATION_CONFIG_FILE = "generation_config.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# nanoseek's fused projections and the HF tensors they are made of, in concatenation order.
FUSED_PARTS = {
    "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.shared_experts.gate_up_proj": ("mlp.shared_experts.gate_proj", "mlp.shared_experts.up_proj"),
}
# DeepSeekMoE's stacked expert tensors and the per-expert HF tensors that make up each expert's slice.
EXPERT_PARTS = {
    "mlp.experts.gate_up_proj": ("gate_proj", "up_proj"),
    "mlp.experts.down_proj": ("down_proj",),
}
# Tensors some checkpoints carry that hold nothing nanoseek needs (old Llama files saved rotary buffers).
IGNORED_TENSORS = re.compile(r".*rotary_emb\.inv_freq$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded or saved; the message names the file, tensor or field at fault."""


@dataclass
class Checkpoint:
    model: Transformer
    tokenizer: Tokenizer
    generation_config: dict[str, Any] = field(default_factory=dict)
    chat_template: str | None = None
    path: Path | None = None


def resolve_dtype(dtype: str | torch.dtype | None, default: str) -> torch.dtype:
    if dtype is None:
        dtype = default
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise CheckpointError(f"unsupported dtype {dtype}; use one of {', '.join(DTYPES)}")
        return dtype
    if dtype not in DTYPES:
        raise CheckpointError(f"unsupported dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


# ---- where the files are ---------------------------------------------------------------------------------


def read_config(directory: Path) -> ModelConfig:
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_FILE}")
    hf = read_json_object(config_path, error=CheckpointError)
    try:
        return ModelConfig.from_hf(hf)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{config_path}: {exc}") from exc


def weight_files(directory: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file that holds it (one file, or shards listed in the index)."""
    single = directory / WEIGHTS_FILE
    index = directory / WEIGHTS_INDEX_FILE
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index} is not a valid safetensors index: {exc}") from exc
        files = [directory / name for name in sorted(set(weight_map.values()))]
    else:
        raise CheckpointError(f"{directory} has neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX_FILE}")
    location: dict[str, Path] = {}
    for file in files:
        if not file.is_file():
            raise CheckpointError(f"weights file {file} is missing")
        try:
            with safe_open(file, framework="pt") as handle:
                location.update((name, file) for name in handle.keys())  # noqa: SIM118 (safe_open is no dict)
        except Exception as exc:  # safetensors raises its own error types for bad headers / short files
            raise CheckpointError(f"{file} is not a readable safetensors file (truncated or corrupt?): {exc}") from exc
    return location


# ---- the model -------------------------------------------------------------------------------------------


def hf_names(name: str, config: ModelConfig | None = None) -> list[str]:
    """HF tensor names that make up nanoseek parameter `name` (several for a fused projection; for stacked
    experts, expert 0's parts first, then expert 1's, ...)."""
    if name == "lm_head.weight":
        return [name]
    for stacked, parts in EXPERT_PARTS.items():
        if name.endswith(f".{stacked}"):
            prefix = "model." + name.removesuffix(stacked) + "mlp.experts"
            return [f"{prefix}.{e}.{part}.weight" for e in range(config.n_routed_experts) for part in parts]
    for fused, parts in FUSED_PARTS.items():
        if f".{fused}." in name:
            return ["model." + name.replace(fused, part) for part in parts]
    return ["model." + name]


def split_sizes(config: ModelConfig, name: str) -> list[int]:
    """Rows of each HF part of a fused or stacked tensor, in hf_names order."""
    if ".qkv_proj." in name:
        head_dim = config.head_dim
        return [config.num_attention_heads * head_dim] + [config.num_key_value_heads * head_dim] * 2
    if name.endswith(".experts.gate_up_proj"):
        return [config.moe_intermediate_size] * 2 * config.n_routed_experts
    if name.endswith(".experts.down_proj"):
        return [config.hidden_size] * config.n_routed_experts
    if ".shared_experts.gate_up_proj." in name:
        return [config.moe_intermediate_size * config.n_shared_experts] * 2
    if ".gate_up_proj." in name:
        return [config.intermediate_size] * 2
    raise KeyError(name)


def empty_weights(model: Transformer, dtype: torch.dtype, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Uninitialised tensors for the parameters `names` of `model` (built on the meta device), each in the
    memory layout the model keeps it in (a projection column-major: `use_column_major_weights`) and in `dtype`,
    for a loader to fill part by part (`fill_rows`). Written in place, a checkpoint's tensors never exist twice
    whole: joining, converting and re-laying them out as separate steps held two or three copies at once, and
    the freed copies stayed in the process (glibc keeps freed blocks under 32 MB for reuse): SmolLM2-135M in
    fp32 peaked at 2.3x its 513 MB of weights and kept 1.5x."""
    params = model.state_dict(keep_vars=True)
    return {
        name: torch.empty_strided(params[name].shape, params[name].stride(), dtype=_stored_dtype(name, dtype))
        for name in names
    }


def fill_rows(destination: torch.Tensor, parts: Iterable[torch.Tensor]) -> None:
    """Copy `parts` (converting their dtype; a generator makes one at a time) one after the other along the rows of `destination`: a fused
    projection's parts, or a stacked experts tensor's [rows, in] parts into its [E, rows, in]."""
    rows = destination.flatten(0, 1) if destination.dim() == 3 else destination  # stacked experts: contiguous
    start = 0
    for part in parts:
        rows[start : start + part.shape[0]].copy_(part)
        start += part.shape[0]


def release_freed_memory() -> None:
    """Give the pages of freed heap blocks back to the system (glibc's malloc_trim; nothing elsewhere). A loader's
    temporaries (a tensor dequantized or read, then copied into place) are each below glibc's mmap threshold,
    so their memory stays in the heap after they are freed, counted in the process's resident set."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except AttributeError:  # not glibc
        return
    trim(0)


def _stored_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    # V3's routing bias stays fp32 in every dtype (transformers keeps it so): bf16 steps would move the choice.
    return torch.float32 if name.endswith("e_score_correction_bias") else dtype


def _is_extra_layer(config: ModelConfig, hf_name: str) -> bool:
    """DeepSeek-V3 files carry multi-token-prediction layers after the last one; like transformers, skip them."""
    match = re.match(r"model\.layers\.(\d+)\.", hf_name)
    return config.is_mla and match is not None and int(match.group(1)) >= config.num_hidden_layers


def load_hf_model(directory: Path, dtype: str | torch.dtype | None = None) -> Transformer:
    """The Transformer of a Llama/Qwen2/DeepSeek-V2/V3 checkpoint folder; `dtype` None keeps the dtype that
    config.json declares."""
    config = read_config(directory)
    target_dtype = resolve_dtype(dtype, config.dtype)
    location = weight_files(directory)
    with torch.device("meta"):  # only for the names and shapes
        model = Transformer(config)
    expected = {
        name: param
        for name, param in model.state_dict(keep_vars=True).items()
        if not (config.tie_word_embeddings and name == "lm_head.weight")
    }
    handles: dict[Path, Any] = {}
    used: set[str] = set()
    state = empty_weights(model, target_dtype, expected)
    try:
        for name, param in expected.items():
            parts = []
            for hf_name in hf_names(name, config):
                if hf_name not in location:
                    raise CheckpointError(f"{directory}: tensor {hf_name!r} is missing from the weights")
                file = location[hf_name]
                if file not in handles:
                    handles[file] = safe_open(file, framework="pt")
                    handles[file].__enter__()
                try:
                    tensor = handles[file].get_tensor(hf_name)
                except Exception as exc:
                    raise CheckpointError(f"{file}: cannot read tensor {hf_name!r} (truncated file?): {exc}") from exc
                if tensor.dtype not in DTYPES.values():
                    raise CheckpointError(
                        f"{file}: tensor {hf_name!r} has dtype {tensor.dtype}; nanoseek loads "
                        f"float32/bfloat16/float16 weights only"
                    )
                parts.append((hf_name, tensor))
                used.add(hf_name)
            _check_part_shapes(config, name, tuple(param.shape), parts)
            fill_rows(state[name], [t for _, t in parts])
    finally:
        for handle in handles.values():
            handle.__exit__(None, None, None)
    unexpected = sorted(
        n
        for n in location
        if n not in used
        and not IGNORED_TENSORS.match(n)
        and not (config.tie_word_embeddings and n == "lm_head.weight")
        and not _is_extra_layer(config, n)
    )
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (" …" if len(unexpected) > 5 else "")
        raise CheckpointError(
            f"{directory}: {len(unexpected)} tensor(s) that a {config.model_type} model of this "
            f"config does not have: {shown}"
        )
    return model_from_state(config, state)


def model_from_state(config: ModelConfig, state: dict[str, torch.Tensor]) -> Transformer:
    """A Transformer holding exactly `state` (nanoseek names, lm_head left out when tied), built without
    initialising weights that are about to be replaced."""
    with torch.device("meta"):
        model = Transformer(config)
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    model.use_column_major_weights()  # assign=True took the layout given: row-major ones are re-laid out
    release_freed_memory()
    return model.eval()


def _check_part_shapes(
    config: ModelConfig, name: str, shape: tuple[int, ...], parts: list[tuple[str, torch.Tensor]]
) -> None:
    if len(parts) == 1:
        expected_shapes = [shape]
    else:
        per_part = shape[2:] if len(shape) == 3 else shape[1:]  # stacked experts [E, rows, in]: parts [rows, in]
        expected_shapes = [(size, *per_part) for size in split_sizes(config, name)]
    for (hf_name, tensor), expected_shape in zip(parts, expected_shapes):
        if tuple(tensor.shape) != tuple(expected_shape):
            raise CheckpointError(
                f"tensor {hf_name!r} has shape {tuple(tensor.shape)}, but config.json implies {tuple(expected_shape)}"
            )


def hf_state_dict(model: Transformer, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The model's weights under HF names, fused projections split, tied lm_head left out (as transformers)."""
    config = model.config
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if config.tie_word_embeddings and name == "lm_head.weight":
            continue
        names = hf_names(name, config)
        if tensor.dim() == 3:  # stacked experts: [E, rows, in] -> per-expert parts
            tensor = tensor.flatten(0, 1)
        pieces = [tensor] if len(names) == 1 else tensor.split(split_sizes(config, name), dim=0)
        for hf_name, piece in zip(names, pieces):
            tensors[hf_name] = piece.detach().to("cpu", _stored_dtype(name, dtype)).contiguous()
    return tensors


def save_model(
    model: Transformer,
    path: str | os.PathLike[str],
    dtype: str | torch.dtype | None = None,
    generation_config: dict[str, Any] | None = None,
) -> Path:
    """Write config.json, model.safetensors and generation_config.json into `path` (created if needed).
    `dtype` None keeps the model's current dtype."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    current = next(name for name, value in DTYPES.items() if value == model.dtype)
    target = resolve_dtype(dtype, current)
    dtype_name = next(name for name, value in DTYPES.items() if value == target)
    tensors = hf_state_dict(model, target)
    with atomic_path(directory / WEIGHTS_FILE) as weights_tmp:
        save_file(tensors, str(weights_tmp), metadata={"format": "pt"})  # transformers checks this key
    hf_config = model.config.to_hf()
    hf_config["dtype"] = hf_config["torch_dtype"] = dtype_name
    write_json_atomic(directory / CONFIG_FILE, hf_config)
    config = model.config
    generation = {
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        **(generation_config or {}),
    }
    write_json_atomic(directory / GENERATION_CONFIG_FILE, generation)
    return directory


def read_generation_config(directory: Path) -> dict[str, Any]:
    path = directory / GENERATION_CONFIG_FILE
    if not path.is_file():
        return {}
    return read_json_object(path, error=CheckpointError)


def load_hf_checkpoint(directory: Path, dtype: str | torch.dtype | None = None) -> Checkpoint:
    """Model, tokenizer, generation config and chat template of one checkpoint folder."""
    model = load_hf_model(directory, dtype=dtype)
    try:
        tokenizer = Tokenizer.load(directory)
    except TokenizerError as exc:
        raise CheckpointError(f"{directory}: {exc}") from exc
    if tokenizer.vocab_size > model.config.vocab_size:
        raise CheckpointError(
            f"{directory}: the tokenizer has {tokenizer.vocab_size} ids but the model's "
            f"vocab_size is {model.config.vocab_size}"
        )
    return Checkpoint(
        model=model,
        tokenizer=tokenizer,
        generation_config=read_generation_config(directory),
        chat_template=tokenizer.chat_template,
        path=directory,
    )


def save_checkpoint(
    model: Transformer,
    tokenizer: Tokenizer,
    path: str | os.PathLike[str],
    dtype: str | torch.dtype | None = None,
    generation_config: dict[str, Any] | None = None,
) -> Path:
    """save_model plus the tokenizer files (tokenizer.json, tokenizer_config.json with the chat template)."""
    directory = save_model(model, path, dtype=dtype, generation_config=generation_config)
    tokenizer.save(directory)
    return directory
