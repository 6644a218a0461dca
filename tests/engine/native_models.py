"""What the native decode tests (test_native_decode.py, test_native_quantized.py, test_native_latent.py) decode
and how they compare: random models with non-trivial biases and norms, three sequences prefilled at different
positions in scattered cache slots, and decode steps side by side with the PyTorch model's; and a quantized
projection as the C step computes it, with its inputs rounded to int8 as llama.cpp rounds them (`ggml_linear`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from nanoseek.engine import SamplingParams
from nanoseek.engine.kv_cache import SlotKVCache
from nanoseek.model.config import ModelConfig
from nanoseek.model.quantized import QuantizedLinear
from nanoseek.model.transformer import Transformer

SLOTS, LENGTHS = [4, 1, 3], [7, 12, 1]  # sequences at different positions in scattered slots


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)


def random_model(**shape) -> Transformer:
    """A model of `shape` (ModelConfig fields), vocabulary 300, every parameter perturbed (seeded)."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=300, max_position_embeddings=64, rms_norm_eps=1e-5, **shape)
    model = Transformer(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)  # non-trivial biases and norms too
    return model


def bf16_with_exact_twin(make: Callable[[], Transformer]) -> tuple[Transformer, Transformer]:
    """A bf16 model from `make()`, and an fp32 one holding its very same (bf16-rounded) weights and buffers: the
    reference a bf16 step is measured against."""
    model, exact = make().to(torch.bfloat16), make()
    with torch.no_grad():
        for ours, theirs in zip([*exact.parameters(), *exact.buffers()], [*model.parameters(), *model.buffers()]):
            ours.copy_(theirs.float())
    return model, exact


def new_cache(
    config: ModelConfig, dtype: torch.dtype = torch.float32, attention_dtype: torch.dtype | None = None
) -> SlotKVCache:
    """Six slots of 64 positions storing `dtype`, for a model attending in `attention_dtype` (default: `dtype`)."""
    return SlotKVCache(
        config.num_hidden_layers, config.num_key_value_heads, config.head_dim, 6, 64, dtype, attention_dtype
    )


def prefill(model: Transformer, cache) -> None:
    """Random prompts of LENGTHS tokens into SLOTS (the same prompts for every call)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for slot, length in zip(SLOTS, LENGTHS):
            cache.begin_prefill(slot, 0, length)
            model(
                torch.randint(0, model.config.vocab_size, (1, length), generator=generator),
                torch.arange(length)[None],
                cache=cache,
            )


Step = Callable[[list[int], list[int], list[int]], torch.Tensor]  # (tokens, positions, slots) -> fp32 logits


def model_step(model: Transformer, cache) -> Step:
    """The PyTorch model's decode step over `cache`, called as a native decoder's `step`."""

    def step(tokens: list[int], positions: list[int], slots: list[int]) -> torch.Tensor:
        cache.begin_decode(slots, positions)
        return model(torch.tensor(tokens)[:, None], torch.tensor(positions)[:, None], cache=cache)[:, 0].float()

    return step


def rows_alone_too(step: Step) -> Step:
    """`step`, also decoding each row alone (its cache entries rewritten in place) and asserting that it gives the
    very same logits as within the batch."""

    def checked(tokens: list[int], positions: list[int], slots: list[int]) -> torch.Tensor:
        logits = step(tokens, positions, slots)
        for row in range(len(tokens)):
            alone = step(tokens[row : row + 1], positions[row : row + 1], slots[row : row + 1])
            assert torch.equal(alone[0], logits[row])
        return logits

    return checked


def decode_side_by_side(*steps: Step, count: int = 4) -> list[list[torch.Tensor]]:
    """Logits of `count` decode steps of the prefilled sequences (SLOTS at LENGTHS) from each of `steps`, all fed
    the first one's greedy tokens: per step, one [3, vocab] tensor per side. The sequences end at
    LENGTHS + count."""
    tokens, positions = [11, 22, 33], list(LENGTHS)
    results = []
    with torch.no_grad():
        for _ in range(count):
            results.append([step(tokens, positions, SLOTS) for step in steps])
            tokens, positions = results[-1][0].argmax(-1).tolist(), [p + 1 for p in positions]
    return results


def bf16_step_errors(
    model: Transformer, exact: Transformer, decoder, native_cache, new_cache: Callable
) -> tuple[float, float, float]:
    """How far a bf16 native `decoder` (over `native_cache`) and the bf16 PyTorch `model` are from `exact`, its
    fp32 twin (bf16_with_exact_twin), over four decode steps of the prefilled sequences, each of the decoder's rows
    also decoded alone (rows_alone_too): (native mean |logit error|, PyTorch's, the last step's mean |logit|).
    `new_cache(config, dtype)` makes the model's kind of cache."""
    exact_cache, torch_cache = new_cache(exact.config, torch.float32), new_cache(model.config, torch.bfloat16)
    prefill(exact, exact_cache)
    prefill(model, torch_cache)
    prefill(model, native_cache)
    native_error = torch_error = 0.0
    steps = decode_side_by_side(
        model_step(exact, exact_cache), model_step(model, torch_cache), rows_alone_too(decoder.step)
    )
    for expected, by_torch, got in steps:
        native_error += (got - expected).abs().mean().item()
        torch_error += (by_torch - expected).abs().mean().item()
    return native_error / len(steps), torch_error / len(steps), steps[-1][0].abs().mean().item()


def ggml_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x rounded as the C step (and ggml's quantize_row_q8_0 / q8_1) rounds a projection's input, per block of 32:
    (xq * d, s - d sum xq spread over the block's inputs), d = max|x| / 127 and s = d_fp32 sum xq both fp16."""
    blocks = x.reshape(*x.shape[:-1], -1, 32)
    d = blocks.abs().amax(-1, keepdim=True) / 127
    quants = torch.round(blocks * torch.where(d > 0, 1 / d, torch.zeros_like(d)))  # half to even
    d16 = d.half().float()
    total = quants.sum(-1, keepdim=True)
    spread = ((d * total).half().float() - d16 * total) / 32
    return (quants * d16).reshape(x.shape), spread.expand_as(blocks).reshape(x.shape)


def ggml_linear(layer: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    """The layer's output as llama.cpp computes it: q8_0 weights by the rounded inputs; q4_1 ones (w = d q + m)
    add each block's m times s rather than times d_x sum xq."""
    rounded, spread = ggml_rows(x)
    out = F.linear(rounded, layer.dequantize(), layer.bias)
    if layer.qtype == "q4_1":
        offsets = layer.packed.clone()
        offsets[..., : 32 * 16] = 0  # quants zero: each weight reads as its block's m
        m = QuantizedLinear("q4_1", offsets, layer.in_features, layer.out_features, None, layer.row_order)
        out = out + F.linear(spread, m.dequantize())
    return out
