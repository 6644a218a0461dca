"""The evaluation item and the splits that every task suite shares.

An `Item` is one prompt plus what a scorer checks (`answer`) plus what a perfect model would say (`ideal`,
the assistant turns that supervised fine-tuning learns from). Suites build items from canonical parameters
(e.g. `("reverse_word", "planet")`); the value split is a hash partition of those parameters, so a problem
lands in the same split whatever wording or seed produced it, and train and held-out can never share a problem:

    from nanoseek.tasks.item import split_of
    split_of("instructions", ("reverse_word", "planet"))   # -> "train" or "heldout", fixed forever

The wording is split too. Each kind of question has `Phrasings`: templates that training and the two value
splits use, and held-out templates that only the `phrasing` split uses. A model that learned its training
templates by heart scores on `heldout` (new values, known wording) but not on `phrasing` (new values, new
wording): the gap between the two is template recall, not skill.

    train      train values,    train templates       (SFT and RL draw only this)
    heldout    held-out values, train templates
    phrasing   held-out values, held-out templates

The train split is drawn evenly across a suite's kinds (`draw_balanced_items`): a draw of problems de-duplicated by
their values gave each kind a share of its value space, so a tool with eight tickers had 7 of 500 training items and
one with thousands of titles and dates 185.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Split = Literal["train", "heldout"]  # a value split
VALUE_SPLITS: tuple[str, ...] = ("train", "heldout")
SPLITS: tuple[str, ...] = (*VALUE_SPLITS, "phrasing")
HELDOUT_PERCENT = 25  # share of the parameter space reserved for evaluation


def value_split(split: str) -> Split:
    """The value split a split draws its parameters from: the phrasing split asks held-out problems."""
    return "heldout" if split == "phrasing" else split  # type: ignore[return-value]


@dataclass(frozen=True)
class Phrasings:
    """The wordings of one kind of question, as `str.format` templates: `train` ones, which training and the
    value splits use, and `heldout` ones, which only the phrasing split uses (genuinely other wordings, not a
    word swapped: they share no run of four words with the train ones, see tests)."""

    train: tuple[str, ...]
    heldout: tuple[str, ...]

    def pick(self, rng: random.Random, split: str) -> str:
        templates = self.heldout if split == "phrasing" else self.train
        # No draw when there is nothing to choose: a kind with one train wording draws as it always did.
        return templates[0] if len(templates) == 1 else rng.choice(templates)


@dataclass
class Item:
    id: str
    suite: str
    kind: str
    messages: list[dict[str, Any]]
    answer: Any
    ideal: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def prompt_text(self) -> str:
        """The text a model sees (for leakage checks): user turns, or prefix+suffix for FIM items."""
        if self.messages:
            return "\n".join(str(m.get("content", "")) for m in self.messages)
        return f"{self.meta.get('prefix', '')}<HOLE>{self.meta.get('suffix', '')}"


def canonical_key(suite: str, params: Any) -> str:
    return json.dumps([suite, params], sort_keys=True, ensure_ascii=False, default=str)


def key_hash(suite: str, params: Any) -> str:
    return hashlib.sha256(canonical_key(suite, params).encode()).hexdigest()


def split_of(suite: str, params: Any) -> Split:
    return "heldout" if int(key_hash(suite, params)[:8], 16) % 100 < HELDOUT_PERCENT else "train"


def check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")


def item_id(suite: str, kind: str, params: Any) -> str:
    return f"{suite}/{kind}/{key_hash(suite, params)[:12]}"


class RanOutOfItems(ValueError):
    """A suite holds fewer distinct items of a split than were asked for; `found` says how many it drew."""

    def __init__(self, suite: str, split: str, found: int, wanted: int) -> None:
        super().__init__(f"suite {suite!r} ran out of distinct {split} items after {found} of {wanted}")
        self.found = found


def draw_items(
    suite: str,
    split: str,
    n: int,
    seed: int,
    make: Callable[[random.Random], tuple[Any, Callable[[], Item]] | None],
    max_attempts_per_item: int = 400,
    split_fn: Callable[[Any], str] | None = None,
) -> list[Item]:
    """Draw `n` distinct items of `split` from a seeded generator.

    `make(rng)` samples canonical parameters and returns `(params, build)`, or None to skip; `build()` turns
    them into an Item. Only parameters that hash into `split` are built, so the split is structural.
    `split_fn(params)` replaces the hash partition where a suite splits otherwise (FIM splits by file). The
    phrasing split draws held-out parameters; its items' ids end in `/phrasing` (the same problem asked in
    other words is another item).
    """
    check_split(split)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"{suite}:{split}:{seed}")
    items: list[Item] = []
    seen: set[str] = set()
    attempts = 0
    while len(items) < n:
        attempts += 1
        if attempts > max_attempts_per_item * (n + 1):
            raise RanOutOfItems(suite, split, len(items), n)
        drawn = make(rng)
        if drawn is None:
            continue
        params, build = drawn
        key = canonical_key(suite, params)
        params_split = split_fn(params) if split_fn else split_of(suite, params)
        if key in seen or params_split != value_split(split):
            continue
        seen.add(key)
        item = build()
        if split == "phrasing":
            item.id += "/phrasing"
        items.append(item)
    return items


def draw_balanced_items(
    suite: str,
    n: int,
    seed: int,
    strata: Mapping[str, Callable[[random.Random], tuple[Any, Callable[[], Item]] | None]],
    shares: Mapping[str, float] | None = None,
    max_attempts_per_item: int = 400,
    split_fn: Callable[[Any], str] | None = None,
) -> list[Item]:
    """`draw_items` for the train split, in even shares of a suite's strata (its kinds, functions or templates).

    `strata[name](rng)` samples one stratum's parameters like `draw_items`'s `make`; each next item comes from the
    stratum furthest below its share (`shares`, relative weights; equal by default), so per-stratum counts end within
    one item of their shares. A stratum that can give nothing new in `max_attempts_per_item` tries is closed and the
    others fill its place. An item is new when its parameters or what the model is shown (prompt and offered tools)
    are: a stratum of few values goes further in its several wordings, so its item ids carry the wording's hash
    after the problem's. The parameters still hash into the train split, so no training item asks held-out values.
    The items come back shuffled, deterministically for the seed.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    shares = shares or dict.fromkeys(strata, 1.0)
    rng = random.Random(f"{suite}:train:{seed}")
    items: list[Item] = []
    counts = dict.fromkeys(strata, 0)
    open_strata = sorted(strata)
    seen: set[str] = set()

    def draw_new(stratum: str) -> Item | None:
        for _ in range(max_attempts_per_item):
            drawn = strata[stratum](rng)
            if drawn is None:
                continue
            params, build = drawn
            if (split_fn(params) if split_fn else split_of(suite, params)) != "train":
                continue
            item = build()
            shown = canonical_key(suite, [params, item.prompt_text(), item.tools])
            if shown not in seen:
                seen.add(shown)
                item.id += "/" + hashlib.sha256(shown.encode()).hexdigest()[:8]
                return item
        return None

    while len(items) < n:
        if not open_strata:
            raise RanOutOfItems(suite, "train", len(items), n)
        stratum = min(open_strata, key=lambda name: (counts[name] / shares[name], name))
        item = draw_new(stratum)
        if item is None:
            open_strata.remove(stratum)
            continue
        counts[stratum] += 1
        items.append(item)
    rng.shuffle(items)
    return items


