"""Engine speed, side by side with the references on the same weights, in one run; prints ratios.

    python benchmarks/engine.py                      # everything (llama.cpp part only if llama-cpp-python is installed)
    python benchmarks/engine.py --parts batch1 json  # a subset: batch1 concurrency ttft json
    python benchmarks/engine.py --model nanoseek/default_model

Model: the embedded default model when it exists, else a random Llama of its planned shape (hidden 256,
6 layers, 4 heads, vocab 8192, tied embeddings) with a byte-level BPE tokenizer trained on stdlib sources,
saved once under bench_out/engine/. Everything runs on `--threads` threads (default 2), in fp32 or, with
`--dtype bfloat16`, with bf16 weights and KV cache on every side (llama.cpp on a bf16 GGUF).

Parts (each prints a table row; the ratios are the claims):
* batch1: 64-token prompt + 256 greedy tokens, one request: nanoseek Engine.generate vs transformers
  `generate` vs llama.cpp (llama-cpp-python on an f32/bf16 GGUF export of the same checkpoint) vs nanoseek's
  bare model loop, each reference in a process of its own (`ReferenceProcess`), one side at a time. Where
  the greedy tokens part from transformers' (a near-tie of a trained model) is printed with the row.
* concurrency: aggregate generated tokens/s with 1, 4, 16 and 64 concurrent requests (64-token prompts,
  128 new tokens each), end to end (prefill included) and decode only (`part_concurrency`), and the compute
  ceiling those rates sit under: the tokens/s the model's FLOPs allow at this machine's matmul peak in the
  run's dtype, measured in the same run.
* ttft: time to first token of a 1,024-token prompt (or the longest whole-block prompt a shorter context
  allows), cold vs fully cached (prefix cache).
* json: decode tokens/s of JSON-schema-constrained sampling vs the same sampling unconstrained (and end to end).
Repeats alternate the sides and report medians: machine load on shared hosts drifts.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import torch

from nanoseek.engine import Constraint, Engine, Request, SamplingParams
from nanoseek.engine.engine import in_fresh_thread
from nanoseek.engine.kv_cache import BLOCK_TOKENS
from nanoseek.model.cache import SimpleKVCache
from nanoseek.model.checkpoint import save_checkpoint
from nanoseek.model.config import ModelConfig
from nanoseek.model.transformer import Transformer
from nanoseek.train.throughput import flops_per_token, matmul_peak_gflops

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench_out" / "engine"
DEFAULT_MODEL = ROOT / "nanoseek" / "default_model"
VOCAB = 8192
GGUF_TYPE = {"float32": "f32", "bfloat16": "bf16"}  # llama.cpp's name for each --dtype


def bench_checkpoint() -> Path:
    if (DEFAULT_MODEL / "config.json").is_file():
        return DEFAULT_MODEL
    path = OUT_DIR / "checkpoint"
    if (path / "model.safetensors").is_file():
        return path
    from nanoseek.tokenizer.tokenizer import Tokenizer

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    corpus = sorted(stdlib.glob("*.py"))[:120]  # ~4 MB: enough text for 8,192 merges
    tokenizer = Tokenizer.train(corpus, VOCAB)
    config = ModelConfig.from_shape(
        "small",
        tokenizer.vocab_size,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
    )
    torch.manual_seed(0)
    model = Transformer(config)
    model.init_weights(std=0.02)
    return save_checkpoint(model.eval(), tokenizer, path)


# The weight formats a GGUF model is benchmarked in: dequantized to float32 or bfloat16, requantized to Q8_0, or the
# file's own quantized blocks (nanoseek.model.quantized).
GGUF_FORMATS = ("float32", "bfloat16", "q8_0", "gguf")
# Asked for by name only: the file's own blocks over an fp16 KV cache (`--kv-cache-dtype float16`, llama.cpp's).
OTHER_GGUF_FORMATS = ("gguf-f16kv",)


def engine_options(weight_format: str) -> dict[str, str | None]:
    """Engine.from_checkpoint's `dtype` and `kv_cache_dtype` for a --formats name."""
    weights, _, cache = weight_format.partition("-")
    return {"dtype": None if weights == "gguf" else weights, "kv_cache_dtype": "float16" if cache else "auto"}


