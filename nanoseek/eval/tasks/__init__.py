"""The evaluation suites: one module per suite, each with `generate(split, n, seed) -> list[Item]`.

from nanoseek.eval.tasks import SUITES, generate
items = generate("math", "train", n=100, seed=0)   # SFT data; "heldout" for evaluation
"""

from __future__ import annotations

from types import ModuleType

from nanoseek.eval.item import Item
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


def generate(suite: str, split: str, n: int, seed: int) -> list[Item]:
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    return SUITES[suite].generate(split, n, seed)
