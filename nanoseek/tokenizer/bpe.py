"""Byte-level BPE training for nanoseek, on top of the Hugging Face `tokenizers` library.

The tokenizer is GPT-2 style with DeepSeek's digit rule: numbers are first split into single digits (as the
DeepSeek LLM tokenizer does, so arithmetic works digit by digit instead of on memorised multi-digit tokens),
then the GPT-2 pre-tokenizer regex and byte-to-unicode mapping (ByteLevel) apply; no normalizer, no unknown
token (every byte is in the base alphabet). transformers loads it as a plain fast tokenizer; llama.cpp knows no
pre-tokenizer with exactly this digit rule, so benchmarks hand it token ids, never text. The DeepSeek special tokens
(special_tokens.py) take ids 0..18 and are registered as special added tokens, so their strings in text
encode to single ids and are never split or merged with neighbouring text.

    from nanoseek.tokenizer.bpe import train_bpe
    backend = train_bpe(["some text", Path("corpus_dir")], vocab_size=4096)   # str = text, Path = file/dir

The CLI wraps this: `nanoseek tokenizer train --corpus FILE_OR_DIR... --vocab-size N --out DIR`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from nanoseek.tokenizer.special_tokens import SPECIAL_TOKENS

BYTE_ALPHABET_SIZE = 256
MIN_VOCAB_SIZE = BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS)
# Files are fed to the trainer in pieces of about this many characters so a huge file never sits in memory
# twice and the trainer's parallel pre-tokenization gets many work items.
CHUNK_CHARS = 1 << 20


class CorpusError(ValueError):
    """A corpus path that does not exist, is empty, or holds no readable text."""


def iter_corpus_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Every regular file under the given files and directories, in a stable (sorted) order."""
    for path in paths:
        if not path.exists():
            raise CorpusError(f"corpus path does not exist: {path}")
        if path.is_dir():
            # Hidden directories (.git, __pycache__-like caches) hold no useful text.
            yield from sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            yield path


def read_text_file(path: Path) -> str | None:
    """The file's text, or None for binary files (NUL bytes or not UTF-8) that would only teach noise."""
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def iter_corpus_texts(texts_or_files: Iterable[str | Path]) -> Iterator[str]:
    """Yield training text: `str` items as they are, `Path` items as the text of every file under them."""
    for item in texts_or_files:
        if isinstance(item, str):
            yield item
            continue
        for file in iter_corpus_files([Path(item)]):
            text = read_text_file(file)
            if text is None:
                continue
            for start in range(0, len(text), CHUNK_CHARS):
                yield text[start : start + CHUNK_CHARS]


def new_byte_level_bpe() -> BackendTokenizer:
    """An empty GPT-2-style byte-level BPE tokenizer (ready for a BpeTrainer)."""
    backend = BackendTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    # trim_offsets=False keeps character offsets of tokens exact (the leading space stays in the token).
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return backend


def train_bpe(
    texts_or_files: Iterable[str | Path], vocab_size: int, *, min_frequency: int = 2, show_progress: bool = False
) -> BackendTokenizer:
    """Train a byte-level BPE tokenizer with the DeepSeek special tokens at ids 0..18.

    `texts_or_files`: `str` items are training text; `Path` items are files or directories (walked
    recursively, binary and non-UTF-8 files skipped). The result may be smaller than `vocab_size` when the
    corpus runs out of merges that occur at least `min_frequency` times.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 bytes + {len(SPECIAL_TOKENS)} "
            f"special tokens), got {vocab_size}"
        )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    backend = new_byte_level_bpe()
    seen_text = False

    def texts() -> Iterator[str]:
        nonlocal seen_text
        for text in iter_corpus_texts(texts_or_files):
            seen_text = seen_text or bool(text)
            yield text

    backend.train_from_iterator(texts(), trainer=trainer)
    if not seen_text:
        raise CorpusError("the corpus holds no text to train on (empty, or only binary files)")
    return backend
