"""Instruction following: short verifiable tasks of 20 kinds, scored by exact match of the whole reply.

Each kind samples canonical parameters (the split key) and a phrasing (not part of the key), so a problem
stays in one split whatever words ask for it; the phrasing split asks in the held-out wordings of `PHRASINGS`:

    from nanoseek.tasks import generate
    items = generate("instructions", "heldout", n=20, seed=0)
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any

from nanoseek.tasks.item import Item, Phrasings, draw_one_question_items
from nanoseek.tasks.words import ADJECTIVES, CITIES, ITEMS_FOR_SALE, NAMES, NOUNS

SUITE = "instructions"
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

# A kind returns (params, prompt, answer, case_sensitive).
KindResult = tuple[Any, str, str, bool]


PHRASINGS: dict[str, Phrasings] = {
    "reverse_word": Phrasings(
        ("Reverse the letters of the word '{w}'.", "Write '{w}' backwards."),
        (
            "Spell {w} from its last letter to its first, as one word.",
            'If you read "{w}" from right to left, what do you get?',
        ),
    ),
    "uppercase": Phrasings(
        ("Write '{p}' in capital letters.", "Convert '{p}' to upper case."),
        ('Make every letter of "{p}" a capital and reply with nothing else.', "Shout this phrase in all caps: {p}"),
    ),
    "count_letter": Phrasings(
        (
            "How many times does the letter '{l}' appear in '{w}'? Answer with a number.",
            "Count the letter '{l}' in the word '{w}'. Reply with just the count.",
        ),
        (
            "In the word {w}, how often do you see '{l}'? Just give the number.",
            'Tell me the number of {l}\'s in "{w}" (digits only).',
        ),
    ),
    "count_words": Phrasings(
        (
            "How many words are in '{s}'? Answer with a number.",
            "Count the words in '{s}'. Reply with just the number.",
        ),
        (
            "Here is a phrase: {s}\nWhat is its word count? Digits only.",
            'If I split "{s}" on spaces, how many pieces do I get? Give only the number.',
        ),
    ),
    "sort_numbers": Phrasings(
        (
            "Sort from smallest to largest: {n}. Answer as a comma-separated list.",
            "Put these numbers in increasing order: {n}. Reply as a comma-separated list.",
        ),
        (
            "Arrange {n} in ascending order, separated by commas.",
            "List {n} again, lowest first and highest last, with commas between them.",
        ),
    ),
    "sort_words": Phrasings(
        (
            "Sort alphabetically: {w}. Answer as a comma-separated list.",
            "Put these words in alphabetical order: {w}. Reply as a comma-separated list.",
        ),
        (
            "Arrange {w} the way a dictionary would list them, separated by commas.",
            "Which order would these words have in an index: {w}? Give them all, comma-separated, A to Z.",
        ),
    ),
    "largest_number": Phrasings(
        ("Which number is the largest: {n}? Answer with the number.", "Give the biggest of these numbers: {n}."),
        (
            "Out of {n}, which one is greatest? Reply with that number only.",
            "I have the numbers {n}. Tell me the maximum.",
        ),
    ),
    "first_letters": Phrasings(
        (
            "Write the first letter of each word in '{p}', joined together.",
            "Join the first letters of the words in '{p}'.",
        ),
        (
            'Take the initial of every word in "{p}" and write them together with no spaces.',
            "What do the initials of {p} spell when written side by side?",
        ),
    ),
    "remove_vowels": Phrasings(
        ("Remove all vowels from '{w}'.", "Write '{w}' without its vowels (a, e, i, o, u)."),
        (
            "Strip every vowel out of the word {w} and tell me what is left.",
            'Keep only the consonants of "{w}", in order.',
        ),
    ),
    "join_hyphens": Phrasings(
        ("Join these words with hyphens: {w}.", "Connect {w} into one word using hyphens."),
        (
            "Link {w} together with a dash (-) between each pair, no spaces.",
            "Turn the words {w} into a single hyphenated string.",
        ),
    ),
    "nth_word": Phrasings(
        ("What is the {o} word in '{s}'?", "Give the {o} word of '{s}'."),
        (
            'Look at "{s}". Which word is {o} from the left?',
            "Counting from the left, tell me the {o} word you see in: {s}",
        ),
    ),
    "repeat_word": Phrasings(
        ("Repeat the word '{w}' {k} times, separated by spaces.", "Write '{w}' {k} times with a space between each."),
        (
            "Say {w} exactly {k} times in a row, with single spaces between.",
            'I need the word "{w}" written out {k} times on one line, space-separated.',
        ),
    ),
    "unit_convert": Phrasings(
        (
            "How many {s} are in {a} {b}? Answer with a number.",
            "Convert {a} {b} to {s}. Reply with just the number.",
        ),
        ("{a} {b} is how many {s}? Number only.", "Express {a} {b} in {s}; give just the figure."),
    ),
    "date_add": Phrasings(
        (
            "What date is {d} days after {s}? Answer as YYYY-MM-DD.",
            "Add {d} days to {s}. Reply in YYYY-MM-DD format.",
        ),
        (
            "Starting on {s}, count forward {d} days. Which date do you land on (YYYY-MM-DD)?",
            "If today is {s}, what will the date be in {d} days? Use the form YYYY-MM-DD.",
        ),
    ),
    "weekday": Phrasings(
        ("What day of the week was {d}? Answer with the day name.", "Which weekday is {d}?"),
        (
            "Was {d} a Monday, a Tuesday, or another day? Give the day's name only.",
            "Name the weekday for the calendar date {d}.",
        ),
    ),
    "format_date": Phrasings(
        ("Rewrite the date {d} as DD/MM/YYYY.", "Write {d} in DD/MM/YYYY format."),
        (
            "Put {d} in day/month/year order with slashes (two-digit day and month, four-digit year).",
            "How would {d} look in the European DD/MM/YYYY style?",
        ),
    ),
    "time_add": Phrasings(
        (
            "What time is it {m} minutes after {t}? Answer as HH:MM (24-hour).",
            "Add {m} minutes to {t}. Reply as HH:MM.",
        ),
        (
            "A clock shows {t}. What will it show {m} minutes later? Use 24-hour HH:MM.",
            "The train leaves at {t} and the trip takes {m} minutes. When does it arrive? "
            "Give the 24-hour clock time as HH:MM.",
        ),
    ),
    "extract_email": Phrasings(
        (
            "Extract the email address: 'Write to {n} at {e} about the {c} trip.'",
            "What is the email address in: 'Contact {e} ({n}) before visiting {c}.'?",
        ),
        (
            "Pull out just the email from this note: 'Hi, it's {n} from {c}. My address is {e}, reply any time.'",
            "From 'Questions about the {c} office go to {n}: {e}', copy the email address and nothing else.",
        ),
    ),
    "extract_number": Phrasings(
        (
            "Extract the number from: '{n} ordered {a} {o} yesterday.'",
            "Which number appears in '{n} packed {a} {o} into boxes'?",
        ),
        (
            "Find the quantity in this sentence and reply with it alone: 'Last week {n} sold {a} {o} at the market.'",
            "'{n} counted {a} {o} on the shelf.' What number is mentioned?",
        ),
    ),
    "word_problem": Phrasings(
        ("{n} has {h} {o}, gets {m} more, then gives away {g}. How many {o} does {n} have now? Answer with a number.",),
        (
            "{n} starts the day with {h} {o}. A friend hands over {m} more, and later {n} gives {g} to a "
            "neighbour. How many {o} are left with {n}? Just the number.",
            "After getting {m} extra {o} and giving {g} away, what number of {o} does {n} hold if there were {h} at "
            "first? Reply with a number only.",
        ),
    ),
}


def reverse_word(rng: random.Random, split: str) -> KindResult:
    word = rng.choice(NOUNS)
    ask = PHRASINGS["reverse_word"].pick(rng, split)
    return word, ask.format(w=word), word[::-1], True


def uppercase(rng: random.Random, split: str) -> KindResult:
    phrase = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    ask = PHRASINGS["uppercase"].pick(rng, split)
    return phrase, ask.format(p=phrase), phrase.upper(), True


def count_letter(rng: random.Random, split: str) -> KindResult:
    word = rng.choice(NOUNS)
    letter = rng.choice(sorted(set(word)))
    ask = PHRASINGS["count_letter"].pick(rng, split)
    return [word, letter], ask.format(l=letter, w=word), str(word.count(letter)), False


def count_words(rng: random.Random, split: str) -> KindResult:
    words = [rng.choice(ADJECTIVES + NOUNS) for _ in range(rng.randint(3, 8))]
    sentence = " ".join(words)
    ask = PHRASINGS["count_words"].pick(rng, split)
    return sentence, ask.format(s=sentence), str(len(words)), False


def sort_numbers(rng: random.Random, split: str) -> KindResult:
    numbers = rng.sample(range(1, 100), rng.randint(3, 6))
    listed = ", ".join(map(str, numbers))
    ask = PHRASINGS["sort_numbers"].pick(rng, split)
    return numbers, ask.format(n=listed), ", ".join(map(str, sorted(numbers))), False


def sort_words(rng: random.Random, split: str) -> KindResult:
    words = rng.sample(NOUNS, rng.randint(3, 5))
    ask = PHRASINGS["sort_words"].pick(rng, split)
    return words, ask.format(w=", ".join(words)), ", ".join(sorted(words)), False


def largest_number(rng: random.Random, split: str) -> KindResult:
    numbers = rng.sample(range(1, 500), rng.randint(3, 6))
    ask = PHRASINGS["largest_number"].pick(rng, split)
    return numbers, ask.format(n=", ".join(map(str, numbers))), str(max(numbers)), False


def first_letters(rng: random.Random, split: str) -> KindResult:
    words = rng.sample(NOUNS + ADJECTIVES, rng.randint(3, 5))
    phrase = " ".join(words)
    ask = PHRASINGS["first_letters"].pick(rng, split)
    return words, ask.format(p=phrase), "".join(w[0] for w in words), False


def remove_vowels(rng: random.Random, split: str) -> KindResult:
    word = rng.choice(NOUNS)
    ask = PHRASINGS["remove_vowels"].pick(rng, split)
    return word, ask.format(w=word), "".join(c for c in word if c not in "aeiou"), False


def join_hyphens(rng: random.Random, split: str) -> KindResult:
    words = rng.sample(NOUNS + ADJECTIVES, rng.randint(2, 4))
    ask = PHRASINGS["join_hyphens"].pick(rng, split)
    return words, ask.format(w=", ".join(words)), "-".join(words), False


def nth_word(rng: random.Random, split: str) -> KindResult:
    words = rng.sample(NOUNS, rng.randint(4, 6))
    index = rng.randrange(len(words))
    ordinal = ["first", "second", "third", "fourth", "fifth", "sixth"][index]
    ask = PHRASINGS["nth_word"].pick(rng, split)
    return [words, index], ask.format(o=ordinal, s=" ".join(words)), words[index], False


def repeat_word(rng: random.Random, split: str) -> KindResult:
    word, times = rng.choice(NOUNS), rng.randint(2, 5)
    ask = PHRASINGS["repeat_word"].pick(rng, split)
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


def unit_convert(rng: random.Random, split: str) -> KindResult:
    big, small, factor = rng.choice(UNITS)
    amount = rng.randint(2, 40)
    ask = PHRASINGS["unit_convert"].pick(rng, split)
    return [big, small, amount], ask.format(s=small, a=amount, b=big), str(amount * factor), False


def _random_date(rng: random.Random) -> dt.date:
    return dt.date(2000, 1, 1) + dt.timedelta(days=rng.randrange(365 * 30))


def date_add(rng: random.Random, split: str) -> KindResult:
    start, days = _random_date(rng), rng.randint(1, 60)
    ask = PHRASINGS["date_add"].pick(rng, split)
    return [start.isoformat(), days], ask.format(d=days, s=start), (start + dt.timedelta(days=days)).isoformat(), False


def weekday(rng: random.Random, split: str) -> KindResult:
    day = _random_date(rng)
    ask = PHRASINGS["weekday"].pick(rng, split)
    return day.isoformat(), ask.format(d=day), WEEKDAYS[day.weekday()], False


def format_date(rng: random.Random, split: str) -> KindResult:
    day = _random_date(rng)
    ask = PHRASINGS["format_date"].pick(rng, split)
    return day.isoformat(), ask.format(d=day), day.strftime("%d/%m/%Y"), False


def time_add(rng: random.Random, split: str) -> KindResult:
    hour, minute, add = rng.randint(0, 22), rng.choice(range(0, 60, 5)), rng.choice(range(5, 180, 5))
    start = dt.datetime(2000, 1, 1, hour, minute)
    ask = PHRASINGS["time_add"].pick(rng, split)
    end = start + dt.timedelta(minutes=add)
    return [hour, minute, add], ask.format(m=add, t=start.strftime("%H:%M")), end.strftime("%H:%M"), False


def extract_email(rng: random.Random, split: str) -> KindResult:
    name, city = rng.choice(NAMES), rng.choice(CITIES)
    email = f"{name.lower()}.{rng.choice(NOUNS)}@{city.lower()}.example"
    ask = PHRASINGS["extract_email"].pick(rng, split)
    return email, ask.format(n=name, e=email, c=city), email, False


def extract_number(rng: random.Random, split: str) -> KindResult:
    name, amount, noun = rng.choice(NAMES), rng.randint(2, 999), rng.choice(ITEMS_FOR_SALE)
    ask = PHRASINGS["extract_number"].pick(rng, split)
    return [name, amount, noun], ask.format(n=name, a=amount, o=noun), str(amount), False


def word_problem(rng: random.Random, split: str) -> KindResult:
    name, noun = rng.choice(NAMES), rng.choice(ITEMS_FOR_SALE)
    have, more, give = rng.randint(2, 30), rng.randint(2, 30), rng.randint(1, 10)
    ask = PHRASINGS["word_problem"].pick(rng, split).format(n=name, o=noun, h=have, m=more, g=give)
    return [name, noun, have, more, give], ask, str(have + more - give), False


KINDS: dict[str, Callable[[random.Random, str], KindResult]] = {
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
