"""A GGUF model (SmolLM2-135M-Instruct by default) through nanoseek in each weight format, side by side with
llama.cpp on the same file and with transformers, in one run; prints ratios against issue 19's goals.

    python benchmarks/gguf_models.py                                  # smollm2-135m-instruct, every format
    python benchmarks/gguf_models.py --model FILE.gguf --formats gguf q8_0 --repeats 3

Sides, each in a spawned process of its own (no two share an OpenMP pool; one side runs at a time, the order
alternating between repeats, medians reported):
* nanoseek, one process per weight format: `float32` and `bfloat16` (the file dequantized), `q8_0` (dequantized
  and quantized again at load), `gguf` (the file's own blocks kept: SmolLM2's Q4_1 layers and Q8_0 output head);
  asked for by name, `gguf-f16kv` (the file's own blocks over an fp16 KV cache, llama.cpp's cache type).
* llama.cpp (llama-cpp-python) on the same file with the same thread count.
* transformers on the same file (`gguf_file=`, dequantized to fp32), batch 1 only.

Measures:
* batch 1: a chat prompt (under 64 tokens) + 256 greedy tokens, tokens over wall time (as benchmarks/engine.py's batch1);
  where each side's greedy tokens part from transformers' is printed too.
* prefill: a fresh 512-token prompt to its first token (no prefix cache), prompt tokens/s.
* concurrency: aggregate decode tok/s of 16 concurrent requests against 1 (engine.py `concurrency_rates`).
* memory: the nanoseek process's resident set at the end, against the weights as loaded (parameters and
  quantized blocks) plus the KV cache allocated (16 slots x 1,024 positions); the process's resident set before
  the model was loaded (Python, torch) is printed beside it.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import (  # noqa: E402
    WorkerProcess,
    concurrency_rates,
    engine_options,
    gguf_model_arguments,
    greedy,
    parting_token,
    random_prompt,
)

MAX_BATCH, KV_TOKENS = 16, 1024
PROMPT, NEW_TOKENS, PREFILL = 64, 256, 512
CHAT_PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nExplain in a few paragraphs how a hash table works, and when you would use one instead "
    "of a sorted list.<|im_end|>\n<|im_start|>assistant\n"
)


def resident_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS"))


class NanoseekSide:
    """An Engine over the file in one weight format (`gguf`: the file's quantized blocks as they are)."""

    def __init__(self, path: str, weight_format: str, threads: int) -> None:
        from nanoseek.engine import Engine

        self.baseline = resident_bytes()
        self.engine = Engine.from_checkpoint(
            path, **engine_options(weight_format), max_batch=MAX_BATCH, kv_budget_tokens=KV_TOKENS
        )
        model = self.engine.model
        tensors = {t.data_ptr(): t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]}
        self.weight_bytes = sum(tensors.values())
        cache = self.engine.cache
        self.kv_bytes = sum(t.numel() * t.element_size() for t in [*cache.keys, *cache.values])
        self.kernel = self.engine.native.kernel if self.engine.native else "PyTorch"
        self.vocab = model.config.vocab_size
        self.engine.generate([self.request(random_prompt(PROMPT, 99, self.vocab), 16)])  # warm-up
        self.calls = 0

    def request(self, prompt: list[int], new_tokens: int):
        from nanoseek.engine import Request

        return Request(prompt, greedy(new_tokens))

    def batch1(self, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
        started = time.perf_counter()
        [done] = self.engine.generate([self.request(prompt, new_tokens)])
        return time.perf_counter() - started, done.token_ids

    def prefill(self, seed: int) -> float:
        started = time.perf_counter()
        self.engine.generate([self.request(random_prompt(PREFILL, seed, self.vocab), 1)])
        return time.perf_counter() - started

    def concurrency(self, repeats: int) -> dict[int, float]:
        return concurrency_rates(self.engine, repeats, (1, MAX_BATCH))[1]

    def memory(self) -> dict[str, int | str]:
        return {
            "rss": resident_bytes(),
            "baseline": self.baseline,
            "weights": self.weight_bytes,
            "kv": self.kv_bytes,
            "kernel": self.kernel,
        }


class LlamaCppSide:
    def __init__(self, path: str, threads: int) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(
            path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_batch=PREFILL, verbose=False
        )
        self.vocab = self.llm.n_vocab()

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=True, special=True)

    def batch1(self, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
        # generate(reset=True) still reuses a matching prompt prefix in llama-cpp-python 0.3.x: reset() first.
        self.llm.reset()
        started = time.perf_counter()
        tokens = []
        for token in self.llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            tokens.append(token)
            if len(tokens) == new_tokens:
                break
        return time.perf_counter() - started, tokens

    def prefill(self, seed: int) -> float:
        self.llm.reset()
        prompt = random_prompt(PREFILL, seed, self.vocab)
        started = time.perf_counter()
        self.llm.eval(prompt)  # computes the last position's logits: the first token is an argmax away
        return time.perf_counter() - started


class TransformersSide:
    def __init__(self, path: str, threads: int) -> None:
        import transformers

        file = Path(path)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            file.parent, gguf_file=file.name, dtype=torch.float32
        ).eval()

    def batch1(self, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
        import transformers

        ids = torch.tensor([prompt])
        # EOS chosen like any other token and not stopping, as nanoseek's ignore_eos (benchmarks/engine.py).
        config = transformers.GenerationConfig(
            max_new_tokens=new_tokens, do_sample=False, eos_token_id=[], pad_token_id=0
        )
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
        return time.perf_counter() - started, out[0, ids.shape[1] :].tolist()


SIDES = {"nanoseek": NanoseekSide, "llama.cpp": LlamaCppSide, "transformers": TransformersSide}


def side_worker(kind: str, args: tuple, threads: int, conn) -> None:
    try:
        torch.set_num_threads(threads)
        side = SIDES[kind](*args)
        conn.send("ready")
        while (message := conn.recv()) != "stop":
            method, method_args = message
            conn.send(getattr(side, method)(*method_args))
    except Exception as exc:  # the parent raises it with the side's name
        conn.send(exc)


class Side(WorkerProcess):
    """One side in a spawned process of its own; `call(method, *args)` runs one of its methods there."""

    def __init__(self, name: str, kind: str, args: tuple, threads: int) -> None:
        super().__init__(name, side_worker, (kind, args, threads))
        self.receive()  # loaded

    def call(self, method: str, *args):
        self.conn.send((method, args))
        return self.receive()


def alternating(sides: list[Side], repeats: int, method: str, arguments) -> dict[str, list]:
    """{side name: [result per repeat]} of `method(*arguments(repeat))`, the sides' order reversed every repeat."""
    results: dict[str, list] = {side.name: [] for side in sides}
    for repeat in range(repeats):
        for side in sides if repeat % 2 == 0 else sides[::-1]:
            results[side.name].append(side.call(method, *arguments(repeat)))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = gguf_model_arguments(__doc__.split("\n")[0], NEW_TOKENS, "batch-1 greedy tokens (a quick check: 8)")
    args = parser.parse_args(argv)
    os.environ.setdefault("NANOSEEK_REQUIRE_NATIVE", "1")  # time the native step, not a silent fallback
    from nanoseek.model.named import resolve_model

    path = str(resolve_model(args.model))
    print(f"{path}: torch {torch.__version__}, {args.threads} threads, formats {' '.join(args.formats)}", flush=True)
    sides: list[Side] = []
    try:
        for weight_format in args.formats:
            sides.append(
                Side(f"nanoseek {weight_format}", "nanoseek", (path, weight_format, args.threads), args.threads)
            )
        ours = list(sides)
        llama = Side("llama.cpp", "llama.cpp", (path, args.threads), args.threads)
        reference = Side("transformers", "transformers", (path, args.threads), args.threads)
        sides += [llama, reference]
        rows = ["| measure | nanoseek | llama.cpp / reference | ratio | goal |", "|---|---|---|---|---|"]

        # A chat prompt in the file's own template, the same ids on every side (llama.cpp's tokenizer); shorter
        # than a prefix-cache block (64 tokens), so nanoseek's prefix cache never serves it.
        prompt = llama.call("tokenize", CHAT_PROMPT)[: PROMPT - 1]
        runs = alternating(sides, args.repeats, "batch1", lambda repeat: (prompt, args.new_tokens))
        speed = {name: args.new_tokens / statistics.median(t for t, _ in results) for name, results in runs.items()}
        expected, theirs = runs["transformers"][0][1], runs["llama.cpp"][0][1]
        parted = {name: parting_token(results[0][1], expected) for name, results in runs.items()}
        like_llama = {name: parting_token(results[0][1], theirs) for name, results in runs.items()}
        print(f"{len(prompt)}-token prompt; batch-1 tok/s: {speed}", flush=True)
        print(f"greedy tokens equal to transformers' up to: {parted}; to llama.cpp's: {like_llama}", flush=True)
        for side in ours:
            ratio = speed[side.name] / speed["llama.cpp"]
            rows.append(
                f"| batch-1 decode, {len(prompt)} + {args.new_tokens} tokens (tok/s), {side.name} | {speed[side.name]:.0f} | "
                f"llama.cpp {speed['llama.cpp']:.0f}, transformers {speed['transformers']:.0f} | **{ratio:.2f}x** "
                f"llama.cpp, {speed[side.name] / speed['transformers']:.1f}x transformers | >= 2.0x llama.cpp: "
                f"{'met' if ratio >= 2 else 'missed'}; greedy tokens equal for {parted[side.name]} (transformers), "
                f"{like_llama[side.name]} (llama.cpp) |"
            )

        runs = alternating(ours + [llama], args.repeats, "prefill", lambda repeat: (10_000 + repeat,))  # fresh prompts
        prefill = {name: PREFILL / statistics.median(times) for name, times in runs.items()}
        print(f"prefill tok/s: {prefill}", flush=True)
        for side in ours:
            ratio = prefill[side.name] / prefill["llama.cpp"]
            rows.append(
                f"| prefill, {PREFILL}-token prompt (tok/s), {side.name} | {prefill[side.name]:.0f} | "
                f"llama.cpp {prefill['llama.cpp']:.0f} | **{ratio:.2f}x** | >= 1.0x: {'met' if ratio >= 1 else 'missed'} |"
            )

        for side in ours:
            rates = side.call("concurrency", args.repeats)
            ratio = rates[MAX_BATCH] / rates[1]
            rows.append(
                f"| aggregate decode tok/s, 1 / {MAX_BATCH} concurrent, {side.name} | {rates[1]:.0f} / "
                f"{rates[MAX_BATCH]:.0f} | | **{ratio:.1f}x** | >= 8x: {'met' if ratio >= 8 else 'missed'} |"
            )
            print(rows[-1], flush=True)

        for side in ours:
            memory = side.call("memory")
            budget = memory["weights"] + memory["kv"]
            ratio = memory["rss"] / budget
            rows.append(
                f"| resident memory, {side.name} ({memory['kernel']}) | {memory['rss'] / 2**20:.0f} MB "
                f"(before loading: {memory['baseline'] / 2**20:.0f} MB) | weights {memory['weights'] / 2**20:.0f} MB "
                f"+ KV {memory['kv'] / 2**20:.0f} MB | **{ratio:.2f}x** | <= 1.3x: {'met' if ratio <= 1.3 else 'missed'} |"
            )
            print(rows[-1], flush=True)
    finally:
        for side in sides:
            side.close()
    print("\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
