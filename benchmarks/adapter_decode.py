"""Decode speed of a base model against the same base with a LoRA adapter merged in at load time (issue 20).

Both go through the engine as `nanoseek serve` runs them (native decode step, fp32): the adapter's low-rank
products are added into the base's weights when it loads (`nanoseek.model.adapter.merge_adapter`), so the merged
model has the base's shapes and the decode step should cost the same; this measures it. The only difference left
is the 19 rows the adapter adds to the vocabulary (49,171 instead of 49,152 for SmolLM2). Greedy, EOS ignored so
that both sides decode the same count: one request (batch 1), then `--batch` concurrent requests, the same prompts
(the same token ids) on both sides; the sides alternate after a warm-up and the median of the repeats is reported.
Rates are new tokens over the wall time of the whole request, its short prompt's prefill included.

    python benchmarks/adapter_decode.py --adapter runs/smol/sft/adapter            # base named in the adapter
    python benchmarks/adapter_decode.py --adapter nanoseek/default_adapter --new-tokens 128 --repeats 5 --batch 8
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

PROMPTS = [
    "Write a short story about a cat who learns to count.",
    "Explain how a bicycle stays upright.",
    "List five uses of a paper clip.",
    "Describe the water cycle to a child.",
    "What makes a good cup of tea?",
    "Write a poem about the sea at night.",
    "How do bees make honey?",
    "Give advice to someone learning to cook.",
]


def decode_rate(engine: Engine, prompts: list[list[int]], new_tokens: int) -> float:
    """New tokens per second over all `prompts`, decoded together."""
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    started = time.perf_counter()
    completions = engine.generate([Request(ids, params) for ids in prompts])
    elapsed = time.perf_counter() - started
    assert all(len(c.token_ids) == new_tokens for c in completions)
    return len(prompts) * new_tokens / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", type=Path, required=True, help="an adapter directory (nanoseek_adapter.json)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8, help=f"concurrent requests besides batch 1 (≤ {len(PROMPTS)})")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= len(PROMPTS):
        parser.error(f"--batch must be 1 to {len(PROMPTS)}")
    torch.set_num_threads(args.threads)
    base_name = json.loads((args.adapter / "nanoseek_adapter.json").read_text())["base"]
    sides = {"base": load_checkpoint(base_name, dtype="float32"), "adapter merged": load_checkpoint(args.adapter)}
    prompts = {name: [ckpt.tokenizer.encode(p) for p in PROMPTS[: args.batch]] for name, ckpt in sides.items()}
    # The added tokens are special tokens, so plain text tokenizes the same: both sides decode the same ids.
    assert prompts["base"] == prompts["adapter merged"], "the two tokenizers split the prompts differently"
    budget = args.batch * (max(map(len, prompts["base"])) + args.new_tokens) + 256
    engines = {
        name: Engine(ckpt.model, ckpt.tokenizer, max_batch=args.batch, kv_budget_tokens=budget)
        for name, ckpt in sides.items()
    }
    batches = sorted({1, args.batch})
    try:
        rates: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batches} for name in engines}
        for name, engine in engines.items():  # warm-up: native kernels compiled, caches touched
            decode_rate(engine, prompts[name][: args.batch], 8)
        for _ in range(args.repeats):
            for batch in batches:
                for name, engine in engines.items():
                    rates[name][batch].append(decode_rate(engine, prompts[name][:batch], args.new_tokens))
    finally:
        for engine in engines.values():
            engine.shutdown()
    medians = {name: {b: statistics.median(v) for b, v in by_batch.items()} for name, by_batch in rates.items()}
    print(f"median of {args.repeats} repeats, {args.new_tokens} new tokens per request, {args.threads} thread(s)")
    for name, engine in engines.items():
        figures = ", ".join(f"batch {b} {medians[name][b]:7.1f} tok/s" for b in batches)
        print(
            f"{name:15s} {figures} (vocab {sides[name].model.config.vocab_size}, "
            f"native step: {engine.native is not None})"
        )
    for batch in batches:
        print(f"merged / base, batch {batch}: {medians['adapter merged'][batch] / medians['base'][batch]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
