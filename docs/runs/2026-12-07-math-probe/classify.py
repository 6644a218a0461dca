"""Classify a model's wrong math answers by the first place its thought departs from the generator's solution.

    python3 docs/runs/2026-12-07-math-probe/classify.py --steps current docs/runs/2026-12-07-math-probe/thoughts/run7.phrasing.jsonl

Reads thoughts.py's records (the phrasing items of seed 0, so each record's reference steps are regenerated from
its id) and walks the thought's equations (`a op b = ... = c`, one per line, the verification line skipped)
beside the reference steps. The first departure names the class:

A step is read first (its operation, then its operands), then checked for arithmetic:

    misread quantity  an operand that should be a number from the question is another one (a number of the
                      question in the wrong role, or a number that is not in it): "7 books at $10" -> 10 * 10
    arithmetic slip   an equation whose result is wrong (and is not corrected on the next line): 42 - 6 = 38
    wrong plan        right numbers, right arithmetic, but another operation or order, a step missing or extra
    format            the thought is right but the reply's answer is not its result, or no equation at all
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from nanoseek.tasks import math
from nanoseek.tasks.math import APPLY

sys.path.insert(0, str(Path(__file__).parent))
import probe  # noqa: E402  (the baseline generator, read from git)

EQUATION = re.compile(r"(-?\d+)\s*([-+*/x×])\s*(-?\d+)\s*=\s*(.*)")
NUMBER = re.compile(r"-?\d+")


def thought_equations(thought: str) -> list[tuple[int, str, int, int]]:
    """(a, op, b, result) per step line: the line's first equation, its result the last number of its chain."""
    equations = []
    for line in thought.splitlines():
        if line.lower().startswith(("let me verify", "check", "verify")):
            continue
        match = EQUATION.search(line)
        if not match:
            continue
        a, op, b, rest = match.groups()
        op = {"x": "*", "×": "*"}.get(op, op)
        chain = rest.split(", not")[0]  # "Wait ... 7 * 10 = 70, not 72": the corrected value is the first result
        numbers = NUMBER.findall(chain.split(". ")[0])
        if not numbers:
            continue
        if line.startswith("Wait") and equations:  # a correction replaces the step it corrects
            equations.pop()
        equations.append((int(a), op, int(b), int(numbers[-1])))
    return equations


def classify(record: dict, steps: list) -> str:
    question_numbers = {int(x) for x in NUMBER.findall(record["prompt"].replace(",", ""))}
    equations = thought_equations(record["thought"])
    if not equations:
        return "format"
    own_results: list[int] = []
    reference_results: list[int] = []
    for i, step in enumerate(steps):
        if i >= len(equations):
            return "wrong plan"  # stopped early
        a, op, b, result = equations[i]
        # the reference step with its intermediate operands replaced by the model's own intermediate results
        expected = []
        for operand in (step.a, step.b):
            if operand in reference_results and operand not in question_numbers:
                expected.append(own_results[reference_results.index(operand)])
            else:
                expected.append(operand)
        reference_results.append(step.value)
        if op != step.op:
            return "wrong plan"
        got = sorted((a, b)) if op in "+*" else [a, b]
        want = sorted(expected) if op in "+*" else expected
        if got != want:
            wrong = [x for x in got if x not in want] or got
            # an operand that is a number of the question (or none we know) where a question number belongs
            if all(x in question_numbers or x not in own_results for x in wrong) and any(
                x in question_numbers for x in want
            ):
                return "misread quantity"
            return "wrong plan"
        if op in APPLY and (op != "/" or b) and APPLY[op](a, b) != result:
            return "arithmetic slip"
        own_results.append(result)
    if len(equations) > len(steps):
        return "wrong plan"
    return "format"


def steps_by_prompt(module, split: str = "phrasing", n: int = 100) -> dict[str, list]:
    """A generator module's steps for each prompt of the split's seed-0 items, recorded while regenerating them."""
    steps = {}
    originals = dict(module.KINDS)

    def recording(kind):
        def draw(rng, split):
            case = originals[kind](rng, split)
            steps[case[1]] = case[2]
            return case

        return draw

    module.KINDS.update({kind: recording(kind) for kind in originals})
    try:
        module.generate(split, n, 0)
    finally:
        module.KINDS.update(originals)
    return steps


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--steps",
        choices=["current", "restated"],
        default="restated",
        help="whose reference steps: run 7's generator (current) or this commit's",
    )
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    paths = args.paths
    steps = steps_by_prompt(probe.baseline_math() if args.steps == "current" else math)
    for path in paths:
        records = [json.loads(line) for line in open(path)]
        counts: Counter = Counter()
        for record in records:
            if record["correct"]:
                continue
            label = classify(record, steps[record["prompt"]])
            record["class"] = label
            counts[label] += 1
        with open(path, "w") as sink:  # each wrong record keeps its class, for reading the examples
            sink.writelines(json.dumps(r) + "\n" for r in records)
        wrong = sum(not r["correct"] for r in records)
        print(
            f"{path}: {len(records) - wrong}/{len(records)} right; {wrong} wrong: "
            + ", ".join(f"{label} {count}" for label, count in counts.most_common())
        )


if __name__ == "__main__":
    main(sys.argv[1:])
