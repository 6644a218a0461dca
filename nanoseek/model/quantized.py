"""Quantized projection weights: llama.cpp's Q8_0 / Q4_0 / Q4_1 blocks, kept quantized in memory.

A quantized model is nanoseek's Transformer whose projections (q/k/v, o, gate/up, down, the output head) are
`QuantizedLinear`s and whose embedding, when it is quantized too, is a `QuantizedEmbedding` reading the same
blocks. `feed_forward_only` quantizes the MLPs' gate/up and down alone. In DeepSeek-V2/V3 models (MLA + MoE) only
the feed-forward weights are quantized, always: the dense first layers' MLPs, the shared experts and the routed
ones (`QuantizedExperts`), most of an MoE model's bytes and all of what a batched decode step streams per routed
expert; the latent attention (whose absorbed per-head products the native step builds from kv_b_proj, on inputs of
qk_nope_head_dim that need not be multiples of 32), the router, the embedding and the output head stay fp32. The
blocks are stored once, in the layout the native decode step (engine/native_decode.c) multiplies from directly, so
the engine keeps no second copy; PyTorch forwards (long prefills, the engine without the native step, training
code that only reads the model) dequantize a projection's weight to fp32 for the call.

Formats, as in ggml (32 weights per block, one block per 32 inputs of one output row):
* q8_0: w = d * q, q int8, d fp16.
* q4_1: w = d * q + m, q in 0..15, d and m fp16.
* q4_0 (read from GGUF files): w = d * (q - 8), kept as q4_1 with m = -8 d (exact in fp16), so one kernel
  serves both.

Packed layout (what native_decode.c reads; `pack_q8_0` / `pack_q4_1`): output rows in column blocks of 32
(the last one zero-padded), each column block a sequence of input blocks of 32 inputs:
* q8_0, 1,088 bytes per input block: 8 groups of 4 inputs x 32 columns x 4 bytes (q + 128 as uint8: what
  VPDPBUSD multiplies, columns 0-15 then 16-31, each column's 4 inputs side by side), then 32 fp16 d.
* q4_1, 640 bytes per input block: 4 pairs of groups x 32 columns x 4 bytes, the lower group of the pair in the
  low nibble and the higher one in the high nibble, then 32 fp16 d, then 32 fp16 m.
A 64-byte load then holds 16 columns' weights for 4 (q8_0) or 8 (q4_1) consecutive inputs, and the sums of 16
columns accumulate in the lanes of one vector without horizontal reductions, as in the fp32/bf16 layouts.

    model = quantize_model(load_model(path), "q8_0")     # what `--dtype q8_0` does at load time
    model = quantize_model(model, "q8_0", feed_forward_only=True)   # the MLPs (and experts) alone
    layer = QuantizedLinear.from_ggml(gguf_type, raw_rows, in_features)   # blocks read from a GGUF file
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoseek.model.config import QUANTIZED_DTYPES
from nanoseek.model.deepseek import Experts, LatentAttention, MoE
from nanoseek.model.transformer import MLP, Attention, Linear

BLOCK = 32  # weights per quantized block, and output columns per packed column block
# ggml type ids (gguf.GGMLQuantizationType) of the block formats that stay quantized.
GGML_Q4_0, GGML_Q4_1, GGML_Q8_0 = 2, 3, 8
BLOCK_BYTES = {GGML_Q4_0: 18, GGML_Q4_1: 20, GGML_Q8_0: 34}  # one block as stored in a GGUF file
PACKED_BLOCK_BYTES = {"q8_0": BLOCK * BLOCK + 2 * BLOCK, "q4_1": BLOCK * BLOCK // 2 + 4 * BLOCK}


class QuantizationError(ValueError):
    """A weight that cannot be quantized or read as blocks (shape, type); the message says which."""


def _check_inputs(in_features: int) -> None:
    if in_features % BLOCK:
        raise QuantizationError(f"quantized weights need inputs in multiples of {BLOCK}, not {in_features}")


def quantize_q8_0(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q [out, in] int8 and d [out, in / 32] fp16 as llama.cpp's quantize_row_q8_0: d = max|w| / 127 per block,
    q = round(w / d) (halves away from zero)."""
    out_features, in_features = weight.shape
    _check_inputs(in_features)
    blocks = weight.detach().float().reshape(out_features, in_features // BLOCK, BLOCK)
    d = blocks.abs().amax(-1) / 127
    inverse = torch.where(d > 0, 1 / d, torch.zeros_like(d))
    scaled = blocks * inverse[..., None]
    q = (scaled.sign() * (scaled.abs() + 0.5).floor()).clamp(-127, 127).to(torch.int8)
    return q.reshape(out_features, in_features), d.half()


def parse_ggml(ggml_type: int, raw: torch.Tensor, in_features: int) -> tuple[str, dict[str, torch.Tensor]]:
    """GGUF blocks [out, row bytes] (uint8) of a Q8_0, Q4_0 or Q4_1 tensor -> ("q8_0", {q, d}) or
    ("q4_1", {q, d, m}) with q [out, in], d and m [out, in / 32] fp16."""
    _check_inputs(in_features)
    out_features = raw.shape[0]
    nb = in_features // BLOCK
    expected = nb * BLOCK_BYTES[ggml_type]
    if raw.dtype != torch.uint8 or raw.dim() != 2 or raw.shape[1] != expected:
        raise QuantizationError(f"expected uint8 blocks [out, {expected}], got {raw.dtype} {tuple(raw.shape)}")
    blocks = raw.contiguous().view(out_features, nb, BLOCK_BYTES[ggml_type])
    d = blocks[..., :2].contiguous().view(torch.float16)[..., 0]
    if ggml_type == GGML_Q8_0:
        q = blocks[..., 2:].contiguous().view(torch.int8).reshape(out_features, in_features)
        return "q8_0", {"q": q, "d": d}
    packed = blocks[..., -BLOCK // 2 :]
    # ggml's nibble order: byte j holds weight j (low nibble) and weight j + 16 (high nibble) of its block.
    q = torch.cat([packed & 15, packed >> 4], dim=-1).reshape(out_features, in_features)
    if ggml_type == GGML_Q4_1:
        m = blocks[..., 2:4].contiguous().view(torch.float16)[..., 0]
    else:
        m = d * -8  # (q - 8) d = q d - 8 d; multiplying an fp16 by 8 is exact
    return "q4_1", {"q": q, "d": d, "m": m}


def _column_blocks(tensor: torch.Tensor) -> torch.Tensor:
    """[out, ...] zero-padded to whole column blocks: [ceil(out / 32), 32, ...]."""
    out_features = tensor.shape[0]
    blocks = -(-out_features // BLOCK)
    padded = torch.zeros(blocks * BLOCK, *tensor.shape[1:], dtype=tensor.dtype)
    padded[:out_features] = tensor
    return padded.view(blocks, BLOCK, *tensor.shape[1:])


def _scale_bytes(scale: torch.Tensor) -> torch.Tensor:
    """fp16 [out, nb] -> [column blocks, nb, 64] bytes: each input block's 32 column scales."""
    return _column_blocks(scale).transpose(1, 2).contiguous().view(torch.uint8)


def pack_q8_0(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The packed q8_0 layout (module docstring), [column blocks, in / 32, 1088] uint8."""
    out_features, in_features = q.shape
    nb = in_features // BLOCK
    unsigned = (q.to(torch.int16) + 128).to(torch.uint8)  # zero-padded columns have d = 0: they add nothing
    columns = _column_blocks(unsigned).view(-1, BLOCK, nb, 8, 4)  # [cb, column, input block, group, input]
    quants = columns.permute(0, 2, 3, 1, 4).reshape(-1, nb, BLOCK * BLOCK)
    return torch.cat([quants, _scale_bytes(d)], dim=-1).contiguous()


def pack_q4_1(q: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """The packed q4_1 layout (module docstring), [column blocks, in / 32, 640] uint8."""
    out_features, in_features = q.shape
    nb = in_features // BLOCK
    columns = _column_blocks(q.to(torch.uint8)).view(-1, BLOCK, nb, 4, 2, 4)  # [cb, col, ib, pair, low/high, in]
    nibbles = columns.permute(0, 2, 3, 4, 1, 5)  # [cb, ib, pair, low/high, column, input]
    quants = (nibbles[:, :, :, 0] | (nibbles[:, :, :, 1] << 4)).reshape(-1, nb, BLOCK * BLOCK // 2)
    return torch.cat([quants, _scale_bytes(d), _scale_bytes(m)], dim=-1).contiguous()


def unpack(qtype: str, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """fp32 [out_features, in] weight of a packed tensor (or of a slice of its column blocks)."""
    column_blocks, nb, _ = packed.shape
    quant_bytes = BLOCK * BLOCK if qtype == "q8_0" else BLOCK * BLOCK // 2
    quants = packed[..., :quant_bytes]

    def scale(index: int) -> torch.Tensor:  # [cb, column, nb]
        start = quant_bytes + 2 * BLOCK * index
        return packed[..., start : start + 2 * BLOCK].contiguous().view(torch.float16).float().transpose(1, 2)

    if qtype == "q8_0":
        q = quants.view(column_blocks, nb, 8, BLOCK, 4).permute(0, 3, 1, 2, 4).float() - 128
        weight = q.reshape(column_blocks, BLOCK, nb, BLOCK) * scale(0)[..., None]
    else:
        pairs = quants.view(column_blocks, nb, 4, BLOCK, 4)
        nibbles = torch.stack([pairs & 15, pairs >> 4], dim=3)  # [cb, ib, pair, low/high, column, input]
        q = nibbles.permute(0, 4, 1, 2, 3, 5).float().reshape(column_blocks, BLOCK, nb, BLOCK)
        weight = q * scale(0)[..., None] + scale(1)[..., None]
    return weight.reshape(column_blocks * BLOCK, nb * BLOCK)[:out_features]


class QuantizedLinear(nn.Module):
    """A bias-optional linear layer whose weight lives as packed quantized blocks (module docstring).

    `row_order` (optional) lists, for each stored output row, the logical row it holds: the gate/up projection
    is stored interleaved for the native step's SwiGLU epilogue (`swiglu_row_order`). Forward dequantizes."""

    def __init__(
        self,
        qtype: str,
        packed: torch.Tensor,
        in_features: int,
        out_features: int,
        bias: torch.Tensor | None = None,
        row_order: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if qtype not in QUANTIZED_DTYPES:
            raise QuantizationError(f"unknown quantized type {qtype!r}; use one of {', '.join(QUANTIZED_DTYPES)}")
        self.qtype, self.in_features, self.out_features = qtype, in_features, out_features
        self.register_buffer("packed", packed)
        self.register_buffer("row_order", row_order)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float(), requires_grad=False)

    @classmethod
    def from_float(
        cls, weight: torch.Tensor, qtype: str, bias: torch.Tensor | None = None, row_order: torch.Tensor | None = None
    ) -> QuantizedLinear:
        """Quantize an fp32/bf16 weight [out, in] (q4_1 the way llama.cpp does: d = (max - min) / 15, m = min)."""
        out_features, in_features = weight.shape
        stored = weight.detach().float()
        if row_order is not None:
            stored = stored[row_order]
        if qtype == "q8_0":
            packed = pack_q8_0(*quantize_q8_0(stored))
        elif qtype == "q4_1":
            packed = pack_q4_1(*quantize_q4_1(stored))
        else:
            raise QuantizationError(f"unknown quantized type {qtype!r}; use one of {', '.join(QUANTIZED_DTYPES)}")
        return cls(qtype, packed, in_features, out_features, bias, row_order)

    @classmethod
    def from_ggml(
        cls,
        ggml_type: int,
        raw: torch.Tensor,
        in_features: int,
        bias: torch.Tensor | None = None,
        row_order: torch.Tensor | None = None,
    ) -> QuantizedLinear:
        """A layer over GGUF blocks [out, row bytes] (uint8, rows in logical order), without dequantizing them."""
        layer = cls.from_ggml_parts([(ggml_type, raw)], in_features, bias, row_order)
        if layer is None:
            raise QuantizationError(f"ggml type {ggml_type} has no quantized kernel (Q8_0, Q4_0, Q4_1 do)")
        return layer

    @classmethod
    def from_ggml_parts(
        cls,
        parts: list[tuple[int, torch.Tensor]],
        in_features: int,
        bias: torch.Tensor | None = None,
        row_order: torch.Tensor | None = None,
    ) -> QuantizedLinear | None:
        """A layer whose rows are the parts' rows one after the other (a fused q/k/v or gate/up projection), or
        None when a part's type has no kernel or the parts need two different ones (Q8_0 beside Q4_1)."""
        if any(ggml_type not in BLOCK_BYTES for ggml_type, _ in parts):
            return None
        parsed = [parse_ggml(ggml_type, raw, in_features) for ggml_type, raw in parts]
        qtypes = {qtype for qtype, _ in parsed}
        if len(qtypes) != 1:
            return None
        names = parsed[0][1].keys()
        joined = {name: torch.cat([fields[name] for _, fields in parsed]) for name in names}
        if row_order is not None:
            joined = {name: part[row_order] for name, part in joined.items()}
        qtype = qtypes.pop()
        packed = pack_q8_0(**joined) if qtype == "q8_0" else pack_q4_1(**joined)
        return cls(qtype, packed, in_features, len(joined["q"]), bias, row_order)

    def dequantize(self) -> torch.Tensor:
        """The fp32 weight [out, in] in logical row order."""
        weight = unpack(self.qtype, self.packed, self.out_features)
        if self.row_order is not None:
            weight = torch.empty_like(weight).index_copy_(0, self.row_order, weight)
        return weight

    def dequantize_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """fp32 rows [len(rows), in] of the weight (logical indices), unpacking only their column blocks."""
        if self.row_order is not None:
            return self.dequantize()[rows]
        blocks, within = rows // BLOCK, rows % BLOCK
        unique, where = blocks.unique(return_inverse=True)
        unpacked = unpack(self.qtype, self.packed[unique], len(unique) * BLOCK).view(len(unique), BLOCK, -1)
        return unpacked[where, within]

    @property
    def weight_bytes(self) -> int:
        return self.packed.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantize().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, {self.qtype}, bias={self.bias is not None}"


class QuantizedEmbedding(nn.Module):
    """Token embeddings read from a QuantizedLinear's blocks ([vocab, hidden]); the output head's own blocks
    when the embeddings are tied, so they are stored once."""

    def __init__(self, table: QuantizedLinear, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.table, self.dtype = table, dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        return self.table.dequantize_rows(flat).to(self.dtype).view(*ids.shape, -1)


def quantize_q4_1(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q [out, in] in 0..15, d and m [out, in / 32] fp16 as llama.cpp's quantize_row_q4_1."""
    out_features, in_features = weight.shape
    _check_inputs(in_features)
    blocks = weight.detach().float().reshape(out_features, in_features // BLOCK, BLOCK)
    low, high = blocks.amin(-1), blocks.amax(-1)
    d = (high - low) / 15
    inverse = torch.where(d > 0, 1 / d, torch.zeros_like(d))
    q = ((blocks - low[..., None]) * inverse[..., None] + 0.5).floor().clamp(0, 15).to(torch.uint8)
    return q.reshape(out_features, in_features), d.half(), low.half()


def swiglu_row_order(intermediate: int) -> torch.Tensor:
    """Stored row -> logical row of a gate/up weight [2I, in] (gate rows, then up rows) interleaved as the native
    step's SwiGLU epilogue reads it: each block of 32 rows is 16 gate rows and the same 16 up rows."""
    half = BLOCK // 2
    gate = torch.arange(intermediate).view(-1, half)
    return torch.stack([gate, gate + intermediate], dim=1).reshape(-1)


class QuantizedExperts(Experts):
    """DeepSeekMoE's routed experts with quantized weights: per expert a gate/up QuantizedLinear (rows in
    `swiglu_row_order`) and a down one. The routing loop is Experts'; each expert's product dequantizes its own
    weights (the native latent step multiplies the blocks directly)."""

    stacked = False

    def __init__(self, gate_up: list[QuantizedLinear], down: list[QuantizedLinear]) -> None:
        nn.Module.__init__(self)  # not Experts': no stacked fp32 parameters
        self.gate_up = nn.ModuleList(gate_up)
        self.down = nn.ModuleList(down)

    @classmethod
    def from_float(cls, experts: Experts, qtype: str) -> QuantizedExperts:
        order = swiglu_row_order(experts.down_proj.shape[-1])
        gate_up = [QuantizedLinear.from_float(weight, qtype, row_order=order) for weight in experts.gate_up_proj]
        return cls(gate_up, [QuantizedLinear.from_float(weight, qtype) for weight in experts.down_proj])

    @property
    def num_experts(self) -> int:
        return len(self.gate_up)

    def expert(self, index: int, rows: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up[index](rows).chunk(2, dim=-1)
        return self.down[index](F.silu(gate) * up)


def quantizable(model: nn.Module, feed_forward_only: bool = False) -> str | None:
    """Why `model` cannot be quantized (None when it can): Llama-family or DeepSeek-V2/V3 layers only, and the
    inputs of every projection quantized and each MLP's width multiples of 32."""
    layers = list(model.layers)
    latent = all(type(b.self_attn) is LatentAttention and type(b.mlp) in (MLP, MoE) for b in layers)
    if not latent and not all(type(b.self_attn) is Attention and type(b.mlp) is MLP for b in layers):
        return "quantized weights are built for Llama-family and DeepSeek-V2/V3 layers only"
    config = model.config
    widths = {"hidden_size": config.hidden_size}
    if any(type(b.mlp) is MLP for b in layers):
        widths["intermediate_size"] = config.intermediate_size
    if any(type(b.mlp) is MoE for b in layers):
        widths["moe_intermediate_size"] = config.moe_intermediate_size
        if config.n_shared_experts:
            widths["moe_intermediate_size x n_shared_experts"] = config.moe_intermediate_size * config.n_shared_experts
    if not (latent or feed_forward_only):
        widths["heads x head_dim"] = config.num_attention_heads * config.head_dim
    bad = [f"{name} {value}" for name, value in widths.items() if value % BLOCK]
    return f"quantized weights need multiples of {BLOCK}: {', '.join(bad)}" if bad else None


def _quantize_mlp(mlp: MLP, qtype: str) -> None:
    for name in ("gate_up_proj", "down_proj"):
        layer = getattr(mlp, name)
        if isinstance(layer, Linear):
            order = swiglu_row_order(mlp.down_proj.in_features) if name == "gate_up_proj" else None
            setattr(mlp, name, QuantizedLinear.from_float(layer.weight, qtype, layer.bias, order))


@torch.no_grad()
def quantize_model(model: nn.Module, qtype: str, feed_forward_only: bool = False) -> nn.Module:
    """Replace the projections of a nanoseek Transformer (and its embedding) by quantized ones, in place; with
    `feed_forward_only`, and in DeepSeek-V2/V3 models always, the MLPs' and experts' alone (module docstring).
    Norms and biases stay fp32; the model is returned in fp32 (its activations and KV cache)."""
    reason = quantizable(model, feed_forward_only)
    if reason is not None:
        raise QuantizationError(reason)
    model.float()
    latent = type(model.layers[0].self_attn) is LatentAttention
    everything = not (feed_forward_only or latent)
    for block in model.layers:
        if everything:
            for name in ("qkv_proj", "o_proj"):
                layer = getattr(block.self_attn, name)
                if isinstance(layer, Linear):
                    setattr(block.self_attn, name, QuantizedLinear.from_float(layer.weight, qtype, layer.bias))
        if isinstance(block.mlp, MoE):
            if block.mlp.shared_experts is not None:
                _quantize_mlp(block.mlp.shared_experts, qtype)
            if not isinstance(block.mlp.experts, QuantizedExperts):
                block.mlp.experts = QuantizedExperts.from_float(block.mlp.experts, qtype)
        else:
            _quantize_mlp(block.mlp, qtype)
    if everything and isinstance(model.lm_head, Linear):
        tied = model.config.tie_word_embeddings
        model.lm_head = QuantizedLinear.from_float(model.lm_head.weight, qtype)
        table = model.lm_head if tied else QuantizedLinear.from_float(model.embed_tokens.weight, qtype)
        model.embed_tokens = QuantizedEmbedding(table)
    return model


def install_quantized(model: nn.Module, layers: dict[str, QuantizedLinear]) -> nn.Module:
    """Put quantized layers into a model built with placeholders for them: `layers` maps parameter names
    ("layers.0.self_attn.qkv_proj.weight", "embed_tokens.weight", "lm_head.weight") to their QuantizedLinear
    (gate/up ones in `swiglu_row_order`). Biases are taken over from the layers replaced. A quantized embedding
    of a tied model also becomes its output head."""
    for name, layer in layers.items():
        path = name.removesuffix(".weight")
        if path == "embed_tokens":
            model.embed_tokens = QuantizedEmbedding(layer)
            if model.config.tie_word_embeddings:
                model.lm_head = layer
            continue
        owner_path, _, attribute = path.rpartition(".")
        owner = model.get_submodule(owner_path) if owner_path else model
        replaced = getattr(owner, attribute)
        if replaced.bias is not None:
            layer.bias = nn.Parameter(replaced.bias.detach().float(), requires_grad=False)
        setattr(owner, attribute, layer)
    return model
