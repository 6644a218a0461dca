"""16 concurrent requests against one, per weight format, on a GGUF model (SmolLM2-135M-Instruct by default):
issue 19's goal "16 concurrent >= 8x batch-1 in every weight format", measured so the ratio means something on a
shared machine.

    python benchmarks/concurrency.py                                   # smollm2-135m-instruct, every format
    python benchmarks/concurrency.py --formats gguf bfloat16 --repeats 5 --new-tokens 64

Each format runs in a spawned process of its own (as benchmarks/gguf_models.py's sides: `float32` / `bfloat16`
= the file dequantized, `q8_0` = quantized again at load, `gguf` = the file's own blocks), one format at a time.
Within a format the 1-stream and 16-stream runs alternate, repeat after repeat, so a change in the machine's load
falls on both sides of the ratio (gguf_models.py ran all of one concurrency before the other: its ratios moved
with the load). Fresh random 64-token prompts every run, greedy, EOS ignored. Printed per format, medians:
* end to end: generated tokens over the run's wall time (prefill included);
* decode only: the tokens after the first, over the run's time minus that of the same requests stopped at their
  first token (as benchmarks/engine.py's part_concurrency);
* the native step alone: one decode step of 1 row and of 16 rows (`NativeDecoder.step`, rows at 128 cached
  positions), tokens/s: what the kernel allows without the engine's scheduling and sampling.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import WorkerProcess, engine_options, gguf_model_arguments, greedy, random_prompt  # noqa: E402

STREAMS, PROMPT, KV_TOKENS = 16, 64, 1024


def format_worker(path: str, weight_format: str, threads: int, repeats: int, new_tokens: int, conn) -> None:
    try:
        torch.set_num_threads(threads)
        conn.send(measure(path, weight_format, repeats, new_tokens))
    except Exception as exc:  # the parent raises it with the format's name
        conn.send(exc)


def measure(path: str, weight_format: str, repeats: int, new_tokens: int) -> dict:
    from nanoseek.engine import Engine, Request

    engine = Engine.from_checkpoint(
        path, **engine_options(weight_format), max_batch=STREAMS, kv_budget_tokens=KV_TOKENS
    )
    vocab = engine.model.config.vocab_size
    calls = iter(range(10**6))

    def run(streams: int, max_tokens: int) -> float:
        call = next(calls)  # fresh prompts every call: the prefix cache never serves them
        requests = [Request(random_prompt(PROMPT, 1000 * call + i, vocab), greedy(max_tokens)) for i in range(streams)]
        started = time.perf_counter()
        engine.generate(requests)
        return time.perf_counter() - started

    run(STREAMS, 8)  # warm-up
    full: dict[int, list[float]] = {1: [], STREAMS: []}
    first: dict[int, list[float]] = {1: [], STREAMS: []}
    for repeat in range(repeats):
        for streams in (1, STREAMS) if repeat % 2 == 0 else (STREAMS, 1):
            full[streams].append(run(streams, new_tokens))
            first[streams].append(run(streams, 1))
    result = {"kernel": engine.native.kernel if engine.native else "PyTorch model", "end_to_end": {}, "decode": {}}
    for streams in (1, STREAMS):
        full_time, first_time = statistics.median(full[streams]), statistics.median(first[streams])
        result["end_to_end"][streams] = streams * new_tokens / full_time
        result["decode"][streams] = streams * (new_tokens - 1) / (full_time - first_time)
    if engine.native is not None:  # the step alone, in rows at 128 cached positions of slots 0..15
        result["step"] = {}
        step_times: dict[int, list[float]] = {1: [], STREAMS: []}
        for repeat in range(5 * repeats):
            for rows in (1, STREAMS) if repeat % 2 == 0 else (STREAMS, 1):
                started = time.perf_counter()
                engine.native.step([7] * rows, [128] * rows, list(range(rows)))
                step_times[rows].append(time.perf_counter() - started)
        result["step"] = {rows: rows / statistics.median(times) for rows, times in step_times.items()}
    engine.shutdown()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = gguf_model_arguments(__doc__.split("\n")[0], 64, "greedy tokens per request")
    args = parser.parse_args(argv)
    os.environ.setdefault("NANOSEEK_REQUIRE_NATIVE", "1")  # time the native step, not a silent fallback
    from nanoseek.model.named import resolve_model

    path = str(resolve_model(args.model))
    print(
        f"{path}: torch {torch.__version__}, {args.threads} threads, {args.repeats} repeats, {PROMPT}-token "
        f"prompts + {args.new_tokens} tokens",
        flush=True,
    )
    rows = [
        f"| format (kernel) | end to end tok/s, 1 / {STREAMS} | ratio | decode-only tok/s, 1 / {STREAMS} | ratio "
        f"| native step alone tok/s, 1 / {STREAMS} rows | ratio | goal {STREAMS} >= 8x batch-1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for weight_format in args.formats:
        worker = WorkerProcess(
            f"nanoseek {weight_format}",
            format_worker,
            (path, weight_format, args.threads, args.repeats, args.new_tokens),
        )
        try:
            result = worker.receive()
        finally:
            worker.close()
        cells = []
        for part in ("end_to_end", "decode", "step"):
            rates = result.get(part)
            if rates is None:
                cells += ["", ""]
                continue
            cells += [f"{rates[1]:.1f} / {rates[STREAMS]:.1f}", f"**{rates[STREAMS] / rates[1]:.1f}x**"]
        ratio = result["end_to_end"][STREAMS] / result["end_to_end"][1]
        rows.append(
            f"| {weight_format} ({result['kernel']}) | {' | '.join(cells)} | {'met' if ratio >= 8 else 'missed'} |"
        )
        print(rows[-1], flush=True)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
