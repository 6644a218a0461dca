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

from nanoseek.tasks.item import Item, draw_one_question_items
from nanoseek.tasks.words import ADJECTIVES, CITIES, ITEMS_FOR_SALE, NAMES, NOUNS

SUITE = "json"
STRING, INTEGER, NUMBER, BOOLEAN = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}

# A kind returns (params, prompt, expected object, property schemas).
Case = tuple[Any, str, dict[str, Any], dict[str, dict]]


def person(rng: random.Random) -> Case:
    name, age = rng.choice(NAMES), rng.randint(5, 90)
    return (
        [name, age],
        f'{name} is {age} years old. Reply in json with keys "name" and "age".',
        {"name": name, "age": age},
        {"name": STRING, "age": INTEGER},
    )


def product(rng: random.Random) -> Case:
    noun, price, in_stock = rng.choice(ITEMS_FOR_SALE), rng.randint(1, 99), rng.choice([True, False])
    stock_text = "in stock" if in_stock else "sold out"
    return (
        [noun, price, in_stock],
        f'The {noun} cost ${price} and are {stock_text}. Give json with keys "item", "price", "in_stock".',
        {"item": noun, "price": price, "in_stock": in_stock},
        {"item": STRING, "price": NUMBER, "in_stock": BOOLEAN},
    )


def city(rng: random.Random) -> Case:
    place, people = rng.choice(CITIES), rng.randint(10, 999) * 1000
    return (
        [place, people],
        f'Extract as json with keys "city" and "population": \'{place} has {people} residents.\'',
        {"city": place, "population": people},
        {"city": STRING, "population": INTEGER},
    )


def word_list(rng: random.Random) -> Case:
    words = rng.sample(ADJECTIVES, rng.randint(2, 4))
    return (
        words,
        f'Put these words in a json object under the key "words": {", ".join(words)}.',
        {"words": words},
        {"words": {"type": "array", "items": STRING}},
    )


def word_length(rng: random.Random) -> Case:
    word = rng.choice(NOUNS)
    return (
        word,
        f'Return json with the key "word" set to \'{word}\' and "length" set to its number of letters.',
        {"word": word, "length": len(word)},
        {"word": STRING, "length": INTEGER},
    )


def total(rng: random.Random) -> Case:
    numbers = [rng.randint(1, 50) for _ in range(rng.randint(2, 4))]
    return (
        numbers,
        f'Answer in json with keys "numbers" (the list {numbers}) and "total" (their sum).',
        {"numbers": numbers, "total": sum(numbers)},
        {"numbers": {"type": "array", "items": INTEGER}, "total": INTEGER},
    )


def meeting(rng: random.Random) -> Case:
    who, day, hour = (
        rng.choice(NAMES),
        rng.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]),
        rng.randint(8, 17),
    )
    return (
        [who, day, hour],
        f'Meet {who} on {day} at {hour}:00. Write this as json with keys "person", "day", "hour".',
        {"person": who, "day": day, "hour": hour},
        {"person": STRING, "day": STRING, "hour": INTEGER},
    )


KINDS: dict[str, Callable[[random.Random], Case]] = {
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
