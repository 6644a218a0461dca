"""DeepSeek-V2.5/V3/R1/V3.1 special tokens, spelled exactly as in DeepSeek's public tokenizer_config.json.

The bars are FULLWIDTH VERTICAL LINE (U+FF5C, `｜`) and the word separators are LOWER ONE EIGHTH BLOCK
(U+2581, `▁`), not ASCII `|` and `_`: a look-alike spelling would tokenize as ordinary text. `<think>` and
`</think>` are plain ASCII, as in DeepSeek-R1 and V3.1.

nanoseek's own tokenizers put these tokens first, at ids 0..len(SPECIAL_TOKENS)-1, in this order, so that
BOS=0, EOS=1 and PAD=2 as in DeepSeek-V3.

    python -m nanoseek.tokenizer.special_tokens     # print the table with code points
"""

from __future__ import annotations

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
# DeepSeek-Coder / V2.5 fill-in-the-middle: BEGIN prefix HOLE suffix END, then the model writes the middle.
FIM_BEGIN = "<｜fim▁begin｜>"
FIM_HOLE = "<｜fim▁hole｜>"
FIM_END = "<｜fim▁end｜>"
TOOL_CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
TOOL_CALLS_END = "<｜tool▁calls▁end｜>"
TOOL_CALL_BEGIN = "<｜tool▁call▁begin｜>"
TOOL_CALL_END = "<｜tool▁call▁end｜>"
TOOL_SEP = "<｜tool▁sep｜>"
TOOL_OUTPUTS_BEGIN = "<｜tool▁outputs▁begin｜>"
TOOL_OUTPUTS_END = "<｜tool▁outputs▁end｜>"
TOOL_OUTPUT_BEGIN = "<｜tool▁output▁begin｜>"
TOOL_OUTPUT_END = "<｜tool▁output▁end｜>"
THINK_BEGIN = "<think>"
THINK_END = "</think>"

SPECIAL_TOKENS: tuple[str, ...] = (
    BOS,
    EOS,
    PAD,
    USER,
    ASSISTANT,
    FIM_BEGIN,
    FIM_HOLE,
    FIM_END,
    TOOL_CALLS_BEGIN,
    TOOL_CALLS_END,
    TOOL_CALL_BEGIN,
    TOOL_CALL_END,
    TOOL_SEP,
    TOOL_OUTPUTS_BEGIN,
    TOOL_OUTPUTS_END,
    TOOL_OUTPUT_BEGIN,
    TOOL_OUTPUT_END,
    THINK_BEGIN,
    THINK_END,
)


if __name__ == "__main__":
    for token_id, token in enumerate(SPECIAL_TOKENS):
        print(f"{token_id:3d}  {token:<28} {' '.join(f'U+{ord(c):04X}' for c in token if ord(c) > 127)}")
