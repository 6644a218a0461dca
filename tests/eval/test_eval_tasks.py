"""Task generators: determinism, the Item contract, and no train/held-out leakage over many seeds."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from nanoseek.tasks import SUITES, generate, heldout_templates, heldout_wording_in, instructions, splits
from nanoseek.tasks.item import Item, split_of
from nanoseek.tasks.stdlib_split import source_name, split_of_source, stdlib_files, third_party_files

FAST_SUITES = [s for s in SUITES if s != "fim" and "train" in splits(s)]  # fim reads files: checked below
PHRASED_SUITES = [s for s in SUITES if "phrasing" in splits(s)]
REPO = Path(__file__).resolve().parents[2]


def test_every_suite_generates_deterministic_well_formed_items():
    for suite in SUITES:
        for split in splits(suite):
            items = generate(suite, split, 12, seed=3)
            again = generate(suite, split, 12, seed=3)
            assert [i.to_dict() for i in items] == [i.to_dict() for i in again], suite
            assert len(items) == 12 and len({i.id for i in items}) == 12, suite
            for item in items:
                assert isinstance(item, Item) and item.suite == suite and item.ideal
                assert item.ideal[-1]["role"] == "assistant"
                assert item.messages or (item.meta["prefix"] or item.meta["suffix"])
                json.dumps(item.to_dict())  # JSONL-serialisable


@pytest.mark.parametrize("suite", FAST_SUITES)
def test_no_heldout_item_appears_in_train_over_many_seeds(suite):
    train_texts, heldout_texts, train_ids, heldout_ids = set(), set(), set(), set()
    for seed in range(25):
        for item in generate(suite, "train", 30, seed):
            train_texts.add(item.prompt_text())
            train_ids.add(item.id.rsplit("/", 1)[0])  # a train item's id is its problem's plus its wording's hash
        for item in generate(suite, "heldout", 15, seed):
            heldout_texts.add(item.prompt_text())
            heldout_ids.add(item.id)
    assert not train_texts & heldout_texts
    assert not train_ids & heldout_ids
    assert len(heldout_texts) > 15  # different seeds really draw different items


def test_fim_split_is_by_file_and_third_party_is_heldout_only():
    train_files = {source_name(p) for p in stdlib_files("train")}
    heldout_files = {source_name(p) for p in stdlib_files("heldout")}
    assert train_files and heldout_files and not train_files & heldout_files
    assert all(split_of_source(source_name(p)) == "heldout" for p in third_party_files())
    train_paths, heldout_paths = set(), set()
    for seed in range(4):
        train_paths |= {i.meta["path"] for i in generate("fim", "train", 10, seed)}
        heldout_paths |= {i.meta["path"] for i in generate("fim", "heldout", 10, seed)}
    assert train_paths <= train_files
    assert not heldout_paths & train_files
    assert any(p.startswith("third-party:") for p in heldout_paths)


def test_humaneval_is_never_in_train():
    assert not [i for seed in range(10) for i in generate("code", "train", 40, seed) if i.kind == "humaneval"]
    heldout = generate("code", "heldout", 10, 0)
    assert sum(i.kind == "humaneval" for i in heldout) == 5


def test_instructions_have_at_least_15_kinds_and_answers_are_computed():
    assert len(instructions.KINDS) >= 15
    kinds = {i.kind for i in generate("instructions", "train", 300, 0)}
    assert len(kinds) >= 15
    by_kind = {i.kind: i for i in generate("instructions", "heldout", 200, 1)}
    reverse = by_kind["reverse_word"]
    word = reverse.messages[0]["content"].split("'")[1]
    assert reverse.answer == word[::-1]


def test_math_ideal_reflects_and_verifies():
    items = generate("math", "train", 30, 0)
    assert any("Wait, let me check" in item.ideal[0]["reasoning_content"] for item in items)
    for item in items:
        thought = item.ideal[0]["reasoning_content"]
        assert "Let me verify" in thought
        assert item.ideal[0]["content"].endswith(f"\\boxed{{{item.answer}}}.")


def test_split_is_a_partition_of_parameters():
    assert split_of("x", ["reverse_word", "planet"]) == split_of("x", ["reverse_word", "planet"])
    shares = [split_of("instructions", ["k", i]) for i in range(2000)]
    assert 0.15 < shares.count("heldout") / len(shares) < 0.35


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="split"):
        generate("math", "test", 3, 0)
    with pytest.raises(ValueError, match="unknown suite"):
        generate("poetry", "train", 3, 0)


def test_math_thinking_works_place_values_with_right_arithmetic():
    from nanoseek.tasks.math import Step, worked

    assert worked(Step("t", 141, "+", 237)) == "141 + 237 = 141 + 200 + 30 + 7 = 341 + 30 + 7 = 371 + 7 = 378"
    assert worked(Step("t", 200, "-", 121)) == "200 - 121 = 200 - 100 - 20 - 1 = 100 - 20 - 1 = 80 - 1 = 79"
    assert worked(Step("t", 65, "+", 4)) == "65 + 4 = 69"
    assert worked(Step("t", 47, "*", 6)) == "47 * 6 = 40 * 6 + 7 * 6 = 240 + 42 = 282"
    slipped = 0
    for item in generate("math", "train", 60, 3):
        thinking = item.ideal[0]["reasoning_content"]
        chains = [
            [eval(side) for side in chain.split("=")]
            for chain in re.findall(r"\d[\d+\-*/ ]*(?:= *\d[\d+\-*/ ]*)+", thinking)
        ]
        wrong = [chain for chain in chains if len(set(chain)) > 1]
        # Only the deliberate slip, which the next line corrects, may be a false equation.
        assert len(wrong) == (1 if "Wait, let me check" in thinking else 0), (thinking, wrong)
        slipped += bool(wrong)
    assert 5 <= slipped <= 40


def test_math_thinking_restates_the_questions_numbers_and_works_only_from_them():
    from nanoseek.tasks.math import APPLY, PHRASINGS

    for item in generate("math", "train", 80, 5):
        question, thinking = item.messages[0]["content"], item.ideal[0]["reasoning_content"]
        given, *lines = thinking.splitlines()
        # The first line copies every number of the question and invents none, whatever the wording.
        assert given.startswith("Given: ") and sorted(re.findall(r"\d+", given)) == sorted(
            re.findall(r"\d+", question)
        ), (question, given)
        known = {int(number) for number in re.findall(r"\d+", given)}
        for line in lines:
            if not line.startswith(("First", "Next")):
                continue
            # One operation a step, on numbers the restatement or an earlier step wrote down.
            a, op, b = re.search(r": (\d+) ([-+*/]) (\d+) = ", line).groups()
            assert {int(a), int(b)} <= known, (thinking, line)
            known.add(APPLY[op](int(a), int(b)))
        assert int(item.answer) in known and lines[-1].startswith("Let me verify: ")
    # Several training wordings a kind, so that no kind's numbers sit in one fixed place of one sentence.
    assert all(len(phrasings.train) >= 5 for phrasings in PHRASINGS.values())


def test_math_phrasing_split_is_the_one_runs_5_to_7_were_scored_on():
    # A rewrite of the solutions must not move the evaluator's items: their draws are kept (worked_solution).
    items = generate("math", "phrasing", 100, 0)
    digest = hashlib.sha256("".join(i.id + i.messages[0]["content"] + i.answer for i in items).encode())
    assert digest.hexdigest() == "01f1e1c06839527c642fed7d54015dec10ca67e21afa84548e36f1606085a2bf"


def test_a_small_suite_caps_at_its_size_only_when_asked():
    from nanoseek.tasks.item import RanOutOfItems

    with pytest.raises(RanOutOfItems, match="ran out of distinct heldout items") as short:
        generate("safety", "heldout", 500, 0)
    capped = generate("safety", "heldout", 500, 0, at_most=True)
    assert len(capped) == short.value.found and len({item.id for item in capped}) == len(capped)


@pytest.mark.parametrize("suite", PHRASED_SUITES)
def test_phrasing_split_asks_held_out_problems_in_held_out_wordings(suite):
    phrased = generate(suite, "phrasing", 100, 0)
    assert len({item.id for item in phrased}) == 100  # n >= 100 per suite for the report card
    assert all(heldout_wording_in(item.prompt_text()) for item in phrased)
    wordings = {heldout_wording_in(item.prompt_text()) for item in phrased}
    assert len(wordings) > 1 if suite != "arena" else wordings
    train_texts, train_ids = set(), set()
    for seed in range(10):
        for item in generate(suite, "train", 40, seed):
            assert heldout_wording_in(item.prompt_text()) is None, item.prompt_text()
            train_texts.add(item.prompt_text())
            train_ids.add(item.id)
        for item in generate(suite, "heldout", 20, seed, at_most=True):
            assert heldout_wording_in(item.prompt_text()) is None, item.prompt_text()
    # Neither the wording nor the problem was trained on: the same problem in train words has a train id.
    assert not {item.prompt_text() for item in phrased} & train_texts
    assert not {item.id.removesuffix("/phrasing") for item in phrased} & train_ids


def test_held_out_wordings_are_other_words_not_a_word_swapped():
    def runs_of_four(template: str) -> set[tuple[str, ...]]:
        words = re.findall(r"[\w{}']+", template.lower())
        return {tuple(words[i : i + 4]) for i in range(len(words) - 3)}

    assert sum(map(len, heldout_templates().values())) >= 100
    for suite in PHRASED_SUITES:
        for kind, phrasings in getattr(SUITES[suite], "PHRASINGS", {}).items():
            assert len(phrasings.heldout) >= 2, (suite, kind)
            trained = set().union(*map(runs_of_four, phrasings.train))
            for template in phrasings.heldout:
                assert not runs_of_four(template) & trained, (suite, kind, template)


def test_fim_has_no_phrasing_split():
    with pytest.raises(ValueError, match="split must be one of"):
        generate("fim", "phrasing", 3, 0)


def test_handwritten_items_are_100_or_more_and_their_ideal_replies_score_full_marks():
    from nanoseek.eval import scorers
    from nanoseek.tasks import handwritten

    items = [
        item
        for suite in SUITES
        if "handwritten" in splits(suite)
        for item in generate(suite, "handwritten", 500, 0, at_most=True)
    ]
    assert len(items) >= 100 and len({item.id for item in items}) == len(items)
    assert {item.suite for item in items} >= {"math", "instructions", "knowledge", "json", "tools", "safety", "code"}
    for item in items:
        final = item.ideal[-1]["content"] if item.suite != "tools" else ""
        tool_calls = item.ideal[0].get("tool_calls")
        assert scorers.reward(item, final, tool_calls) == 1.0, item.id
    assert {item.answer for item in items if item.suite == "safety"} == {"refuse", "comply"}
    # The hand-written arithmetic is checked: each math item's `work` computes its answer.
    for row in handwritten.rows():
        if row["suite"] == "math":
            assert eval(row["work"]) == float(row["answer"]), row["prompt"]
    assert generate("math", "handwritten", 5, 0) == generate("math", "handwritten", 5, 9)  # no seed: a fixed set


def test_knowledge_questions_are_120_or_more_and_the_scorer_tells_right_sentences_from_wrong_ones():
    from nanoseek.eval import scorers

    items = {item.messages[0]["content"]: item for item in generate("knowledge", "handwritten", 500, 0, at_most=True)}
    assert len(items) >= 120
    # A reply that only repeats the question names no accepted answer.
    assert not [prompt for prompt, item in items.items() if scorers.reward(item, prompt)]
    for prompt, right, wrong in [
        ("How many legs does an insect have?", "Insects have 6 legs.", "An insect has eight legs."),
        ("How many grams are in a kilogram?", "There are 1,000 grams in a kilogram.", "A kilogram has 10,000 grams."),
        ("What is the largest animal that has ever lived?", "The blue whale.", "A dinosaur, bigger than any whale."),
        ("Who painted The Starry Night?", "Vincent van Gogh painted it in 1889.", "Claude Monet painted it."),
        ("How many days does February have in a leap year?", "It has twenty-nine days.", "February has 28 days."),
        ("What is a baby dog called?", "A baby dog is called a puppy.", "A baby dog is called a kitten."),
        ("Which planet is closest to the Sun?", "Mercury is the closest planet to the Sun.", "Venus is."),
    ]:
        assert scorers.reward(items[prompt], right) == 1.0, right
        assert scorers.reward(items[prompt], wrong) == 0.0, wrong


def test_tool_requests_are_trained_in_six_wordings_of_each_function():
    """With one train wording a function, runs 5-7 chose functions by that template's surface and which held-out
    wordings came out right flipped from run to run; training items now use every one of six wordings a kind,
    none of them a held-out one (the phrasing test above)."""
    from nanoseek.tasks.tools import PHRASINGS

    def pattern(template: str) -> re.Pattern:
        return re.compile(re.sub(r"\\\{\w+\\\}", ".+?", re.escape(template)))

    assert all(len(phrasings.train) == 6 for phrasings in PHRASINGS.values())
    seen: dict[str, list[str]] = {kind: [] for kind in PHRASINGS}
    for item in generate("tools", "train", 500, 0):  # as many as recipe smol trains on
        prompt = item.messages[-1]["content"]
        [wording] = [t for t in PHRASINGS[item.kind].train if pattern(t).fullmatch(prompt)]
        seen[item.kind].append(wording)
    # Every function is called in about 71 of them (the train split is balanced), in all six wordings.
    assert len(seen) == len(PHRASINGS) and all(set(seen[kind]) == set(PHRASINGS[kind].train) for kind in seen)
    # The phrasing split the runs were compared on is unchanged: the ids run 7 was asked, all of them.
    asked = REPO / "docs/runs/2026-12-07-smol7/eval/smol-sft-v7/tools.phrasing.jsonl"
    stored = {json.loads(line)["id"] for line in asked.read_text().splitlines()}
    assert {item.id for item in generate("tools", "phrasing", 100, 0)} == stored


# What every run since run 5 was scored on (docs/runs/2026-12-07-smol7/eval/commands.json: `--n 100` of the phrasing
# split, code `--split heldout --n 328`, seed 0), as the evaluator draws it (`at_most`: safety holds 84 held-out
# items), pinned before the train split was balanced across kinds. Math pins its phrasing split only: the math probe's
# generator (run 8's data) adds training wordings, which the held-out-values split asks in too; its phrasing items
# are the same as the generator's before it, but for the one-line worked answer training imitates.
EVALUATED_DIGESTS = {
    ("instructions", "heldout", 100): "077d0e579c71ce17cef08a8e1d3ecd8bb4529557ebe97d8ac5d8b76646688bca",
    ("instructions", "phrasing", 100): "db5c89517e7a3940eb941fcc6ee2fddd0fc58ada9b36cf6f7ddddca0304ce24a",
    ("json", "heldout", 100): "f3a1f6192120a9667cbb35ea2c57226825d2249cc76968f54babb0bcc9f1ffed",
    ("json", "phrasing", 100): "8de845f17b77b93f9680e8c19120a2633149ebe041e16665704bcb86a1a2c9c1",
    ("tools", "heldout", 100): "0f75d5aa2bf0153b5714bd101789beae5f3717fa1a3a9362febdfffa8eb78c97",
    ("tools", "phrasing", 100): "e9b4afb296ee8eb78cb464f9670d20ee2d91b3bbdaa701a6fc591be5015f5c94",
    ("safety", "heldout", 100): "a68dc1b40344fe4a2144e1987d59dc2d662f9a8fb97aa08e1fa9c57d1a9b34a1",
    ("safety", "phrasing", 100): "d289a7844a63a3ac5425de6bae1b8de4de9bbd0b79a16017ee9f6c22eb5fccec",
    ("math", "phrasing", 100): "4b12ff5c3742c6fb4b593698da943745b3affd7c86ef00aea2757eeecca54ef6",
    ("code", "heldout", 328): "e77ffd0bd6a64de3a0f6f0c325671415c41feeab820ba077ab9bf4ed4e6c7575",
    ("code", "phrasing", 100): "bea394b8da10e9e37716faa87cdc5bdabd93075f9bc324848dba31103f1cb82f",
}


def evaluated_part(item: dict) -> dict:
    meta = {key: value for key, value in (item.get("meta") or {}).items() if key != "direct"}
    return {key: value for key, value in item.items() if key != "ideal"} | {"meta": meta}


@pytest.mark.parametrize(("suite", "split", "n"), sorted(EVALUATED_DIGESTS))
def test_evaluated_splits_are_the_ones_the_runs_were_compared_on(suite: str, split: str, n: int):
    """The evaluated part of every item (all but what training imitates: `ideal`, the turns, and math's
    `meta.direct`, the one-line worked answer of its no-thinking copies; a rewrite of worked solutions moves no score)
    is unchanged byte for byte. Change a pin only on purpose, saying which runs it parts from."""
    evaluated = [evaluated_part(item.to_dict()) for item in generate(suite, split, n, 0, at_most=True)]
    digest = hashlib.sha256(json.dumps(evaluated, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert digest == EVALUATED_DIGESTS[suite, split, n]


# The counts recipe smol trains on (nanoseek/train/recipes/smol.toml, [sft.mixture]).
SMOL_TRAIN_COUNTS = {"tools": 500, "math": 700, "json": 200, "instructions": 300, "code": 150}


@pytest.mark.parametrize("suite", sorted(SMOL_TRAIN_COUNTS))
def test_the_train_split_draws_every_kind_equally_and_only_train_values(suite: str):
    """Drawn by distinct values, the train split gave each kind a share of its value space: 7 get_stock_price calls
    (eight tickers) against 185 create_event ones in recipe smol's 500 tool items. Now every kind (code: every
    template) has its even share to within one item, a kind of few values asked in its several wordings."""
    from nanoseek.tasks.item import HELDOUT_PERCENT

    items = generate(suite, "train", SMOL_TRAIN_COUNTS[suite], 2026)
    counts = Counter(item.meta["template"] if suite == "code" else item.kind for item in items)
    kinds = len(SUITES[suite].TEMPLATES if suite == "code" else SUITES[suite].PHRASINGS)
    assert len(counts) == kinds and max(counts.values()) - min(counts.values()) <= 1, counts
    assert len({item.id for item in items}) == len(items)
    # No training item asks held-out values: its problem's hash (the id's third part) falls in the train share.
    assert all(int(item.id.split("/")[2][:8], 16) % 100 >= HELDOUT_PERCENT for item in items)
    if suite == "tools":  # where the parameters are on the item: the call itself
        assert {split_of("tools", [item.answer["name"], item.answer["arguments"]]) for item in items} == {"train"}


def test_safety_trains_each_kind_in_its_share():
    """Safety's training shares stay what they were on average (40% harmful; half of each side training-only kinds),
    now split evenly among each table's kinds: before, a look-alike kind had 2 of 300 items and another 20."""
    from nanoseek.tasks.safety import HARMFUL, HARMFUL_TRAIN_ONLY, TRAIN_HARMFUL_SHARE, TRAIN_SHARES

    items = generate("safety", "train", 300, 2026)
    counts = Counter(item.kind for item in items)
    total = sum(TRAIN_SHARES.values())
    assert all(abs(counts[kind] - 300 * share / total) <= 1 for kind, share in TRAIN_SHARES.items()), counts
    harmful = [item for item in items if item.meta["harmful"]]
    assert len(harmful) == 300 * TRAIN_HARMFUL_SHARE and all(item.answer == "refuse" for item in harmful)
    assert {item.kind for item in harmful} == set(HARMFUL) | set(HARMFUL_TRAIN_ONLY)
