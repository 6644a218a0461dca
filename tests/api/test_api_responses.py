"""The Responses API (/v1/responses) through the official openai SDK: `client.responses.create` streamed and not,
reasoning items and `reasoning.effort`, function calls and their outputs in a later turn, text.format
json_schema, and the same text the chat endpoint gives for the same conversation and seed."""

from __future__ import annotations

import json

import openai
import pytest

PING = {
    "type": "object",
    "properties": {"loud": {"type": "boolean"}},
    "required": ["loud"],
    "additionalProperties": False,
}
TOOLS = [{"type": "function", "name": "ping", "description": "ping a host", "parameters": PING, "strict": True}]


def test_plain_response_matches_chat(client):
    response = client.responses.create(
        model="deepseek-chat", input="hi", instructions="Be brief.", max_output_tokens=10, temperature=0
    )
    assert response.object == "response" and response.status in ("completed", "incomplete")
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    chat = client.chat.completions.create(
        model="deepseek-chat",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        max_tokens=10,
        temperature=0,
    )
    assert response.output_text == chat.choices[0].message.content
    usage = response.usage
    assert usage.input_tokens == chat.usage.prompt_tokens and usage.output_tokens == chat.usage.completion_tokens
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_streamed_response_with_reasoning_items_matches_the_whole_one(client):
    kwargs = dict(model="deepseek-v4-flash", input=[{"role": "user", "content": "hi"}], max_output_tokens=16)
    whole = client.responses.create(extra_body={"seed": 4}, reasoning={"effort": "high"}, **kwargs)
    assert whole.output[0].type == "reasoning"
    thought = whole.output[0].content[0].text
    assert whole.usage.output_tokens_details.reasoning_tokens >= 1
    events = list(client.responses.create(stream=True, extra_body={"seed": 4}, reasoning={"effort": "high"}, **kwargs))
    kinds = [event.type for event in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    streamed_thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    streamed_text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed_thought == thought and streamed_text == whole.output_text
    final = events[-1].response
    assert [item.type for item in final.output] == [item.type for item in whole.output]
    # effort none: no thinking at all
    plain = client.responses.create(reasoning={"effort": "none"}, **kwargs)
    assert [item.type for item in plain.output] == ["message"]


def test_function_calls_and_their_outputs(client):
    response = client.responses.create(
        model="deepseek-chat", input="ping it", tools=TOOLS, tool_choice="required", max_output_tokens=40
    )
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls and calls[0].name == "ping"
    json.loads(calls[0].arguments)
    events = list(
        client.responses.create(
            model="deepseek-chat",
            input="ping it",
            tools=TOOLS,
            tool_choice="required",
            max_output_tokens=40,
            stream=True,
        )
    )
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done
    for finished in done:  # a sampled reply may make several calls: each call's deltas add up to its arguments
        streamed = "".join(
            d.delta
            for d in events
            if d.type == "response.function_call_arguments.delta" and d.item_id == finished.item_id
        )
        assert streamed == finished.arguments
        if events[-1].type == "response.completed":  # a call cut by max_output_tokens may hold partial JSON
            json.loads(streamed)
    follow_up = client.responses.create(
        model="deepseek-chat",
        input=[
            {"role": "user", "content": "ping it"},
            {"type": "function_call", "call_id": calls[0].call_id, "name": "ping", "arguments": calls[0].arguments},
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "pong"},
        ],
        tools=TOOLS,
        max_output_tokens=8,
    )
    assert follow_up.status in ("completed", "incomplete")


def test_json_schema_format_and_unsupported_parts(client):
    verdict = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model="deepseek-chat",
        input="Is it so?",
        max_output_tokens=32,
        text={"format": {"type": "json_schema", "name": "verdict", "schema": verdict, "strict": True}},
    )
    assert json.loads(response.output_text)["answer"] in ("yes", "no")
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        client.responses.create(model="deepseek-chat", input="hi", previous_response_id="resp_1")
    with pytest.raises(openai.BadRequestError, match="function tools"):
        client.responses.create(model="deepseek-chat", input="hi", tools=[{"type": "web_search"}])
    with pytest.raises(openai.UnprocessableEntityError, match="reasoning_effort"):
        client.responses.create(model="deepseek-v4-pro", input="hi", reasoning={"effort": "huge"})
