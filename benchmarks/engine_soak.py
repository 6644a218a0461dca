"""Soak: 10,000 short requests through one engine; the process's memory must end within 10% of its start.

    python benchmarks/engine_soak.py                 # 10,000 requests after a 1,000-request warm-up
    python benchmarks/engine_soak.py --requests 2000 --warmup 200

The mix exercises every path that holds memory: greedy and seeded sampling, penalties, stop strings,
logprobs, n=2, JSON-schema constraints, streams closed early (cancellation), and a share of prompts long
enough for the prefix cache, whose store is bounded by a small KV budget so LRU eviction runs all the time.
RSS is read with psutil after the warm-up (the prefix store is full by then, and allocator pools and the
grammar compiler have reached their steady size) and at the end; gc runs before both readings. The prefix
store's size is printed at both points: a full cache is the budget working, not a leak.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import bench_checkpoint

from nanoseek.engine import Constraint, Engine, Request, SamplingParams

SCHEMA = Constraint.json_schema(
    {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
)


def make_request(rng: random.Random, vocab: int) -> Request:
    long_prompt = rng.random() < 0.1
    prompt = [rng.randrange(3, vocab) for _ in range(rng.randrange(64, 200) if long_prompt else rng.randrange(4, 40))]
    if long_prompt and rng.random() < 0.5:
        prompt[:64] = list(range(3, 67))  # a shared first block: prefix-cache hits
    kind = rng.randrange(6)
    params = SamplingParams(
        max_tokens=rng.randrange(2, 16),
        temperature=0 if kind == 0 else 0.8,
        seed=rng.randrange(100),
        frequency_penalty=0.5 if kind == 1 else 0.0,
        stop=["e", "\n"] if kind == 2 else [],
        logprobs=kind == 3,
        top_logprobs=5 if kind == 3 else 0,
        n=2 if kind == 4 else 1,
        constraint=SCHEMA if kind == 5 else None,
    )
    return Request(prompt, params)


async def run_batch(engine: Engine, requests: list[Request], rng: random.Random) -> int:
    async def one(request: Request, close_early: bool) -> int:
        tokens = 0
        stream = engine.stream(request)
        async for event in stream:
            tokens += len(event.token_ids)
            if close_early and tokens >= 2:
                break
        await stream.aclose()
        return tokens

    counts = await asyncio.gather(*(one(r, rng.random() < 0.1) for r in requests))
    return sum(counts)


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--no-native", dest="native", action="store_false", help="decode with the PyTorch model, not the native C step"
    )
    parser.add_argument(
        "--compile", action="store_true", help="with --no-native: compiled decode steps (Engine compile_decode)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine = Engine.from_checkpoint(
        bench_checkpoint(),
        max_batch=args.concurrency * 2,
        kv_budget_tokens=4096,
        max_queue=args.concurrency * 4,
        compile_decode=args.compile,
        native_decode=args.native,
    )
    if args.compile and engine.native is None:
        print(f"compiled the decode steps in {engine.warm_up():.0f} s", flush=True)
    rng = random.Random(0)

    def run(count: int) -> int:
        tokens = 0
        for start in range(0, count, args.concurrency):
            batch = [make_request(rng, engine.vocab_size) for _ in range(min(args.concurrency, count - start))]
            tokens += asyncio.run(run_batch(engine, batch, rng))
        return tokens

    run(args.warmup)
    start_rss, start_cached = rss_mb(), engine.stats()["prefix_cache_tokens"]
    started = time.perf_counter()
    tokens = run(args.requests)
    seconds = time.perf_counter() - started
    end_rss = rss_mb()
    stats = engine.stats()
    engine.shutdown()
    growth = 100 * (end_rss - start_rss) / start_rss
    print(f"{args.requests} requests ({tokens} tokens) in {seconds:.0f} s; engine stats: {stats}")
    mode = "native decode" if engine.native else "compiled decode" if args.compile else "eager decode"
    print(
        f"| soak ({mode}): {args.requests:,} short requests after {args.warmup:,} warm-up | RSS start {start_rss:.0f} MB "
        f"(prefix store {start_cached} tokens) | end {end_rss:.0f} MB (prefix store {stats['prefix_cache_tokens']} "
        f"tokens) | **{growth:+.1f}%** (goal within 10%) |"
    )
    leftover = stats["running"] + stats["waiting"] + stats["kv_reserved_tokens"]
    return 0 if abs(growth) <= 10 and leftover == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
