"""ModelConfig: the single source of shapes for nanoseek's transformer, and its mapping to HF `config.json`.

Supported Hugging Face `model_type`s are `llama` and `qwen2` (the Llama family: RMSNorm, rotary, GQA, SwiGLU), and
`deepseek_v2` / `deepseek_v3`: multi-head latent attention (MLA: low-rank q and kv projections, a decoupled rotary
part) and DeepSeekMoE (shared + routed experts; V2 softmax routing, greedy or group-limited; V3 sigmoid routing
with the aux-loss-free `e_score_correction_bias` and group-limited top-k), with the first
`first_k_dense_replace` layers dense.
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

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "deepseek_v2", "deepseek_v3")
DEEPSEEK_MODEL_TYPES = ("deepseek_v2", "deepseek_v3")
SUPPORTED_ROPE_TYPES = ("default", "linear", "yarn", "llama3")
SUPPORTED_DTYPES = ("float32", "bfloat16", "float16")
QUANTIZED_DTYPES = ("q8_0", "q4_1")  # what a model's projections can be quantized to at load (model/quantized.py)
# what the engine's KV cache can store (`serve --kv-cache-dtype`; auto: engine/runner.py resolve_kv_cache_dtype)
KV_CACHE_DTYPES = ("auto", *SUPPORTED_DTYPES)
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "deepseek_v2": "DeepseekV2ForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM",
}
# config.json keys of the DeepSeek types that map one to one onto ModelConfig fields.
DEEPSEEK_FIELDS = (
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "n_routed_experts",
    "n_shared_experts",
    "num_experts_per_tok",
    "moe_intermediate_size",
    "first_k_dense_replace",
    "n_group",
    "topk_group",
    "topk_method",
    "routed_scaling_factor",
    "norm_topk_prob",
    "rope_interleave",
)
V2_TOPK_METHODS = ("greedy", "group_limited_greedy")

# Named shapes: "tiny" keeps tests fast, "small"/"medium" match the S/M models of shared/BENCH-NOTES.md,
# "bench25m" is the ~25M-parameter Llama of the batch-1 decode benchmark (at vocab 8192), "tiny_mla_moe" a
# DeepSeek-V3 layout (MLA, 8 routed experts in 4 groups, top-2 from 2 groups, one shared, first layer dense).
SHAPES: dict[str, dict[str, Any]] = {
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
    "tiny_mla_moe": dict(
        model_type="deepseek_v3",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        kv_lora_rank=16,  # + rope 8: 24 values per token per layer, 19% of a 4-head MHA's 128
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=16,
        n_routed_experts=8,
        n_shared_experts=1,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        first_k_dense_replace=1,
        n_group=4,
        topk_group=2,
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
    # ---- deepseek_v2 / deepseek_v3 only (transformers' DeepseekV2Config / DeepseekV3Config names) ----
    q_lora_rank: int | None = None  # None: one full q projection (V2-Lite), else q_a -> norm -> q_b
    kv_lora_rank: int = 0  # the compressed latent that the engine caches (plus qk_rope_head_dim)
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0  # the decoupled rotary part, shared by all heads on the key side
    v_head_dim: int = 0
    n_routed_experts: int | None = None  # None: every layer dense
    n_shared_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    first_k_dense_replace: int = 0  # layers before this one keep a dense MLP of intermediate_size
    n_group: int | None = None  # expert groups for group-limited routing
    topk_group: int | None = None  # groups a token may use
    topk_method: str = "greedy"  # V2: greedy | group_limited_greedy; V3 always routes group-limited (noaux_tc)
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = False  # V3: renormalise the chosen experts' weights (transformers' V2 ignores it)
    rope_interleave: bool = True  # rotary on interleaved pairs (x0, x1), (x2, x3) ... as DeepSeek lays them out
    extra: dict[str, Any] = field(default_factory=dict)  # other config.json keys, written back unchanged

    def __post_init__(self) -> None:
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"unknown model_type {self.model_type!r}: nanoseek supports {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        if self.model_type == "qwen2":
            self.attention_bias = True
        if self.num_key_value_heads is None or self.is_mla:
            self.num_key_value_heads = self.num_attention_heads
        if self.is_mla:
            self._check_deepseek()
            self.head_dim = self.qk_rope_head_dim  # as transformers: the rotary table's width
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

    def _check_deepseek(self) -> None:
        self.q_lora_rank = self.q_lora_rank or None  # 0 means none too: TOML recipes cannot write None
        for name in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{self.model_type} needs a positive {name}, got {getattr(self, name)}")
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"qk_rope_head_dim must be even for rotary embeddings, got {self.qk_rope_head_dim}")
        if self.model_type == "deepseek_v2":
            self.rope_interleave = True  # V2 always rotates interleaved pairs (its complex-number rotary)
            if self.topk_method not in V2_TOPK_METHODS:
                raise ValueError(f"deepseek_v2 topk_method {self.topk_method!r}: expected one of {V2_TOPK_METHODS}")
        if not self.is_moe:
            return
        if min(self.num_experts_per_tok, self.moe_intermediate_size) <= 0:
            raise ValueError("a mixture of experts needs positive num_experts_per_tok and moe_intermediate_size")
        if self.num_experts_per_tok > self.n_routed_experts:
            raise ValueError(
                f"num_experts_per_tok {self.num_experts_per_tok} > n_routed_experts {self.n_routed_experts}"
            )
        if self.group_limited:
            groups, chosen = self.n_group or 0, self.topk_group or 0
            if groups <= 0 or self.n_routed_experts % groups or not 0 < chosen <= groups:
                raise ValueError(
                    f"group-limited routing needs n_group dividing n_routed_experts {self.n_routed_experts} and "
                    f"0 < topk_group <= n_group; got n_group {self.n_group}, topk_group {self.topk_group}"
                )
            if self.model_type == "deepseek_v3" and self.n_routed_experts // groups < 2:
                raise ValueError("deepseek_v3 scores a group by its two best experts: n_group <= n_routed_experts / 2")

    @property
    def is_mla(self) -> bool:
        """Multi-head latent attention (the DeepSeek types)."""
        return self.model_type in DEEPSEEK_MODEL_TYPES

    @property
    def is_moe(self) -> bool:
        return self.is_mla and bool(self.n_routed_experts)

    @property
    def group_limited(self) -> bool:
        """Routing picks topk_group expert groups first, then the top-k experts inside them."""
        return self.model_type == "deepseek_v3" or self.topk_method == "group_limited_greedy"

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_dim(self) -> int:
        """Values cached per token per layer by MLA: the compressed kv latent and the rotary key part."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    def is_moe_layer(self, layer_idx: int) -> bool:
        return self.is_moe and layer_idx >= self.first_k_dense_replace

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

    def num_parameters(self, active: bool = False) -> int:
        """Parameter count (tied embeddings counted once), computed from shapes alone. `active`: count only the
        routed experts a token uses (num_experts_per_tok of n_routed_experts), the compute per token of an MoE."""
        if self.is_mla:
            return self._deepseek_parameters(active)
        q_dim = self.num_attention_heads * self.head_dim
        kv_dim = self.num_key_value_heads * self.head_dim
        attention = self.hidden_size * (q_dim + 2 * kv_dim) + q_dim * self.hidden_size
        attention += (q_dim + 2 * kv_dim) * self.qkv_bias + self.hidden_size * self.o_bias
        mlp = 3 * self.hidden_size * self.intermediate_size
        mlp += (2 * self.intermediate_size + self.hidden_size) * self.mlp_bias
        per_layer = attention + mlp + 2 * self.hidden_size
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_hidden_layers * per_layer + embeddings + self.hidden_size

    def _deepseek_parameters(self, active: bool) -> int:
        hidden, heads = self.hidden_size, self.num_attention_heads
        q_out = heads * self.qk_head_dim
        if self.q_lora_rank is None:
            query = hidden * q_out
        else:
            query = hidden * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * q_out
        bias = self.attention_bias * ((self.q_lora_rank or 0) + self.latent_dim + hidden)
        attention = query + hidden * self.latent_dim + self.kv_lora_rank
        attention += self.kv_lora_rank * heads * (self.qk_nope_head_dim + self.v_head_dim)
        attention += heads * self.v_head_dim * hidden + bias
        total = self.vocab_size * hidden * (1 if self.tie_word_embeddings else 2) + hidden
        for layer in range(self.num_hidden_layers):
            if self.is_moe_layer(layer):
                experts = self.num_experts_per_tok if active else self.n_routed_experts
                mlp = 3 * hidden * self.moe_intermediate_size * (experts + self.n_shared_experts)
                mlp += self.n_routed_experts * hidden
            else:
                mlp = 3 * hidden * self.intermediate_size
            total += attention + mlp + 2 * hidden
        return total

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
        if model_type == "deepseek_v3" and hf.get("scoring_func", "sigmoid") != "sigmoid":
            raise ValueError(f"deepseek_v3 with scoring_func {hf['scoring_func']!r}: only 'sigmoid' is implemented")
        if model_type == "deepseek_v2" and hf.get("scoring_func", "softmax") != "softmax":
            raise ValueError(f"deepseek_v2 with scoring_func {hf['scoring_func']!r}: only 'softmax' is implemented")
        if model_type in DEEPSEEK_MODEL_TYPES and hf.get("moe_layer_freq", 1) != 1:
            raise ValueError("moe_layer_freq != 1 is not supported (transformers ignores it too)")
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
        deepseek: dict[str, Any] = {}
        if model_type in DEEPSEEK_MODEL_TYPES:
            known |= {
                "qk_head_dim",
                "head_dim",
                "num_key_value_heads",
                "scoring_func",
                "moe_layer_freq",
                "aux_loss_alpha",
            }
            known |= {"seq_aux", "output_router_logits", "ep_size", "num_nextn_predict_layers", "mlp_bias"}
            deepseek = {k: hf[k] for k in DEEPSEEK_FIELDS if hf.get(k) is not None}
            if model_type == "deepseek_v3":
                # transformers' V3 defaults for keys a config may leave out
                defaults = dict(n_group=8, topk_group=4, norm_topk_prob=True, rope_interleave=True)
                deepseek = {**defaults, **deepseek, "topk_method": "noaux_tc"}
                deepseek.setdefault("routed_scaling_factor", 2.5)
                deepseek.setdefault("first_k_dense_replace", 3)
        dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
        return cls(
            model_type=model_type,
            vocab_size=int(hf["vocab_size"]),
            hidden_size=int(hf["hidden_size"]),
            intermediate_size=int(hf["intermediate_size"]),
            num_hidden_layers=int(hf["num_hidden_layers"]),
            num_attention_heads=int(hf["num_attention_heads"]),
            num_key_value_heads=None if deepseek else hf.get("num_key_value_heads"),
            head_dim=None if deepseek else hf.get("head_dim"),
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
            **deepseek,
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
        elif self.model_type == "qwen2":
            hf["use_sliding_window"] = False
        else:
            hf["attention_bias"] = self.attention_bias
            hf.update({name: getattr(self, name) for name in DEEPSEEK_FIELDS})
            hf["qk_head_dim"] = self.qk_head_dim
            hf["n_routed_experts"] = self.n_routed_experts or 0
            if not self.is_moe:  # all layers dense: transformers builds experts only from first_k_dense_replace on
                hf["first_k_dense_replace"] = self.num_hidden_layers
            hf["scoring_func"] = "sigmoid" if self.model_type == "deepseek_v3" else "softmax"
            if self.model_type == "deepseek_v3":
                hf.setdefault("num_nextn_predict_layers", 0)  # nanoseek has no multi-token prediction module
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
