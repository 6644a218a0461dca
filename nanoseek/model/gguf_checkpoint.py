"""GGUF checkpoints (the llama.cpp / Ollama file format) in: one file holds the config, the weights (plain or
in quantized blocks), the tokenizer and the chat template.

Read with the `gguf` package (memory-mapped). Architectures `llama`, `qwen2` and `deepseek2` (DeepSeek-V2/V3: MLA
and DeepSeekMoE, mapped in gguf_deepseek.py); every tensor type that
`gguf.quants.dequantize` handles (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K…Q6_K, IQ types).
llama.cpp's converter permutes the rows of Llama's q/k projections (its rotary pairs adjacent elements, HF's
pairs the two halves of each head); `model_tensors` undoes it, on the raw blocks, so a quantized row stays
one quantized row.

    from nanoseek.model.gguf_checkpoint import open_gguf, load_gguf_checkpoint, model_tensors
    ckpt = load_gguf_checkpoint("SmolLM2-135M-Instruct.Q4_1.gguf")      # Checkpoint, weights dequantized
    file = open_gguf("model.gguf")
    parts = model_tensors(file, gguf_model_config(file))    # nanoseek parameter -> [GGUFTensor] in HF row order
    parts["layers.0.self_attn.qkv_proj.weight"][0].raw      # the stored blocks, [rows, bytes per row]
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader

from nanoseek.fileio import atomic_path
from nanoseek.model.checkpoint import (
    DTYPES,
    Checkpoint,
    CheckpointError,
    empty_weights,
    fill_rows,
    model_from_state,
    resolve_dtype,
    split_sizes,
)
from nanoseek.model.config import ModelConfig
from nanoseek.model.gguf_deepseek import deepseek2_arrays, deepseek2_config, deepseek2_metadata, deepseek2_state
from nanoseek.model.quantized import BLOCK_BYTES, QuantizedLinear, install_quantized, swiglu_row_order
from nanoseek.model.transformer import Transformer, rotary_inv_freq
from nanoseek.tokenizer.gguf_vocab import gguf_tokenizer_metadata, tokenizer_from_gguf
from nanoseek.tokenizer.tokenizer import Tokenizer, TokenizerError

GGUF_MAGIC = b"GGUF"
SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "deepseek2")
# GGUF tensor names (per layer, after "blk.N.") -> nanoseek parameter names; q/k/v and gate/up are fused
# in nanoseek in this order (checkpoint.FUSED_PARTS).
LAYER_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_down.weight": "mlp.down_proj.weight",
    "ffn_down.bias": "mlp.down_proj.bias",
}
FUSED_TENSORS = {
    "self_attn.qkv_proj.weight": ("attn_q.weight", "attn_k.weight", "attn_v.weight"),
    "self_attn.qkv_proj.bias": ("attn_q.bias", "attn_k.bias", "attn_v.bias"),
    "mlp.gate_up_proj.weight": ("ffn_gate.weight", "ffn_up.weight"),
    "mlp.gate_up_proj.bias": ("ffn_gate.bias", "ffn_up.bias"),
}
GLOBAL_TENSORS = {"token_embd.weight": "embed_tokens.weight", "output_norm.weight": "norm.weight"}
OUTPUT_TENSOR = "output.weight"
# Llama 3.1+ files carry the llama3 rotary scaling as per-frequency divisors instead of metadata.
ROPE_FREQS_TENSOR = "rope_freqs.weight"


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor as stored: its GGML type, its logical shape in torch order ([rows, columns] for a matrix)
    and `raw`, the stored data memory-mapped from the file: [rows, bytes per row] uint8 for block types
    (each row is whole blocks, so rows can be reordered or split without dequantizing), the values themselves
    for F32/F16."""

    name: str
    ggml_type: GGMLQuantizationType
    shape: tuple[int, ...]
    raw: np.ndarray

    @property
    def type_name(self) -> str:
        return self.ggml_type.name

    def dequantize(self) -> torch.Tensor:
        """The values as a float32 tensor of `shape`."""
        from gguf.quants import dequantize

        try:
            values = dequantize(self.raw, self.ggml_type)
        except NotImplementedError:
            raise CheckpointError(
                f"tensor {self.name!r} has type {self.type_name}, which the gguf package cannot dequantize"
            ) from None
        return torch.from_numpy(np.array(values, dtype=np.float32).reshape(self.shape))  # a copy: raw is read-only

    def take_rows(self, order: np.ndarray) -> GGUFTensor:
        """The same tensor with its rows (first dimension) in `order`: quantized blocks move whole."""
        return GGUFTensor(self.name, self.ggml_type, self.shape, self.raw[order])


