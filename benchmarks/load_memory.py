"""Resident memory of loading a checkpoint, and of an engine over it: what one copy of the weights costs.

    python benchmarks/load_memory.py smollm2-135m-instruct --dtype float32
    python benchmarks/load_memory.py DIR --dtype bfloat16 --engine

Prints, in MB, the process's resident set before loading (Python, torch, nanoseek imported), after loading (the
model alone: steady) and its peak while loading, beside the weights as loaded (parameters and quantized blocks,
tied ones once); with --engine, the resident set once an Engine (16 slots x 1,024 positions, its native step
built) has answered one short request. Run it once per format, each in a fresh process.
"""

from __future__ import annotations

import argparse
import gc
import sys

import torch


def status() -> dict[str, int]:
    """VmRSS and VmHWM (peak) of this process, in MB."""
    with open("/proc/self/status") as lines:
        fields = dict(line.split(":", 1) for line in lines)
    return {key: int(fields[key].split()[0]) // 1024 for key in ("VmRSS", "VmHWM")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a --model value: folder, GGUF file or named model")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, q8_0, ...; none: the checkpoint's own")
    parser.add_argument("--engine", action="store_true", help="also build an engine over the model")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from nanoseek.engine import Engine, Request, SamplingParams
    from nanoseek.model.loader import load_checkpoint

    gc.collect()
    before = status()
    checkpoint = load_checkpoint(args.model, dtype=args.dtype)
    gc.collect()
    loaded = status()
    model = checkpoint.model
    tensors = {t.data_ptr(): t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]}
    weights = sum(tensors.values()) >> 20
    print(
        f"{args.model} {args.dtype or 'as stored'}: before loading {before['VmRSS']} MB; loaded {loaded['VmRSS']} MB "
        f"(+{loaded['VmRSS'] - before['VmRSS']} MB = {(loaded['VmRSS'] - before['VmRSS']) / weights:.2f}x the "
        f"weights), peak {loaded['VmHWM']} MB (+{loaded['VmHWM'] - before['VmRSS']} MB = "
        f"{(loaded['VmHWM'] - before['VmRSS']) / weights:.2f}x); weights as loaded {weights} MB"
    )
    if args.engine:
        engine = Engine(model, checkpoint.tokenizer, max_batch=16, kv_budget_tokens=1024)
        engine.generate([Request([1, 2, 3], SamplingParams(max_tokens=4, temperature=0.0))])
        serving = status()
        kernel = engine.native.kernel if engine.native else "PyTorch model"
        print(f"engine ({kernel}): {serving['VmRSS']} MB (+{serving['VmRSS'] - loaded['VmRSS']} MB over the model)")
        engine.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
