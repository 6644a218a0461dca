"""General knowledge: short factual questions ("What is the capital of Canada?"), right when the reply names
an accepted answer (`nanoseek.eval.scorers.mentions_answer`). What a pretrained base knows and post-training
must not make it forget. Hand-written only (`nanoseek.tasks.handwritten`): nothing to generate, nothing to
train on.

    from nanoseek.tasks import generate
    items = generate("knowledge", "handwritten", n=20, seed=0)
"""

from __future__ import annotations

from nanoseek.tasks.item import Item

SUITE = "knowledge"
SPLITS: tuple[str, ...] = ()  # generated splits: none


def generate(split: str, n: int, seed: int) -> list[Item]:
    raise ValueError(f"suite {SUITE!r} has hand-written items only: split 'handwritten', not {split!r}")
