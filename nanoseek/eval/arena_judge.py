"""Pairwise arena: the win rate of model A over model B, item by item, under a judge, position-swapped.

Each pair of answers is judged twice, once with A shown first and once with B first. A wins only if the
judge prefers A in both orders, B likewise; a split decision is a tie. So a judge that always picks the
first answer scores every pair a tie instead of crowning whoever was listed first.
Win rate = (wins + ties / 2) / judged pairs.

Judges: `reference_judge` (no model: prefers the answer that matches the item's verifiable reference) and
`OpenAIJudge` (any OpenAI-compatible chat model, asked to reply "A", "B" or "tie").

    pairs = judge_pairs(records_by_model, reference_judge, Path("runs/eval/arena_pairs_reference.jsonl"))
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nanoseek.eval import scorers

Verdict = str  # "first" | "second" | "tie"
Judge = Callable[[dict[str, Any], str, str], Verdict]

JUDGE_PROMPT = """You are judging two answers to the same question. Decide which answer is better: correct,
complete and following the question's instructions. The reference answer is known to be correct.

Question: {question}
Reference answer: {reference}

Answer A: {first}

Answer B: {second}

Reply with exactly one of: A, B, tie."""


def _correct(record: dict[str, Any], reply: str) -> bool:
    if record.get("source_suite") == "math":
        return scorers.math_correct(str(record["answer"]), reply)
    return scorers.exact_match(reply, str(record["answer"]), record.get("case_sensitive", False))


def reference_judge(record: dict[str, Any], first: str, second: str) -> Verdict:
    """Prefer the answer that matches the reference; both or neither right is a tie."""
    first_ok, second_ok = _correct(record, first), _correct(record, second)
    if first_ok == second_ok:
        return "tie"
    return "first" if first_ok else "second"


class OpenAIJudge:
    """An OpenAI-compatible chat model as judge (greedy, short reply)."""

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None) -> None:
        import openai

        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=2)
        self.model = model or self.client.models.list().data[0].id
        self.name = "judge-" + self.model.replace("/", "_")

    def __call__(self, record: dict[str, Any], first: str, second: str) -> Verdict:
        prompt = JUDGE_PROMPT.format(
            question=record.get("question", record.get("prompt", "")),
            reference=record.get("answer", ""),
            first=first,
            second=second,
        )
        response = self.client.chat.completions.create(
            model=self.model, temperature=0, max_tokens=8, messages=[{"role": "user", "content": prompt}]
        )
        return parse_verdict(response.choices[0].message.content or "")


def parse_verdict(text: str) -> Verdict:
    """'A' -> first, 'B' -> second; anything else (including an unparseable reply) is a tie."""
    match = re.search(r"\b(A|B|tie)\b", text.strip(), flags=re.IGNORECASE)
    if not match:
        return "tie"
    word = match.group(1).lower()
    return {"a": "first", "b": "second"}.get(word, "tie")


def outcome(verdict_a_first: Verdict, verdict_b_first: Verdict) -> str:
    """Combine the two orders into "a", "b" or "tie" (from A's side)."""
    if verdict_a_first == "first" and verdict_b_first == "second":
        return "a"
    if verdict_a_first == "second" and verdict_b_first == "first":
        return "b"
    return "tie"


def judge_name(judge: Judge) -> str:
    """Names the judge's pairs file, so verdicts of different judges are never mixed up on resume."""
    return getattr(judge, "name", "reference" if judge is reference_judge else getattr(judge, "__name__", "judge"))


def judge_pairs(records_by_model: dict[str, list[dict[str, Any]]], judge: Judge, path: Path) -> list[dict[str, Any]]:
    """Judge every model pair on their shared arena items; resumable through `path` (JSONL, one line per
    judged pair). Returns all pair records."""
    from nanoseek.eval.runner import read_records

    pairs = read_records(path)
    done = {(p["model_a"], p["model_b"], p["id"]) for p in pairs}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as sink:
        for model_a, model_b in itertools.combinations(sorted(records_by_model), 2):
            by_id_b = {r["id"]: r for r in records_by_model[model_b]}
            for record_a in records_by_model[model_a]:
                record_b = by_id_b.get(record_a["id"])
                if record_b is None or (model_a, model_b, record_a["id"]) in done:
                    continue
                a_first = judge(record_a, record_a["reply"], record_b["reply"])
                b_first = judge(record_a, record_b["reply"], record_a["reply"])
                pair = {
                    "model_a": model_a,
                    "model_b": model_b,
                    "id": record_a["id"],
                    "verdict_a_first": a_first,
                    "verdict_b_first": b_first,
                    "outcome": outcome(a_first, b_first),
                }
                sink.write(json.dumps(pair) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
                pairs.append(pair)
    return pairs


def win_rates(pairs: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[float, int]]:
    """{(A, B): (win rate of A over B, pairs judged)} for both directions of every judged pair of models."""
    tallies: dict[tuple[str, str], list[float]] = {}
    for pair in pairs:
        a, b, result = pair["model_a"], pair["model_b"], pair["outcome"]
        score_a = {"a": 1.0, "b": 0.0, "tie": 0.5}[result]
        tallies.setdefault((a, b), []).append(score_a)
        tallies.setdefault((b, a), []).append(1.0 - score_a)
    return {key: (sum(values) / len(values), len(values)) for key, values in tallies.items()}
