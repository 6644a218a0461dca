"""Arena: open questions with verifiable reference answers, for pairwise win rates of model A over model B.

Each model answers the same items in its own run; `nanoseek.eval.arena_judge` then compares every pair of
models item by item under a judge, asking twice with the answers' positions swapped. Questions are drawn
from the instruction and math generators (same split keys, so arena held-out is held-out everywhere) and
reworded as plain chat requests; the reference answer lets a reference-based judge decide without a model.

    from nanoseek.tasks import generate
    items = generate("arena", "heldout", n=10, seed=0)
"""

from __future__ import annotations

import dataclasses

from nanoseek.tasks import instructions, math
from nanoseek.tasks.item import Item, item_id

SUITE = "arena"


def generate(split: str, n: int, seed: int) -> list[Item]:
    from_math = n // 3
    seed += 7919  # other problems than the instructions and math suites draw for the same seed
    sources = instructions.generate(split, n - from_math, seed) + math.generate(split, from_math, seed)
    items = []
    for source in sources:
        answer = source.ideal[-1]["content"]
        items.append(
            dataclasses.replace(
                source,
                id=item_id(SUITE, source.kind, source.id),
                suite=SUITE,
                answer=source.answer,
                ideal=[{"role": "assistant", "content": answer}],
                meta={"source_suite": source.suite, "case_sensitive": source.meta.get("case_sensitive", False)},
            )
        )
    return items
