"""Math: multi-step arithmetic and word problems, answers checked by math-verify.

Every item is a thinking task. Its `ideal` turn has `reasoning_content` that first restates the question's
quantities, each with what it counts ("Given: 7 books, $10 each, $100 paid."), then works one operation a line
(multi-digit products and sums one place at a time), in a third of items makes one slip on purpose, notices it
and corrects it (reflection), and checks the result by undoing every step back to the given numbers
(verification) before the final `\\boxed{}` answer: the R1-Lite behaviour that SFT and RL should teach. Each kind
of question has five training wordings, which put its numbers in different orders.

    from nanoseek.tasks import generate
    items = generate("math", "heldout", n=10, seed=0)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nanoseek.tasks.item import Item, Phrasings, draw_one_question_items
from nanoseek.tasks.words import ITEMS_FOR_SALE, NAMES

SUITE = "math"
APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}
INVERSE = {"+": "-", "-": "+", "*": "/", "/": "*"}


@dataclass
class Step:
    what: str  # what this step computes, e.g. "the cost of the pens"
    a: int
    op: str
    b: int

    @property
    def value(self) -> int:
        return APPLY[self.op](self.a, self.b)

    def equation(self, value: int | None = None) -> str:
        return f"{self.a} {self.op} {self.b} = {self.value if value is None else value}"


# (params, question, steps, given): `given` restates the question's quantities, each with what it counts, in
# one fixed order whatever the wording ("7 books, $10 each, $100 paid"), for the thought's first line.
Problem = tuple[list, str, list[Step], str]

PHRASINGS: dict[str, Phrasings] = {
    "arithmetic_chain": Phrasings(
        (
            "Compute ({a} + {b}) * {c} - {d}.",
            "Add {a} and {b}, multiply that by {c}, then subtract {d}. What is the result?",
            "Start with {a} plus {b}. Multiply by {c} and subtract {d}. What do you get?",
            "Find the value of {c} * ({a} + {b}) - {d}.",
            "Subtract {d} from the product of {c} and ({a} + {b}). What is the answer?",
        ),
        (
            "Take {a}, add {b}, multiply the result by {c} and finally take away {d}. What number do you end up with?",
            "What is {c} times the sum of {a} and {b}, minus {d}?",
        ),
    ),
    "change_from_purchase": Phrasings(
        (
            "{name} buys {count} {noun} at ${price} each and pays with a ${bill} bill. "
            "How many dollars of change does {name} get?",
            "{name} pays for {count} {noun} with a ${bill} bill. Each one costs ${price}. How much change is given?",
            "Each of the {noun} costs ${price}. {name} takes {count} of them and pays ${bill}. How many dollars "
            "come back as change?",
            "With ${bill}, {name} buys {count} {noun} priced at ${price} each. What is the change in dollars?",
            "{name} wants {count} {noun}, which sell for ${price} each, and gives ${bill}. How much should {name} "
            "get back?",
        ),
        (
            "At the shop, {name} picks up {count} {noun}, each priced ${price}, and hands the cashier a ${bill} "
            "bill. What change comes back, in dollars?",
            "{count} {noun} cost ${price} apiece. If {name} pays for all of them with ${bill}, how much money "
            "should {name} receive back?",
        ),
    ),
    "two_leg_trip": Phrasings(
        (
            "{name} drives {t} hours at {v} km/h, then {u} hours at {w} km/h. "
            "How many kilometers does {name} drive in total?",
            "{name} rides for {t} hours at {v} km/h and after that for {u} hours at {w} km/h. What distance in "
            "kilometers does {name} cover?",
            "In the first {t} hours {name} averages {v} km/h, and in the next {u} hours {w} km/h. How long is the "
            "whole journey in km?",
            "{name} covers the first part of a journey at {v} km/h in {t} hours and the second part at {w} km/h in "
            "{u} hours. How many km is the journey?",
            "Find the total distance {name} drives: {t} hours at {v} km/h, then {u} hours at {w} km/h.",
        ),
        (
            "On a road trip, {name} keeps a speed of {v} km/h for {t} hours and then {w} km/h for another {u} "
            "hours. What total distance in km is covered?",
            "How far does {name} travel altogether going {v} kilometers per hour for {t} hours, followed by {w} "
            "kilometers per hour for {u} hours?",
        ),
    ),
    "equal_shares": Phrasings(
        (
            "{name} has {boxes} boxes with {per_box} {noun} each and shares them equally among "
            "{friends} friends. How many {noun} does each friend get?",
            "{per_box} {noun} fit in a box and {name} fills {boxes} boxes. Sharing them equally, {friends} friends "
            "get how many {noun} each?",
            "{name} gives {friends} friends equal shares of {boxes} boxes, each box holding {per_box} {noun}. How "
            "many {noun} does one friend get?",
            "{name} splits {boxes} boxes of {per_box} {noun} each equally among {friends} friends. How many {noun} "
            "per friend?",
            "{name} hands {boxes} full boxes of {noun}, {per_box} to a box, to "
            "{friends} friends in equal numbers. How many does each friend get?",
        ),
        (
            "There are {boxes} boxes of {noun} and every box holds {per_box}. {name} splits all of them evenly "
            "between {friends} friends. What does one friend receive?",
            "{friends} friends divide {boxes} boxes of {noun} fairly, with {per_box} {noun} in each box. "
            "How many {noun} is that per friend?",
        ),
    ),
    "weekly_savings": Phrasings(
        (
            "{name} saves ${per_week} every week for {weeks} weeks, then spends ${spent}. "
            "How many dollars does {name} have left?",
            "After saving ${per_week} a week for {weeks} weeks, {name} buys a gift for ${spent}. How many dollars "
            "are left?",
            "{name} has saved ${per_week} each week for {weeks} weeks and then spent ${spent} of it. What is left?",
            "Over {weeks} weeks {name} sets aside ${per_week} weekly, then pays ${spent} for a book. How much money "
            "does {name} still have?",
            "{name} spends ${spent} out of savings of ${per_week} per week for {weeks} weeks. How many dollars remain?",
        ),
        (
            "For {weeks} weeks in a row, {name} puts ${per_week} into a piggy bank. Then ${spent} goes on a "
            "present. How much money remains in the bank?",
            "If {name} puts aside {per_week} dollars each week over {weeks} weeks and later uses {spent} dollars, "
            "what amount is still saved?",
        ),
    ),
    "ages": Phrasings(
        (
            "{young} is {age} years old and {old} is {times} times as old. "
            "What will the sum of their ages be in {years} years?",
            "How old will {young} and {old} be together after {years} years? {young} is {age} years old now, and "
            "{old} is {times} times as old.",
            "{young} has just turned {age}. {old} is {times} times as old as {young}. Together, how old will they "
            "be in {years} years?",
            "{old} is {times} times as old as {young}, who is {age}. In {years} years, how old will they be together?",
            "The age of {young} is {age}; the age of {old} is {times} times that. What will the two ages add to in "
            "{years} years?",
        ),
        (
            "{old}'s age is {times} times {young}'s, and {young} is {age} now. In {years} years, what will "
            "their ages add up to?",
            "Right now {young} is {age} and {old} is exactly {times} times that age. Add together how old they "
            "will both be {years} years from now.",
        ),
    ),
}


def arithmetic_chain(rng: random.Random, split: str) -> Problem:
    a, b, c = rng.randint(2, 40), rng.randint(2, 40), rng.randint(2, 9)
    d = rng.randint(1, (a + b) * c - 1)
    steps = [
        Step("the sum in brackets", a, "+", b),
        Step("the product", a + b, "*", c),
        Step("the final difference", (a + b) * c, "-", d),
    ]
    question = PHRASINGS["arithmetic_chain"].pick(rng, split).format(a=a, b=b, c=c, d=d)
    return [a, b, c, d], question, steps, f"({a} + {b}) * {c} - {d}"


def change_from_purchase(rng: random.Random, split: str) -> Problem:
    name, noun = rng.choice(NAMES), rng.choice(ITEMS_FOR_SALE)
    count, price = rng.randint(2, 12), rng.randint(2, 15)
    bill = next(b for b in (20, 50, 100, 200) if b > count * price)
    steps = [Step(f"the cost of the {noun}", count, "*", price), Step("the change", bill, "-", count * price)]
    question = (
        PHRASINGS["change_from_purchase"]
        .pick(rng, split)
        .format(name=name, noun=noun, count=count, price=price, bill=bill)
    )
    return [name, noun, count, price, bill], question, steps, f"{count} {noun}, ${price} each, ${bill} paid"


def two_leg_trip(rng: random.Random, split: str) -> Problem:
    name = rng.choice(NAMES)
    v, t, w, u = rng.randint(20, 90), rng.randint(1, 5), rng.randint(20, 90), rng.randint(1, 5)
    steps = [
        Step("the first distance", v, "*", t),
        Step("the second distance", w, "*", u),
        Step("the total distance", v * t, "+", w * u),
    ]
    question = PHRASINGS["two_leg_trip"].pick(rng, split).format(name=name, v=v, t=t, w=w, u=u)
    return [name, v, t, w, u], question, steps, f"{t} hours at {v} km/h, then {u} hours at {w} km/h"


def equal_shares(rng: random.Random, split: str) -> Problem:
    name, noun = rng.choice(NAMES), rng.choice(ITEMS_FOR_SALE)
    friends = rng.randint(2, 8)
    per_box = friends * rng.randint(1, 6)
    boxes = rng.randint(2, 9)
    steps = [Step(f"the number of {noun}", boxes, "*", per_box), Step("each share", boxes * per_box, "/", friends)]
    question = (
        PHRASINGS["equal_shares"]
        .pick(rng, split)
        .format(name=name, noun=noun, boxes=boxes, per_box=per_box, friends=friends)
    )
    given = f"{boxes} boxes, {per_box} {noun} in each box, {friends} friends"
    return [name, noun, boxes, per_box, friends], question, steps, given


def weekly_savings(rng: random.Random, split: str) -> Problem:
    name = rng.choice(NAMES)
    per_week, weeks = rng.randint(3, 25), rng.randint(2, 12)
    spent = rng.randint(1, per_week * weeks - 1)
    steps = [Step("the savings", per_week, "*", weeks), Step("what is left", per_week * weeks, "-", spent)]
    question = (
        PHRASINGS["weekly_savings"].pick(rng, split).format(name=name, per_week=per_week, weeks=weeks, spent=spent)
    )
    return [name, per_week, weeks, spent], question, steps, f"${per_week} a week, {weeks} weeks, ${spent} spent"


def ages(rng: random.Random, split: str) -> Problem:
    young, old = rng.sample(NAMES, 2)
    age, times, years = rng.randint(2, 15), rng.randint(2, 4), rng.randint(1, 10)
    steps = [  # one operation a step: the two people each grow `years` older, a step of its own
        Step(f"{old}'s age now", age, "*", times),
        Step("the sum of their ages now", age, "+", age * times),
        Step("the years the two of them add", years, "+", years),
        Step(f"the sum in {years} years", age + age * times, "+", 2 * years),
    ]
    question = PHRASINGS["ages"].pick(rng, split).format(young=young, old=old, age=age, times=times, years=years)
    given = f"{young} is {age}, {old} is {times} times as old, {years} years from now"
    return [young, old, age, times, years], question, steps, given


KINDS: dict[str, Callable[[random.Random, str], Problem]] = {
    fn.__name__: fn for fn in [arithmetic_chain, change_from_purchase, two_leg_trip, equal_shares, weekly_savings, ages]
}


def partial_products(step: Step) -> str | None:
    """`47 * 6 = 40 * 6 + 7 * 6 = 240 + 42 = 282`: a multiplication by a number of two or more digits, split
    into tens and units so that a small model's thinking does the work a direct answer would have to guess."""
    if step.op != "*":
        return None
    split_a = step.a >= 10 and step.a % 10 != 0  # split the left factor when it can, else the right one
    big, other = (step.a, step.b) if split_a else (step.b, step.a)
    tens, units = big - big % 10, big % 10
    if big < 10 or units == 0:
        return None
    parts = [(tens, other), (units, other)] if split_a else [(other, tens), (other, units)]
    return (
        f"{step.a} * {step.b} = {parts[0][0]} * {parts[0][1]} + {parts[1][0]} * {parts[1][1]} = "
        f"{tens * other} + {units * other} = {step.value}"
    )


