"""The safety suite's training-only wordings (`safety.STYLE_REWORDINGS`, one per style a user asks in), frames
(`safety.TRAIN_FRAMES`) and kinds (`safety.HARMFUL_TRAIN_ONLY`, `safety.BENIGN_TRAIN_ONLY`): they reach SFT's
data and DPO's pairs, harmful and harmless alike, and never the evaluator's: no held-out wording
(`heldout_wording_in`), no run of four words shared with a held-out template or a hand-written prompt, no
evaluated item.

nice -n 19 python3 -m pytest tests/train/test_safety_wordings.py -x -q
"""

from __future__ import annotations

import re

import pytest

from nanoseek.tasks import generate, handwritten, heldout_templates, heldout_wording_in, safety
from nanoseek.train import data, dpo

STYLES = ("polite", "terse", "role-play", "indirect", "question or order")


def runs_of_four(text: str) -> set[tuple[str, ...]]:
    """Four-word runs, a template's slot kept as the word "{x}" (as tests/eval/test_eval_tasks.py counts them)."""
    words = re.findall(r"[\w{}']+", text.lower())
    return {tuple(words[i : i + 4]) for i in range(len(words) - 3)}


def worded_with(text: str, template: str) -> bool:
    return re.search(re.escape(template).replace(re.escape("{x}"), ".+?"), text) is not None


def style_of(text: str, kind: str) -> str | None:
    return next((STYLES[i] for i, t in enumerate(safety.STYLE_REWORDINGS[kind]) if worded_with(text, t)), None)


def framed(text: str) -> bool:
    return any(all(piece in text for piece in frame.split("{request}") if piece) for frame in safety.TRAIN_FRAMES)


def test_every_evaluated_kind_has_one_wording_per_style_for_training_only():
    assert set(safety.STYLE_REWORDINGS) == set(safety.HARMFUL) | set(safety.BENIGN)
    for kind, wordings in safety.STYLE_REWORDINGS.items():
        assert len(wordings) == len(STYLES) and all(w.count("{x}") == 1 for w in wordings), kind
        assert set(wordings) <= set(safety.PHRASINGS[kind].train)
        assert not set(wordings) & set(safety.PHRASINGS[kind].heldout)
    assert all(frame.count("{request}") == 1 for frame in safety.TRAIN_FRAMES)


def test_no_training_wording_or_frame_shares_four_words_with_an_evaluated_prompt():
    """Against every held-out template of every suite and every hand-written prompt (not only safety's): a
    frame or style wording is generic English and could otherwise echo any evaluated question. Each frame is
    checked around each wording and ending too, for runs that cross from one to the other."""
    evaluated = set().union(*map(runs_of_four, [t for ts in heldout_templates().values() for t in ts]))
    evaluated |= set().union(*(runs_of_four(row["prompt"]) for row in handwritten.rows()))
    wordings = [w for ws in safety.STYLE_REWORDINGS.values() for w in ws]
    assert len(wordings) == 60
    wordings += [w for ws, _, _ in safety.HARMFUL_TRAIN_ONLY.values() for w in ws]
    for wording, _, _ in safety.BENIGN_TRAIN_ONLY.values():
        wordings += wording if isinstance(wording, tuple) else [wording]
    endings = sorted(set(safety.HARMFUL_ENDINGS + safety.BENIGN_ENDINGS))
    for frame in ("{request}", *safety.TRAIN_FRAMES):
        for wording in wordings:
            for ending in endings:
                text = frame.format(request=wording + ending)
                assert not runs_of_four(text) & evaluated, text
                assert heldout_wording_in(text) is None, text


@pytest.fixture(scope="module")
def train_items() -> list:
    return [item for seed in range(3) for item in generate("safety", "train", 300, seed)]


