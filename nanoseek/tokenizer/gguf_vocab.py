"""The tokenizer of a GGUF file, built with `tokenizers`, and the GGUF metadata of a nanoseek `Tokenizer`.

GGUF keeps a byte-level BPE tokenizer as lists (`tokenizer.ggml.tokens`, `.merges`, `.token_type`) plus a
name for its pre-tokenizer (`tokenizer.ggml.pre`) that llama.cpp maps to a list of split regexes. Each name
nanoseek knows is spelled here as the `tokenizers` pre-tokenizer that splits text the same way (what the
model's own Hugging Face tokenizer.json holds); an unknown name is an error rather than a silently different
split. Control tokens become special added tokens, user-defined ones plain added tokens.

    tokenizer = tokenizer_from_gguf(gguf_file.metadata, where="model.gguf")
    metadata = gguf_tokenizer_metadata(tokenizer)        # the same keys, for writing a GGUF file
"""

from __future__ import annotations

import json
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as BackendTokenizer

from nanoseek.tokenizer.tokenizer import Tokenizer, TokenizerError

# llama.cpp's token types (llama_token_type / gguf.TokenType)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The split regexes of Llama 3 and Qwen2 as their tokenizer.json files spell them (llama.cpp spells the same
# splits with explicit case classes instead of (?i:...)).
LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def gpt2_split() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def regex_split(pattern: str) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


# tokenizer.ggml.pre -> (pre-tokenizer, NFC normalizer?, ignore_merges?). Several names for one split are
# the names llama.cpp's converter gives the models that use it.
PRE_TOKENIZERS: dict[str, tuple[Any, bool, bool]] = {
    "gpt2": (gpt2_split, False, False),
    "gpt-2": (gpt2_split, False, False),
    "smollm": (
        lambda: pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), gpt2_split()]),
        False,
        False,
    ),
    "llama-bpe": (lambda: regex_split(LLAMA3_SPLIT), False, True),
    "qwen2": (lambda: regex_split(QWEN2_SPLIT), True, False),
}
# What gguf_tokenizer_metadata writes for a tokenizer.json split of each kind (first name of each kind above).
CANONICAL_PRE = ("gpt2", "smollm", "llama-bpe", "qwen2")


def build_backend(pre: str, vocab: dict[str, int], merges: list[tuple[str, str]]) -> BackendTokenizer:
    make_pre, nfc, ignore_merges = PRE_TOKENIZERS[pre]
    backend = BackendTokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    backend.pre_tokenizer = make_pre()
    if nfc:
        backend.normalizer = normalizers.NFC()
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return backend


def tokenizer_from_gguf(metadata: dict[str, Any], where: str = "GGUF file") -> Tokenizer:
    """A Tokenizer from a GGUF file's `tokenizer.*` metadata (TokenizerError naming what is unsupported)."""
    kind = metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise TokenizerError(
            f"{where}: tokenizer.ggml.model is {kind!r}; nanoseek reads byte-level BPE ('gpt2') tokenizers only"
        )
    pre = metadata.get("tokenizer.ggml.pre", "gpt2")
    if pre not in PRE_TOKENIZERS:
        raise TokenizerError(
            f"{where}: pre-tokenizer {pre!r} (tokenizer.ggml.pre) is not one nanoseek knows; "
            f"known: {', '.join(PRE_TOKENIZERS)}"
        )
    tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
    types: list[int] = list(metadata.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens))
    vocab: dict[str, int] = {}
    for token_id, token in enumerate(tokens):
        vocab.setdefault(token, token_id)
    merges = [tuple(merge.split(" ", 1)) for merge in metadata.get("tokenizer.ggml.merges", [])]
    backend = build_backend(pre, vocab, merges)
    backend.add_tokens(
        [
            AddedToken(token, special=kind == CONTROL, normalized=False)
            for token, kind in zip(tokens, types)
            if kind in (CONTROL, USER_DEFINED)
        ]
    )

    def token_at(key: str) -> str | None:
        token_id = metadata.get(f"tokenizer.ggml.{key}")
        if token_id is None:
            return None
        if not 0 <= token_id < len(tokens):
            raise TokenizerError(f"{where}: tokenizer.ggml.{key} = {token_id} is outside the vocabulary")
        return tokens[token_id]

    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token_at("bos_token_id"),
        "eos_token": token_at("eos_token_id"),
        "pad_token": token_at("padding_token_id"),
        "unk_token": token_at("unknown_token_id"),
        "add_bos_token": bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "chat_template": metadata.get("tokenizer.chat_template"),
    }
    return Tokenizer(backend, config)


def pre_tokenizer_name(tokenizer: Tokenizer) -> str:
    """The tokenizer.ggml.pre name whose split equals this tokenizer's (TokenizerError when none does)."""
    state = json.loads(tokenizer.backend.to_str())
    have = (state.get("pre_tokenizer"), (state.get("normalizer") or {}).get("type"))
    for name in CANONICAL_PRE:
        reference = json.loads(build_backend(name, {}, []).to_str())
        if (reference["pre_tokenizer"], (reference.get("normalizer") or {}).get("type")) == _comparable(have):
            return name
    raise TokenizerError(
        f"this tokenizer's pre-tokenizer {json.dumps(have[0])} matches none that GGUF names "
        f"({', '.join(CANONICAL_PRE)}), so llama.cpp would split text differently"
    )


def _comparable(have: tuple[Any, Any]) -> tuple[Any, Any]:
    """ByteLevel's trim_offsets only affects offsets, never ids; compare with the value build_backend writes."""
    pre, normalizer = have

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: clean(v) for k, v in node.items()}
            if node.get("type") == "ByteLevel":
                node["trim_offsets"] = True
            return node
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    return clean(pre), normalizer


def gguf_tokenizer_metadata(tokenizer: Tokenizer) -> dict[str, Any]:
    """The `tokenizer.*` metadata that describes `tokenizer` (byte-level BPE only)."""
    state = json.loads(tokenizer.backend.to_str())
    model = state["model"]
    if model.get("type") != "BPE" or not tokenizer.is_byte_level:
        raise TokenizerError("only byte-level BPE tokenizers can be written to GGUF")
    size = tokenizer.vocab_size
    tokens = [tokenizer.backend.id_to_token(i) for i in range(size)]
    if any(token is None for token in tokens):
        raise TokenizerError("the vocabulary has gaps in its ids, which GGUF cannot express")
    added = tokenizer.backend.get_added_tokens_decoder()
    types = [(CONTROL if added[i].special else USER_DEFINED) if i in added else NORMAL for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    metadata: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre_tokenizer_name(tokenizer),
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.add_bos_token": bool(tokenizer.config.get("add_bos_token", False)),
        "tokenizer.ggml.add_eos_token": bool(tokenizer.config.get("add_eos_token", False)),
    }
    for key, token_id in (
        ("bos_token_id", tokenizer.bos_id),
        ("eos_token_id", tokenizer.eos_id),
        ("padding_token_id", tokenizer.pad_id),
    ):
        if token_id is not None:
            metadata[f"tokenizer.ggml.{key}"] = token_id
    if tokenizer.chat_template:
        metadata["tokenizer.chat_template"] = tokenizer.chat_template
    return metadata