def gguf_model_arguments(description: str, new_tokens: int, new_tokens_help: str) -> argparse.ArgumentParser:
    """The command line the GGUF-model benchmarks share: the model (a file or a named model), formats, repeats,
    threads and tokens per request."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a GGUF file or a named model")
    parser.add_argument("--formats", nargs="+", default=list(GGUF_FORMATS), choices=GGUF_FORMATS + OTHER_GGUF_FORMATS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=new_tokens, help=new_tokens_help)
    return parser


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def random_prompt(length: int, seed: int, vocab: int) -> list[int]:
    return torch.randint(3, vocab, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)


# ---- batch 1 --------------------------------------------------------------------------------------------


def part_batch1(engine: Engine, path: Path, repeats: int, threads: int, dtype: str) -> list[str]:
    new_tokens = 256
    prompt = random_prompt(64, 0, engine.vocab_size)
    # Each reference decodes in a process of its own. In one process they would share libgomp with the
    # engine: once more OpenMP threads exist than cores, libgomp stops letting idle workers spin, and a
    # 192-wide matmul loop in a fresh thread ran 25x slower beside an idle engine (either mode) than before
    # it was built, which would slow the references, not nanoseek.
    references: dict[str, ReferenceProcess] = {}
    try:
        for side in ("transformers", "model loop", "llama.cpp"):
            references[side] = ReferenceProcess(side, path, prompt, new_tokens, threads, dtype)
        return time_batch1(
            engine,
            prompt,
            new_tokens,
            repeats,
            {side: ref for side, ref in references.items() if ref.first_tokens is not None},
            GGUF_TYPE[dtype],
        )
    finally:
        for ref in references.values():
            ref.close()


def time_batch1(
    engine: Engine,
    prompt: list[int],
    new_tokens: int,
    repeats: int,
    references: dict[str, ReferenceProcess],
    gguf_type: str,
) -> list[str]:
    def run_nanoseek() -> list[int]:
        # Vary the first token so the prefix cache (a 64-token prompt is one whole block) never serves
        # the prompt: both sides pay the full prefill.
        run_nanoseek.calls += 1
        varied = [3 + run_nanoseek.calls % 1000] + prompt[1:]
        return engine.generate([Request(varied, greedy(new_tokens))])[0].token_ids

    run_nanoseek.calls = 0
    ours = engine.generate([Request(prompt, greedy(new_tokens))])[0].token_ids
    theirs = references["transformers"].first_tokens
    agree = sum(a == b for a, b in zip(ours, theirs))
    first_split = {side: parting_token(ref.first_tokens, theirs) for side, ref in references.items()}
    first_split["nanoseek"] = parting_token(ours, theirs)
    for side, split in first_split.items():
        if split < 32:  # a near-tie of the trained model's logits can split them early: report, still time
            print(f"warning: {side} and transformers part at greedy token {split}", file=sys.stderr, flush=True)

    times: dict[str, list[float]] = {"nanoseek": []} | {side: [] for side in references}
    for repeat in range(repeats):
        sides = [("nanoseek", lambda: median_time(run_nanoseek, 1))]
        sides += [(side, ref.time_one_run) for side, ref in references.items()]
        for name, timed in sides if repeat % 2 == 0 else sides[::-1]:
            times[name].append(timed())
    speed = {name: new_tokens / statistics.median(t) for name, t in times.items()}
    rows = [
        (
            f"| batch-1 decode, 64 + 256 tokens (tok/s) | nanoseek {speed['nanoseek']:.0f} | "
            f"transformers generate {speed['transformers']:.0f} | "
            f"**{speed['nanoseek'] / speed['transformers']:.2f}x** (goal >= 3) | "
            f"greedy tokens equal: {agree}/{new_tokens}, first {first_split['nanoseek']} identical |"
        )
    ]
    rows.append(
        f"| engine overhead: batch-1 decode vs the bare model loop (tok/s) | engine {speed['nanoseek']:.0f} | "
        f"model + SimpleKVCache {speed['model loop']:.0f} | **{speed['nanoseek'] / speed['model loop']:.2f}x** | "
        f"scheduler, sampling, detokenizer, events included |"
    )
    if "llama.cpp" in speed:
        rows.append(
            f"| batch-1 decode vs llama.cpp {gguf_type} (tok/s) | nanoseek {speed['nanoseek']:.0f} | "
            f"llama.cpp {speed['llama.cpp']:.0f} | **{speed['nanoseek'] / speed['llama.cpp']:.2f}x** "
            f"(goal >= 1) | first {first_split['llama.cpp']} greedy tokens equal to transformers |"
        )
    else:
        rows.append(
            f"| batch-1 decode vs llama.cpp {gguf_type} | not measured: llama-cpp-python is not installed "
            "(pip install -e '.[bench]') | | | |"
        )
    return rows


def parting_token(tokens: list[int], expected: list[int]) -> int:
    return next((i for i, (a, b) in enumerate(zip(tokens, expected)) if a != b), min(len(tokens), len(expected)))


class WorkerProcess:
    """A spawned process of its own (a fresh interpreter: no OpenMP pool, no engine) running
    `target(*args, conn)`, which answers over `conn`; an exception it sends back is raised here, named."""

    def __init__(self, name: str, target, args: tuple) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=target, daemon=True, args=(*args, child_conn))
        self.process.start()
        child_conn.close()  # only the child holds its end: its exit then ends our recv with EOFError

    def receive(self):
        try:
            message = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"the {self.name} process died (exit code {self.process.exitcode})") from None
        if isinstance(message, BaseException):
            raise RuntimeError(f"the {self.name} process failed: {message!r}") from message
        return message

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send("stop")
            except (BrokenPipeError, OSError):
                pass
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()


class ReferenceProcess(WorkerProcess):
    """One reference decoder (`transformers`, `model loop`, `llama.cpp`) in a spawned process of its own:
    it loads its side, decodes once (`first_tokens`, None when the side is not installed) and then times one
    decode per `time_one_run` call while the engine's process sits idle. An error in the child is raised here."""

    def __init__(self, side: str, path: Path, prompt: list[int], new_tokens: int, threads: int, dtype: str) -> None:
        super().__init__(f"{side} reference", reference_worker, (side, path, prompt, new_tokens, threads, dtype))
        self.side = side
        self.first_tokens = self.receive()

    def time_one_run(self) -> float:
        self.conn.send("run")
        return self.receive()


