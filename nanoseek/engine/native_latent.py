"""The native decode step for DeepSeek-V2/V3 models: multi-head latent attention and DeepSeekMoE in one C call.

    decoder = LatentNativeDecoder.build(model, cache, max_batch=32)   # None when the path does not apply
    logits = decoder.step(tokens, positions, slots)                   # writes each row's latent into the cache

The engine's runner builds one for MLA models where it builds a NativeDecoder for Llama-family ones, decodes
(and prefills short chunks) through it, and steps aside for the PyTorch model once a weight changes.
`nanoseek_latent_decode_step` in native_decode.c is the step; this module lays the weights out for it:

* the "A" projection: q_proj (or q_a_proj) and kv_a_proj_with_mqa stacked into one packed weight, both read
  the same normed input;
* per head, kv_b_proj's key rows transposed (W_UK_h^T: [kv_lora_rank, nope]) and value rows (W_UV_h:
  [v, kv_lora_rank]), each packed as a projection of its own: the absorbed projections of deepseek.py's
  `LatentAttention.absorbed_projections`, applied inside each row and head's attention task;
* the router's weight in fp32 (the model routes in fp32), the routed experts' gate/up (in the SwiGLU epilogue's
  row order) and down weights packed one after the other, and the shared experts as one SwiGLU MLP.

fp32 models, and bf16 ones on CPUs with AVX512-BF16 (AMX tiles where the CPU has them and every projection's
inputs are multiples of 32), as the Llama step. A model whose feed-forward weights are quantized (quantized.py: the
dense MLPs, shared and routed experts in q8_0 or q4_1; `--dtype q8_0`) runs them on the quantized kernels (VNNI
where the CPU has it), read from their blocks, each layer's gate/up and down in the types of `weight_types`, and the
rest of the step in fp32: at batch 8 the routed experts' weights are most of what a step streams (BENCHMARKS.md,
issue 22), and q8_0 streams 1.06 bytes per weight where fp32 streams 4.
"""

from __future__ import annotations

import ctypes

import torch

from nanoseek.engine.kv_cache import SlotKVCache
from nanoseek.engine.latent_cache import LatentKVCache
from nanoseek.engine.native import (
    KERNEL_NAMES,
    WEIGHT_TYPES,
    NativeDecoder,
    NativeUnavailable,
    _DecodeModel,
    _pointers,
    _Workspace,
    bf16_tiles,
    check_cpu_transformer,
    check_weight_bytes,
    compiled_library,
    fp32_vector,
    packed_projection,
    padded_inputs,
    padded_intermediate,
    swiglu_blocks,
    vnni_allowed,
)
from nanoseek.model.config import ModelConfig
from nanoseek.model.deepseek import Experts, LatentAttention, MoE
from nanoseek.model.layers import MLP, Linear
from nanoseek.model.quantized import QuantizedExperts, QuantizedLinear, swiglu_row_order
from nanoseek.model.transformer import Block, Transformer


class _LatentModel(ctypes.Structure):
    # Mirrors `LatentModel` in native_decode.c, field for field.
    _fields_ = (
        [("base", _DecodeModel)]
        + [
            (name, ctypes.c_int32)
            for name in (
                "q_lora_rank",
                "kv_lora_rank",
                "nope_dim",
                "rope_dim",
                "v_dim",
                "interleaved",
                "projection_type",
                "num_experts",
                "top_k",
                "num_groups",
                "topk_group",
                "sigmoid",
                "normalise",
                "expert_intermediate",
                "shared_intermediate",
            )
        ]
        + [(name, ctypes.c_float) for name in ("latent_eps", "scale", "routed_scaling")]
        + [
            (name, ctypes.c_void_p)
            for name in (
                "a_weight",
                "a_bias",
                "q_a_norm",
                "q_b_weight",
                "kv_a_norm",
                "key_up",
                "value_up",
                "o_weight",
                "o_bias",
                "router",
                "router_bias",
                "expert_gate_up",
                "expert_down",
                "shared_gate_up",
                "shared_down",
            )
        ]
    )


class _LatentWorkspace(ctypes.Structure):
    _fields_ = [("base", _Workspace)] + [
        (name, ctypes.c_void_p)
        for name in (
            "a_out",
            "q",
            "q_a_normed",
            "router_logits",
            "expert_in",
            "expert_act",
            "expert_out",
            "shared_act",
        )
    ]


