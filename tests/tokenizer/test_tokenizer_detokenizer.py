"""IncrementalDetokenizer: property tests (hypothesis) that streamed text always equals the full decode and
never splits a character, on Chinese, emoji, code and special tokens, for byte-level and SentencePiece-style
(Llama, byte fallback) tokenizers; plus a check that the decode window stays small."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from nanoseek.tokenizer import special_tokens as st
from nanoseek.tokenizer.detokenizer import IncrementalDetokenizer
from nanoseek.tokenizer.tokenizer import Tokenizer

CHINESE = "深度求索人工智能模型你好世界代码思考推理数学问题答案"
EMOJI = "😀🚀🔥👍🏽🎉🤖🧠✨❤️👨‍👩‍👧"

CODE = "def f(x):\n\treturn x + 1  # ok\n{}[]()<>=!&|;:'\"`~^%$#@\\"
PIECES = hs.one_of(
    hs.text(alphabet=CHINESE + "，。", max_size=8),
    hs.text(alphabet=EMOJI + "\u200d\ufe0f", max_size=6),
    hs.text(alphabet=CODE, max_size=20),
    hs.text(max_size=6),  # anything, astral planes and control characters included
    hs.sampled_from(st.SPECIAL_TOKENS),
)
TEXTS = hs.lists(PIECES, max_size=12).map("".join)
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def stream(tokenizer: Tokenizer, ids: list[int], skip_special_tokens: bool = False) -> list[str]:
    detok = IncrementalDetokenizer(tokenizer, skip_special_tokens=skip_special_tokens)
    deltas = [detok.push(token_id) for token_id in ids]
    deltas.append(detok.flush())
    return deltas


@PROPERTY_SETTINGS
@given(text=TEXTS)
def test_streamed_text_equals_decode_and_never_splits_characters(bpe_tokenizer: Tokenizer, text: str):
    ids = bpe_tokenizer.encode(text)
    deltas = stream(bpe_tokenizer, ids)
    assert "".join(deltas) == bpe_tokenizer.decode(ids) == text
    if "\ufffd" not in text:
        # A delta holding half a character would show up as U+FFFD (or break the equality above).
        assert not any("\ufffd" in delta for delta in deltas)
    assert deltas[-1] == ""  # valid text completes with its last token: nothing left for flush


@PROPERTY_SETTINGS
@given(text=TEXTS)
def test_skipping_special_tokens_streams_the_same_as_decode(bpe_tokenizer: Tokenizer, text: str):
    ids = bpe_tokenizer.encode(text)
    assert "".join(stream(bpe_tokenizer, ids, True)) == bpe_tokenizer.decode(ids, skip_special_tokens=True)


@PROPERTY_SETTINGS
@given(data=hs.data())
def test_arbitrary_id_sequences_stream_to_decode(bpe_tokenizer: Tokenizer, data: hs.DataObject):
    # A model can emit any id order, including lone bytes of multi-byte characters: still equal to decode.
    ids = data.draw(hs.lists(hs.integers(0, bpe_tokenizer.vocab_size - 1), max_size=40))
    assert "".join(stream(bpe_tokenizer, ids)) == bpe_tokenizer.decode(ids)


@PROPERTY_SETTINGS
@given(data=hs.data())
def test_sentencepiece_style_tokenizer_streams_to_decode(llama_tokenizer: Tokenizer, data: hs.DataObject):
    tokenizer = llama_tokenizer
    text = data.draw(
        hs.lists(hs.sampled_from(["hello", " world", " ", "你", "好", "😀", "\n", "x", "é"]), max_size=15).map("".join)
    )
    ids = tokenizer.encode(text)
    deltas = stream(tokenizer, ids)
    assert "".join(deltas) == tokenizer.decode(ids)
    assert not any("\ufffd" in delta for delta in deltas)
    # Random ids without lone byte-fallback tokens (tokenizers' ByteFallback decoder turns a whole run of
    # byte tokens into U+FFFDs when a later byte makes it invalid: see the detokenizer docstring).
    byte_ids = {tokenizer.token_id(f"<0x{b:02X}>") for b in range(256)}
    random_ids = data.draw(
        hs.lists(hs.integers(0, tokenizer.vocab_size - 1).filter(lambda i: i not in byte_ids), max_size=30)
    )
    assert "".join(stream(tokenizer, random_ids)) == tokenizer.decode(random_ids)


def test_window_stays_small_on_long_streams(bpe_tokenizer: Tokenizer):
    text = "深度求索 nanoseek 😀 def f(x): return x\n" * 200
    ids = bpe_tokenizer.encode(text)
    detok = IncrementalDetokenizer(bpe_tokenizer)
    largest_window = 0
    pieces = []
    for token_id in ids:
        pieces.append(detok.push(token_id))
        largest_window = max(largest_window, len(detok.window))
    pieces.append(detok.flush())
    assert "".join(pieces) == text and len(ids) > 2000
    # Each push decodes only the ids since the last-but-one emission, never the whole sequence: an emoji
    # split over 4 byte tokens is the longest wait, so the window never exceeds a few ids.
    assert largest_window <= 8


def test_incomplete_character_at_the_end_is_flushed_as_decode_does(bpe_tokenizer: Tokenizer):
    ids = bpe_tokenizer.encode("a𝔘")  # U+1D518: 4 UTF-8 bytes that the test corpus never merges
    assert len(ids) == 5 and bpe_tokenizer.decode(ids[:1]) == "a"
    truncated = ids[:-1]
    detok = IncrementalDetokenizer(bpe_tokenizer)
    streamed = "".join(detok.push(i) for i in truncated)
    assert streamed == "a"  # the incomplete character is held back...
    assert streamed + detok.flush() == bpe_tokenizer.decode(truncated)  # ...and flushed as decode shows it
    assert detok.flush() == ""


@pytest.mark.parametrize("skip", [False, True])
def test_special_tokens_stream_as_whole_strings(bpe_tokenizer: Tokenizer, skip: bool):
    ids = bpe_tokenizer.encode(f"{st.THINK_BEGIN}思考{st.THINK_END}答案{st.EOS}")
    deltas = [d for d in stream(bpe_tokenizer, ids, skip) if d]
    if skip:
        assert "".join(deltas) == "思考答案"
    else:
        assert deltas[0] == st.THINK_BEGIN and st.THINK_END in deltas and deltas[-1] == st.EOS