def test_train_items_use_the_new_wordings_and_frames_on_both_sides_and_evaluated_ones_never(train_items: list):
    for harmful in (True, False):
        side = [item for item in train_items if item.meta["harmful"] is harmful]
        texts = [(item.kind, item.messages[0]["content"]) for item in side if item.kind in safety.PHRASINGS]
        assert {style_of(text, kind) for kind, text in texts} >= set(STYLES), harmful
        assert 0.15 < sum(framed(item.messages[0]["content"]) for item in side) / len(side) < 0.45, harmful
    evaluated = [generate("safety", split, 84, 0, at_most=True) for split in ("heldout", "phrasing")]
    evaluated_texts = {item.messages[0]["content"] for items in evaluated for item in items}
    assert not evaluated_texts & {item.messages[0]["content"] for item in train_items}
    assert not any(
        framed(text) or any(style_of(text, kind) for kind in safety.STYLE_REWORDINGS) for text in evaluated_texts
    )
    assert not {item.id for items in evaluated for item in items} & {item.id for item in train_items}
    assert {item.kind for items in evaluated for item in items} <= set(safety.HARMFUL) | set(safety.BENIGN)
    trained_kinds = {item.kind for item in train_items}
    assert trained_kinds >= set(safety.HARMFUL_TRAIN_ONLY) | set(safety.BENIGN_TRAIN_ONLY)
    assert all(heldout_wording_in(item.messages[0]["content"]) is None for item in train_items)


# Words that came only in harmful training requests before run 9's data (0 harmless requests of 900 held "nobody",
# against 26 harmful), where run 8 refused harmless requests that held them (a show that "bombed" when "Nobody
# laughed"): harmless training requests hold them too (4 to 75 of these 900).
TRIGGER_WORDS = ("bomb", "nobody", "secretly", "trick", "neighbor", "teacher", "without them knowing")


def test_harmful_requests_words_come_in_harmless_ones_too(train_items: list):
    for word in TRIGGER_WORDS:
        sides = [
            sum(word in item.messages[0]["content"].lower() for item in train_items if item.meta["harmful"] is harmful)
            for harmful in (True, False)
        ]
        assert sides[0] and sides[1] >= 3, (word, sides)


def test_sft_data_asks_in_the_new_wordings():
    corpus = data.sft_corpus({"safety": 200}, seed=3)
    asked = [(c.source.split("/")[1], c.messages[0]["content"]) for c in corpus.conversations]
    styles = {style_of(text, kind) for kind, text in asked if kind in safety.STYLE_REWORDINGS}
    assert styles >= set(STYLES)
    assert any(framed(text) for _, text in asked)
    written = {row["prompt"] for row in handwritten.rows()}
    assert not written & {text for _, text in asked}


def test_dpo_pairs_are_balanced_and_asked_in_the_new_wordings():
    pairs = dpo.preference_pairs({"safety": 200}, seed=4)
    harmful = [p for p in pairs if p.source == "safety/harmful"]
    harmless = [p for p in pairs if p.source == "safety/harmless"]
    assert len(harmful) == len(harmless) == 100  # the suite's train split draws 40% harmful; the pairs do not
    for side in (harmful, harmless):
        texts = [(p.prompt[0]["content"]) for p in side]
        assert {style_of(t, kind) for t in texts for kind in safety.STYLE_REWORDINGS} >= set(STYLES)
        assert sum(map(framed, texts)) >= 15
    # Half the harmful pairs reject a whole compliant answer (it ends the turn), half an opener.
    whole = [p for p in harmful if not p.rejected_is_opener]
    assert 30 < len(whole) < 70 and {p.rejected["content"] for p in whole} <= set(dpo.COMPLIANT_ANSWERS.values())
    assert {p.rejected["content"] for p in whole} & {dpo.COMPLIANT_ANSWERS[kind] for kind in safety.HARMFUL_TRAIN_ONLY}
    assert set(dpo.COMPLIANT_ANSWERS) == set(safety.HARMFUL) | set(safety.HARMFUL_TRAIN_ONLY)
    # The one-sided keys tilt the balance on purpose.
    tilted = dpo.preference_pairs({"safety": 20, "safety_harmful": 10}, seed=4)
    assert [p.source for p in tilted].count("safety/harmful") == 20 and len(tilted) == 30
    assert dpo.safety_counts({"safety": 5, "safety_harmless": 2}) == (3, 4)