def _swiglu(gate_up: torch.Tensor, padded: int) -> torch.Tensor:
    """A SwiGLU gate/up weight [2I, in] packed in the epilogue's row order, I zero-padded to `padded`."""
    return packed_projection(swiglu_blocks(gate_up, padded))


def _stacked(weights: list[torch.Tensor]) -> torch.Tensor:
    """Packed weights one after the other in one buffer (the C step steps through them by their size)."""
    return torch.cat([weight.reshape(-1) for weight in weights])


def _feed_forward_layers(mlp: MLP | MoE) -> list[tuple[torch.nn.Module, bool]]:
    """A layer's feed-forward projections, each with whether it is a gate/up one: an MLP's gate/up and down, or an
    MoE's shared experts' and routed experts' (the C step reads all of a layer's in one storage type)."""
    if isinstance(mlp, MLP):
        return [(mlp.gate_up_proj, True), (mlp.down_proj, False)]
    shared = mlp.shared_experts
    layers = [] if shared is None else [(shared.gate_up_proj, True), (shared.down_proj, False)]
    if isinstance(mlp.experts, QuantizedExperts):
        return (
            layers + [(layer, True) for layer in mlp.experts.gate_up] + [(layer, False) for layer in mlp.experts.down]
        )
    return layers + [(mlp.experts, False)]


