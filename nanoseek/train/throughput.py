"""Training throughput, fp32 vs bf16 autocast, side by side in one run: tokens/s and share of matmul peak.

    python -m nanoseek.train.throughput --shape default --seq-len 512 --batch 8 --steps 6

Each step is the training loop's own work (forward, masked cross-entropy, backward, clipping, AdamW) on
random tokens. Model FLOPs per token follow the nanoGPT/PaLM estimate 6*N + 12*L*T*d (N = non-embedding
parameters plus the output projection, attention counted at full length T); the share of peak divides
achieved FLOP/s by this machine's matmul peak, measured in the same run (a 2048^3 matmul per precision:
on one 2-core kind bf16 was 2.4x fp32, on another 0.5x), so it says how much of the hardware the loop uses.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from nanoseek.model.config import ModelConfig
from nanoseek.model.transformer import Transformer
from nanoseek.train.config import LoopConfig
from nanoseek.train.optim import make_optimizer, masked_loss_sum
from nanoseek.train.recipe import available_recipes, load_recipe


def matmul_peak_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 8) -> float:
    """GFLOP/s of a square matmul on this machine and thread count: the ceiling for the loop's matmuls."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    for _ in range(2):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def model_for(shape: str, vocab_size: int) -> torch.nn.Module:
    if shape in available_recipes():
        config = ModelConfig(vocab_size=vocab_size, **load_recipe(shape)["model"])
    else:
        config = ModelConfig.from_shape(shape, vocab_size, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Transformer(config)
    model.init_weights()
    return model


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    # The input embedding is a lookup (no FLOPs) but the output projection is a full matmul: with tied
    # weights the one shared table counts once as a matmul, untied the lookup table drops out.
    matmul_params = params if config.tie_word_embeddings else params - config.vocab_size * config.hidden_size
    attention = 12 * config.num_hidden_layers * seq_len * config.num_attention_heads * config.head_dim
    return 6 * matmul_params + attention


def measure(model: torch.nn.Module, bf16: bool, seq_len: int, batch: int, steps: int) -> list[float]:
    """Seconds per training step, after one warm-up step."""
    optimizer = make_optimizer(model, LoopConfig(steps=steps, batch_size=batch))
    tokens = torch.randint(0, model.config.vocab_size, (batch, seq_len + 1))
    mask = torch.ones_like(tokens)
    times = []
    for step in range(steps + 1):
        started = time.perf_counter()
        loss = masked_loss_sum(model, tokens, mask, bf16) / (batch * seq_len)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:
            times.append(time.perf_counter() - started)
    return times


# bf16 autocast must beat fp32 by this much to be chosen: fp32 is the exact one, and a few timed steps on a
# noisy machine should not pick the slower precision for a whole stage.
BF16_MARGIN = 1.05


def rates_both_precisions(
    model: torch.nn.Module, seq_len: int, batch: int, steps: int, rounds: int
) -> dict[str, float]:
    """Training tokens/s in fp32 and in bf16 autocast: median step time over `rounds` alternations of
    `steps` timed steps each, so that load from other processes hits both alike."""
    seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _round in range(rounds):
        for mode in seconds:
            seconds[mode] += measure(model, mode == "bf16", seq_len, batch, steps)
    return {mode: batch * seq_len / statistics.median(times) for mode, times in seconds.items()}


def faster_precision(model: torch.nn.Module, seq_len: int, batch: int, steps: int = 2) -> tuple[bool, dict]:
    """Whether bf16 autocast trains `model` clearly faster than fp32 here (True: bf16), and both rates in
    tokens/s, timed on a throwaway copy of the model."""
    rates = rates_both_precisions(copy.deepcopy(model).train(), seq_len, batch, steps, rounds=2)
    return rates["bf16"] > BF16_MARGIN * rates["fp32"], rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="default", help="a recipe name (default, tiny) or a model SHAPES name")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2, help="alternate fp32/bf16 this many times")
    args = parser.parse_args(argv)
    model = model_for(args.shape, args.vocab_size)
    params = sum(p.numel() for p in model.parameters())
    per_token = flops_per_token(model, args.seq_len)
    rates = rates_both_precisions(model, args.seq_len, args.batch, args.steps, args.rounds)
    print(
        f"shape {args.shape}: {params / 1e6:.2f}M params, seq {args.seq_len} x batch {args.batch}, "
        f"{per_token / 1e6:.1f} MFLOP/token, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    peaks = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    print("| precision | tokens/s | GFLOP/s | share of matmul peak (measured here) |")
    print("|---|---|---|---|")
    for mode, rate in rates.items():
        gflops = rate * per_token / 1e9
        print(f"| {mode} | {rate:,.0f} | {gflops:.1f} | {gflops / peaks[mode]:.0%} (of {peaks[mode]:.0f}) |")
    print(f"bf16 autocast / fp32 = {rates['bf16'] / rates['fp32']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
