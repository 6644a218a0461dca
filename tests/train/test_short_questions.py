"""The short factual questions self-distillation asks the base (nanoseek/tasks/data/short_questions.txt): enough of
them, and none that the evaluator asks, in its words or as the same fact turned around.

nice -n 19 python3 -m pytest tests/train/test_short_questions.py -x -q
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nanoseek.tasks import handwritten
from nanoseek.train.self_distill import evaluated_word_runs, word_runs

QUESTIONS_FILE = Path(__file__).resolve().parents[2] / "nanoseek" / "tasks" / "data" / "short_questions.txt"
# Words too common to say what a knowledge question is about.
FUNCTION_WORDS = set(
    "a an the of in on at to is are was what which who how many do does did and or for from by with its that this "
    "called name tell me there most first one".split()
)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


@pytest.fixture(scope="module")
def questions() -> list[str]:
    lines = QUESTIONS_FILE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_there_are_at_least_400_distinct_questions(questions: list[str]):
    assert len(questions) >= 400
    assert len({" ".join(words(q)) for q in questions}) == len(questions)


def test_no_question_shares_four_words_with_an_evaluated_prompt_or_is_a_hand_written_one(questions: list[str]):
    evaluated = evaluated_word_runs()
    assert [q for q in questions if word_runs(q) & evaluated] == []
    # Four-word runs miss prompts shorter than four words ("Who discovered penicillin?").
    written = {" ".join(words(row["prompt"])) for row in handwritten.rows()}
    assert [q for q in questions if " ".join(words(q)) in written] == []


def same_fact(question: str, row: dict) -> bool:
    """Whether `question` names an accepted answer of the knowledge item `row` beside at least half of the item's
    key words: the item's fact turned around ("Paris is the capital of which country?")."""
    asked = words(question)
    keys = set(words(row["prompt"])) - FUNCTION_WORDS
    answered = any(re.search(rf"\b{re.escape(' '.join(words(a)))}\b", " ".join(asked)) for a in row["answer"])
    return answered and 2 * len(keys & set(asked)) >= len(keys)


def test_the_fact_check_catches_a_knowledge_item_turned_around():
    france = next(row for row in handwritten.rows() if row["prompt"] == "What is the capital of France?")
    assert same_fact("Paris is the capital of which country?", france)
    assert not same_fact("Which river flows through Paris?", france)


def test_no_question_asks_a_hand_written_knowledge_fact_turned_around(questions: list[str]):
    knowledge = [row for row in handwritten.rows() if row["suite"] == "knowledge"]
    assert len(knowledge) >= 120
    assert [(q, row["prompt"]) for row in knowledge for q in questions if same_fact(q, row)] == []
