"""The native decode step alone at 1 and 16 rows, timed in CPU time on one thread, per weight format and context
length (SmolLM2-135M-Instruct by default): issue 19's "16 concurrent >= 8x batch-1", measured where a shared,
loaded machine still gives meaningful ratios.

    python benchmarks/native_step_rows.py                                   # gguf q8_0 bfloat16, 1 and 128 positions
    python benchmarks/native_step_rows.py --formats gguf --positions 1 128 512 --repeats 20

Wall-clock rates of a two-thread step beside another job's threads measure the scheduler (benchmarks/concurrency.py
printed 6.3 tok/s at batch 1 at a load average of 8.6); the CPU time of one thread is what the step costs, whatever
else runs. Each format runs in a spawned process of its own; within it, 1-row and 16-row steps alternate (rows in
slots 0..15, each at the given position), medians. Printed beside them: the multiply-adds of a token's projections
(the model's matrices, output head included) and the rate a 16-row step at 1 position (attention next to nothing)
reaches, against one thread's bf16 matmul in PyTorch (a [16, hidden] x [hidden, 4 hidden] product).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import GGUF_FORMATS, OTHER_GGUF_FORMATS, WorkerProcess, engine_options  # noqa: E402

ROWS = 16


def projection_macs(model) -> int:
    """Multiply-adds of one token's projections: every matrix of the layers and the output head (not the embedding,
    a lookup, though a tied head shares its table)."""
    from nanoseek.model.quantized import QuantizedLinear

    def macs(module) -> int:
        if isinstance(module, QuantizedLinear):
            return module.in_features * module.out_features
        return module.weight.numel() if isinstance(module, torch.nn.Linear) else 0

    return sum(macs(module) for module in model.layers.modules()) + macs(model.lm_head)


def format_worker(path: str, weight_format: str, positions: list[int], repeats: int, conn) -> None:
    try:
        torch.set_num_threads(1)
        from nanoseek.engine import Engine

        engine = Engine.from_checkpoint(path, **engine_options(weight_format), max_batch=ROWS, kv_budget_tokens=2048)
        config = engine.model.config
        result = {"kernel": engine.native.kernel, "macs": projection_macs(engine.model), "hidden": config.hidden_size}
        result["ms"] = {}
        for position in positions:
            times: dict[int, list[float]] = {1: [], ROWS: []}
            for repeat in range(repeats + 1):
                for rows in (1, ROWS) if repeat % 2 == 0 else (ROWS, 1):
                    started = time.process_time()
                    engine.native.step([7] * rows, [position] * rows, list(range(rows)))
                    if repeat:  # the first round warms up
                        times[rows].append(time.process_time() - started)
            result["ms"][position] = {rows: 1000 * statistics.median(each) for rows, each in times.items()}
        engine.shutdown()
        conn.send(result)
    except Exception as exc:  # the parent raises it with the format's name
        conn.send(exc)


def bf16_matmul_rate(hidden: int, repeats: int = 200) -> float:
    """GMAC/s of one thread's bf16 [16, hidden] x [hidden, 4 hidden] matmul (PyTorch, CPU time)."""
    torch.set_num_threads(1)
    x, w = torch.randn(ROWS, hidden).bfloat16(), torch.randn(hidden, 4 * hidden).bfloat16()
    for _ in range(10):
        x @ w
    started = time.process_time()
    for _ in range(repeats):
        x @ w
    return repeats * ROWS * hidden * 4 * hidden / (time.process_time() - started) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a GGUF file or a named model")
    parser.add_argument(
        "--formats", nargs="+", default=["gguf", "q8_0", "bfloat16"], choices=GGUF_FORMATS + OTHER_GGUF_FORMATS
    )
    parser.add_argument("--positions", nargs="+", type=int, default=[1, 128], help="cached positions of every row")
    parser.add_argument("--repeats", type=int, default=12)
    args = parser.parse_args(argv)
    os.environ.setdefault("NANOSEEK_REQUIRE_NATIVE", "1")
    from nanoseek.model.named import resolve_model

    path = str(resolve_model(args.model))
    print(f"{path}: torch {torch.__version__}, one thread, CPU time, {args.repeats} repeats", flush=True)
    rows = [
        f"| format (kernel) | position | ms per step, 1 / {ROWS} rows | tok/s, 1 / {ROWS} rows | ratio | "
        f"{ROWS}-row projections GMAC/s |",
        "|---|---|---|---|---|---|",
    ]
    for weight_format in args.formats:
        worker = WorkerProcess(
            f"nanoseek {weight_format}", format_worker, (path, weight_format, args.positions, args.repeats)
        )
        try:
            result = worker.receive()
        finally:
            worker.close()
        hidden = result["hidden"]
        for position, ms in result["ms"].items():
            rate = f"{ROWS * result['macs'] / ms[ROWS] / 1e6:.0f}" if position == min(args.positions) else ""
            rows.append(
                f"| {weight_format} ({result['kernel']}) | {position} | {ms[1]:.2f} / {ms[ROWS]:.2f} | "
                f"{1000 / ms[1]:.0f} / {1000 * ROWS / ms[ROWS]:.0f} | **{ROWS * ms[1] / ms[ROWS]:.2f}x** | {rate} |"
            )
            print(rows[-1], flush=True)
    print("\n".join(rows))
    print(f"one thread's bf16 matmul [16, {hidden}] x [{hidden}, {4 * hidden}]: {bf16_matmul_rate(hidden):.0f} GMAC/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
