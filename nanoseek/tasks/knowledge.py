"""General knowledge: short factual questions ("What is the capital of Canada?"), right when the reply gives
an accepted answer (`nanoseek.eval.scorers.gives_answer`: named, and neither negated nor one of several
alternatives; before 2026-12-07 any mention counted). What a pretrained base knows and post-training
must not make it forget. Hand-written only (`nanoseek.tasks.handwritten`): nothing to generate, nothing to
train on (tests/train/test_train_data.py checks that the smol recipe's SFT data and self-distillation requests
hold none of the questions).

154 questions: geography, science, animals, the human body, books, art and music, history, units and numbers,
language and everyday facts, each answered by a name, word or number that fits in a sentence. The first 22 are
the set the runs before 2026-12-07 were measured on, kept unchanged and first so that `--n 22` still compares
with them; `--n 154` (or more) asks them all.

    from nanoseek.tasks import generate
    items = generate("knowledge", "handwritten", n=154, seed=0)
"""

from __future__ import annotations

from nanoseek.tasks.item import Item

SUITE = "knowledge"
SPLITS: tuple[str, ...] = ()  # generated splits: none


def generate(split: str, n: int, seed: int) -> list[Item]:
    raise ValueError(f"suite {SUITE!r} has hand-written items only: split 'handwritten', not {split!r}")
