"""`Tokenizer`: a `tokenizers.Tokenizer` plus the facts from `tokenizer_config.json` (bos/eos/pad, chat template).

It loads nanoseek's own tokenizers and any Hugging Face `tokenizer.json` checkpoint (Llama, Qwen2, DeepSeek),
and saves in the layout `transformers.AutoTokenizer.from_pretrained(dir)` reads as a fast tokenizer with the
same ids: `tokenizer.json` + `tokenizer_config.json` (with `chat_template`).

    tok = Tokenizer.load("path/to/checkpoint")
    ids = tok.encode("<｜User｜>hi")            # special-token strings map to their ids; no BOS is added
    text = tok.decode(ids)                      # special tokens are kept unless skip_special_tokens=True
    prompt = tok.render_chat(messages, thinking=True)   # the checkpoint's own chat format, as a string
    ids = tok.encode_chat(messages)             # special-token strings typed into messages stay text
    tok.save("out_dir")
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as BackendTokenizer

from nanoseek.fileio import read_json_object, write_json_atomic, write_text_atomic
from nanoseek.tokenizer import special_tokens as st

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"  # where newer transformers versions save the template
DEFAULT_MODEL_MAX_LENGTH = 4096


def gpt2_unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-printable-character table, which byte-level BPE vocabularies are spelled in.
    (tokenizers applies the table internally but does not expose it.)"""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:
            table[chr(256 + shifted)] = byte
            shifted += 1
    return table


GPT2_UNICODE_TO_BYTE = gpt2_unicode_to_byte()


class TokenizerError(ValueError):
    """A tokenizer directory or file that cannot be loaded, or a token that the vocabulary lacks."""


