"""The native decode step over packed copies of the projections (the default) against the model's own weights read
in place (NANOSEEK_NATIVE_IN_PLACE=1): thread CPU time per step, side by side in one process.

    python benchmarks/native_layouts.py --dtype bfloat16 --layers 4 --repeats 8

A random model of SmolLM2-135M's widths (hidden 576, MLP 1536, 9 heads over 3 KV heads, a 49,152-row output head)
with `--layers` layers, one thread; each row count is timed alternately on both decoders, the minimum over
`--repeats` kept. Thread CPU time, not wall time, so that on a shared machine the other jobs' preemption does not
count (their cache and memory traffic still does). Also prints the largest logit difference between the two.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args(argv)
    os.environ.setdefault("NANOSEEK_REQUIRE_NATIVE", "1")  # time the native step, not a silent fallback
    from nanoseek.engine.kv_cache import SlotKVCache
    from nanoseek.engine.native import NativeDecoder
    from nanoseek.model.config import ModelConfig
    from nanoseek.model.transformer import Transformer

    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=args.layers,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=256,
    )
    model = Transformer(config).eval().to(dtype)
    decoders = {}
    for name, in_place in (("packed", "0"), ("in place", "1")):
        os.environ["NANOSEEK_NATIVE_IN_PLACE"] = in_place
        cache = SlotKVCache(args.layers, 3, 64, 16, 256, dtype)
        decoders[name] = NativeDecoder.build(model, cache, max_batch=16)
        print(f"{name}: {decoders[name].kernel}, copied {decoders[name].copied_weight_bytes >> 20} MB of weights")
    print("rows | packed ms | in place ms | in place / packed | max |logit difference|")
    for rows in (1, 2, 3, 4, 8, 16):
        tokens, positions, slots = [7 + r for r in range(rows)], [20] * rows, list(range(rows))
        logits = [decoder.step(tokens, positions, slots) for decoder in decoders.values()]
        best = dict.fromkeys(decoders, float("inf"))
        for _ in range(args.repeats):
            for name, decoder in decoders.items():
                start = time.thread_time()
                decoder.step(tokens, positions, slots)
                best[name] = min(best[name], time.thread_time() - start)
        packed, in_place = best["packed"] * 1e3, best["in place"] * 1e3
        difference = (logits[0] - logits[1]).abs().max().item()
        print(f"{rows} | {packed:.2f} | {in_place:.2f} | {in_place / packed:.2f}x | {difference:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
