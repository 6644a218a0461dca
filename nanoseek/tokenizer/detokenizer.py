"""Streaming detokenization: turn generated token ids into text deltas as they arrive.

    detok = IncrementalDetokenizer(tokenizer)
    for token_id in generated:
        send(detok.push(token_id))      # "" while a UTF-8 character is still incomplete
    send(detok.flush())                 # whatever was held back at the end

Guarantees: the concatenation of everything returned equals `tokenizer.decode(all ids)`, and a delta
never ends in the middle of a character (a byte-level token can carry half of a Chinese character or emoji;
its text is held until the character completes).

How: it decodes a short window of recent ids instead of the whole sequence (so a token costs O(window),
not O(n)), the same two-offset scheme vLLM and TGI use. `read` ids have been emitted; the window starts at
the previous emission boundary so decoders that look at neighbours (SentencePiece's leading-space rule)
see context. A window whose text ends in U+FFFD is waiting for the rest of a character. The decoding itself
is the tokenizer's (tokenizers' Rust decoders), so every tokenizer family is handled the same way.

One known gap, for SentencePiece byte-fallback vocabularies (Llama-2 style) only: tokenizers' ByteFallback
decoder turns a whole run of `<0xNN>` tokens into one U+FFFD per token when the run is not valid UTF-8, so
a stray byte arriving after an already-emitted valid character rewrites text that was sent. Holding every
byte run until a non-byte token arrives would fix that garbage case but stall streaming of all text
spelled in byte tokens, so valid output streams promptly and exactly, and only invalid byte runs can differ.
Byte-level vocabularies (nanoseek's, GPT-2, Llama-3, Qwen2, DeepSeek) have no such gap.
"""

from __future__ import annotations

from nanoseek.tokenizer.tokenizer import Tokenizer

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Per-request, per-sample state; not thread-safe (one stream pushes into it)."""

    def __init__(self, tokenizer: Tokenizer, *, skip_special_tokens: bool = False):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.window: list[int] = []  # ids from the previous emission boundary on
        self.read = 0  # how many ids of the window have been emitted already
        self.read_text = ""  # decode(window[:read]), kept so each push decodes only once
        self.token_count = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        """Add one generated id; return the newly completed text ("" when nothing completed yet)."""
        self.window.append(token_id)
        self.token_count += 1
        text = self._decode(self.window)
        if text.endswith(REPLACEMENT_CHAR) or len(text) <= len(self.read_text):
            return ""
        delta = text[len(self.read_text) :]
        # The next window starts at the old read boundary: it ends on a complete character.
        self.window = self.window[self.read :]
        self.read = len(self.window)
        self.read_text = self._decode(self.window)
        return delta

    def push_many(self, token_ids: list[int]) -> str:
        return "".join(self.push(token_id) for token_id in token_ids)

    def flush(self) -> str:
        """Return whatever is still held back (an incomplete character decodes as U+FFFD, as in decode)."""
        text = self._decode(self.window)
        delta = text[len(self.read_text) :]
        self.window, self.read, self.read_text = [], 0, ""
        return delta
