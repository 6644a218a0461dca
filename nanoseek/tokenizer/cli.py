"""`nanoseek tokenizer ...`: train a byte-level BPE tokenizer, or look at how one encodes text.

    nanoseek tokenizer train --corpus FILE_OR_DIR [FILE_OR_DIR ...] --vocab-size 8192 --out DIR
    nanoseek tokenizer encode --tokenizer DIR "some text <｜User｜>"
    nanoseek tokenizer decode --tokenizer DIR 0 3 1234

`train` writes tokenizer.json + tokenizer_config.json (DeepSeek special tokens, the nanoseek chat template)
to DIR, loadable by nanoseek and by transformers.AutoTokenizer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from nanoseek.tokenizer.bpe import CorpusError, iter_corpus_files
from nanoseek.tokenizer.tokenizer import Tokenizer, TokenizerError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nanoseek tokenizer", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a byte-level BPE tokenizer on text files")
    train.add_argument(
        "--corpus",
        nargs="+",
        required=True,
        type=Path,
        metavar="FILE_OR_DIR",
        help="text files or directories (walked recursively; binary files skipped)",
    )
    train.add_argument("--vocab-size", type=int, required=True, help="target vocabulary size, specials included")
    train.add_argument("--min-frequency", type=int, default=2, help="a merge must occur this often (default 2)")
    train.add_argument("--out", type=Path, required=True, help="directory to write the tokenizer to")
    encode = commands.add_parser("encode", help="print the ids and pieces of a text")
    encode.add_argument("--tokenizer", type=Path, required=True, help="tokenizer or checkpoint directory")
    encode.add_argument("text", help="the text to encode (special-token strings become their ids)")
    decode = commands.add_parser("decode", help="print the text of token ids")
    decode.add_argument("--tokenizer", type=Path, required=True, help="tokenizer or checkpoint directory")
    decode.add_argument("ids", nargs="+", type=int, help="token ids")
    return parser


def run_train(args: argparse.Namespace) -> int:
    files = list(iter_corpus_files(args.corpus))
    if not files:
        raise CorpusError(f"no files under {', '.join(map(str, args.corpus))}")
    started = time.perf_counter()
    # The bar advances as the trainer consumes files (it pre-tokenizes while reading); the merge phase
    # then shows the tokenizers library's own progress bar.
    progress = tqdm(files, desc="reading corpus", unit="file", file=sys.stderr)
    tokenizer = Tokenizer.train(progress, args.vocab_size, min_frequency=args.min_frequency, show_progress=True)
    tokenizer.save(args.out)
    elapsed = time.perf_counter() - started
    print(
        f"trained a {tokenizer.vocab_size}-token byte-level BPE on {len(files)} files in {elapsed:.1f}s -> {args.out}"
    )
    if tokenizer.vocab_size < args.vocab_size:
        print(
            f"note: the corpus only supports {tokenizer.vocab_size} tokens at --min-frequency "
            f"{args.min_frequency} (asked for {args.vocab_size})"
        )
    return 0


def run_encode(args: argparse.Namespace) -> int:
    tokenizer = Tokenizer.load(args.tokenizer)
    ids = tokenizer.encode(args.text)
    print(json.dumps(ids))
    for token_id in ids:
        print(f"{token_id:>8}  {tokenizer.decode([token_id])!r}")
    print(f"{len(ids)} tokens, {len(args.text)} characters")
    return 0


def run_decode(args: argparse.Namespace) -> int:
    tokenizer = Tokenizer.load(args.tokenizer)
    bad = [i for i in args.ids if not 0 <= i < tokenizer.vocab_size]
    if bad:
        raise TokenizerError(f"token ids out of range 0..{tokenizer.vocab_size - 1}: {bad}")
    print(tokenizer.decode(args.ids))
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"train": run_train, "encode": run_encode, "decode": run_decode}
    try:
        return handlers[args.command](args)
    except (CorpusError, TokenizerError, ValueError, OSError) as exc:
        print(f"nanoseek tokenizer {args.command}: error: {exc}", file=sys.stderr)
        return 1