def token_content(value: Any) -> str | None:
    """A special-token entry of tokenizer_config.json: a plain string or an AddedToken dict {"content": ...}."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise TokenizerError(f"cannot read special token entry {value!r} in {CONFIG_FILE}")


def template_from_config(config: dict[str, Any]) -> str | None:
    """The chat template of a tokenizer_config: a string, or the 'default' of a list of named templates."""
    template = config.get("chat_template")
    if template is None or isinstance(template, str):
        return template
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        if "default" in named:
            return named["default"]
        raise TokenizerError(f"{CONFIG_FILE} has named chat templates {sorted(named)} but no 'default'")
    raise TokenizerError(f"{CONFIG_FILE} chat_template must be a string or a list, got {type(template).__name__}")


def nanoseek_config() -> dict[str, Any]:
    """tokenizer_config.json for a nanoseek-trained tokenizer (DeepSeek special tokens, nanoseek chat format)."""
    from nanoseek.tokenizer.chat_format import CHAT_TEMPLATE  # chat_format imports nothing from here

    return {
        # transformers maps this name to its tokenizers-backed fast class, which reads tokenizer.json as is.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": st.BOS,
        "eos_token": st.EOS,
        "pad_token": st.PAD,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        # transformers would otherwise rewrite " ." to "." on decode and break id-for-text parity.
        "clean_up_tokenization_spaces": False,
        "model_max_length": DEFAULT_MODEL_MAX_LENGTH,
        "chat_template": CHAT_TEMPLATE,
    }


class Tokenizer:
    """Encode/decode text and render chats for one checkpoint. Thread-safe for encode/decode."""

    def __init__(self, backend: BackendTokenizer, config: dict[str, Any] | None = None):
        self.backend = backend
        self.config: dict[str, Any] = dict(config) if config is not None else nanoseek_config()
        self.bos_token = token_content(self.config.get("bos_token"))
        self.eos_token = token_content(self.config.get("eos_token"))
        self.pad_token = token_content(self.config.get("pad_token"))
        self.chat_template: str | None = template_from_config(self.config)
        self.bos_id = self._optional_id(self.bos_token)
        self.eos_id = self._optional_id(self.eos_token)
        self.pad_id = self._optional_id(self.pad_token)
        added_tokens = backend.get_added_tokens_decoder()
        self.added_ids: frozenset[int] = frozenset(added_tokens)
        self.special_ids: frozenset[int] = frozenset(i for i, added in added_tokens.items() if added.special)
        # Read from the decoder's own JSON state: serializing the whole tokenizer would cost ~1 s on 150k vocabs.
        decoder_state = backend.decoder.__getstate__().decode("utf-8") if backend.decoder is not None else ""
        self.is_byte_level = '"ByteLevel"' in decoder_state

    # ---- construction and persistence -------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Load from a checkpoint directory (tokenizer.json [+ tokenizer_config.json, chat_template.jinja])
        or from a tokenizer.json file (config taken from a tokenizer_config.json beside it, if any)."""
        path = Path(path)
        tokenizer_file = path if path.is_file() else path / TOKENIZER_FILE
        if not tokenizer_file.is_file():
            raise TokenizerError(
                f"no {TOKENIZER_FILE} at {path} (nanoseek reads Hugging Face fast tokenizers; "
                "sentencepiece-only checkpoints must be converted first)"
            )
        try:
            backend = BackendTokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # the Rust error says what is wrong inside the JSON
            raise TokenizerError(f"cannot read {tokenizer_file}: {exc}") from exc
        directory = tokenizer_file.parent
        config_file = directory / CONFIG_FILE
        if config_file.is_file():
            config = read_json_object(config_file, error=TokenizerError)
        elif st.BOS in backend.get_vocab():
            config = nanoseek_config()
        else:
            config = {}
        template_file = directory / TEMPLATE_FILE
        if template_file.is_file():
            config["chat_template"] = template_file.read_text(encoding="utf-8")
        return cls(backend, config)

    @classmethod
    def train(cls, texts_or_files: Iterable[str | Path], vocab_size: int, **kwargs: Any) -> Tokenizer:
        """Train a nanoseek byte-level BPE tokenizer (see bpe.train_bpe for the arguments)."""
        from nanoseek.tokenizer.bpe import train_bpe

        return cls(train_bpe(texts_or_files, vocab_size, **kwargs))

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write tokenizer.json and tokenizer_config.json (atomically, each file whole or not at all)."""
        directory = Path(directory)
        write_text_atomic(directory / TOKENIZER_FILE, self.backend.to_str(pretty=True))
        config = dict(self.config)
        config["chat_template"] = self.chat_template
        write_json_atomic(directory / CONFIG_FILE, config)
        # A stale chat_template.jinja would override the template just written on the next load.
        (directory / TEMPLATE_FILE).unlink(missing_ok=True)

    # ---- vocabulary -----------------------------------------------------------------------------------

    def _optional_id(self, token: str | None) -> int | None:
        if token is None:
            return None
        token_id = self.backend.token_to_id(token)
        if token_id is None:
            raise TokenizerError(f"{CONFIG_FILE} names special token {token!r}, which is not in the vocabulary")
        return token_id

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (the embedding table needs at least this many rows)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        token_id = self.backend.token_to_id(token)
        if token_id is None:
            raise TokenizerError(f"token {token!r} is not in the vocabulary")
        return token_id

    def id_to_token(self, token_id: int) -> str:
        token = self.backend.id_to_token(token_id)
        if token is None:
            raise TokenizerError(f"token id {token_id} is out of range (vocabulary size {self.vocab_size})")
        return token

    def has_token(self, token: str) -> bool:
        return self.backend.token_to_id(token) is not None

    # ---- text <-> ids ---------------------------------------------------------------------------------

    def encode(self, text: str, *, add_bos: bool = False, parse_special: bool = True) -> list[int]:
        """Token ids of `text`. Special-token strings inside it become their single ids, unless
        `parse_special=False` (then they are spelled as ordinary text). The checkpoint's own post-processor
        (e.g. Llama-3 adding BOS) is not applied: chat templates write BOS themselves."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        backend = self.backend if parse_special else self.literal_backend
        ids = backend.encode(text, add_special_tokens=False).ids
        if add_bos:
            if self.bos_id is None:
                raise TokenizerError("this tokenizer has no BOS token")
            ids.insert(0, self.bos_id)
        return ids

    @cached_property
    def literal_backend(self) -> BackendTokenizer:
        """A copy of the backend that does not recognise special-token strings (the flag is per instance,
        so flipping it on the shared backend would race with other threads)."""
        backend = BackendTokenizer.from_str(self.backend.to_str())
        backend.encode_special_tokens = True
        return backend

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """encode() for many texts at once (parallel in the Rust backend)."""
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes that `token_id` contributes to decoded text (the `bytes` field of logprobs).
        A byte-level token holding part of a multi-byte character gives just those raw bytes."""
        token = self.id_to_token(token_id)
        if token_id in self.added_ids:
            return token.encode("utf-8")
        if self.is_byte_level:
            return bytes(GPT2_UNICODE_TO_BYTE[char] for char in token)
        if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):  # SentencePiece byte fallback
            return bytes([int(token[3:5], 16)])
        return token.replace("\u2581", " ").encode("utf-8")  # SentencePiece word boundary marks a space

    @cached_property
    def longest_token_bytes(self) -> int:
        """The most bytes one token stands for: a text of N bytes has at least N / this many tokens."""
        return max(len(self.token_bytes(i)) for i in range(self.vocab_size) if self.backend.id_to_token(i) is not None)

    # ---- chat ------------------------------------------------------------------------------------------

    @property
    def uses_nanoseek_chat_format(self) -> bool:
        from nanoseek.tokenizer.chat_format import CHAT_TEMPLATE

        return self.chat_template == CHAT_TEMPLATE

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        thinking: bool = False,
        add_generation_prompt: bool = True,
    ) -> str:
        """The prompt string for `messages` in this checkpoint's chat format.

        nanoseek's own format goes through the Python renderer (clear errors, no Jinja); any other
        checkpoint's Jinja template is rendered the way transformers renders it, with `thinking` and
        `enable_thinking` both set so DeepSeek-V3.1- and Qwen3-style templates see the mode."""
        from nanoseek.tokenizer import chat_format

        if self.uses_nanoseek_chat_format:
            return chat_format.render_chat(
                messages, tools=tools, thinking=thinking, add_generation_prompt=add_generation_prompt
            )
        if not self.chat_template:
            raise TokenizerError("this checkpoint has no chat_template in its tokenizer_config.json")
        uses_tools = tools or any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)
        if uses_tools and not chat_format.template_renders_tools(self.chat_template):
            messages, tools = chat_format.hermes_tool_messages(messages, tools), None
        return chat_format.render_jinja(
            self.chat_template,
            messages,
            tools=tools,
            thinking=thinking,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
        )

    def encode_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        thinking: bool = False,
        add_generation_prompt: bool = True,
        *,
        literal_content: bool = True,
    ) -> list[int]:
        """Ids of the rendered chat, for nanoseek's format and any Jinja template alike. By default
        (`literal_content=True`, right for untrusted input: API requests, tool results, pasted documents)
        special-token strings inside messages and tools are encoded as plain text, so only the format itself
        places special tokens; the ids equal encode(render_chat(...)) whenever the input holds no such string.
        `literal_content=False` parses them (trusted text that spells special tokens on purpose).

        How: every special-token string in the input is swapped for a placeholder carrying a random per-call
        nonce (which the input cannot guess), the chat is rendered, the rendered text is split at the special
        tokens the template itself wrote, and the text between them is encoded with the placeholders turned
        back into their strings and special-token parsing off."""
        if not literal_content:
            return self.encode(
                self.render_chat(messages, tools=tools, thinking=thinking, add_generation_prompt=add_generation_prompt)
            )
        nonce = secrets.token_hex(8)
        placeholder = re.compile("\ue000" + nonce + "(\\d+)\ue001")
        specials = self.special_token_strings
        index_of = {token: i for i, token in enumerate(specials)}

        def escape(value: Any) -> Any:
            if isinstance(value, str):
                return self.special_token_pattern.sub(lambda m: f"\ue000{nonce}{index_of[m.group()]}\ue001", value)
            if isinstance(value, dict):
                return {escape(k): escape(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [escape(v) for v in value]
            return value

        rendered = self.render_chat(
            escape(messages),
            tools=escape(tools) if tools else None,
            thinking=thinking,
            add_generation_prompt=add_generation_prompt,
        )
        pieces = self.special_token_pattern.split(rendered)  # odd positions: the template's special tokens
        texts = [placeholder.sub(lambda m: specials[int(m.group(1))], p) for p in pieces[0::2]]
        encoded = self.literal_backend.encode_batch([t for t in texts if t], add_special_tokens=False)
        plain = iter(e.ids for e in encoded)
        ids: list[int] = []
        for index, piece in enumerate(pieces):
            if index % 2:
                ids.append(self.token_id(piece))
            elif texts[index // 2]:
                ids.extend(next(plain))
        return ids

    @cached_property
    def special_token_strings(self) -> list[str]:
        """The text of every special added token (longest first, so a regex prefers the longest match)."""
        added = self.backend.get_added_tokens_decoder()
        return sorted({added[i].content for i in self.special_ids}, key=len, reverse=True)

    @cached_property
    def special_token_pattern(self) -> re.Pattern[str]:
        """Matches any special-token string; split() with it keeps the tokens (a capturing group)."""
        if not self.special_token_strings:
            return re.compile("(?!)")  # matches nothing
        return re.compile("(" + "|".join(map(re.escape, self.special_token_strings)) + ")")

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, bos={self.bos_token!r}, eos={self.eos_token!r})"