def draw_one_question_items(
    suite: str,
    kinds: Mapping[str, Callable[[random.Random, str], tuple]],
    split: str,
    n: int,
    seed: int,
    item_fields: Callable[[Any, random.Random], dict[str, Any]],
) -> list[Item]:
    """`draw_items` (`draw_balanced_items` across kinds for train) for a suite of kinds that each ask one user
    question.

    A draw picks a kind; `kinds[kind](rng, split)` returns a case `(params, prompt, ...)`, keyed `[kind, params]`
    (the split says which of the kind's `Phrasings` to word the prompt with).
    A case of `split` becomes an Item whose answer, ideal turns and other fields are `item_fields(case, rng)`,
    called with the same rng and only for those cases, like a `build()` of `draw_items`.
    """

    def make(kind: str, rng: random.Random) -> tuple[Any, Callable[[], Item]]:
        case = kinds[kind](rng, split)
        params, prompt = case[0], case[1]
        key = [kind, params]

        def build() -> Item:
            return Item(
                id=item_id(suite, kind, key),
                suite=suite,
                kind=kind,
                messages=[{"role": "user", "content": prompt}],
                **item_fields(case, rng),
            )

        return key, build

    if split == "train":
        return draw_balanced_items(suite, n, seed, {kind: functools.partial(make, kind) for kind in kinds})
    return draw_items(suite, split, n, seed, lambda rng: make(rng.choice(sorted(kinds)), rng))
