"""FIM (our DS-FIM-Eval): fill a masked single line, multi-line span or function body of real Python files.

Train items come from the stdlib's train files; held-out items from its held-out files and from installed
third-party packages never trained on (see `nanoseek.tasks.stdlib_split`). FIM items have no chat `messages`:
`meta["prefix"]` and `meta["suffix"]` surround the hole, `answer` is the masked text. Scored by exact match
and edit similarity.

    from nanoseek.tasks import generate
    items = generate("fim", "heldout", n=10, seed=0)
"""

from __future__ import annotations

import ast
import random
from functools import lru_cache
from pathlib import Path

from nanoseek.tasks.item import VALUE_SPLITS, Item, check_split, draw_items, item_id
from nanoseek.tasks.stdlib_split import source_name, split_of_source, stdlib_files, third_party_files

SUITE = "fim"
SPLITS = VALUE_SPLITS  # no phrasing split: a FIM prompt is code, with no wording to hold out
PREFIX_CHARS, SUFFIX_CHARS = 800, 300  # keeps prompts a few hundred tokens for a ~1-2k context model
MAX_NEW_TOKENS = {"single_line": 48, "multi_line": 128, "function_body": 192}


@lru_cache(maxsize=1024)  # every candidate file fits: draws revisit files often
def _lines(path: Path) -> tuple[str, ...]:
    try:
        return tuple(path.read_text(encoding="utf-8").splitlines(keepends=True))
    except (UnicodeDecodeError, OSError):
        return ()


@lru_cache(maxsize=1024)  # every candidate file fits: draws revisit files often
def _parsed(path: Path) -> tuple[tuple[tuple[int, int], ...], frozenset[int]]:
    """Short function bodies as (first, last) 0-based line ranges (docstrings left in the prefix), and the
    0-based lines inside multi-line strings (docstrings are prose: not the code a FIM hole should ask for)."""
    try:
        tree = ast.parse("".join(_lines(path)))
    except (SyntaxError, ValueError):
        return (), frozenset()
    spans, in_strings = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.end_lineno > node.lineno:
            in_strings.update(range(node.lineno - 1, node.end_lineno))
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
            body = body[1:]  # keep the docstring in the prefix: it says what the body must do
        if body and body[0].lineno > node.lineno and 2 <= body[-1].end_lineno - body[0].lineno + 1 <= 8:
            spans.append((body[0].lineno - 1, body[-1].end_lineno - 1))
    return tuple(spans), frozenset(in_strings)


def _is_code_line(line: str) -> bool:
    text = line.strip()
    return 8 <= len(text) <= 100 and not text.startswith("#")


def _pick_span(lines: tuple[str, ...], path: Path, kind: str, rng: random.Random) -> tuple[int, int] | None:
    bodies, in_strings = _parsed(path)
    if kind == "function_body":
        return rng.choice(bodies) if bodies else None
    size = 1 if kind == "single_line" else rng.randint(2, 4)
    for _ in range(20):
        first = rng.randrange(len(lines))
        span = range(first, first + size)
        if span[-1] < len(lines) and all(_is_code_line(lines[i]) and i not in in_strings for i in span):
            return first, first + size - 1
    return None


def _build(path: Path, kind: str, first: int, last: int) -> Item:
    lines = _lines(path)
    prefix = "".join(lines[:first])[-PREFIX_CHARS:]
    suffix = "".join(lines[last + 1 :])[:SUFFIX_CHARS]
    prefix = prefix[prefix.find("\n") + 1 :] if len(prefix) == PREFIX_CHARS else prefix  # start on a whole line
    middle = "".join(lines[first : last + 1])
    where = source_name(path)
    return Item(
        id=item_id(SUITE, kind, [where, kind, first, last]),
        suite=SUITE,
        kind=kind,
        messages=[],
        answer=middle,
        ideal=[{"role": "assistant", "content": middle}],
        meta={
            "prefix": prefix,
            "suffix": suffix,
            "path": where,
            "lines": [first + 1, last + 1],
            "max_tokens": MAX_NEW_TOKENS[kind],
        },
    )


def generate(split: str, n: int, seed: int) -> list[Item]:
    check_split(split, SPLITS)
    # Held-out draws half from the stdlib's held-out files and half from third-party packages.
    sources = [stdlib_files(split)] + ([third_party_files()] if split == "heldout" else [])

    def make(rng: random.Random):
        path = rng.choice(rng.choice(sources))
        lines = _lines(path)
        kind = rng.choice(sorted(MAX_NEW_TOKENS))
        span = _pick_span(lines, path, kind, rng) if lines else None
        if span is None:
            return None
        return [source_name(path), kind, *span], lambda: _build(path, kind, *span)

    return draw_items(SUITE, split, n, seed, make, split_fn=lambda params: split_of_source(params[0]))
