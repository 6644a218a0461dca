"""Decode speed and KV bytes of the MLA + MoE recipe vs the dense default at equal active parameters, in one run.

Both models are random-initialised from their recipes' `[model]` sections (train/recipes/default.toml and
mla_moe.toml, vocab 8192, fp32: 3.93M vs 3.92M active parameters per token, 6.7M in all for MLA + MoE) and
decoded greedily by the engine (`Engine.generate`, the server's loop): one request, then `--batch` concurrent
ones, each `--new-tokens` long after a 16-token prompt. Each model is timed on its default native C step
(native_decode.c: the Llama step, and the latent step of native_latent.py) and on the PyTorch model
(`native_decode=False`). Rounds rotate between the engines after a warm-up; medians are reported, of tokens per
second of wall time and per second of the process's CPU time (the steadier of the two on a loaded machine; with
two threads it counts their spinning at the step's barriers too).
KV bytes per token come from each engine's own `stats()`, beside an MHA model of the MLA model's shape.

`--raw-steps` times only the two native C steps, called directly in one process (no engine, no sampling), blocks
of 40 steps alternating between the models, in CPU seconds of the process with one thread: on a machine other
processes load, wall time mostly measures them, and this is the figure they disturb least.

`--feed-forward fp32,q8_0` runs each model as it is (fp32) and with its feed-forward weights in q8_0 (quantized.py
`feed_forward_only`: the dense model's MLPs; the MLA + MoE model's dense first MLP, shared and routed experts), the
same treatment for both, each pair compared in the same run; the MLA + MoE model in q8_0 against the fp32 dense one
is printed too (not the same treatment: read it as such). The PyTorch engines run for fp32 only (a quantized
model's PyTorch forward dequantizes its weights per call; the engine decodes it natively).

    python benchmarks/mla_moe.py                      # 128 new tokens, batch 8, 3 rounds
    python benchmarks/mla_moe.py --new-tokens 64 --rounds 2 --threads 1
    python benchmarks/mla_moe.py --raw-steps --batch 8
    python benchmarks/mla_moe.py --raw-steps --batch 8 --feed-forward fp32,q8_0
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from nanoseek.engine import Engine, Request, SamplingParams
from nanoseek.model.config import QUANTIZED_DTYPES, ModelConfig
from nanoseek.model.quantized import quantize_model
from nanoseek.model.transformer import Transformer
from nanoseek.tokenizer.tokenizer import Tokenizer
from nanoseek.train.recipe import load_recipe

VOCAB = 8192
PROMPT_TOKENS = 16


MODELS = {"default": "dense", "mla_moe": "MLA + MoE"}


def recipe_model(name: str, feed_forward: str = "fp32") -> Transformer:
    """The recipe's model, random-initialised (seeded), its feed-forward weights quantized to `feed_forward` unless
    that is fp32."""
    config = ModelConfig(vocab_size=VOCAB, **load_recipe(name)["model"])
    torch.manual_seed(0)
    model = Transformer(config)
    model.init_weights()
    if feed_forward != "fp32":
        quantize_model(model, feed_forward, feed_forward_only=True)
    return model.eval()


def decode_tokens_per_second(engine: Engine, batch: int, new_tokens: int) -> tuple[float, float]:
    """Generated tokens per second of wall time, and per second of the process's CPU time: on a machine other
    processes load, the wall clock mostly measures them (a step's threads wait for a core at every barrier)."""
    params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    requests = [Request([(7 * row + i) % 500 + 20 for i in range(PROMPT_TOKENS)], params) for row in range(batch)]
    started, cpu_started = time.perf_counter(), time.process_time()
    completions = engine.generate(requests)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert all(len(c.token_ids) == new_tokens for c in completions)
    return batch * new_tokens / elapsed, batch * new_tokens / cpu


def compared(feed_forwards: list[str]) -> list[tuple[str, str]]:
    """(MLA + MoE's, dense's) feed-forward types compared: each alike, then each quantized one against fp32 dense."""
    pairs = [(f, f) for f in feed_forwards]
    if "fp32" in feed_forwards:
        pairs += [(f, "fp32") for f in feed_forwards if f != "fp32"]
    return pairs


def native_path(feed_forward: str) -> str:
    return "native C step" if feed_forward == "fp32" else f"native C step ({feed_forward} feed-forward)"


def raw_step_seconds(
    batch: int, feed_forwards: list[str], blocks: int = 25, steps: int = 40
) -> dict[tuple[str, str], list[float]]:
    """CPU seconds per native step of each recipe's model with each feed-forward type, `blocks` blocks of `steps`
    alternating between them, after 64 steps of warm-up (positions 64..127, scattered tokens so that the MoE rows
    route differently)."""
    from nanoseek.engine.latent_cache import kv_cache_for
    from nanoseek.engine.native import NativeDecoder
    from nanoseek.engine.native_latent import LatentNativeDecoder

    decoders = {}
    for feed_forward in feed_forwards:
        for name in MODELS:
            model = recipe_model(name, feed_forward)
            cache = kv_cache_for(model.config, batch, 256, torch.float32)
            decoder = (LatentNativeDecoder if model.config.is_mla else NativeDecoder).build(model, cache, batch)
            print(f"{MODELS[name]}, {feed_forward} feed-forward: {decoder.kernel}")
            decoders[name, feed_forward] = decoder
    slots = list(range(batch))
    for decoder in decoders.values():
        for position in range(64):
            decoder.step([20 + row for row in slots], [position] * batch, slots)
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in decoders}
    for block in range(blocks):
        for name, decoder in decoders.items():
            started = time.process_time()
            for i in range(steps):
                decoder.step([(31 * row + i + block) % VOCAB for row in slots], [64 + i] * batch, slots)
            seconds[name].append((time.process_time() - started) / steps)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--raw-steps", action="store_true", help="time the two native C steps only (one thread)")
    parser.add_argument(
        "--feed-forward",
        default="fp32",
        help="comma-separated storage of both models' feed-forward weights: fp32 (as trained), q8_0, q4_1",
    )
    args = parser.parse_args()
    feed_forwards = args.feed_forward.split(",")
    if not set(feed_forwards) <= {"fp32", *QUANTIZED_DTYPES}:
        parser.error(f"--feed-forward takes fp32, {', '.join(QUANTIZED_DTYPES)}")
    os.environ.setdefault("NANOSEEK_REQUIRE_NATIVE", "1")  # native_decode=False engines are unaffected
    if args.raw_steps:
        torch.set_num_threads(1)
        seconds = raw_step_seconds(args.batch, feed_forwards)
        best = {key: min(values) for key, values in seconds.items()}
        middle = {key: statistics.median(values) for key, values in seconds.items()}
        for name, feed_forward in seconds:
            print(
                f"{MODELS[name]}, {feed_forward} feed-forward: batch {args.batch}, "
                f"min {best[name, feed_forward] * 1e6:.0f} us, median {middle[name, feed_forward] * 1e6:.0f} us CPU"
            )
        for moe_feed_forward, dense_feed_forward in compared(feed_forwards):
            moe, dense = ("mla_moe", moe_feed_forward), ("default", dense_feed_forward)
            print(
                f"MLA + MoE ({moe_feed_forward} feed-forward) / dense ({dense_feed_forward}) step time: "
                f"{best[moe] / best[dense]:.2f}x (min), {middle[moe] / middle[dense]:.2f}x (median)"
            )
        return
    torch.set_num_threads(args.threads)
    tokenizer = Tokenizer.train(["def add(a, b):\n    return a + b\n"] * 50, 300)  # ids only; text is not read
    budget = args.batch * (PROMPT_TOKENS + args.new_tokens) + 256
    engines = {}
    for feed_forward in feed_forwards:
        for name, label in MODELS.items():
            model = recipe_model(name, feed_forward)
            engines[f"{label}, {native_path(feed_forward)}"] = Engine(
                model, tokenizer, max_batch=args.batch, kv_budget_tokens=budget
            )
            if feed_forward == "fp32":
                engines[f"{label}, PyTorch model"] = Engine(
                    model, tokenizer, max_batch=args.batch, kv_budget_tokens=budget, native_decode=False
                )
    config = ModelConfig(vocab_size=VOCAB, **load_recipe("mla_moe")["model"])
    dense_config = ModelConfig(vocab_size=VOCAB, **load_recipe("default")["model"])
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
    timings: dict[str, dict[int, list[tuple[float, float]]]] = {name: {1: [], args.batch: []} for name in engines}
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
        f"dense: {dense_config.num_parameters() / 1e6:.2f}M"
    )
    print(
        f"| engine | batch 1 tok/s | batch {args.batch} tok/s | batch 1 tok/CPU-s | batch {args.batch} tok/CPU-s "
        f"| KV bytes/token | vs MHA of MLA's shape ({mha_bytes}) |"
    )
    print("|---|---|---|---|---|---|---|")
    medians = {}  # name -> clock (0 wall, 1 CPU) -> batch -> tokens/s
    for name, engine in engines.items():
        medians[name] = [
            {b: statistics.median(t[clock] for t in v) for b, v in timings[name].items()} for clock in (0, 1)
        ]
        wall, cpu = medians[name]
        kv = engine.stats()["kv_bytes_per_token"]
        print(
            f"| {name} | {wall[1]:.1f} | {wall[args.batch]:.1f} | {cpu[1]:.1f} | {cpu[args.batch]:.1f} | {kv} "
            f"| {kv / mha_bytes:.1%} |"
        )
        engine.shutdown()
    pairs = [(native_path(moe), native_path(dense)) for moe, dense in compared(feed_forwards)]
    if "fp32" in feed_forwards:
        pairs.append(("PyTorch model", "PyTorch model"))
    for moe_path, dense_path in pairs:
        path = moe_path if moe_path == dense_path else f"{moe_path} vs dense {dense_path}"
        for clock, clock_name in enumerate(("wall", "CPU")):
            dense_speed, moe_speed = medians[f"dense, {dense_path}"][clock], medians[f"MLA + MoE, {moe_path}"][clock]
            ratios = [dense_speed[b] / moe_speed[b] for b in (1, args.batch)]
            print(
                f"dense / MLA + MoE, {path}, {clock_name} time: batch 1 {ratios[0]:.2f}x, "
                f"batch {args.batch} {ratios[1]:.2f}x"
            )


if __name__ == "__main__":
    main()