def reference_worker(side: str, path: Path, prompt: list[int], new_tokens: int, threads: int, dtype: str, conn) -> None:
    try:
        torch.set_num_threads(threads)
        run = {"transformers": transformers_runner, "model loop": model_loop_runner, "llama.cpp": llama_cpp_runner}[
            side
        ](path, prompt, new_tokens, threads, dtype)
        conn.send(run() if run is not None else None)
        while run is not None and conn.recv() == "run":
            started = time.perf_counter()
            run()
            conn.send(time.perf_counter() - started)
    except Exception as exc:  # the parent raises it with the side's name
        conn.send(exc)


def transformers_runner(path: Path, prompt: list[int], new_tokens: int, threads: int, dtype: str):
    import transformers

    reference = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    ids = torch.tensor([prompt])
    # Exactly new_tokens greedy tokens with the end-of-sentence token chosen like any other and not stopping, as
    # nanoseek's ignore_eos and llama.cpp: min_new_tokens would forbid it instead, and a trained model's argmax
    # after a random prompt is often EOS, so the greedy tokens parted at once.
    config = transformers.GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=[], pad_token_id=0)

    def run() -> list[int]:
        with torch.inference_mode():
            out = reference.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
        return out[0, ids.shape[1] :].tolist()

    return run


def model_loop_runner(path: Path, prompt: list[int], new_tokens: int, threads: int, dtype: str):
    """nanoseek's model driven by hand (SimpleKVCache, argmax): the floor for the engine's own per-step work."""
    from nanoseek.model.loader import load_checkpoint

    model = load_checkpoint(path, dtype=dtype).model.eval()
    ids = torch.tensor([prompt])

    def run() -> list[int]:
        with torch.no_grad():
            cache = SimpleKVCache(model.config, batch_size=1, capacity=len(prompt) + new_tokens, dtype=model.dtype)
            next_ids = model(ids, cache=cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
            tokens = [int(next_ids)]
            while len(tokens) < new_tokens:
                next_ids = model(next_ids, cache=cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
                tokens.append(int(next_ids))
        return tokens

    return run


def llama_cpp_runner(path: Path, prompt: list[int], new_tokens: int, threads: int, dtype: str):
    try:
        import llama_cpp
    except ImportError:
        return None
    from nanoseek.model.convert import convert

    gguf_file = OUT_DIR / f"{path.name}-{GGUF_TYPE[dtype]}.gguf"
    if not gguf_file.is_file() or gguf_file.stat().st_mtime < (path / "model.safetensors").stat().st_mtime:
        convert(str(path), gguf_file, GGUF_TYPE[dtype])
    llm = llama_cpp.Llama(
        str(gguf_file),
        n_ctx=len(prompt) + new_tokens + 8,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=len(prompt),
        verbose=False,
    )

    def run() -> list[int]:
        # generate(reset=True) still reuses the matching prompt prefix in llama-cpp-python 0.3.x: reset() first,
        # so every timed run pays the full prefill, as nanoseek's does.
        llm.reset()
        tokens = []
        for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            tokens.append(token)
            if len(tokens) == new_tokens:
                break
        return tokens

    return run


# ---- concurrency, TTFT, JSON ----------------------------------------------------------------------------


def concurrency_rates(
    engine: Engine, repeats: int, levels: tuple[int, ...], new_tokens: int = 128
) -> tuple[dict[int, float], dict[int, float]]:
    """Aggregate generated tokens/s at each concurrency (64-token prompts, `new_tokens` each): end to end, and
    decode only (see part_concurrency). Medians of `repeats`."""
    speed, decode_speed = {}, {}
    calls = iter(range(10**6))

    def run(concurrent: int, max_tokens: int) -> float:
        call = next(calls)  # fresh prompts every call: the prefix cache never serves them
        requests = [
            Request(random_prompt(64, 1000 * call + i, engine.vocab_size), greedy(max_tokens))
            for i in range(concurrent)
        ]
        started = time.perf_counter()
        engine.generate(requests)
        return time.perf_counter() - started

    for concurrent in levels:
        full, first = [], []
        for _ in range(repeats):
            full.append(run(concurrent, new_tokens))
            first.append(run(concurrent, 1))
        full_time, first_time = statistics.median(full), statistics.median(first)
        speed[concurrent] = concurrent * new_tokens / full_time
        decode_speed[concurrent] = concurrent * (new_tokens - 1) / (full_time - first_time)
    return speed, decode_speed


def part_concurrency(engine: Engine, repeats: int) -> list[str]:
    """Two rates per concurrency, from the same runs: end to end (prefill included: generated tokens over the
    whole run) and decode only, as llama-bench's tg separates from pp: the 127 tokens after the first, over
    the run's time minus that of the same requests stopped at their first token (prefill + one step)."""
    speed, decode_speed = concurrency_rates(engine, repeats, (1, 4, 16, 64))

    def cells(rates: dict[int, float]) -> str:
        return " | ".join(f"{c}: {s:.0f}" for c, s in rates.items())

    return [
        (
            f"| aggregate tok/s, end to end, at 1 / 4 / 16 / 64 concurrent (64 + 128 tokens each) | {cells(speed)} | "
            f"**16 concurrent = {speed[16] / speed[1]:.1f}x batch-1**, 64 = {speed[64] / speed[1]:.1f}x |"
        ),
        (
            f"| aggregate decode tok/s (the 127 tokens after the first) at 1 / 4 / 16 / 64 concurrent | "
            f"{cells(decode_speed)} | **16 concurrent = {decode_speed[16] / decode_speed[1]:.1f}x batch-1** "
            f"(goal >= 6), 64 = {decode_speed[64] / decode_speed[1]:.1f}x |"
        ),
        compute_ceiling_row(engine, prompt_tokens=64, new_tokens=128, speed=speed),
    ]


def compute_ceiling_row(engine: Engine, prompt_tokens: int, new_tokens: int, speed: dict[int, float]) -> str:
    """How much of the machine the batched runs use: the generated tokens/s that the model's arithmetic
    would allow at this machine's matmul peak in the model's dtype (measured now, threads as the engine),
    against the rates measured. Batching can only multiply batch-1 up to this ceiling: past it, a ratio goal
    needs a faster batch-1 loss or cheaper arithmetic, not less overhead."""
    peak_gflops = in_fresh_thread(matmul_peak_gflops, engine.model.dtype)
    # Forward only, a third of the training estimate; attention at the run's mean context length.
    flops_per_position = flops_per_token(engine.model, (prompt_tokens + new_tokens) // 2) / 3
    flops_per_generated = flops_per_position * (prompt_tokens + new_tokens) / new_tokens
    ceiling = peak_gflops * 1e9 / flops_per_generated
    dtype_name = str(engine.model.dtype).removeprefix("torch.")
    return (
        f"| compute ceiling: {dtype_name} matmul peak {peak_gflops:.0f} GFLOP/s (measured now) / "
        f"{flops_per_generated / 1e6:.1f} MFLOP per generated token | {ceiling:,.0f} tok/s | "
        f"batch-1 uses {speed[1] / ceiling:.0%} of it, 16 concurrent {speed[16] / ceiling:.0%}; "
        f"6x batch-1 would need {6 * speed[1] / ceiling:.0%} |"
    )


def part_ttft(engine: Engine, repeats: int) -> list[str]:
    # 1,024 tokens, or the longest whole-block prompt that leaves room for an answer in a shorter context.
    length = min(1024, (engine.cache.slot_capacity - 1) // BLOCK_TOKENS * BLOCK_TOKENS)
    cold, cached = [], []
    for repeat in range(repeats):
        prompt = random_prompt(length, 50_000 + repeat, engine.vocab_size)
        for times in (cold, cached):  # first call cold, second one hits the prefix cache
            started = time.perf_counter()
            [completion] = engine.generate([Request(prompt, greedy(1))])
            times.append(time.perf_counter() - started)
        assert completion.usage.cached_tokens == length, completion.usage
    cold_ms, cached_ms = statistics.median(cold) * 1e3, statistics.median(cached) * 1e3
    return [
        (
            f"| time to first token, {length:,}-token prompt | cold {cold_ms:.1f} ms | "
            f"fully cached {cached_ms:.2f} ms | **cached = {100 * cached_ms / cold_ms:.1f}% of cold** (goal <= 10%) |"
        )
    ]


def part_json(engine: Engine, repeats: int) -> list[str]:
    """Decode tokens/s with and without a JSON-schema constraint, batch 1, seeded sampling: each request
    streamed, its decode rate the tokens after the first over the time from the first token to the last
    (prefill excluded, as in the concurrency part), and end to end as well. Constrained requests stop when
    the document is complete (tens of tokens) and free ones run to 256 tokens, so end to end the constrained
    side pays a prefill per fewer tokens."""
    schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "string"}}},
        "required": ["items"],
        "additionalProperties": False,
    }
    constraint = Constraint.json_schema(schema)
    prompt = random_prompt(64, 7, engine.vocab_size)

    async def streamed(request: Request) -> tuple[int, float, float, float]:
        started = time.perf_counter()
        first = last = None
        tokens = 0
        async for event in engine.stream(request):
            last = time.perf_counter()
            first = first or last
            tokens += len(event.token_ids)
        return tokens, started, first, last

    def rates(constrained: bool) -> tuple[float, float]:
        tokens = decode_tokens = 0
        seconds = decode_seconds = 0.0
        seed = 0
        while tokens < 512:  # constrained runs may end early (document complete): keep going to 512 tokens
            seed += 1
            params = SamplingParams(
                max_tokens=256,
                temperature=1.0,
                seed=seed,
                ignore_eos=not constrained,
                constraint=constraint if constrained else None,
            )
            count, started, first, last = asyncio.run(streamed(Request([3 + seed] + prompt[1:], params)))
            tokens, seconds = tokens + count, seconds + last - started
            decode_tokens, decode_seconds = decode_tokens + count - 1, decode_seconds + last - first
        return decode_tokens / decode_seconds, tokens / seconds

    rates(True)  # compile the grammar outside the timing
    free, constrained = [], []
    for _ in range(repeats):
        free.append(rates(False))
        constrained.append(rates(True))
    (f, f_end), (c, c_end) = ([statistics.median(side) for side in zip(*runs)] for runs in (free, constrained))
    return [
        (
            f"| JSON-schema-constrained vs free sampling, batch 1, decode tok/s | free {f:.0f} | constrained {c:.0f} | "
            f"**{c / f:.2f}x** (goal >= 0.9) | end to end (prefill included): {f_end:.0f} vs {c_end:.0f} = "
            f"{c_end / f_end:.2f}x |"
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["batch1", "concurrency", "ttft", "json"],
        choices=["batch1", "concurrency", "ttft", "json"],
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=sorted(GGUF_TYPE),
        help="weights and KV cache of every side (as `nanoseek serve --dtype`)",
    )
    parser.add_argument(
        "--no-native",
        dest="native",
        action="store_false",
        help="nanoseek decodes with the PyTorch model, not the native C step (as `nanoseek serve --no-native`)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="with --no-native: the PyTorch decode step "
        "compiled (Engine compile_decode, as `nanoseek serve --no-native --compile`)",
    )
    args = parser.parse_args(argv)
    if args.native:
        os.environ.setdefault("NANOSEEK_REQUIRE_NATIVE", "1")  # time the native step or stop: never a silent fallback
    torch.set_num_threads(args.threads)
    path = args.model or in_fresh_thread(bench_checkpoint)
    engine = Engine.from_checkpoint(
        path,
        dtype=args.dtype,
        max_batch=64,
        kv_budget_tokens=64 * 1024,
        compile_decode=args.compile,
        native_decode=args.native,
    )
    if args.compile and engine.native is None:
        print(f"compiled the decode step in {engine.warm_up():.0f}s", flush=True)
    config = engine.model.config
    decode_path = "native C step" if engine.native else "compiled model" if args.compile else "eager model"
    print(
        f"model {path}: {config.num_parameters() / 1e6:.1f}M params, hidden {config.hidden_size}, "
        f"{config.num_hidden_layers} layers, vocab {config.vocab_size}, {args.dtype}; torch {torch.__version__}, "
        f"{args.threads} threads; nanoseek decodes with the {decode_path}"
    )
    engine.generate([Request(random_prompt(64, 99, engine.vocab_size), greedy(16))])  # warm-up
    rows = ["| measure | | | ratio | |", "|---|---|---|---|---|"]
    parts = {
        "batch1": lambda: part_batch1(engine, path, args.repeats, args.threads, args.dtype),
        "concurrency": lambda: part_concurrency(engine, args.repeats),
        "ttft": lambda: part_ttft(engine, args.repeats),
        "json": lambda: part_json(engine, args.repeats),
    }
    try:
        for name in args.parts:
            new_rows = parts[name]()
            for row in new_rows:
                print(row, flush=True)
            rows += new_rows
    finally:
        engine.shutdown()
    print("\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
