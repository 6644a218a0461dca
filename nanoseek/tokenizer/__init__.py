"""nanoseek.tokenizer: byte-level BPE, the DeepSeek special tokens and chat format, streaming detokenization."""

from nanoseek.tokenizer.bpe import train_bpe
from nanoseek.tokenizer.chat_format import CHAT_TEMPLATE, ChatFormatError, render_chat, render_fim
from nanoseek.tokenizer.tokenizer import Tokenizer, TokenizerError

__all__ = ["CHAT_TEMPLATE", "ChatFormatError", "Tokenizer", "TokenizerError", "render_chat", "render_fim", "train_bpe"]
