"""The task generators shared by training and evaluation: one module per suite, each with
`generate(split, n, seed) -> list[Item]`, and this registry, the one way in. A suite has one name, used by the
evaluator (`nanoseek eval --suites`), by recipes' mixtures and by the items themselves (`Item.suite`):

    from nanoseek.tasks import SUITES, generate
    items = generate("math", "train", n=100, seed=0)   # SFT data; "heldout" for evaluation
"""

from __future__ import annotations

from types import ModuleType

from nanoseek.tasks import arena, code, fim, instructions, json, math, multiturn, safety, tools
from nanoseek.tasks.item import Item, RanOutOfItems

SUITES: dict[str, ModuleType] = {
    "instructions": instructions,
    "code": code,
    "fim": fim,
    "math": math,
    "tools": tools,
    "json": json,
    "safety": safety,
    "arena": arena,
    "multiturn": multiturn,
}


def generate(suite: str, split: str, n: int, seed: int, at_most: bool = False) -> list[Item]:
    """`n` items of a suite's split; with `at_most`, as many as it holds when that is fewer than `n` (the
    evaluator's --n caps at a small suite's size instead of failing)."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    while True:
        try:
            return SUITES[suite].generate(split, n, seed)
        except RanOutOfItems as short:
            if not at_most or n <= 1:
                raise
            # Suites built from other suites' items (arena, multiturn) report the inner count: always shrink.
            n = max(1, min(short.found, n - 1))