@dataclass
class GGUFFile:
    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]

    @property
    def architecture(self) -> str:
        return self.metadata.get("general.architecture", "")

    def arch_value(self, key: str, default: Any = None) -> Any:
        """`{architecture}.{key}` from the metadata, e.g. arch_value("block_count")."""
        return self.metadata.get(f"{self.architecture}.{key}", default)


class PlainArrayReader(GGUFReader):
    """GGUFReader over a plain ndarray view of its memory map: the reader slices the file once per value, and
    each np.memmap slice costs a Python-level __array_finalize__ (SmolLM2's 49k-token vocabulary took 5.3 s to
    parse instead of 1.7 s). The view still reads the file through the map, nothing is copied."""

    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self._data = value.view(np.ndarray)


def is_gguf_file(path: str | os.PathLike[str]) -> bool:
    """A file named *.gguf or starting with the GGUF magic (so a mis-named file still gets GGUF's errors)."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() == ".gguf":
        return True
    with open(path, "rb") as handle:
        return handle.read(4) == GGUF_MAGIC


def open_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Metadata and memory-mapped tensors of a GGUF file; CheckpointError for a file that is not GGUF,
    truncated, or uses a tensor type unknown to the gguf package."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise CheckpointError(f"{path} is not a GGUF file: it starts with {magic!r}, not {GGUF_MAGIC!r}")
    size = path.stat().st_size
    try:
        reader = PlainArrayReader(path, "r")
    except Exception as exc:  # the reader fails on a short file with numpy's shape/size errors
        known = {t.value for t in GGMLQuantizationType}
        if "GGMLQuantizationType" in str(exc):
            raise CheckpointError(
                f"{path}: a tensor has a GGML type this version of the gguf package does not know ({exc}); "
                f"known types: {', '.join(t.name for t in GGMLQuantizationType if t.value in known)}"
            ) from None
        raise CheckpointError(f"{path} ({size} bytes) is truncated or corrupt: {type(exc).__name__}: {exc}") from None
    tensors = {}
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size:
            raise CheckpointError(f"{path} is truncated: tensor {tensor.name!r} runs past the end of the file")
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        tensors[tensor.name] = GGUFTensor(tensor.name, tensor.tensor_type, shape, tensor.data)
    metadata = {}
    for key, reader_field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            metadata[key] = reader_field.contents()
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot read metadata {key!r} (corrupt file?): {exc}") from None
    return GGUFFile(path, metadata, tensors)


# ---- config -----------------------------------------------------------------------------------------------


def gguf_model_config(file: GGUFFile) -> ModelConfig:
    """The ModelConfig that the file's `{arch}.*` metadata describes."""
    arch = file.architecture
    if arch not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(
            f"{file.path}: architecture {arch!r} is not supported; nanoseek loads {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    if arch == "deepseek2":
        return deepseek2_config(file)
    required = ("embedding_length", "block_count", "feed_forward_length", "attention.head_count")
    missing = [f"{arch}.{key}" for key in required if file.arch_value(key) is None]
    if missing:
        raise CheckpointError(f"{file.path}: metadata lacks {', '.join(missing)}")
    hidden = int(file.arch_value("embedding_length"))
    heads = int(file.arch_value("attention.head_count"))
    kv_heads = int(file.arch_value("attention.head_count_kv", heads))
    head_dim = int(file.arch_value("attention.key_length", hidden // heads))
    if int(file.arch_value("attention.value_length", head_dim)) != head_dim:
        raise CheckpointError(f"{file.path}: key_length and value_length differ, which nanoseek does not support")
    if int(file.arch_value("rope.dimension_count", head_dim)) != head_dim:
        raise CheckpointError(
            f"{file.path}: rotary on {file.arch_value('rope.dimension_count')} of {head_dim} head dimensions "
            "(partial rotary) is not supported"
        )
    embedding = file.tensors.get("token_embd.weight")
    if embedding is None:
        raise CheckpointError(f"{file.path}: tensor 'token_embd.weight' is missing")
    vocab_size = int(file.arch_value("vocab_size", embedding.shape[0]))
    q_bias = "blk.0.attn_q.bias" in file.tensors
    try:
        config = ModelConfig(
            model_type=arch,
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=int(file.arch_value("feed_forward_length")),
            num_hidden_layers=int(file.arch_value("block_count")),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            max_position_embeddings=int(file.arch_value("context_length", 4096)),
            rms_norm_eps=float(file.arch_value("attention.layer_norm_rms_epsilon", 1e-6)),
            rope_theta=float(file.arch_value("rope.freq_base", 10000.0)),
            rope_scaling=rope_scaling(file),
            attention_bias=q_bias,
            mlp_bias="blk.0.ffn_gate.bias" in file.tensors,
            tie_word_embeddings=OUTPUT_TENSOR not in file.tensors,
            bos_token_id=file.metadata.get("tokenizer.ggml.bos_token_id"),
            eos_token_id=file.metadata.get("tokenizer.ggml.eos_token_id"),
            pad_token_id=file.metadata.get("tokenizer.ggml.padding_token_id"),
        )
    except ValueError as exc:
        raise CheckpointError(f"{file.path}: {exc}") from None
    if ROPE_FREQS_TENSOR in file.tensors:
        config.rope_scaling = llama3_scaling(file, config)
    return config


def rope_scaling(file: GGUFFile) -> dict[str, Any] | None:
    """transformers' rope_scaling dict from `{arch}.rope.scaling.*` (linear, yarn); llama3 scaling is in the
    rope_freqs tensor instead (llama3_scaling)."""
    kind = file.arch_value("rope.scaling.type", "none")
    factor = file.arch_value("rope.scaling.factor")
    if kind == "none" or factor in (None, 1.0):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(factor)}
    if kind == "yarn":
        original = file.arch_value("rope.scaling.original_context_length")
        if original is None:
            original = int(file.arch_value("context_length", 4096) / factor)
        return {"rope_type": "yarn", "factor": float(factor), "original_max_position_embeddings": int(original)}
    raise CheckpointError(f"{file.path}: rotary scaling type {kind!r} is not supported (linear, yarn, llama3 are)")


# Llama 3.1 / 3.2 published these; the file stores only their effect on each frequency.
LLAMA3_CANDIDATES = [
    {"factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    for factor in (8.0, 32.0, 16.0, 4.0, 2.0)
]


def llama3_scaling(file: GGUFFile, config: ModelConfig) -> dict[str, Any]:
    """The llama3 rope_scaling whose per-frequency divisors are the file's rope_freqs tensor."""
    stored = torch.from_numpy(file.tensors[ROPE_FREQS_TENSOR].dequantize().numpy().reshape(-1))
    for candidate in LLAMA3_CANDIDATES:
        scaling = {"rope_type": "llama3", **candidate}
        factors = llama3_rope_factors(dataclasses.replace(config, rope_scaling=scaling))
        if factors.shape == stored.shape and torch.allclose(torch.from_numpy(factors), stored, rtol=1e-3):
            return scaling
    raise CheckpointError(
        f"{file.path}: its {ROPE_FREQS_TENSOR} tensor matches none of the llama3 rotary settings nanoseek knows"
    )


def llama3_rope_factors(config: ModelConfig) -> np.ndarray:
    """llama.cpp's rope_freqs tensor: by how much llama3 scaling divides each rotary frequency."""
    scaled, _ = rotary_inv_freq(config)
    plain, _ = rotary_inv_freq(dataclasses.replace(config, rope_scaling=None))
    return (plain / scaled).numpy().astype(np.float32)


# ---- tensors ---------------------------------------------------------------------------------------------


def llama_unpermute_order(rows: int, heads: int) -> np.ndarray:
    """Row order that undoes llama.cpp's q/k permutation: within each head it stored HF's rows
    [0, half, 1, half+1, ...] (interleaved pairs); this gives, for each HF row, the stored row that holds it."""
    half = rows // heads // 2
    stored = np.arange(rows).reshape(heads, half, 2)  # stored row (head, i, j) holds HF row (head, j, i)
    return stored.transpose(0, 2, 1).reshape(rows)


def gguf_names(config: ModelConfig) -> dict[str, list[str]]:
    """nanoseek parameter name -> the GGUF tensors it is made of, in concatenation order (tied lm_head left out)."""
    with torch.device("meta"):
        parameters = list(Transformer(config).state_dict())
    names: dict[str, list[str]] = {}
    for name in parameters:
        if name in GLOBAL_TENSORS.values():
            names[name] = [next(g for g, n in GLOBAL_TENSORS.items() if n == name)]
        elif name == "lm_head.weight":
            if not config.tie_word_embeddings:
                names[name] = [OUTPUT_TENSOR]
        else:
            layer, local = name.split(".", 2)[1:]
            parts = FUSED_TENSORS.get(local) or [next(g for g, n in LAYER_TENSORS.items() if n == local)]
            names[name] = [f"blk.{layer}.{part}" for part in parts]
    return names


def model_tensors(file: GGUFFile, config: ModelConfig) -> dict[str, list[GGUFTensor]]:
    """nanoseek parameter name -> the file's tensors that make it (several for a fused projection, in
    concatenation order), rows in HF order. Raises CheckpointError for a missing, misshapen or unknown tensor."""
    with torch.device("meta"):
        shapes = {name: tuple(t.shape) for name, t in Transformer(config).state_dict().items()}
    names = gguf_names(config)
    unexpected = set(file.tensors) - {n for parts in names.values() for n in parts} - {ROPE_FREQS_TENSOR}
    if unexpected:
        shown = ", ".join(sorted(unexpected)[:5])
        raise CheckpointError(
            f"{file.path}: {len(unexpected)} tensor(s) a {config.model_type} model of this shape does not have: {shown}"
        )
    result: dict[str, list[GGUFTensor]] = {}
    for name, stored_names in names.items():
        parts = []
        for gguf_name in stored_names:
            if gguf_name not in file.tensors:
                raise CheckpointError(f"{file.path}: tensor {gguf_name!r} is missing")
            tensor = file.tensors[gguf_name]
            if config.model_type == "llama" and gguf_name.split(".")[-2] in ("attn_q", "attn_k"):
                heads = config.num_attention_heads if "attn_q" in gguf_name else config.num_key_value_heads
                tensor = tensor.take_rows(llama_unpermute_order(tensor.shape[0], heads))
            parts.append(tensor)
        rows = sum(p.shape[0] for p in parts)
        shape = (rows, *parts[0].shape[1:])
        if shape != shapes[name] or any(p.shape[1:] != parts[0].shape[1:] for p in parts):
            shown = " + ".join(f"{p.name} {p.shape}" for p in parts)
            raise CheckpointError(
                f"{file.path}: {shown} cannot make {name} of shape {shapes[name]} that the metadata implies"
            )
        result[name] = parts
    return result


def load_gguf_model(file: GGUFFile, dtype: str | torch.dtype | None = None) -> Transformer:
    """The Transformer of a GGUF file, every tensor dequantized to `dtype`; with `dtype` None, float32 except
    the projections (and the embedding) stored in Q8_0, Q4_0 or Q4_1 blocks, which stay in those blocks
    (model/quantized.py: what the native decode step multiplies from)."""
    config = gguf_model_config(file)
    target = resolve_dtype(dtype, "float32")
    config.dtype = next(name for name, value in DTYPES.items() if value == target)
    if config.is_mla:  # DeepSeek's layers: every tensor dequantized (the native step has no quantized MLA)
        state = {name: tensor.to(target) for name, tensor in deepseek2_state(file, config).items()}
        return model_from_state(config, state)
    tensors = model_tensors(file, config)
    kept = quantized_layers(tensors, config) if dtype is None else {}
    with torch.device("meta"):
        layout = Transformer(config)
    # Each weight dequantized part by part into its place (checkpoint.empty_weights says why).
    state = empty_weights(layout, target, [name for name in tensors if name not in kept])
    for name, parts in tensors.items():
        if name in kept:  # a placeholder: install_quantized replaces its layer
            state[name] = torch.empty(sum(p.shape[0] for p in parts), *parts[0].shape[1:], device="meta")
            continue
        fill_rows(state[name], (part.dequantize() for part in parts))
    model = model_from_state(config, state)
    if kept:
        install_quantized(model, kept)
    return model


def quantized_layers(tensors: dict[str, list[GGUFTensor]], config: ModelConfig) -> dict[str, Any]:
    """Parameter name -> QuantizedLinear over the file's blocks, for every projection and embedding whose parts
    all share one kernel's format (Q8_0, or Q4_0/Q4_1); the rest is dequantized. Llama-family layers only."""
    if config.is_mla or config.intermediate_size % 32:
        return {}
    layers = {}
    for name, parts in tensors.items():
        if any(int(p.ggml_type) not in BLOCK_BYTES for p in parts):
            continue
        order = swiglu_row_order(config.intermediate_size) if name.endswith("gate_up_proj.weight") else None
        raw = [(int(p.ggml_type), torch.from_numpy(np.array(p.raw, dtype=np.uint8))) for p in parts]
        layer = QuantizedLinear.from_ggml_parts(raw, parts[0].shape[1], row_order=order)
        if layer is not None:
            layers[name] = layer
    return layers


def load_gguf_checkpoint(path: str | os.PathLike[str], dtype: str | torch.dtype | None = None) -> Checkpoint:
    """Model (dequantized to `dtype`, default float32), tokenizer and chat template of one GGUF file."""
    file = open_gguf(path)
    model = load_gguf_model(file, dtype)
    try:
        tokenizer = tokenizer_from_gguf(file.metadata, where=str(file.path))
    except TokenizerError as exc:
        raise CheckpointError(str(exc)) from None
    if tokenizer.vocab_size > model.config.vocab_size:
        raise CheckpointError(
            f"{file.path}: the tokenizer has {tokenizer.vocab_size} ids but the model's vocab_size is "
            f"{model.config.vocab_size}"
        )
    return Checkpoint(
        model=model, tokenizer=tokenizer, generation_config={}, chat_template=tokenizer.chat_template, path=file.path
    )


# ---- writing ---------------------------------------------------------------------------------------------

# --type of `nanoseek convert` -> the GGML type of the matrices (norms and biases stay F32, as llama.cpp keeps
# them) and llama.cpp's general.file_type. The other block types gguf can quantize are there for tests.
WRITE_TYPES = {
    "f32": ("F32", 0),
    "f16": ("F16", 1),
    "bf16": ("BF16", 32),
    "q8_0": ("Q8_0", 7),
    "q4_0": ("Q4_0", 2),
    "q4_1": ("Q4_1", 3),
    "q5_0": ("Q5_0", 8),
    "q5_1": ("Q5_1", 9),
}


def gguf_tensor_arrays(model: Transformer) -> dict[str, np.ndarray]:
    """The model's weights under GGUF names as float32 arrays, Llama q/k rows permuted as llama.cpp stores them."""
    config = model.config
    arrays: dict[str, np.ndarray] = {}
    state = model.state_dict()
    for name, parts in gguf_names(config).items():
        values = state[name].detach().to("cpu", torch.float32)
        sizes = split_sizes(config, name) if len(parts) > 1 else [values.shape[0]]
        for part, piece in zip(parts, values.split(sizes, dim=0)):
            array = piece.contiguous().numpy()
            if config.model_type == "llama" and part.split(".")[-2] in ("attn_q", "attn_k"):
                heads = config.num_attention_heads if "attn_q" in part else config.num_key_value_heads
                array = array[np.argsort(llama_unpermute_order(array.shape[0], heads))]
            arrays[part] = np.ascontiguousarray(array)
    return arrays


def save_gguf(
    model: Transformer, tokenizer: Tokenizer, path: str | os.PathLike[str], tensor_type: str = "f32", name: str = ""
) -> Path:
    """Write `model` and `tokenizer` as one GGUF file that llama.cpp and `load_gguf_checkpoint` read.
    Matrices are stored as `tensor_type` (a WRITE_TYPES key; a matrix whose rows are not whole blocks of that
    type stays F32), 1-D tensors as F32. Written atomically."""
    from gguf import GGML_QUANT_SIZES
    from gguf.quants import quantize

    if tensor_type not in WRITE_TYPES:
        raise CheckpointError(f"unknown GGUF tensor type {tensor_type!r}; use one of {', '.join(WRITE_TYPES)}")
    type_name, file_type = WRITE_TYPES[tensor_type]
    matrix_type = GGMLQuantizationType[type_name]
    metadata = gguf_model_metadata(model.config, name) | gguf_tokenizer_metadata(tokenizer)
    metadata["general.file_type"] = file_type
    arrays = deepseek2_arrays(model) if model.config.is_mla else gguf_tensor_arrays(model)
    if model.config.rope_scaling and model.config.rope_scaling["rope_type"] == "llama3":
        arrays[ROPE_FREQS_TENSOR] = llama3_rope_factors(model.config)
    block = GGML_QUANT_SIZES[matrix_type][0]
    tensors = {}
    for tensor_name, array in arrays.items():
        if array.ndim == 2 and array.shape[1] % block == 0 and matrix_type != GGMLQuantizationType.F32:
            tensors[tensor_name] = (quantize(array, matrix_type), matrix_type)
        else:
            tensors[tensor_name] = (array, None)
    return write_gguf(path, gguf_architecture(model.config), metadata, tensors)


def write_gguf(
    path: str | os.PathLike[str],
    architecture: str,
    metadata: dict[str, Any],
    tensors: dict[str, tuple[np.ndarray, GGMLQuantizationType | None]],
) -> Path:
    """One GGUF file, atomically: metadata values typed as llama.cpp expects them, and each tensor either as
    float values (type None: stored as their numpy dtype) or as the stored blocks of the given type."""
    from gguf import GGUFWriter

    path = Path(path)
    with atomic_path(path) as tmp:
        writer = GGUFWriter(tmp, architecture)
        for key, value in metadata.items():
            _add_metadata(writer, key, value)
        for name, (array, raw_type) in tensors.items():
            writer.add_tensor(name, array, raw_dtype=raw_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def gguf_architecture(config: ModelConfig) -> str:
    """general.architecture of a model of `config`: its model_type, or llama.cpp's `deepseek2` for V2 and V3."""
    return "deepseek2" if config.is_mla else config.model_type


def gguf_model_metadata(config: ModelConfig, name: str = "") -> dict[str, Any]:
    """The general.* and {architecture}.* metadata that describes `config` (what gguf_model_config reads)."""
    arch = gguf_architecture(config)
    general = {"general.name": name or f"nanoseek-{arch}", "general.quantization_version": 2}
    if config.is_mla:
        return general | deepseek2_metadata(config)
    metadata: dict[str, Any] = {
        **general,
        f"{arch}.context_length": config.max_position_embeddings,
        f"{arch}.embedding_length": config.hidden_size,
        f"{arch}.block_count": config.num_hidden_layers,
        f"{arch}.feed_forward_length": config.intermediate_size,
        f"{arch}.attention.head_count": config.num_attention_heads,
        f"{arch}.attention.head_count_kv": config.num_key_value_heads,
        f"{arch}.attention.key_length": config.head_dim,
        f"{arch}.attention.value_length": config.head_dim,
        f"{arch}.attention.layer_norm_rms_epsilon": float(config.rms_norm_eps),
        f"{arch}.rope.freq_base": float(config.rope_theta),
        f"{arch}.rope.dimension_count": config.head_dim,
        f"{arch}.vocab_size": config.vocab_size,
    }
    scaling = config.rope_scaling
    if scaling and scaling["rope_type"] in ("linear", "yarn"):
        metadata[f"{arch}.rope.scaling.type"] = scaling["rope_type"]
        metadata[f"{arch}.rope.scaling.factor"] = float(scaling["factor"])
        if scaling["rope_type"] == "yarn":
            metadata[f"{arch}.rope.scaling.original_context_length"] = scaling["original_max_position_embeddings"]
    return metadata


def _add_metadata(writer: Any, key: str, value: Any) -> None:
    """One key with the value type llama.cpp expects: counts and ids UINT32, floats FLOAT32, token types INT32."""
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        writer.add_array(key, list(value))
