"""Fixtures for the tokenizer tests: one small BPE trained per session on mixed text (English, Python,
Chinese, emoji), so merges cut through multi-byte characters the way real vocabularies do."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import transformers

from nanoseek.tokenizer.tokenizer import Tokenizer

CHINESE = "深度求索人工智能模型你好世界代码思考推理数学问题答案是什么为什么我们今天天气很好"
EMOJI = "😀🚀🔥👍🏽🎉🤖🧠✨❤️👨‍👩‍👧"


def mixed_corpus(seed: int = 0, lines: int = 400) -> list[str]:
    """Deterministic training text: Python from the stdlib plus generated Chinese and emoji sentences."""
    rng = random.Random(seed)
    stdlib = Path(json.__file__).parent
    texts = [p.read_text(encoding="utf-8") for p in sorted(stdlib.glob("*.py"))]
    for _ in range(lines):
        words = ["".join(rng.choices(CHINESE, k=rng.randint(1, 4))) for _ in range(rng.randint(3, 10))]
        texts.append("，".join(words) + "。" + "".join(rng.choices(EMOJI, k=rng.randint(0, 3))) + "\n")
        texts.append(f"The answer to question {rng.randint(0, 999)} is {rng.randint(0, 99999)}. 🙂\n")
    return texts


@pytest.fixture(scope="session")
def bpe_tokenizer() -> Tokenizer:
    return Tokenizer.train(mixed_corpus(), vocab_size=1024)


@pytest.fixture(scope="session")
def saved_tokenizer_dir(bpe_tokenizer: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("nanoseek_tokenizer")
    bpe_tokenizer.save(directory)
    return directory


@pytest.fixture(scope="session")
def hf_tokenizer(saved_tokenizer_dir: Path):
    return transformers.AutoTokenizer.from_pretrained(str(saved_tokenizer_dir))


@pytest.fixture(scope="session")
def small_corpus() -> list[str]:
    return mixed_corpus(lines=100)


@pytest.fixture(scope="session")
def llama_style_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama(-2) tokenizer as transformers builds it: Metaspace pre-tokenizer, BPE with byte fallback."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece in [
        "▁",
        "h",
        "e",
        "l",
        "o",
        "w",
        "r",
        "d",
        "▁h",
        "▁he",
        "ll",
        "▁hell",
        "▁hello",
        "▁w",
        "or",
        "▁wor",
        "ld",
        "▁world",
        "你",
    ]:
        vocab.setdefault(piece, len(vocab))
    merges = [
        ("▁", "h"),
        ("▁h", "e"),
        ("l", "l"),
        ("▁he", "ll"),
        ("▁hell", "o"),
        ("▁", "w"),
        ("o", "r"),
        ("▁w", "or"),
        ("l", "d"),
        ("▁wor", "ld"),
    ]
    directory = tmp_path_factory.mktemp("llama_style_tokenizer")
    transformers.LlamaTokenizer(vocab=vocab, merges=merges).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def llama_tokenizer(llama_style_dir: Path) -> Tokenizer:
    return Tokenizer.load(llama_style_dir)
