"""The evaluation suites: one module per suite, each with `generate(split, n, seed) -> list[Item]`.

from nanoseek.eval.tasks import SUITES, generate
items = generate("math", "train", n=100, seed=0)   # SFT data; "heldout" for evaluation
"""

from __future__ import annotations

from types import ModuleType

from nanoseek.eval.item import Item, RanOutOfItems
from nanoseek.eval.tasks import arena, coding, fim, instructions, json, math_problems, multiturn, safety, tools

SUITES: dict[str, ModuleType] = {
    "instructions": instructions,
    "code": coding,
    "fim": fim,
    "math": math_problems,
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