def _feed_forward_type(mlp: MLP | MoE, dtype: torch.dtype) -> int:
    """The WEIGHT_* code of a layer's feed-forward weights: the model's dtype, or the one quantized type they all
    have; raises NativeUnavailable for a mix, or quantized gate/up rows not in the SwiGLU epilogue's order."""
    codes = set()
    for layer, gate_up in _feed_forward_layers(mlp):
        if isinstance(layer, QuantizedLinear):
            order = layer.row_order
            if gate_up and (order is None or not torch.equal(order, swiglu_row_order(layer.out_features // 2))):
                raise NativeUnavailable("a quantized gate/up projection whose rows are not in SwiGLU block order")
            codes.add(WEIGHT_TYPES[layer.qtype])
        elif type(layer) in (Linear, Experts):
            codes.add(WEIGHT_TYPES.get(next(layer.parameters()).dtype, -1))
        else:
            raise NativeUnavailable(f"a {type(layer).__name__} in a feed-forward layer")
    if len(codes) != 1 or (codes - {WEIGHT_TYPES[dtype], WEIGHT_TYPES["q8_0"], WEIGHT_TYPES["q4_1"]}):
        raise NativeUnavailable("a feed-forward layer whose weights mix storage types, or not the model's dtype")
    return codes.pop()


class LatentNativeDecoder(NativeDecoder):
    """Decode steps of one DeepSeek-V2/V3 model over one LatentKVCache, through the compiled C step."""

    # The PyTorch forward of a short prompt is mostly per-op overhead, more of it for MLA + MoE than for a Llama
    # (routing, a pair of products per expert): on the mla_moe recipe's model (1 thread, CPU time) a 16-token
    # prompt took 13 ms there and 2.4-2.7 ms as steps of 8 or 32 rows, 64 tokens 19 ms vs 8-12 ms; at 256 tokens
    # steps of 32 rows were still a little faster (37 vs 41 ms), steps of 8 slower (54 ms).
    short_prompt_steps = 4

    def __init__(
        self, library: ctypes.CDLL, model: Transformer, cache: LatentKVCache, max_batch: int, amx: bool, vnni: bool
    ) -> None:
        config = model.config
        self._library, self.max_batch = library, max_batch
        self._function = library.nanoseek_latent_decode_step
        self._threads = torch.get_num_threads()
        dtype = model.dtype
        self.kernel = "fp32" if dtype == torch.float32 else "bf16 AMX tiles" if amx else "bf16 AVX512-BF16"
        feed_forward_types = [_feed_forward_type(block.mlp, dtype) for block in model.layers]
        quantized_types = dict.fromkeys(code for code in feed_forward_types if code != WEIGHT_TYPES[dtype])
        # A quantized model's PyTorch forward dequantizes its weights per call: the engine prefills it stepwise.
        self.quantized = bool(quantized_types)
        for code in quantized_types:
            self.kernel += f", {KERNEL_NAMES[code]} {'AVX512-VNNI' if vnni else 'portable'} feed-forward"
        heads, rank = config.num_attention_heads, config.kv_lora_rank
        dense_inner = padded_intermediate(config.intermediate_size)
        expert_inner = padded_intermediate(config.moe_intermediate_size) if config.is_moe else 0
        shared_inner = (
            padded_intermediate(config.moe_intermediate_size * config.n_shared_experts) if config.is_moe else 0
        )
        layers = list(model.layers)
        moe_layers = [isinstance(block.mlp, MoE) for block in layers]

        def a_weight(attention: LatentAttention) -> torch.Tensor:
            query = attention.q_proj if config.q_lora_rank is None else attention.q_a_proj
            return packed_projection(torch.cat((query.weight.detach(), attention.kv_a_proj_with_mqa.weight.detach())))

        def a_bias(attention: LatentAttention) -> torch.Tensor | None:
            if attention.kv_a_proj_with_mqa.bias is None:
                return None
            query = attention.q_proj if config.q_lora_rank is None else attention.q_a_proj
            query_bias = query.bias if query.bias is not None else torch.zeros(query.out_features)
            return fp32_vector(
                torch.cat((query_bias.detach().float(), attention.kv_a_proj_with_mqa.bias.detach().float()))
            )

        def absorbed(attention: LatentAttention) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad():
                key_up, value_up = attention.absorbed_projections()  # [H, nope, L], [H, L, v]
            keys = _stacked([packed_projection(key_up[h].t()) for h in range(heads)])
            values = _stacked([packed_projection(value_up[h].t()) for h in range(heads)])
            return keys, values

        def swiglu_mlp(mlp: MLP, name: str, inner: int) -> torch.Tensor:
            """An MLP's gate/up or down weight as the step reads it: its quantized blocks (already in the step's
            layout and SwiGLU row order), or a packed copy."""
            layer = mlp.gate_up_proj if name == "gate_up" else mlp.down_proj
            if isinstance(layer, QuantizedLinear):
                return layer.packed
            if name == "gate_up":
                return _swiglu(layer.weight, inner)
            return packed_projection(padded_inputs(layer.weight, inner))

        def dense(block: Block, name: str) -> torch.Tensor | None:
            return None if isinstance(block.mlp, MoE) else swiglu_mlp(block.mlp, name, dense_inner)

        def routed(block: Block, name: str) -> torch.Tensor | None:
            if not isinstance(block.mlp, MoE):
                return None
            experts = block.mlp.experts
            if isinstance(experts, QuantizedExperts):
                return _stacked([layer.packed for layer in (experts.gate_up if name == "gate_up" else experts.down)])
            if name == "gate_up":
                return _stacked([_swiglu(weight, expert_inner) for weight in experts.gate_up_proj.detach()])
            return _stacked(
                [packed_projection(padded_inputs(weight, expert_inner)) for weight in experts.down_proj.detach()]
            )

        def shared(block: Block, name: str) -> torch.Tensor | None:
            mlp = block.mlp.shared_experts if isinstance(block.mlp, MoE) else None
            return None if mlp is None else swiglu_mlp(mlp, name, shared_inner)

        attention_of = [block.self_attn for block in layers]
        absorbed_weights = [absorbed(attention) for attention in attention_of]
        tables = {
            "input_norm": [fp32_vector(b.input_layernorm.weight) for b in layers],
            "post_norm": [fp32_vector(b.post_attention_layernorm.weight) for b in layers],
            "gate_up_weight": [dense(b, "gate_up") for b in layers],
            "down_weight": [dense(b, "down") for b in layers],
            "a_weight": [a_weight(a) for a in attention_of],
            "a_bias": [a_bias(a) for a in attention_of],
            "q_a_norm": [
                fp32_vector(a.q_a_layernorm.weight) if hasattr(a, "q_a_layernorm") else None for a in attention_of
            ],
            "q_b_weight": [
                packed_projection(a.q_b_proj.weight) if hasattr(a, "q_b_proj") else None for a in attention_of
            ],
            "kv_a_norm": [fp32_vector(a.kv_a_layernorm.weight) for a in attention_of],
            "key_up": [keys for keys, _ in absorbed_weights],
            "value_up": [values for _, values in absorbed_weights],
            "o_weight": [packed_projection(a.o_proj.weight) for a in attention_of],
            "o_bias": [fp32_vector(a.o_proj.bias) for a in attention_of],
            "router": [packed_projection(b.mlp.gate.weight.float()) if m else None for b, m in zip(layers, moe_layers)],
            "router_bias": [
                fp32_vector(getattr(b.mlp.gate, "e_score_correction_bias", None)) if m else None
                for b, m in zip(layers, moe_layers)
            ],
            "expert_gate_up": [routed(b, "gate_up") for b in layers],
            "expert_down": [routed(b, "down") for b in layers],
            "shared_gate_up": [shared(b, "gate_up") for b in layers],
            "shared_down": [shared(b, "down") for b in layers],
        }
        projection_type = WEIGHT_TYPES[dtype]
        # Per layer: q/k/v and o (the latent step reads `projection_type` for its attention), then the feed-forward
        # gate/up and down (the dense MLP's, or the shared and routed experts'); the output head last.
        weight_types = [projection_type] * (4 * len(layers) + 1)
        for layer, code in enumerate(feed_forward_types):
            weight_types[4 * layer + 2] = weight_types[4 * layer + 3] = code
        base_tables = ("input_norm", "post_norm", "gate_up_weight", "down_weight")
        self._keep: list = []
        base = self._decode_model(
            model,
            cache,
            {name: tables.pop(name) for name in base_tables} | {"keys": cache.keys},
            embed=model.embed_tokens.weight.detach().float().t().contiguous(),  # [hidden, vocab], as the Llama step's
            embed_type=0,
            lm_head=packed_projection(model.lm_head.weight),
            weight_types=torch.tensor(weight_types, dtype=torch.int32),
            amx=amx,
            vnni=vnni,
            num_heads=heads,
            num_kv_heads=1,
            head_dim=config.qk_rope_head_dim,
            intermediate=dense_inner,
        )
        # The latent step's own arrays, kept alive here like the base's: the struct only holds their addresses.
        arrays = {name: _pointers(tensors) for name, tensors in tables.items()}
        self._keep += [tables, arrays]
        scaling = config.routed_scaling_factor if config.is_moe else 1.0
        router = next((b.mlp.gate for b, m in zip(layers, moe_layers) if m), None)
        self._model = _LatentModel(
            base=base,
            q_lora_rank=config.q_lora_rank or 0,
            kv_lora_rank=rank,
            nope_dim=config.qk_nope_head_dim,
            rope_dim=config.qk_rope_head_dim,
            v_dim=config.v_head_dim,
            interleaved=int(config.rope_interleave),
            projection_type=projection_type,
            num_experts=config.n_routed_experts if config.is_moe else 0,
            top_k=config.num_experts_per_tok if config.is_moe else 0,
            num_groups=(router.groups or 0) if router is not None else 0,
            topk_group=config.topk_group or 0,
            sigmoid=int(router is not None and router.sigmoid),
            normalise=int(router is not None and router.normalise),
            expert_intermediate=expert_inner,
            shared_intermediate=shared_inner,
            latent_eps=layers[0].self_attn.kv_a_layernorm.eps,
            scale=layers[0].self_attn.scale,
            routed_scaling=scaling,
            **{name: ctypes.cast(array, ctypes.c_void_p) for name, array in arrays.items()},
        )
        batch, top_k = max_batch, max(config.num_experts_per_tok if config.is_moe else 0, 1)
        query_width = heads * config.qk_head_dim
        a_width = (config.q_lora_rank or query_width) + config.latent_dim
        # normed, router_logits and expert_in are per thread: each thread norms and routes every row itself.
        threads = self._threads
        widths = {
            "x": config.hidden_size,
            "normed": threads * config.hidden_size,
            "attention": heads * config.v_head_dim,
            "activation": dense_inner,
            "a_out": a_width,
            "q": query_width,
            "q_a_normed": config.q_lora_rank or 0,
            "router_logits": threads * config.n_routed_experts if config.is_moe else 0,
            "expert_in": threads * top_k * config.hidden_size,
            "expert_act": top_k * expert_inner,
            "expert_out": top_k * config.hidden_size,
            "shared_act": shared_inner,
        }
        self._buffers = {name: torch.empty(max(batch * width, 1)) for name, width in widths.items()}
        pairs_per_thread = self._add_thread_buffers(batch, max(input_widths(config)), cache.slot_capacity)
        base_buffers = ("x", "normed", "attention", "activation", "scores", "input_pairs")
        self._workspace = _LatentWorkspace(
            base=_Workspace(
                qkv=self._buffers["a_out"].data_ptr(),  # unused by the latent step
                input_pairs_per_thread=pairs_per_thread,
                **{name: self._buffers[name].data_ptr() for name in base_buffers},
            ),
            **{name: buffer.data_ptr() for name, buffer in self._buffers.items() if name not in base_buffers},
        )
        self._logits = torch.empty(max_batch, config.vocab_size)

    @classmethod
    def build_or_raise(
        cls,
        model: torch.nn.Module,
        cache: SlotKVCache,
        max_batch: int,
        max_weight_bytes: int = 1 << 30,
        allow_amx: bool = True,
        allow_vnni: bool = True,
    ) -> LatentNativeDecoder:
        """A decoder for the MLA model `model` over its LatentKVCache; raises NativeUnavailable saying why when the
        path does not apply (another dtype, a quantized or LoRA-wrapped projection outside the feed-forward layers,
        MLP biases, odd bf16 widths, too many weight bytes, no compiler). `build` returns None instead
        (NativeDecoder.build). `allow_vnni=False` (or NANOSEEK_NATIVE_VNNI=0) keeps quantized feed-forward weights
        on the portable loops."""
        check_cpu_transformer(model)
        if not isinstance(cache, LatentKVCache):
            raise NativeUnavailable(f"a {type(cache).__name__}, not a latent cache")
        config = model.config
        if model.dtype not in (torch.float32, torch.bfloat16) or cache.dtype != model.dtype:
            raise NativeUnavailable(f"{model.dtype} weights or a {cache.dtype} cache (it takes float32 or bfloat16)")
        if config.mlp_bias:
            raise NativeUnavailable("MLP biases")
        if not all(type(b.self_attn) is LatentAttention and type(b.mlp) in (MLP, MoE) for b in model.layers):
            raise NativeUnavailable("layers other than DeepSeek's latent attention and MLP or MoE")
        feed_forward = {id(layer) for b in model.layers for layer, _ in _feed_forward_layers(b.mlp)}
        for b in model.layers:
            _feed_forward_type(b.mlp, model.dtype)  # raises for what the step cannot read
        others = [
            module
            for module in model.modules()
            if isinstance(module, (torch.nn.Linear, QuantizedLinear)) and id(module) not in feed_forward
        ]
        if not all(type(module) is Linear and module.weight.dtype == model.dtype for module in others):
            raise NativeUnavailable("a quantized or LoRA-wrapped projection outside the feed-forward, or mixed dtypes")
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        weight_bytes += sum(m.weight_bytes for m in model.modules() if isinstance(m, QuantizedLinear))
        check_weight_bytes(weight_bytes, max_weight_bytes)
        library = compiled_library()
        amx = False
        if model.dtype == torch.bfloat16:
            amx = bf16_tiles(library, input_widths(config), allow_amx)
        vnni = allow_vnni and vnni_allowed() and bool(library.nanoseek_supports_vnni())
        return cls(library, model, cache, max_batch, amx, vnni)


def input_widths(config: ModelConfig) -> list[int]:
    """The input width of every projection the latent step runs (bf16 pairs need them even, AMX tiles x 32)."""
    widths = [
        config.hidden_size,
        config.qk_nope_head_dim,  # the absorbed key projection's input: q_nope of one head
        config.kv_lora_rank,  # the value projection's input: one head's attended latents
        config.num_attention_heads * config.v_head_dim,
        padded_intermediate(config.intermediate_size),
    ]
    if config.q_lora_rank:
        widths.append(config.q_lora_rank)
    if config.is_moe:
        widths.append(padded_intermediate(config.moe_intermediate_size))
        if config.n_shared_experts:
            widths.append(padded_intermediate(config.moe_intermediate_size * config.n_shared_experts))
    return widths
