"""Streaming detokenization speed: nanoseek's IncrementalDetokenizer vs transformers' TextIteratorStreamer
and vs naive re-decoding of the whole sequence per token, on the same tokenizer and ids, in one run.

A byte-level BPE (vocab 8192) is trained on the standard library's `json`, `email` and `asyncio` sources;
the stream is Python code mixed with Chinese and emoji. Each side is fed the ids one at a time and its
output is checked against `decode(all ids)` (TextIteratorStreamer may only differ by holding text until a
word ends, so its concatenation is checked too). Reported: microseconds per token (median of repeats) and
the ratio to nanoseek, for several stream lengths, which shows the O(n) per-token cost of re-decoding.

    python benchmarks/detokenize_stream.py                   # lengths 1000, 4000, 16000; 3 repeats
    python benchmarks/detokenize_stream.py --lengths 2000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from nanoseek.tokenizer.detokenizer import IncrementalDetokenizer
from nanoseek.tokenizer.tokenizer import Tokenizer

STDLIB = Path(json.__file__).parent.parent
MIXED = "\n# 深度求索：流式解码测试 😀🚀 —— 你好，世界！\n"


def stream_ids(tokenizer: Tokenizer, length: int) -> list[int]:
    sources = [p.read_text(encoding="utf-8") for p in sorted((STDLIB / "asyncio").glob("*.py"))]
    text = "".join(source + MIXED for source in sources)
    ids = tokenizer.encode(text)
    while len(ids) < length:
        ids += ids
    return ids[:length]


def run_nanoseek(tokenizer: Tokenizer, ids: list[int]) -> str:
    detok = IncrementalDetokenizer(tokenizer)
    return "".join(detok.push(token_id) for token_id in ids) + detok.flush()


def run_naive(tokenizer: Tokenizer, ids: list[int]) -> str:
    pieces, emitted = [], ""
    for end in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:end])
        if not text.endswith("\ufffd"):
            pieces.append(text[len(emitted) :])
            emitted = text
    pieces.append(tokenizer.decode(ids)[len(emitted) :])
    return "".join(pieces)


def run_transformers(hf_tokenizer, ids: list[int]) -> str:
    streamer = transformers.TextIteratorStreamer(hf_tokenizer, timeout=None)
    for token_id in ids:
        streamer.put(torch.tensor([token_id]))
    streamer.end()
    return "".join(streamer)


def median_us_per_token(fn, ids: list[int], repeats: int) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(ids)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / len(ids) * 1e6, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    tokenizer = Tokenizer.train([STDLIB / "json", STDLIB / "email", STDLIB / "asyncio", MIXED * 50], 8192)
    with tempfile.TemporaryDirectory() as directory:
        tokenizer.save(directory)
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(directory)

    print(
        f"tokenizer: byte-level BPE, {tokenizer.vocab_size} tokens; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, python {sys.version.split()[0]}"
    )
    print(
        "| tokens | nanoseek µs/token | transformers TextIteratorStreamer µs/token | ratio | "
        "naive re-decode µs/token | ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for length in args.lengths:
        ids = stream_ids(tokenizer, length)
        reference = tokenizer.decode(ids)
        ours, ours_text = median_us_per_token(lambda x: run_nanoseek(tokenizer, x), ids, args.repeats)
        hf, hf_text = median_us_per_token(lambda x: run_transformers(hf_tokenizer, x), ids, args.repeats)
        naive, naive_text = median_us_per_token(lambda x: run_naive(tokenizer, x), ids, args.repeats)
        if ours_text != reference or naive_text != reference or hf_text != reference:
            raise SystemExit(f"streamed text differs from decode at length {length}: results not comparable")
        print(f"| {length} | {ours:.1f} | {hf:.1f} | {hf / ours:.2f}x | {naive:.1f} | {naive / ours:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