def place_value_sum(step: Step) -> str | None:
    """`141 + 237 = 141 + 200 + 30 + 7 = 341 + 30 + 7 = 371 + 7 = 378`: an addition or subtraction whose
    right operand has two or more non-zero digits, done one place at a time, so that each equals sign changes
    one digit (and perhaps a carry) of a number the model has just written."""
    if step.op not in "+-":
        return None
    digits = str(step.b)
    parts = [int(d) * 10 ** (len(digits) - 1 - i) for i, d in enumerate(digits) if d != "0"]
    if len(parts) < 2:
        return None
    sign = f" {step.op} "
    chain, running = [f"{step.a}{sign}{sign.join(map(str, parts))}"], step.a
    for i, part in enumerate(parts):
        running = APPLY[step.op](running, part)
        chain.append(sign.join(map(str, [running] + parts[i + 1 :])))
    return f"{step.equation().split(' = ')[0]} = " + " = ".join(chain)


def worked(step: Step) -> str:
    """The step's equation, worked through partial products or place values where those apply."""
    return partial_products(step) or place_value_sum(step) or step.equation()


# Share of solutions that make a slip and correct it: enough to teach the correction, few enough that most
# of what the model learns to write is right arithmetic (a slip is a wrong equation it also learns from).
SLIP_SHARE = 1 / 3


