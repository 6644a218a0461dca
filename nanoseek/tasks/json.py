"""JSON Output: the reply must be a JSON object (validity), follow the asked shape (schema adherence, checked
with `jsonschema`) and carry the right values (exact). Items set `response_format={"type": "json_object"}`,
and every prompt contains the word "json" as the DeepSeek API requires.

    from nanoseek.tasks import generate
    items = generate("json", "heldout", n=10, seed=0)
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from nanoseek.tasks.item import Item, Phrasings, draw_one_question_items
from nanoseek.tasks.words import ADJECTIVES, CITIES, ITEMS_FOR_SALE, NAMES, NOUNS

SUITE = "json"
STRING, INTEGER, NUMBER, BOOLEAN = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}

# Every wording says "json" (the DeepSeek API refuses JSON Output without it); train ones, then held-out ones.
PHRASINGS: dict[str, Phrasings] = {
    "person": Phrasings(
        ('{name} is {age} years old. Reply in json with keys "name" and "age".',),
        (
            'Turn this into a json object with the fields "name" and "age": {name}, aged {age}.',
            'Here is a record: {name} (age {age}). Output it as json; use "name" and "age" as the keys.',
        ),
    ),
    "product": Phrasings(
        ('The {noun} cost ${price} and are {stock_text}. Give json with keys "item", "price", "in_stock".',),
        (
            'Inventory note: {noun}, ${price}, {stock_text}. Encode that as json using "item", "price" and '
            '"in_stock" (a boolean).',
            "Our shop sells {noun} for ${price}; right now they are {stock_text}. Return a json object with "
            '"item", "price", "in_stock".',
        ),
    ),
    "city": Phrasings(
        ('Extract as json with keys "city" and "population": \'{place} has {people} residents.\'',),
        (
            'About {people} people live in {place}. Write that as json: "city" and "population".',
            'Structure this fact in json ("city", "population"): the population of {place} is {people}.',
        ),
    ),
    "word_list": Phrasings(
        ('Put these words in a json object under the key "words": {words}.',),
        (
            'Give me json whose "words" field is an array holding {words}.',
            'Make a json list of {words}, stored under "words" in an object.',
        ),
    ),
    "word_length": Phrasings(
        ('Return json with the key "word" set to \'{word}\' and "length" set to its number of letters.',),
        (
            'How long is the word {word}? Answer as json: {{"word": ..., "length": ...}}.',
            'Measure "{word}" and reply with json holding the word ("word") and how many characters it has ("length").',
        ),
    ),
    "total": Phrasings(
        ('Answer in json with keys "numbers" (the list {numbers}) and "total" (their sum).',),
        (
            'Add up {numbers} and give json containing the input list as "numbers" and the result as "total".',
            'What do {numbers} sum to? Reply with a json object: "numbers" is the list, "total" the sum.',
        ),
    ),
    "meeting": Phrasings(
        ('Meet {who} on {day} at {hour}:00. Write this as json with keys "person", "day", "hour".',),
        (
            'Calendar entry: {day}, {hour}:00, with {who}. Convert it to json using keys "person", "day" and '
            '"hour" (hour as a number).',
            'I am seeing {who} at {hour}:00 next {day}. Put that in json with "person", "day", "hour".',
        ),
    ),
}

# A kind returns (params, prompt, expected object, property schemas).
Case = tuple[Any, str, dict[str, Any], dict[str, dict]]


def person(rng: random.Random, split: str) -> Case:
    name, age = rng.choice(NAMES), rng.randint(5, 90)
    return (
        [name, age],
        PHRASINGS["person"].pick(rng, split).format(name=name, age=age),
        {"name": name, "age": age},
        {"name": STRING, "age": INTEGER},
    )


def product(rng: random.Random, split: str) -> Case:
    noun, price, in_stock = rng.choice(ITEMS_FOR_SALE), rng.randint(1, 99), rng.choice([True, False])
    stock_text = "in stock" if in_stock else "sold out"
    return (
        [noun, price, in_stock],
        PHRASINGS["product"].pick(rng, split).format(noun=noun, price=price, stock_text=stock_text),
        {"item": noun, "price": price, "in_stock": in_stock},
        {"item": STRING, "price": NUMBER, "in_stock": BOOLEAN},
    )


def city(rng: random.Random, split: str) -> Case:
    place, people = rng.choice(CITIES), rng.randint(10, 999) * 1000
    return (
        [place, people],
        PHRASINGS["city"].pick(rng, split).format(place=place, people=people),
        {"city": place, "population": people},
        {"city": STRING, "population": INTEGER},
    )


def word_list(rng: random.Random, split: str) -> Case:
    words = rng.sample(ADJECTIVES, rng.randint(2, 4))
    return (
        words,
        PHRASINGS["word_list"].pick(rng, split).format(words=", ".join(words)),
        {"words": words},
        {"words": {"type": "array", "items": STRING}},
    )


def word_length(rng: random.Random, split: str) -> Case:
    word = rng.choice(NOUNS)
    return (
        word,
        PHRASINGS["word_length"].pick(rng, split).format(word=word),
        {"word": word, "length": len(word)},
        {"word": STRING, "length": INTEGER},
    )


def total(rng: random.Random, split: str) -> Case:
    numbers = [rng.randint(1, 50) for _ in range(rng.randint(2, 4))]
    return (
        numbers,
        PHRASINGS["total"].pick(rng, split).format(numbers=numbers),
        {"numbers": numbers, "total": sum(numbers)},
        {"numbers": {"type": "array", "items": INTEGER}, "total": INTEGER},
    )


def meeting(rng: random.Random, split: str) -> Case:
    who, day, hour = (
        rng.choice(NAMES),
        rng.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]),
        rng.randint(8, 17),
    )
    return (
        [who, day, hour],
        PHRASINGS["meeting"].pick(rng, split).format(who=who, day=day, hour=hour),
        {"person": who, "day": day, "hour": hour},
        {"person": STRING, "day": STRING, "hour": INTEGER},
    )


KINDS: dict[str, Callable[[random.Random, str], Case]] = {
    fn.__name__: fn for fn in [person, product, city, word_list, word_length, total, meeting]
}


def schema_for(properties: dict[str, dict]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def item_fields(case: Case, rng: random.Random) -> dict[str, Any]:
    _params, _prompt, expected, properties = case
    return {
        "response_format": {"type": "json_object"},
        "answer": {"expected": expected, "schema": schema_for(properties)},
        "ideal": [{"role": "assistant", "content": json.dumps(expected)}],
    }


def generate(split: str, n: int, seed: int) -> list[Item]:
    return draw_one_question_items(SUITE, KINDS, split, n, seed, item_fields)
