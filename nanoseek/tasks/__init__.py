"""The task generators shared by training and evaluation: one module per suite, each with
`generate(split, n, seed) -> list[Item]`, and this registry, the one way in. A suite has one name, used by the
evaluator (`nanoseek eval --suites`), by recipes' mixtures and by the items themselves (`Item.suite`):

    from nanoseek.tasks import SUITES, generate
    items = generate("math", "train", n=100, seed=0)   # SFT data; "heldout" and "phrasing" for evaluation

The splits (`nanoseek.tasks.item`): `train`, `heldout` (held-out values) and `phrasing` (held-out values asked
in held-out wordings), plus `handwritten` (`nanoseek.tasks.handwritten`, items stored as data); `splits(suite)`
says which a suite has. Training must never see a held-out wording: `heldout_wording_in(text)` finds one.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache
from types import ModuleType

from nanoseek.tasks import arena, code, fim, handwritten, instructions, json, knowledge, math, multiturn, safety, tools
from nanoseek.tasks.item import SPLITS as ALL_GENERATED
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
    "knowledge": knowledge,
}


def generate(suite: str, split: str, n: int, seed: int, at_most: bool = False) -> list[Item]:
    """`n` items of a suite's split; with `at_most`, as many as it holds when that is fewer than `n` (the
    evaluator's --n caps at a small suite's size instead of failing)."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    if split == handwritten.SPLIT:
        written = handwritten.items(suite)
        if n > len(written) and not at_most:
            raise RanOutOfItems(suite, split, len(written), n)
        return written[:n]
    while True:
        try:
            return SUITES[suite].generate(split, n, seed)
        except RanOutOfItems as short:
            if not at_most or n <= 1:
                raise
            # Suites built from other suites' items (arena, multiturn) report the inner count: always shrink.
            n = max(1, min(short.found, n - 1))


def splits(suite: str) -> tuple[str, ...]:
    """The splits a suite can draw: its generated ones (`SPLITS` of its module, if it has fewer: FIM prompts are
    code, with no wording to hold out), then `handwritten` if it has hand-written items."""
    generated = getattr(SUITES[suite], "SPLITS", ALL_GENERATED)
    return generated + ((handwritten.SPLIT,) if suite in handwritten.suites() else ())


def heldout_templates() -> dict[str, list[str]]:
    """Every held-out wording of every suite that words its own prompts (arena and multiturn reuse these)."""
    return {
        suite: [template for phrasings in module.PHRASINGS.values() for template in phrasings.heldout]
        for suite, module in SUITES.items()
        if hasattr(module, "PHRASINGS")
    }


@lru_cache(maxsize=1)
def _heldout_patterns() -> list[tuple[str, list[str], re.Pattern]]:
    """(template, its literal pieces, a regex matching any text worded with it) per held-out template."""
    patterns = []
    for templates in heldout_templates().values():
        for template in templates:
            regex, literals, literal = "", [], ""
            for text, field, _spec, _conversion in string.Formatter().parse(template):  # "{{" comes back as "{"
                regex += re.escape(text)
                literal += text
                if field is not None:
                    regex += ".+?"
                    literals.append(literal)
                    literal = ""
            literals.append(literal)
            patterns.append((template, [piece for piece in literals if piece.strip()], re.compile(regex, re.DOTALL)))
    return patterns


def heldout_wording_in(text: str) -> str | None:
    """The held-out template that `text` is worded with, or None. Training data must give None everywhere."""
    for template, literals, pattern in _heldout_patterns():
        # The literal pieces first: a cheap filter before the regex, whose wildcards backtrack on long texts.
        if all(piece in text for piece in literals) and pattern.search(text):
            return template
    return None
