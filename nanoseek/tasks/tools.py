"""Tools: pick the right function and arguments from a tool list, then answer from the tool's result.

An item offers three tools (the right one and two distractors). The run has two turns: the model's tool
call is scored against `answer["name"]`/`answer["arguments"]`; then the ideal call and the tool's result
are fed back and the final reply must state `answer["fact"]`. `ideal` is the whole exchange: assistant
tool call, tool result, final assistant answer.

    from nanoseek.tasks import generate
    items = generate("tools", "heldout", n=10, seed=0)
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable
from typing import Any

from nanoseek.tasks.item import Item, Phrasings, canonical_key, draw_balanced_items, draw_items, item_id
from nanoseek.tasks.words import CITIES, NAMES, NOUNS


def _function(name: str, description: str, properties: dict[str, dict], required: list[str] | None = None) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required or list(properties)},
        },
    }


TOOLS = {
    "get_weather": _function(
        "get_weather",
        "Current weather in a city.",
        {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    ),
    "convert_currency": _function(
        "convert_currency",
        "Convert an amount of money between currencies.",
        {"amount": {"type": "number"}, "from_currency": {"type": "string"}, "to_currency": {"type": "string"}},
    ),
    "get_local_time": _function("get_local_time", "The current local time in a city.", {"city": {"type": "string"}}),
    "get_stock_price": _function(
        "get_stock_price", "Latest price of a stock by ticker symbol.", {"ticker": {"type": "string"}}
    ),
    "get_population": _function("get_population", "Number of people living in a city.", {"city": {"type": "string"}}),
    "create_event": _function(
        "create_event",
        "Add an event to the calendar.",
        {"title": {"type": "string"}, "date": {"type": "string", "description": "YYYY-MM-DD"}},
    ),
    "send_message": _function(
        "send_message",
        "Send a short text message to a contact.",
        {"to": {"type": "string"}, "text": {"type": "string"}},
    ),
}
CURRENCIES = ["USD", "EUR", "JPY", "GBP", "INR", "BRL"]
TICKERS = ["ACME", "GLOBX", "INITech", "UMBR", "WAYNE", "STARK", "TYRL", "OSCP"]

# The user's request per kind: train wordings, then the phrasing split's held-out ones. Six train wordings a kind:
# with one, runs 5-7 chose a function by its one template's surface, and which held-out wordings came out right
# flipped from run to run on the same tool data (run 6 -> 7: 44% -> 30% of the phrasing split, all of it three
# wordings flipping; docs/runs/2026-12-07-smol7/README.md). The train wordings avoid the held-out ones' own verbs
# and frames ("schedule", "diary", "let ... know", "change ... into", "worth", "clock", "trading", "residents"), so
# the phrasing split still asks in words never trained on.
PHRASINGS: dict[str, Phrasings] = {
    "weather": Phrasings(
        (
            "What's the weather in {city} right now, in {unit}?",
            "How's the weather looking in {city}? Give me degrees {unit}.",
            "Weather check for {city}, please, in {unit}.",
            "I want the current temperature for {city}, shown in {unit}.",
            "What's it like outside in {city} now? Answer in {unit}.",
            "Forecast for right now in {city}, {unit} please.",
        ),
        (
            "Is it warm or cold in {city} at the moment? Tell me the temperature in {unit}.",
            "I'm heading out in {city}. Check the current conditions there for me, with degrees in {unit}.",
        ),
    ),
    "currency": Phrasings(
        (
            "How much is {amount} {source} in {target}?",
            "Convert {amount} {source} to {target}.",
            "What do {amount} {source} come to in {target}?",
            "How many {target} do I get for {amount} {source}?",
            "Exchange {amount} {source} for {target}: what's the amount?",
            "{amount} {source} to {target}, please.",
        ),
        (
            "I have {amount} {source}. What would that be worth in {target}?",
            "Please change {amount} {source} into {target} and tell me the result.",
        ),
    ),
    "time": Phrasings(
        (
            "What time is it in {city}?",
            "Tell me the local time in {city}.",
            "What's the time right now in {city}?",
            "Current time in {city}, please.",
            "It's late here; what time do they have in {city}?",
            "In {city}, what time is it at the moment?",
        ),
        (
            "Could you look up the current clock time over in {city}?",
            "I need to call someone in {city}. What's the hour there right now?",
        ),
    ),
    "stock": Phrasings(
        (
            "What is the latest price of {ticker} stock?",
            "Get me a quote for {ticker}.",
            "What's {ticker} going for today?",
            "{ticker}: current stock price, please.",
            "I'm watching {ticker}. What is it priced at now?",
            "How is {ticker} stock priced at the moment?",
        ),
        (
            "How much does one share of {ticker} cost right now?",
            "Check the {ticker} ticker for me: where is it trading?",
        ),
    ),
    "population": Phrasings(
        (
            "How many people live in {city}?",
            "How many inhabitants does {city} have?",
            "Tell me how many people {city} is home to.",
            "Look up the number of people living in {city}.",
            "{city} has how many people these days?",
            "I'd like the head count for {city}, the whole city.",
        ),
        ("What's the population of {city}?", "Roughly how big is {city} in terms of residents?"),
    ),
    "event": Phrasings(
        (
            "Add '{title}' to my calendar on {date}.",
            "Create a calendar event '{title}' on {date}.",
            "Book the {title} on {date} in my calendar.",
            "New event: '{title}', {date}.",
            "Mark '{title}' on my calendar for {date}.",
            "I have '{title}' on {date}. Please make a calendar entry for it.",
        ),
        ("Please schedule a '{title}' for {date}.", "Can you put the {title} in my diary for the date {date}?"),
    ),
    "message": Phrasings(
        (
            "Text {name}: '{text}'.",
            "Message {name} the words '{text}'.",
            "Shoot {name} a text that says '{text}'.",
            "Write to {name}: '{text}'.",
            "Could you tell {name} '{text}' in a text message?",
            "SMS to {name}: '{text}'.",
        ),
        ("Send a message to {name} saying '{text}'.", "Please let {name} know by text: {text}"),
    ),
}

# A case returns (arguments, user prompt, tool result, fact the final answer must state, final answer).
Case = tuple[dict[str, Any], str, dict[str, Any], str, str]


def weather(rng: random.Random, result_rng: random.Random, split: str) -> Case:
    city, unit = rng.choice(CITIES), rng.choice(["celsius", "fahrenheit"])
    temperature = result_rng.randint(-5, 35) if unit == "celsius" else result_rng.randint(25, 95)
    condition = result_rng.choice(["sunny", "cloudy", "rainy", "windy"])
    return (
        {"city": city, "unit": unit},
        PHRASINGS["weather"].pick(rng, split).format(city=city, unit=unit),
        {"temperature": temperature, "unit": unit, "condition": condition},
        str(temperature),
        f"It is {temperature} degrees {unit} and {condition} in {city}.",
    )


def currency(rng: random.Random, result_rng: random.Random, split: str) -> Case:
    source, target = rng.sample(CURRENCIES, 2)
    amount = rng.choice([5, 10, 20, 50, 100, 250, 1000])
    converted = round(amount * result_rng.uniform(0.2, 5.0), 2)
    return (
        {"amount": amount, "from_currency": source, "to_currency": target},
        PHRASINGS["currency"].pick(rng, split).format(amount=amount, source=source, target=target),
        {"converted": converted, "currency": target},
        f"{converted}",
        f"{amount} {source} is {converted} {target}.",
    )


def local_time(rng: random.Random, result_rng: random.Random, split: str) -> Case:
    city = rng.choice(CITIES)
    time = f"{result_rng.randint(0, 23):02d}:{result_rng.randint(0, 59):02d}"
    ask = PHRASINGS["time"].pick(rng, split).format(city=city)
    return {"city": city}, ask, {"time": time}, time, f"It is {time} in {city}."


def stock(rng: random.Random, result_rng: random.Random, split: str) -> Case:
    ticker = rng.choice(TICKERS)
    price = round(result_rng.uniform(5, 500), 2)
    return (
        {"ticker": ticker},
        PHRASINGS["stock"].pick(rng, split).format(ticker=ticker),
        {"price": price, "currency": "USD"},
        f"{price}",
        f"{ticker} trades at {price} USD.",
    )


def population(rng: random.Random, result_rng: random.Random, split: str) -> Case:
    city = rng.choice(CITIES)
    people = result_rng.randint(200_000, 9_000_000)
    return (
        {"city": city},
        PHRASINGS["population"].pick(rng, split).format(city=city),
        {"population": people},
        str(people),
        f"About {people} people live in {city}.",
    )


def event(rng: random.Random, result_rng: random.Random, split: str) -> Case:
    title = f"{rng.choice(NOUNS)} meeting"
    date = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    event_id = f"EV{result_rng.randint(1000, 9999)}"
    return (
        {"title": title, "date": date},
        PHRASINGS["event"].pick(rng, split).format(title=title, date=date),
        {"status": "created", "id": event_id},
        event_id,
        f"Done: '{title}' is on your calendar for {date} (id {event_id}).",
    )


def message(rng: random.Random, result_rng: random.Random, split: str) -> Case:
    name, word = rng.choice(NAMES), rng.choice(NOUNS)
    text = f"Bring the {word}"
    message_id = f"M{result_rng.randint(100, 999)}"
    return (
        {"to": name, "text": text},
        PHRASINGS["message"].pick(rng, split).format(name=name, text=text),
        {"status": "sent", "message_id": message_id},
        message_id,
        f"Sent to {name} (message {message_id}).",
    )


CASES: dict[str, tuple[str, Callable[[random.Random, random.Random, str], Case]]] = {
    "get_weather": ("weather", weather),
    "convert_currency": ("currency", currency),
    "get_local_time": ("time", local_time),
    "get_stock_price": ("stock", stock),
    "get_population": ("population", population),
    "create_event": ("event", event),
    "send_message": ("message", message),
}
SUITE = "tools"


def tool_item(
    id: str,
    kind: str,
    prompt: str,
    offered: list[dict],
    tool: str,
    arguments: dict[str, Any],
    result: dict[str, Any],
    fact: str,
    final: str,
) -> Item:
    """An item whose ideal exchange is one call of `tool`, its `result`, and a `final` answer stating `fact`."""
    call_id = "call_0"
    return Item(
        id=id,
        suite=SUITE,
        kind=kind,
        messages=[{"role": "user", "content": prompt}],
        tools=offered,
        answer={"name": tool, "arguments": arguments, "result": result, "fact": fact},
        ideal=[
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": call_id, "type": "function", "function": {"name": tool, "arguments": json.dumps(arguments)}}
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": json.dumps(result)},
            {"role": "assistant", "content": final},
        ],
    )


def generate(split: str, n: int, seed: int) -> list[Item]:
    """Items of `split`; the train split calls every function equally often (`draw_balanced_items`)."""

    def make(tool: str, rng: random.Random):
        kind, case = CASES[tool]
        # The tool's result depends only on the call, so the same call always gets the same result.
        probe_state = rng.getstate()
        arguments = case(rng, random.Random(0), split)[0]
        rng.setstate(probe_state)
        key = [tool, arguments]
        arguments, prompt, result, fact, final = case(rng, random.Random(canonical_key(SUITE, key)), split)
        distractors = rng.sample(sorted(set(TOOLS) - {tool}), 2)
        offered = [TOOLS[name] for name in sorted([tool, *distractors], key=lambda _: rng.random())]

        def build() -> Item:
            return tool_item(item_id(SUITE, kind, key), kind, prompt, offered, tool, arguments, result, fact, final)

        return key, build

    if split == "train":
        return draw_balanced_items(SUITE, n, seed, {tool: functools.partial(make, tool) for tool in CASES})
    return draw_items(SUITE, split, n, seed, lambda rng: make(rng.choice(sorted(CASES)), rng))
