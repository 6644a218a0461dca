"""ModelConfig: the single source of shapes for nanoseek's transformer, and its mapping to HF `config.json`.

Supported Hugging Face `model_type`s are `llama` and `qwen2` (the Llama family: RMSNorm, rotary, GQA, SwiGLU).
`ModelConfig.from_hf(json.load(open("config.json")))` reads both the transformers 5 layout (`rope_parameters`)
and the older one (`rope_theta` + `rope_scaling`); `.to_hf()` writes a dict that both generations of
transformers load. Named shapes for tests and benchmarks live in `SHAPES`:

    python -c "from nanoseek.model.config import ModelConfig; print(ModelConfig.from_shape('small', 8192))"
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
SUPPORTED_ROPE_TYPES = ("default", "linear", "yarn", "llama3")
SUPPORTED_DTYPES = ("float32", "bfloat16", "float16")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}

# Named shapes: "tiny" keeps tests fast, "small"/"medium" match the S/M models of shared/BENCH-NOTES.md,
# "bench25m" is the ~25M-parameter Llama of the batch-1 decode benchmark (at vocab 8192).
SHAPES: dict[str, dict[str, int]] = {
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    ),
    "small": dict(
        hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=4
    ),
    "bench25m": dict(
        hidden_size=512, intermediate_size=1280, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4
    ),
    "medium": dict(
        hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8
    ),
}


@dataclass
class ModelConfig:
    """Shapes and numerics of one decoder-only model; field names follow transformers' LlamaConfig."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int | None = None  # None: plain multi-head attention
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    model_type: str = "llama"
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # Non-default rotary scaling exactly as transformers spells it, e.g. {"rope_type": "linear", "factor": 2.0}
    # or {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512}; None for plain RoPE.
    rope_scaling: dict[str, Any] | None = None
    # llama: bias on q/k/v/o projections; qwen2 always has q/k/v bias and never an o bias (forced below).
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    dtype: str = "float32"  # the dtype the weights are stored in
    extra: dict[str, Any] = field(default_factory=dict)  # other config.json keys, written back unchanged

    def __post_init__(self) -> None:
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"unknown model_type {self.model_type!r}: nanoseek supports {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        if self.model_type == "qwen2":
            self.attention_bias = True
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                    f"{self.num_attention_heads}; set head_dim explicitly"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"unsupported dtype {self.dtype!r}; expected one of {', '.join(SUPPORTED_DTYPES)}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.rope_scaling is not None:
            self.rope_scaling = _check_rope_scaling(self.rope_scaling)
            if self.rope_scaling["rope_type"] == "default":
                self.rope_scaling = None

    @property
    def qkv_bias(self) -> bool:
        return self.attention_bias

    @property
    def o_bias(self) -> bool:
        return self.attention_bias and self.model_type == "llama"

    @classmethod
    def from_shape(cls, shape: str, vocab_size: int, **overrides: Any) -> ModelConfig:
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPES)}")
        return cls(vocab_size=vocab_size, **{**SHAPES[shape], **overrides})

    def num_parameters(self) -> int:
        """Parameter count (tied embeddings counted once), computed from shapes alone."""
        q_dim = self.num_attention_heads * self.head_dim
        kv_dim = self.num_key_value_heads * self.head_dim
        attention = self.hidden_size * (q_dim + 2 * kv_dim) + q_dim * self.hidden_size
        attention += (q_dim + 2 * kv_dim) * self.qkv_bias + self.hidden_size * self.o_bias
        mlp = 3 * self.hidden_size * self.intermediate_size
        mlp += (2 * self.intermediate_size + self.hidden_size) * self.mlp_bias
        per_layer = attention + mlp + 2 * self.hidden_size
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_hidden_layers * per_layer + embeddings + self.hidden_size

    # ---- Hugging Face config.json -------------------------------------------------------------------------

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> ModelConfig:
        """Build from a parsed `config.json`; raises ValueError naming the unsupported or missing field."""
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"unknown model_type {model_type!r} in config.json: nanoseek supports "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"unsupported hidden_act {hf['hidden_act']!r}: only 'silu' (SwiGLU) is implemented")
        if model_type == "qwen2" and hf.get("use_sliding_window"):
            raise ValueError("qwen2 with use_sliding_window=true is not supported (sliding-window attention)")
        missing = [
            k
            for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
            if k not in hf
        ]
        if missing:
            raise ValueError(f"config.json lacks required field(s): {', '.join(missing)}")

        # transformers 5 nests theta inside rope_parameters; older files keep rope_theta + rope_scaling.
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        rope_theta = float(rope.pop("rope_theta", None) or hf.get("rope_theta") or 10000.0)
        rope_type = rope.pop("rope_type", None) or rope.pop("type", None) or "default"
        rope.pop("type", None)
        if float(rope.pop("partial_rotary_factor", None) or hf.get("partial_rotary_factor") or 1.0) != 1.0:
            raise ValueError("partial_rotary_factor != 1 is not supported")
        if rope_type in ("yarn", "llama3") and "original_max_position_embeddings" not in rope:
            # transformers falls back to the model's own context length here
            rope["original_max_position_embeddings"] = hf.get("max_position_embeddings", 4096)
        if rope_type == "yarn" and rope.get("factor") is None:
            # transformers derives a missing YaRN factor from the two context lengths
            rope["factor"] = hf.get("max_position_embeddings", 4096) / rope["original_max_position_embeddings"]
        rope_scaling = None if rope_type == "default" else {"rope_type": rope_type, **rope}

        known = {f.name for f in dataclasses.fields(cls)} | {
            "rope_parameters",
            "rope_scaling",
            "torch_dtype",
            "architectures",
            "transformers_version",
            "partial_rotary_factor",
            "hidden_act",
            "use_sliding_window",
            "sliding_window",
            "max_window_layers",
            "layer_types",
            "use_cache",
            "attention_dropout",
            "initializer_range",
            "pretraining_tp",
        }
        dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
        return cls(
            model_type=model_type,
            vocab_size=int(hf["vocab_size"]),
            hidden_size=int(hf["hidden_size"]),
            intermediate_size=int(hf["intermediate_size"]),
            num_hidden_layers=int(hf["num_hidden_layers"]),
            num_attention_heads=int(hf["num_attention_heads"]),
            num_key_value_heads=hf.get("num_key_value_heads"),
            head_dim=hf.get("head_dim"),
            max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            attention_bias=bool(hf.get("attention_bias", False)),
            mlp_bias=bool(hf.get("mlp_bias", False)) if model_type == "llama" else False,
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
            pad_token_id=hf.get("pad_token_id"),
            dtype=dtype if dtype in SUPPORTED_DTYPES else "float32",
            extra={k: v for k, v in hf.items() if k not in known},
        )

    def to_hf(self) -> dict[str, Any]:
        """The `config.json` dict. Rotary settings are written both as transformers 5 `rope_parameters` and as the
        legacy `rope_theta`/`rope_scaling` pair, so that transformers 4.x loads the same model."""
        hf: dict[str, Any] = {
            **self.extra,
            "architectures": [ARCHITECTURES[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": {"rope_type": "default", **(self.rope_scaling or {}), "rope_theta": self.rope_theta},
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "dtype": self.dtype,
            "torch_dtype": self.dtype,
            "use_cache": True,
        }
        if self.model_type == "llama":
            hf["attention_bias"] = self.attention_bias
            hf["mlp_bias"] = self.mlp_bias
        else:
            hf["use_sliding_window"] = False
        return hf


def _check_rope_scaling(rope_scaling: dict[str, Any]) -> dict[str, Any]:
    scaling = dict(rope_scaling)
    rope_type = scaling.get("rope_type") or scaling.pop("type", None)
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"unsupported rope_type {rope_type!r}; nanoseek implements {', '.join(SUPPORTED_ROPE_TYPES)}")
    scaling["rope_type"] = rope_type
    if rope_type != "default":
        factor = scaling.get("factor")
        if not isinstance(factor, (int, float)) or factor <= 0 or math.isnan(factor):
            raise ValueError(f"rope_scaling of type {rope_type!r} needs a positive 'factor', got {factor!r}")
    if rope_type in ("yarn", "llama3") and "original_max_position_embeddings" not in scaling:
        raise ValueError(f"rope_scaling of type {rope_type!r} needs 'original_max_position_embeddings'")
    if rope_type == "llama3":
        for key in ("low_freq_factor", "high_freq_factor"):
            if key not in scaling:
                raise ValueError(f"rope_scaling of type 'llama3' needs {key!r}")
    return scaling