def worked_solution(steps: list[Step], given: str, rng: random.Random) -> str:
    """Thinking that first restates the question's quantities (`given`), then works one operation a line, each
    `worked`, then verifies by undoing every step from the answer back to the question's numbers; a third of
    solutions also make one deliberate slip that is caught and fixed.

    The restatement is there because a small model's commonest error on a wording it was not trained on is a
    misread quantity ("7 books at $10 each" worked as 10 * 10): copying each number next to what it counts,
    in one order for every wording, turns finding the numbers into a step of its own that the steps then copy
    from (docs/runs/2026-12-07-math-probe/).

    `rng` is the draw's own generator: it is advanced by the same two draws whether or not the slip is shown,
    so the held-out items drawn after this one do not depend on how solutions are written. Whether the slip
    is shown comes from a generator seeded by the problem itself.
    """
    # The two draws of the generator before the restated format, whose problems had at most three steps: the same
    # draws keep the items drawn after this one, the evaluator's among them, what they were.
    slip_at = rng.randrange(min(len(steps), 3))
    slip = rng.choice([-3, -2, -1, 1, 2, 3])
    if random.Random(repr([(s.a, s.op, s.b) for s in steps])).random() >= SLIP_SHARE:
        slip_at = -1
    lines = [f"Given: {given}."]
    for i, step in enumerate(steps):
        opening = "First" if i == 0 else "Next"
        if i == slip_at:
            wrong = step.value + slip
            lines.append(f"{opening}, {step.what}: {step.equation(wrong)}.")
            lines.append(f"Wait, let me check that. {worked(step)}, not {wrong}. So {step.what} is {step.value}.")
        else:
            lines.append(f"{opening}, {step.what}: {worked(step)}.")
    undone = ", ".join(f"{step.value} {INVERSE[step.op]} {step.b} = {step.a}" for step in reversed(steps))
    lines.append(f"Let me verify: {undone}, as given. The answer is {steps[-1].value}.")
    return "\n".join(lines)


def direct_answer(steps: list[Step]) -> str:
    """The answer with thinking off: the equations on one line, none worked place by place, nothing verified."""
    return f"{', then '.join(step.equation() for step in steps)}. So the answer is {steps[-1].value}."


def item_fields(problem: Problem, rng: random.Random) -> dict[str, Any]:
    _params, _question, steps, given = problem
    answer = str(steps[-1].value)
    return {
        "answer": answer,
        "ideal": [
            {
                "role": "assistant",
                "reasoning_content": worked_solution(steps, given, rng),
                "content": f"The answer is \\boxed{{{answer}}}.",
            }
        ],
        "meta": {"thinking": True, "direct": direct_answer(steps)},
    }


def generate(split: str, n: int, seed: int) -> list[Item]:
    return draw_one_question_items(SUITE, KINDS, split, n, seed, item_fields)
