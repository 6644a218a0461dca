"""OpenAI's structured outputs (`response_format` json_schema, strict) through the official openai SDK, as `llm
--schema` and `client.chat.completions.parse` send them: every answer parses and matches the schema, because the
grammar enforces it; strict schemas outside DeepSeek's strict subset are a 400."""

from __future__ import annotations

import json
from typing import Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "Describe a person."}]


class Verdict(BaseModel):  # a schema whose every answer is short, so no sample runs out of tokens
    answer: Literal["yes", "no"]
    sure: bool


@pytest.mark.parametrize("strict", [True, False])
def test_json_schema_answers_always_match(client, strict):
    response_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": strict}}
    for seed in range(3):
        response = client.chat.completions.create(
            model="deepseek-chat", messages=ASK, max_tokens=200, seed=seed, response_format=response_format
        )
        choice = response.choices[0]
        if choice.finish_reason == "length":
            continue
        jsonschema.validate(json.loads(choice.message.content), PERSON)
    # streamed the same
    chunks = client.chat.completions.create(
        model="deepseek-chat", messages=ASK, max_tokens=200, seed=0, response_format=response_format, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    jsonschema.validate(json.loads(text), PERSON)


def test_parse_with_a_pydantic_model_and_in_thinking_mode(client):
    parsed = client.chat.completions.parse(
        model="deepseek-chat", messages=ASK, max_tokens=64, seed=1, response_format=Verdict
    )
    assert isinstance(parsed.choices[0].message.parsed, Verdict)
    verdict = {"name": "verdict", "schema": Verdict.model_json_schema() | {"additionalProperties": False}}
    thought = client.chat.completions.create(
        model="deepseek-v4-flash",
        messages=ASK,
        max_tokens=64,
        seed=1,
        response_format={"type": "json_schema", "json_schema": verdict | {"strict": True}},
        extra_body={"thinking": {"type": "enabled", "budget_tokens": 6}},
    )
    message = thought.choices[0].message
    assert message.model_extra["reasoning_content"] is not None  # the schema applies after the thought
    Verdict.model_validate_json(message.content)


def test_strict_schema_outside_the_subset_is_400(client):
    loose = {
        "type": "object",
        "properties": {"name": {"type": "string", "minLength": 2}},
        "required": ["name"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": loose, "strict": True}}
    with pytest.raises(openai.BadRequestError, match="minLength"):
        client.chat.completions.create(
            model="deepseek-chat", messages=ASK, max_tokens=8, response_format=response_format
        )
    with pytest.raises(openai.BadRequestError, match="json_schema"):
        client.chat.completions.create(
            model="deepseek-chat", messages=ASK, max_tokens=8, response_format={"type": "json_schema"}
        )
