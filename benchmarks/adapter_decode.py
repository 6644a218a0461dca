"""Decode speed of a base model against the same base with a LoRA adapter merged in at load time (issue 20).

Both go through the engine as `nanoseek serve` runs them (native decode step, fp32): the adapter's low-rank
products are added into the base's weights when it loads (`nanoseek.model.adapter.merge_adapter`), so the merged
model has the base's shapes and the decode step should cost the same; this measures it. The only difference left
is the 19 rows the adapter adds to the vocabulary (49,171 instead of 49,152 for SmolLM2). Greedy, EOS ignored so
that both sides decode the same count: one request (batch 1), then `--batch` concurrent requests, the same prompts
(the same token ids) on both sides; the sides alternate after a warm-up and the median of the repeats is reported.
Rates are new tokens over the wall time of the whole request, its short prompt's prefill included. The process's
CPU time per new token is printed beside them: on a machine other jobs crowd, preemption inflates wall time but
not CPU time (with `--threads 1`: two threads spin at their barriers while one is preempted), so that ratio is
the one to read there.

    python benchmarks/adapter_decode.py --adapter runs/smol/sft/adapter            # base named in the adapter
    python benchmarks/adapter_decode.py --adapter nanoseek/default_adapter --new-tokens 128 --repeats 5 --batch 8
    python benchmarks/adapter_decode.py --adapter nanoseek/default_adapter --new-tokens 32 --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
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


def decode_rate(engine: Engine, prompts: list[list[int]], new_tokens: int) -> tuple[float, float]:
    """(new tokens per second of wall time, CPU milliseconds of the process per new token) over all `prompts`,
    decoded together."""
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    completions = engine.generate([Request(ids, params) for ids in prompts])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert all(len(c.token_ids) == new_tokens for c in completions)
    tokens = len(prompts) * new_tokens
    return tokens / elapsed, 1000 * cpu / tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", type=Path, required=True, help="an adapter directory (nanoseek_adapter.json)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8, help=f"concurrent requests besides batch 1 (≤ {len(PROMPTS)})")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("NANOSEEK_REQUIRE_NATIVE", "1")  # time the native step, not a silent fallback
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
        runs: dict[str, dict[int, list[tuple[float, float]]]] = {name: {b: [] for b in batches} for name in engines}
        for name, engine in engines.items():  # warm-up: native kernels compiled, caches touched
            decode_rate(engine, prompts[name][: args.batch], 8)
        for _ in range(args.repeats):
            for batch in batches:
                for name, engine in engines.items():
                    runs[name][batch].append(decode_rate(engine, prompts[name][:batch], args.new_tokens))
    finally:
        for engine in engines.values():
            engine.shutdown()
    rate = {
        name: {b: statistics.median(r for r, _ in v) for b, v in by_batch.items()} for name, by_batch in runs.items()
    }
    cpu = {
        name: {b: statistics.median(c for _, c in v) for b, v in by_batch.items()} for name, by_batch in runs.items()
    }
    print(f"median of {args.repeats} repeats, {args.new_tokens} new tokens per request, {args.threads} thread(s)")
    for name, engine in engines.items():
        figures = ", ".join(f"batch {b} {rate[name][b]:7.1f} tok/s, {cpu[name][b]:6.1f} CPU ms/token" for b in batches)
        print(
            f"{name:15s} {figures} (vocab {sides[name].model.config.vocab_size}, "
            f"native step: {engine.native is not None})"
        )
    merged = "adapter merged"
    for batch in batches:
        print(
            f"merged / base, batch {batch}: {rate[merged][batch] / rate['base'][batch]:.3f} tok/s, "
            f"{cpu[merged][batch] / cpu['base'][batch]:.3f} CPU time per token"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
