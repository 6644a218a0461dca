"""Instruction following: short verifiable tasks of 20 kinds, scored by exact match of the whole reply.

Each kind samples canonical parameters (the split key) and a phrasing (not part of the key), so a problem
stays in one split whatever words ask for it:

    from nanoseek.tasks import generate
    items = generate("instructions", "heldout", n=20, seed=0)
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any

from nanoseek.tasks.item import Item, draw_one_question_items
from nanoseek.tasks.words import ADJECTIVES, CITIES, ITEMS_FOR_SALE, NAMES, NOUNS

SUITE = "instructions"
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

# A kind returns (params, prompt, answer, case_sensitive).
KindResult = tuple[Any, str, str, bool]


def _phrase(rng: random.Random, *options: str) -> str:
    return rng.choice(options)


def reverse_word(rng: random.Random) -> KindResult:
    word = rng.choice(NOUNS)
    ask = _phrase(rng, "Reverse the letters of the word '{w}'.", "Write '{w}' backwards.")
    return word, ask.format(w=word), word[::-1], True


def uppercase(rng: random.Random) -> KindResult:
    phrase = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    ask = _phrase(rng, "Write '{p}' in capital letters.", "Convert '{p}' to upper case.")
    return phrase, ask.format(p=phrase), phrase.upper(), True


def count_letter(rng: random.Random) -> KindResult:
    word = rng.choice(NOUNS)
    letter = rng.choice(sorted(set(word)))
    ask = _phrase(
        rng,
        "How many times does the letter '{l}' appear in '{w}'? Answer with a number.",
        "Count the letter '{l}' in the word '{w}'. Reply with just the count.",
    )
    return [word, letter], ask.format(l=letter, w=word), str(word.count(letter)), False


def count_words(rng: random.Random) -> KindResult:
    words = [rng.choice(ADJECTIVES + NOUNS) for _ in range(rng.randint(3, 8))]
    sentence = " ".join(words)
    ask = _phrase(
        rng,
        "How many words are in '{s}'? Answer with a number.",
        "Count the words in '{s}'. Reply with just the number.",
    )
    return sentence, ask.format(s=sentence), str(len(words)), False


def sort_numbers(rng: random.Random) -> KindResult:
    numbers = rng.sample(range(1, 100), rng.randint(3, 6))
    listed = ", ".join(map(str, numbers))
    ask = _phrase(
        rng,
        "Sort from smallest to largest: {n}. Answer as a comma-separated list.",
        "Put these numbers in increasing order: {n}. Reply as a comma-separated list.",
    )
    return numbers, ask.format(n=listed), ", ".join(map(str, sorted(numbers))), False


def sort_words(rng: random.Random) -> KindResult:
    words = rng.sample(NOUNS, rng.randint(3, 5))
    ask = _phrase(
        rng,
        "Sort alphabetically: {w}. Answer as a comma-separated list.",
        "Put these words in alphabetical order: {w}. Reply as a comma-separated list.",
    )
    return words, ask.format(w=", ".join(words)), ", ".join(sorted(words)), False


def largest_number(rng: random.Random) -> KindResult:
    numbers = rng.sample(range(1, 500), rng.randint(3, 6))
    ask = _phrase(
        rng, "Which number is the largest: {n}? Answer with the number.", "Give the biggest of these numbers: {n}."
    )
    return numbers, ask.format(n=", ".join(map(str, numbers))), str(max(numbers)), False


def first_letters(rng: random.Random) -> KindResult:
    words = rng.sample(NOUNS + ADJECTIVES, rng.randint(3, 5))
    phrase = " ".join(words)
    ask = _phrase(
        rng,
        "Write the first letter of each word in '{p}', joined together.",
        "Join the first letters of the words in '{p}'.",
    )
    return words, ask.format(p=phrase), "".join(w[0] for w in words), False


def remove_vowels(rng: random.Random) -> KindResult:
    word = rng.choice(NOUNS)
    ask = _phrase(rng, "Remove all vowels from '{w}'.", "Write '{w}' without its vowels (a, e, i, o, u).")
    return word, ask.format(w=word), "".join(c for c in word if c not in "aeiou"), False


def join_hyphens(rng: random.Random) -> KindResult:
    words = rng.sample(NOUNS + ADJECTIVES, rng.randint(2, 4))
    ask = _phrase(rng, "Join these words with hyphens: {w}.", "Connect {w} into one word using hyphens.")
    return words, ask.format(w=", ".join(words)), "-".join(words), False


def nth_word(rng: random.Random) -> KindResult:
    words = rng.sample(NOUNS, rng.randint(4, 6))
    index = rng.randrange(len(words))
    ordinal = ["first", "second", "third", "fourth", "fifth", "sixth"][index]
    ask = _phrase(rng, "What is the {o} word in '{s}'?", "Give the {o} word of '{s}'.")
    return [words, index], ask.format(o=ordinal, s=" ".join(words)), words[index], False


def repeat_word(rng: random.Random) -> KindResult:
    word, times = rng.choice(NOUNS), rng.randint(2, 5)
    ask = _phrase(
        rng, "Repeat the word '{w}' {k} times, separated by spaces.", "Write '{w}' {k} times with a space between each."
    )
    return [word, times], ask.format(w=word, k=times), " ".join([word] * times), False


UNITS = [
    ("meters", "centimeters", 100),
    ("kilometers", "meters", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("kilograms", "grams", 1000),
    ("days", "hours", 24),
    ("liters", "milliliters", 1000),
    ("weeks", "days", 7),
    ("feet", "inches", 12),
    ("dozens", "items", 12),
]


def unit_convert(rng: random.Random) -> KindResult:
    big, small, factor = rng.choice(UNITS)
    amount = rng.randint(2, 40)
    ask = _phrase(
        rng, "How many {s} are in {a} {b}? Answer with a number.", "Convert {a} {b} to {s}. Reply with just the number."
    )
    return [big, small, amount], ask.format(s=small, a=amount, b=big), str(amount * factor), False


def _random_date(rng: random.Random) -> dt.date:
    return dt.date(2000, 1, 1) + dt.timedelta(days=rng.randrange(365 * 30))


def date_add(rng: random.Random) -> KindResult:
    start, days = _random_date(rng), rng.randint(1, 60)
    ask = _phrase(
        rng,
        "What date is {d} days after {s}? Answer as YYYY-MM-DD.",
        "Add {d} days to {s}. Reply in YYYY-MM-DD format.",
    )
    return [start.isoformat(), days], ask.format(d=days, s=start), (start + dt.timedelta(days=days)).isoformat(), False


def weekday(rng: random.Random) -> KindResult:
    day = _random_date(rng)
    ask = _phrase(rng, "What day of the week was {d}? Answer with the day name.", "Which weekday is {d}?")
    return day.isoformat(), ask.format(d=day), WEEKDAYS[day.weekday()], False


def format_date(rng: random.Random) -> KindResult:
    day = _random_date(rng)
    ask = _phrase(rng, "Rewrite the date {d} as DD/MM/YYYY.", "Write {d} in DD/MM/YYYY format.")
    return day.isoformat(), ask.format(d=day), day.strftime("%d/%m/%Y"), False


def time_add(rng: random.Random) -> KindResult:
    hour, minute, add = rng.randint(0, 22), rng.choice(range(0, 60, 5)), rng.choice(range(5, 180, 5))
    start = dt.datetime(2000, 1, 1, hour, minute)
    ask = _phrase(
        rng,
        "What time is it {m} minutes after {t}? Answer as HH:MM (24-hour).",
        "Add {m} minutes to {t}. Reply as HH:MM.",
    )
    end = start + dt.timedelta(minutes=add)
    return [hour, minute, add], ask.format(m=add, t=start.strftime("%H:%M")), end.strftime("%H:%M"), False


def extract_email(rng: random.Random) -> KindResult:
    name, city = rng.choice(NAMES), rng.choice(CITIES)
    email = f"{name.lower()}.{rng.choice(NOUNS)}@{city.lower()}.example"
    ask = _phrase(
        rng,
        "Extract the email address: 'Write to {n} at {e} about the {c} trip.'",
        "What is the email address in: 'Contact {e} ({n}) before visiting {c}.'?",
    )
    return email, ask.format(n=name, e=email, c=city), email, False


def extract_number(rng: random.Random) -> KindResult:
    name, amount, noun = rng.choice(NAMES), rng.randint(2, 999), rng.choice(ITEMS_FOR_SALE)
    ask = _phrase(
        rng,
        "Extract the number from: '{n} ordered {a} {o} yesterday.'",
        "Which number appears in '{n} packed {a} {o} into boxes'?",
    )
    return [name, amount, noun], ask.format(n=name, a=amount, o=noun), str(amount), False


def word_problem(rng: random.Random) -> KindResult:
    name, noun = rng.choice(NAMES), rng.choice(ITEMS_FOR_SALE)
    have, more, give = rng.randint(2, 30), rng.randint(2, 30), rng.randint(1, 10)
    ask = (
        f"{name} has {have} {noun}, gets {more} more, then gives away {give}. "
        f"How many {noun} does {name} have now? Answer with a number."
    )
    return [name, noun, have, more, give], ask, str(have + more - give), False


KINDS: dict[str, Callable[[random.Random], KindResult]] = {
    fn.__name__: fn
    for fn in [
        reverse_word,
        uppercase,
        count_letter,
        count_words,
        sort_numbers,
        sort_words,
        largest_number,
        first_letters,
        remove_vowels,
        join_hyphens,
        nth_word,
        repeat_word,
        unit_convert,
        date_add,
        weekday,
        format_date,
        time_add,
        extract_email,
        extract_number,
        word_problem,
    ]
}


def item_fields(case: KindResult, rng: random.Random) -> dict[str, Any]:
    _params, _prompt, answer, case_sensitive = case
    return {
        "answer": answer,
        "ideal": [{"role": "assistant", "content": answer}],
        "meta": {"case_sensitive": case_sensitive},
    }


def generate(split: str, n: int, seed: int) -> list[Item]:
    return draw_one_question_items(SUITE, KINDS, split, n, seed, item_fields)
