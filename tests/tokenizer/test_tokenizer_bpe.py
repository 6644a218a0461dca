"""BPE training and the `nanoseek tokenizer` CLI, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nanoseek.tokenizer.bpe import MIN_VOCAB_SIZE, CorpusError, train_bpe
from nanoseek.tokenizer.tokenizer import Tokenizer, TokenizerError

SAMPLES = [
    "def add(a, b):\n    return a + b  # sum\n",
    "深度求索 你好，世界！",
    "emoji 😀🚀 and ZWJ 👨‍👩‍👧 and skin tone 👍🏽",
    "\t tabs\r\nand   spaces\x00nul \u200b zero-width",
    "",
]


def test_trained_tokenizer_is_byte_level_with_single_digits(bpe_tokenizer: Tokenizer):
    spec = json.loads(bpe_tokenizer.backend.to_str())
    assert spec["model"]["type"] == "BPE"
    digits, byte_level = spec["pre_tokenizer"]["pretokenizers"]
    assert digits == {"type": "Digits", "individual_digits": True}
    assert byte_level == {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    # Every digit of a number is its own token, however often the number occurs in the corpus.
    assert [bpe_tokenizer.decode([i]) for i in bpe_tokenizer.encode("x = 2024")][-4:] == ["2", "0", "2", "4"]
    assert spec["decoder"]["type"] == "ByteLevel"
    assert spec["normalizer"] is None
    assert bpe_tokenizer.vocab_size == 1024
    assert bpe_tokenizer.is_byte_level


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_is_lossless(bpe_tokenizer: Tokenizer, text: str):
    ids = bpe_tokenizer.encode(text)
    assert bpe_tokenizer.decode(ids) == text
    assert b"".join(bpe_tokenizer.token_bytes(i) for i in ids) == text.encode("utf-8")


def test_training_learns_merges_from_the_corpus(bpe_tokenizer: Tokenizer):
    # "return" appears all over the stdlib json package: it must be far shorter than its 6 bytes.
    assert len(bpe_tokenizer.encode(" return")) <= 2
    assert len(bpe_tokenizer.encode("def __init__(self")) < len("def __init__(self") / 2


def test_encode_batch_and_bos(bpe_tokenizer: Tokenizer):
    assert bpe_tokenizer.encode_batch(SAMPLES) == [bpe_tokenizer.encode(t) for t in SAMPLES]
    assert bpe_tokenizer.encode("hi", add_bos=True) == [bpe_tokenizer.bos_id, *bpe_tokenizer.encode("hi")]


def test_bad_training_input_is_named():
    with pytest.raises(ValueError, match="vocab_size must be at least 275"):
        train_bpe(["text"], vocab_size=100)
    assert MIN_VOCAB_SIZE == 275
    with pytest.raises(CorpusError, match="does not exist"):
        train_bpe([Path("/no/such/corpus")], vocab_size=300)
    with pytest.raises(CorpusError, match="no text"):
        train_bpe([], vocab_size=300)


def test_directory_corpus_skips_binary_and_hidden_files(tmp_path: Path):
    (tmp_path / "a.txt").write_text("zebra zebra zebra zebra " * 50, encoding="utf-8")
    (tmp_path / "blob.bin").write_bytes(b"\x00\xff" * 1000)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x").write_text("quokka " * 500, encoding="utf-8")
    tokenizer = Tokenizer(train_bpe([tmp_path], vocab_size=400))
    assert len(tokenizer.encode(" zebra")) == 1
    assert len(tokenizer.encode(" quokka")) > 1


def test_unknown_token_and_id_errors(bpe_tokenizer: Tokenizer):
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        bpe_tokenizer.token_id("<｜no▁such｜>")
    with pytest.raises(TokenizerError, match="out of range"):
        bpe_tokenizer.id_to_token(10**6)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nanoseek.cli", "tokenizer", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_train_encode_decode(tmp_path: Path, small_corpus: list[str]):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for index, text in enumerate(small_corpus):
        (corpus / f"part{index % 7}.txt").open("a", encoding="utf-8").write(text)
    out = tmp_path / "tok"
    trained = run_cli("train", "--corpus", str(corpus), "--vocab-size", "600", "--out", str(out))
    assert trained.returncode == 0, trained.stderr
    assert "trained a 600-token byte-level BPE on 7 files" in trained.stdout
    assert "reading corpus" in trained.stderr  # the progress display
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()

    encoded = run_cli("encode", "--tokenizer", str(out), "你好<｜User｜>")
    assert encoded.returncode == 0, encoded.stderr
    ids = json.loads(encoded.stdout.splitlines()[0])
    assert ids == Tokenizer.load(out).encode("你好<｜User｜>") and ids[-1] == 3
    decoded = run_cli("decode", "--tokenizer", str(out), *map(str, ids))
    assert decoded.stdout == "你好<｜User｜>\n"


def test_cli_errors_name_the_problem(tmp_path: Path):
    missing = run_cli("train", "--corpus", str(tmp_path / "nope"), "--vocab-size", "600", "--out", str(tmp_path))
    assert missing.returncode == 1 and "corpus path does not exist" in missing.stderr
    no_tokenizer = run_cli("encode", "--tokenizer", str(tmp_path), "x")
    assert no_tokenizer.returncode == 1 and "no tokenizer.json" in no_tokenizer.stderr


def test_training_is_deterministic(small_corpus: list[str]):
    # Checkpoints built from the same arguments must be byte-identical (random_init promises it).
    first, second = (train_bpe(small_corpus, vocab_size=700).to_str() for _ in range(2))
    assert first == second
