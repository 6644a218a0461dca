"""Decode speed of a base model against the same base with a LoRA adapter merged in at load time (issue 20).

Both go through the engine as `nanoseek serve` runs them (native decode step, fp32): the adapter's low-rank
products are added into the base's weights when it loads (`nanoseek.model.adapter.merge_adapter`), so the merged
model has the base's shapes and the decode step should cost the same; this measures it. The only difference left
is the 19 rows the adapter adds to the vocabulary (49,171 instead of 49,152 for SmolLM2). Greedy, batch 1,
`--new-tokens` after a short prompt, EOS ignored so that both decode the same count; the sides alternate after a
warm-up and the median of the repeats is reported.

    python benchmarks/adapter_decode.py --adapter runs/smol/sft/adapter            # base named in the adapter
    python benchmarks/adapter_decode.py --adapter nanoseek/default_adapter --new-tokens 128 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from nanoseek.engine import Engine
from nanoseek.engine.params import Request, SamplingParams
from nanoseek.model.loader import load_checkpoint


def decode_rate(engine: Engine, prompt_ids: list[int], new_tokens: int) -> float:
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    started = time.perf_counter()
    completion = engine.generate([Request(prompt_ids, params)])[0]
    assert len(completion.token_ids) == new_tokens
    return new_tokens / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", type=Path, required=True, help="an adapter directory (nanoseek_adapter.json)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    base_name = json.loads((args.adapter / "nanoseek_adapter.json").read_text())["base"]
    sides = {"base": load_checkpoint(base_name, dtype="float32"), "adapter merged": load_checkpoint(args.adapter)}
    engines = {name: Engine(ckpt.model, ckpt.tokenizer, max_batch=1) for name, ckpt in sides.items()}
    prompt = "Write a short story about a cat who learns to count."
    prompts = {name: ckpt.tokenizer.encode(prompt) for name, ckpt in sides.items()}
    try:
        rates: dict[str, list[float]] = {name: [] for name in engines}
        for name, engine in engines.items():  # warm-up: native kernels compiled, caches touched
            decode_rate(engine, prompts[name], 8)
        for _ in range(args.repeats):
            for name, engine in engines.items():
                rates[name].append(decode_rate(engine, prompts[name], args.new_tokens))
    finally:
        for engine in engines.values():
            engine.shutdown()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, engine in engines.items():
        print(
            f"{name:15s} {medians[name]:7.1f} tok/s (median of {args.repeats}, {args.new_tokens} new tokens, "
            f"vocab {sides[name].model.config.vocab_size}, native step: {engine.native is not None})"
        )
    print(f"merged / base: {medians['adapter merged'] / medians['base']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
