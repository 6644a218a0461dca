"""The measurements behind the engine's fast paths, side by side in one run; prints ratios.

    python benchmarks/engine_ablations.py                 # embedded default model, 2 threads
    python benchmarks/engine_ablations.py --repeats 5 --steps 200

A decode step here is what the engine runs per step: `SlotKVCache.begin_decode` + the model's forward for
B sequences (64-token prompts, prefilled first) + argmax. Each configuration runs in its own subprocess
(so one run's OpenMP pools cannot leak into the next), configurations rotate order across repeats, and
the table reports median milliseconds per step. Three questions:

* projections: plain `F.linear` (MKL over the column-major weights) vs oneDNN-packed weights
  (`Transformer.pack_for_inference`), at batch 1, 4 and 16;
* threads: the engine computes in its own thread; how much slower is that thread when the main thread
  has already run torch work (and so owns an idle OpenMP pool) than when it has not (`in_fresh_thread`);
* compile: decode steps eager vs compiled as `Engine(compile_decode=True)` compiles them (torch.compile,
  inductor with the C++ wrapper, dynamic shapes, frozen weights), at batch 1, 4 and 16;
* native: the engine's default decode step, one C call (`nanoseek.engine.native`), against both, and again
  with an OpenMP pool in the main thread (its own phase barrier is what keeps that from slowing it);
* native bf16: the same step for the model in bf16 (`serve --dtype bfloat16`), its projections on
  AVX512-BF16 (`native-bf16`) and on AMX tiles (`native-amx`), against fp32 (each only where the CPU has it).

`--only native packed` runs the configurations whose names start with those words (the tables then show
what was run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "nanoseek" / "default_model"
PROMPT_TOKENS = 64
SLOTS = 64  # as the engine benchmark's engine (max_batch=64)

# name -> child settings; every configuration computes in a thread other than the main one, as the engine does
CONFIGS: dict[str, dict] = {
    **{f"plain B={b}": {"batch": b, "packed": False, "main_pool": False, "compile": False} for b in (1, 4, 16)},
    **{f"native B={b}": {"batch": b, "native": True, "main_pool": False} for b in (1, 4, 16)},
    **{f"native B={b}, main-thread pool": {"batch": b, "native": True, "main_pool": True} for b in (1, 4, 16)},
    **{f"packed B={b}": {"batch": b, "packed": True, "main_pool": False, "compile": False} for b in (1, 4, 16)},
    **{
        f"packed B={b}, main-thread pool": {"batch": b, "packed": True, "main_pool": True, "compile": False}
        for b in (1, 4, 16)
    },
    **{
        f"native-bf16 B={b}": {"batch": b, "native": True, "main_pool": False, "dtype": "bfloat16", "amx": False}
        for b in (1, 4, 16)
    },
    **{
        f"native-amx B={b}": {"batch": b, "native": True, "main_pool": False, "dtype": "bfloat16", "amx": True}
        for b in (1, 4, 16)
    },
    # As Engine(compile_decode=True): frozen weights that inductor packs itself, so the model is not packed.
    **{f"compiled B={b}": {"batch": b, "packed": False, "main_pool": False, "compile": True} for b in (1, 4, 16)},
}


def child(settings: dict, model_dir: Path, threads: int, steps: int) -> float:
    """Median ms per decode step for one configuration (runs in a subprocess)."""
    import torch

    from nanoseek.engine.engine import in_fresh_thread
    from nanoseek.engine.kv_cache import SlotKVCache
    from nanoseek.engine.native import NativeDecoder
    from nanoseek.model.loader import load_model

    torch.set_num_threads(threads)
    batch = settings["batch"]
    model = in_fresh_thread(load_model, model_dir, dtype=settings.get("dtype", "float32")).eval()
    config = model.config
    if settings["main_pool"]:
        square = torch.randn(512, 512)
        square @ square  # torch work in the main thread: it now owns an OpenMP pool

    def run() -> float:
        torch.set_num_threads(threads)
        if settings.get("packed"):
            model.pack_for_inference()
        forward = model
        if settings.get("compile"):
            forward = torch.compile(model, dynamic=True, options={"cpp_wrapper": True, "freezing": True})
        cache = SlotKVCache(
            config.num_hidden_layers,
            config.num_key_value_heads,
            config.head_dim,
            SLOTS,
            config.max_position_embeddings,
            model.dtype,
        )
        model.rotary.get(cache.position_limit, model.dtype, model.device)
        native = (
            NativeDecoder.build(model, cache, SLOTS, allow_amx=settings.get("amx", True))
            if settings.get("native")
            else None
        )
        slots = list(range(batch))
        with torch.no_grad():
            cache.begin_prefill(slots, 0, PROMPT_TOKENS)
            model(torch.randint(3, config.vocab_size, (batch, PROMPT_TOKENS)), cache=cache)
            tokens = torch.full((batch, 1), 7)
            times = []
            for step in range(steps + 10):  # the first 10 steps warm up (and compile)
                started = time.perf_counter()
                positions = [PROMPT_TOKENS + step] * batch
                if native is not None:
                    logits = native.step(tokens[:, 0].tolist(), positions, slots)
                else:
                    cache.begin_decode(slots, positions)
                    logits = forward(tokens, None, cache=cache)[:, 0].float()
                tokens = logits.argmax(-1, keepdim=True)
                if step >= 10:
                    times.append(time.perf_counter() - started)
        return statistics.median(times) * 1e3

    return in_fresh_thread(run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="WORD",
        help="configurations whose names start with these words: plain packed compiled native",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("NANOSEEK_REQUIRE_NATIVE", "1")  # time the native step, not a silent fallback
    if args.child:
        print(json.dumps(child(json.loads(args.child), args.model, args.threads, args.steps)))
        return 0
    from tqdm import tqdm

    names = [name for name in CONFIGS if (not args.only or name.split()[0] in args.only) and available(name)]
    results: dict[str, list[float]] = {name: [] for name in names}
    with tqdm(total=args.repeats * len(names), desc="configurations", unit="run") as bar:
        for repeat in range(args.repeats):
            order = names[repeat % len(names) :] + names[: repeat % len(names)]  # rotate: load drifts
            for name in order:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--model",
                        str(args.model),
                        "--threads",
                        str(args.threads),
                        "--steps",
                        str(args.steps),
                        "--child",
                        json.dumps(CONFIGS[name]),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results[name].append(float(out.stdout.strip().splitlines()[-1]))
                bar.update()
    ms = {name: statistics.median(values) for name, values in results.items()}
    print(
        f"\nmodel {args.model}, {args.threads} threads, {args.steps} decode steps after a {PROMPT_TOKENS}-token "
        f"prompt, median of {args.repeats} runs (ms per step)\n"
    )
    print_table(ms, "projections", ["plain B={b}", "packed B={b}"], "packed / plain speed-up")
    print_table(
        ms,
        "main-thread pool, packed",
        ["packed B={b}", "packed B={b}, main-thread pool"],
        "slow-down from that pool",
        slow_down=True,
    )
    print_table(ms, "compile", ["packed B={b}", "compiled B={b}"], "compiled / eager speed-up")
    print_table(ms, "native", ["packed B={b}", "native B={b}"], "native / eager speed-up")
    print_table(ms, "native", ["compiled B={b}", "native B={b}"], "native / compiled speed-up")
    print_table(
        ms,
        "main-thread pool, native",
        ["native B={b}", "native B={b}, main-thread pool"],
        "slow-down from that pool",
        slow_down=True,
    )
    print_table(ms, "native bf16 (AVX512-BF16)", ["native B={b}", "native-bf16 B={b}"], "bf16 / fp32 speed-up")
    print_table(ms, "native bf16 (AMX tiles)", ["native B={b}", "native-amx B={b}"], "AMX bf16 / fp32 speed-up")
    print_table(
        ms,
        "native bf16, AMX tiles vs AVX512-BF16",
        ["native-bf16 B={b}", "native-amx B={b}"],
        "AMX / AVX512-BF16 speed-up",
    )
    for mode in ("packed", "compiled", "native", "native-bf16", "native-amx"):
        if f"{mode} B=16" in ms and f"{mode} B=1" in ms:
            ratio = ms[f"{mode} B=16"] / ms[f"{mode} B=1"]
            print(
                f"batched decode ({mode}): B=16 step = {ratio:.2f}x the B=1 step, so 16 sequences decode "
                f"{16 / ratio:.1f}x the tokens/s of one"
            )
    return 0


def available(name: str) -> bool:
    """Whether this CPU runs a configuration: the bf16 native ones need AVX512-BF16, `native-amx` AMX tiles."""
    if not name.startswith(("native-bf16", "native-amx")):
        return True
    from nanoseek.engine.native import load_library

    library = load_library()
    if library is None or not library.nanoseek_supports_bf16():
        return False
    return not name.startswith("native-amx") or bool(library.nanoseek_enable_amx())


def print_table(ms: dict[str, float], title: str, columns: list[str], ratio_name: str, slow_down: bool = False) -> None:
    """One comparison (ms per step of two configurations at batch 1, 4, 16 and their ratio), if it was run."""
    rows = [b for b in (1, 4, 16) if all(column.format(b=b) in ms for column in columns)]
    if not rows:
        return
    base, other = (column.split(" B=")[0] + column.split("}")[1] for column in columns)
    print(f"\n{title}\n\n| batch | {base} | {other} | {ratio_name} |\n|---|---|---|---|")
    for b in rows:
        first, second = (ms[column.format(b=b)] for column in columns)
        ratio = second / first if slow_down else first / second
        print(f"| {b} | {first:.2f} | {second:.2f} | **{ratio:.2f}x** |")


if __name__ == "__main__":
    sys.exit(main())
