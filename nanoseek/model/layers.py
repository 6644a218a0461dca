"""The building blocks that the Llama-family layers (transformer.py) and DeepSeek's layers (deepseek.py) share:
the linear projection with its packed inference path, RMSNorm, rotary application and the SwiGLU MLP. A module
of its own so that transformer.py can build DeepSeek's layers without deepseek.py importing it back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoseek.model.config import ModelConfig


class Linear(nn.Linear):
    """nn.Linear that, once `pack()`ed for inference, multiplies with a oneDNN-packed copy of its weight.

    On the CPU, PyTorch's plain matmul for a handful of rows (a decode step of 2-16 sequences) runs far below
    the machine's peak; with the weight reordered once into oneDNN's blocked layout, whole decode steps of 4
    and 16 sequences ran 1.41x and 1.35x faster (benchmarks/engine_ablations.py, BENCHMARKS.md "second
    round"). The packed copy serves only gradient-free calls and only while the weight is unchanged: an
    optimizer step bumps the weight's version and the layer falls back to F.linear (call `pack()` again)."""

    packed: torch.Tensor | None = None
    packed_version = -1
    # Calls of more rows (prefill) take F.linear: oneDNN keeps a primitive per input shape in caches of up to
    # 1,024 entries, and prompts of every length filled them until a 10,000-request soak had grown the process
    # by ~40%; with at most this many distinct row counts the caches stay small. Prefill matmuls are large
    # enough for MKL to run near its peak anyway.
    max_packed_rows = 64

    def pack(self) -> bool:
        weight = self.weight.detach()
        if weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
            return False
        try:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), 16)
        except RuntimeError:  # a build or dtype oneDNN cannot reorder: stay on F.linear
            self.packed = None
            return False
        self.packed_version = self.weight._version
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One row (batch-1 decode) stays on MKL's GEMV over the column-major weight, which was as fast or faster.
        # A compiled graph traces F.linear: inductor cannot lower oneDNN's linear at dynamic shapes, and with
        # `freezing` it packs the weights for oneDNN itself (engine compile_decode).
        if (
            self.packed is not None
            and self.in_features < x.numel() <= self.max_packed_rows * self.in_features
            and not torch.is_grad_enabled()
            and self.weight._version == self.packed_version
            and not torch.compiler.is_compiling()
        ):
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)

    def __getstate__(self) -> dict:
        # oneDNN's blocked tensor has no storage to copy or pickle: a copy (copy.deepcopy, torch.save of the
        # module) leaves it out and runs F.linear until it is packed again.
        state = super().__getstate__()
        state.pop("packed", None)
        state.pop("packed_version", None)
        return state


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)  # one fused op
        # Half precision: normalise in fp32 and round before the weight, as transformers does.
        normed = F.rms_norm(x.float(), self.weight.shape, None, self.eps)
        return self.weight * normed.to(x.dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin_signed


class MLP(nn.Module):
    """SwiGLU feed-forward with one fused gate/up projection."""

    def __init__(self, config: ModelConfig, layer_idx: int, intermediate_size: int | None = None) -> None:
        super().__init__()
        inner = intermediate_size or config.intermediate_size  # DeepSeekMoE's shared experts are narrower
        self.gate_up_proj = Linear(config.hidden_size, 2 * inner, bias=config.mlp_bias)
        self.down_proj = Linear(inner, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)
