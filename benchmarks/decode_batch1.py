"""Batch-1 decode speed: nanoseek's model + SimpleKVCache vs transformers' `generate`, same weights, same run.

A random ~25M-parameter Llama (config.SHAPES["bench25m"], vocab 8192, tied embeddings) is saved once in HF
layout; both sides load that checkpoint in fp32, take the same random 64-token prompt and decode greedily.
Each timing covers prefill + all new tokens; runs rotate between the sides after a warm-up, and the median
of the repeats is reported. Both sides must produce the same tokens, or the numbers are not comparable.
A third column is an ablation: nanoseek with its weights in the usual row-major layout instead of the
column-major layout that `Transformer.use_column_major_weights` picks for decoding.

    python benchmarks/decode_batch1.py                       # 32 and 256 new tokens, 5 repeats
    python benchmarks/decode_batch1.py --new-tokens 32 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from nanoseek.model.cache import SimpleKVCache
from nanoseek.model.checkpoint import save_model
from nanoseek.model.config import ModelConfig
from nanoseek.model.loader import load_model
from nanoseek.model.transformer import Transformer

OUT_DIR = Path(__file__).resolve().parent.parent / "bench_out" / "decode_batch1"
VOCAB = 8192
PROMPT_TOKENS = 64


def make_checkpoint(path: Path) -> Path:
    # No EOS: both sides must run the full length without either one suppressing a token.
    config = ModelConfig.from_shape("bench25m", VOCAB, tie_word_embeddings=True)
    if (path / "model.safetensors").is_file() and load_model(path).config == config:
        return path
    torch.manual_seed(0)
    model = Transformer(config)
    model.init_weights(std=0.02)
    return save_model(model, path)


@torch.inference_mode()
def nanoseek_greedy(model: Transformer, prompt: torch.Tensor, new_tokens: int) -> list[int]:
    """Prefill, then one token per step through the cache: the loop a batch-1 engine step reduces to."""
    cache = SimpleKVCache(model.config, batch_size=1, capacity=prompt.shape[1] + new_tokens)
    logits = model(prompt, cache=cache, last_only=True)
    tokens: list[int] = []
    next_ids = logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(new_tokens):
        tokens.append(int(next_ids))
        if len(tokens) == new_tokens:
            break
        next_ids = model(next_ids, cache=cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
    return tokens


@torch.inference_mode()
def transformers_greedy(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int) -> list[int]:
    out = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens, do_sample=False, pad_token_id=0
    )
    return out[0, prompt.shape[1] :].tolist()


def timed(fn, *args) -> tuple[float, list[int]]:
    started = time.perf_counter()
    tokens = fn(*args)
    return time.perf_counter() - started, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    path = make_checkpoint(OUT_DIR)
    ours = load_model(path, dtype="float32")
    row_major = load_model(path, dtype="float32")
    with torch.no_grad():
        for parameter in row_major.parameters():
            parameter.data = parameter.data.contiguous()
    reference = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompt = torch.randint(2, VOCAB, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0))
    print(
        f"model: {ours.config.num_parameters() / 1e6:.1f}M params ({path}), prompt {PROMPT_TOKENS} tokens, "
        f"{args.threads} threads, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{platform.processor() or platform.machine()}"
    )
    rows = []
    for new_tokens in args.new_tokens:
        expected = transformers_greedy(reference, prompt, new_tokens)  # warm-up, and the tokens to match
        if nanoseek_greedy(ours, prompt, new_tokens) != expected:
            raise SystemExit(f"nanoseek and transformers disagree on the greedy tokens for {new_tokens} tokens")
        nanoseek_greedy(row_major, prompt, new_tokens)  # warm-up
        sides = [
            ("nanoseek", nanoseek_greedy, ours),
            ("transformers", transformers_greedy, reference),
            ("row-major", nanoseek_greedy, row_major),
        ]
        times: dict[str, list[float]] = {name: [] for name, _, _ in sides}
        for repeat in range(args.repeats):
            # Rotate who goes first so that drifting machine load hits every side alike.
            shift = repeat % len(sides)
            for name, fn, model in sides[shift:] + sides[:shift]:
                seconds, _ = timed(fn, model, prompt, new_tokens)
                times[name].append(seconds)
        rates = {name: new_tokens / statistics.median(values) for name, values in times.items()}
        rows.append((new_tokens, rates))
    print(
        "\n| new tokens | nanoseek model + SimpleKVCache | transformers generate | ratio | "
        "nanoseek, row-major weights (ablation) |"
    )
    print("|---|---|---|---|---|")
    for new_tokens, rates in rows:
        print(
            f"| {new_tokens} | {rates['nanoseek']:.1f} tok/s | {rates['transformers']:.1f} tok/s | "
            f"**{rates['nanoseek'] / rates['transformers']:.2f}x** | {rates['row-major']:.1f} tok/s |"
        )


if __name__ == "__main__":
    main()
