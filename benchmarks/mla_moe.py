"""Decode speed and KV bytes of the MLA + MoE recipe vs the dense default at equal active parameters, in one run.

Both models are random-initialised from their recipes' `[model]` sections (train/recipes/default.toml and
mla_moe.toml, vocab 8192, fp32: 3.93M vs 3.92M active parameters per token, 6.7M in all for MLA + MoE) and
decoded greedily by the engine (`Engine.generate`, the server's loop): one request, then `--batch` concurrent
ones, each `--new-tokens` long after a 16-token prompt. Each model is timed on its default native C step
(native_decode.c: the Llama step, and the latent step of native_latent.py) and on the PyTorch model
(`native_decode=False`). Rounds rotate between the engines after a warm-up; medians are reported.
KV bytes per token come from each engine's own `stats()`, beside an MHA model of the MLA model's shape.

    python benchmarks/mla_moe.py                      # 128 new tokens, batch 8, 3 rounds
    python benchmarks/mla_moe.py --new-tokens 64 --rounds 2 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from nanoseek.engine import Engine, Request, SamplingParams
from nanoseek.model.config import ModelConfig
from nanoseek.model.transformer import Transformer
from nanoseek.tokenizer.tokenizer import Tokenizer
from nanoseek.train.recipe import load_recipe

VOCAB = 8192
PROMPT_TOKENS = 16


def recipe_model(name: str) -> Transformer:
    config = ModelConfig(vocab_size=VOCAB, **load_recipe(name)["model"])
    torch.manual_seed(0)
    model = Transformer(config)
    model.init_weights()
    return model.eval()


def decode_tokens_per_second(engine: Engine, batch: int, new_tokens: int) -> float:
    params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    requests = [Request([(7 * row + i) % 500 + 20 for i in range(PROMPT_TOKENS)], params) for row in range(batch)]
    started = time.perf_counter()
    completions = engine.generate(requests)
    elapsed = time.perf_counter() - started
    assert all(len(c.token_ids) == new_tokens for c in completions)
    return batch * new_tokens / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = Tokenizer.train(["def add(a, b):\n    return a + b\n"] * 50, 300)  # ids only; text is not read
    dense, mla_moe = recipe_model("default"), recipe_model("mla_moe")
    config = mla_moe.config
    budget = args.batch * (PROMPT_TOKENS + args.new_tokens) + 256
    engines = {
        "dense, native C step": Engine(dense, tokenizer, max_batch=args.batch, kv_budget_tokens=budget),
        "dense, PyTorch model": Engine(
            dense, tokenizer, max_batch=args.batch, kv_budget_tokens=budget, native_decode=False
        ),
        "MLA + MoE, native C step": Engine(mla_moe, tokenizer, max_batch=args.batch, kv_budget_tokens=budget),
        "MLA + MoE, PyTorch model": Engine(
            mla_moe, tokenizer, max_batch=args.batch, kv_budget_tokens=budget, native_decode=False
        ),
    }
    mha_config = ModelConfig(
        vocab_size=VOCAB,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        head_dim=config.v_head_dim,
    )
    mha = Engine(Transformer(mha_config), tokenizer, max_batch=1, kv_budget_tokens=256)
    mha_bytes = mha.stats()["kv_bytes_per_token"]
    mha.shutdown()
    timings: dict[str, dict[int, list[float]]] = {name: {1: [], args.batch: []} for name in engines}
    for engine in engines.values():  # warm-up: first calls pay allocation and oneDNN primitive creation
        decode_tokens_per_second(engine, args.batch, 8)
    for _ in range(args.rounds):
        for name, engine in engines.items():
            for batch in (1, args.batch):
                timings[name][batch].append(decode_tokens_per_second(engine, batch, args.new_tokens))
    print(
        f"{args.new_tokens} new tokens after a {PROMPT_TOKENS}-token prompt, {args.threads} threads, median of {args.rounds}"
    )
    print(
        f"MLA + MoE: {config.num_parameters(active=True) / 1e6:.2f}M active of {config.num_parameters() / 1e6:.2f}M; "
        f"dense: {dense.config.num_parameters() / 1e6:.2f}M"
    )
    print(
        f"| engine | batch 1 tok/s | batch {args.batch} tok/s | KV bytes/token | vs MHA of MLA's shape ({mha_bytes}) |"
    )
    print("|---|---|---|---|---|")
    medians = {}
    for name, engine in engines.items():
        medians[name] = {b: statistics.median(v) for b, v in timings[name].items()}
        kv = engine.stats()["kv_bytes_per_token"]
        print(f"| {name} | {medians[name][1]:.1f} | {medians[name][args.batch]:.1f} | {kv} | {kv / mha_bytes:.1%} |")
        engine.shutdown()
    for path in ("native C step", "PyTorch model"):
        dense_speed, moe_speed = medians[f"dense, {path}"], medians[f"MLA + MoE, {path}"]
        ratios = [dense_speed[b] / moe_speed[b] for b in (1, args.batch)]
        print(f"dense / MLA + MoE, {path}: batch 1 {ratios[0]:.2f}x, batch {args.batch} {ratios[1]:.2f}x")


if __name__ == "__main__":
    main()
