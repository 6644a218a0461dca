"""The native step's decode time over an fp32 vs an fp16 KV cache (`--kv-cache-dtype float16`), in one run.

    python benchmarks/kv_cache_dtype.py                    # smollm2-135m-instruct, the file's own blocks, 1 thread

Two native decoders over the same model (a GGUF file's quantized blocks), one per cache dtype, each with 2,048
positions of one slot prefilled; then, per round, the order alternating: 32 batch-1 decode steps at each of the
context lengths 64, 512 and 1,984 (rewriting the positions after it). Prints the cache's bytes per token and the
median milliseconds per step of each side, and their ratio: attention reads half the bytes from an fp16 cache
and converts them as it reads (VCVTPH2PS).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

LENGTHS, STEPS, CAPACITY = (64, 512, 1984), 32, 2048


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a GGUF file or a named model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault("NANOSEEK_REQUIRE_NATIVE", "1")  # time the native step, not a silent fallback
    torch.set_num_threads(args.threads)
    from nanoseek.engine.kv_cache import SlotKVCache
    from nanoseek.engine.native import NativeDecoder
    from nanoseek.model.loader import load_checkpoint
    from nanoseek.model.named import resolve_model

    model = load_checkpoint(str(resolve_model(args.model))).model
    config = model.config
    prompt = torch.randint(0, config.vocab_size, (CAPACITY,), generator=torch.Generator().manual_seed(0)).tolist()
    decoders = {}
    for dtype in (torch.float32, torch.float16):
        shape = (config.num_hidden_layers, config.num_key_value_heads, config.head_dim, 1, CAPACITY)
        cache = SlotKVCache(*shape, dtype, model.dtype)
        decoder = NativeDecoder.build(model, cache, max_batch=16)
        for start in range(0, CAPACITY, 16):
            decoder.step(prompt[start : start + 16], list(range(start, start + 16)), [0] * 16)
        decoders[dtype] = decoder
        print(f"{dtype}: {cache.bytes_per_token} KV bytes per token, {decoder.kernel}", flush=True)
    times: dict[tuple[torch.dtype, int], list[float]] = {(dtype, n): [] for dtype in decoders for n in LENGTHS}
    for repeat in range(args.rounds):
        for dtype in list(decoders)[:: 1 if repeat % 2 == 0 else -1]:
            for length in LENGTHS:
                started = time.perf_counter()
                for i in range(STEPS):
                    decoders[dtype].step([5], [length + i], [0])
                times[(dtype, length)].append((time.perf_counter() - started) / STEPS * 1e3)
    for length in LENGTHS:
        full, half = (statistics.median(times[(dtype, length)]) for dtype in decoders)
        print(
            f"context {length}: fp32 cache {full:.2f} ms/step, fp16 cache {half:.2f} ms/step, ratio {half / full:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
