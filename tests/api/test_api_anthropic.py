"""The Anthropic-compatible endpoint through the official anthropic SDK: text, streaming events, thinking
blocks, forced tool_use with tool_result follow-up, x-api-key auth and Anthropic-shaped errors."""

from __future__ import annotations

import anthropic
import httpx
import jsonschema
import pytest

from tests.api.conftest import MAIN_KEY

ASK = [{"role": "user", "content": "hi"}]
# seeded sampling (nanoseek's `seed`): the tiny model's greedy answer is one special token repeated, which the API
# strips from answer text, so repeatable answers with text in them come from a seed
SEEDED = {"seed": 7}
PING = {
    "type": "object",
    "properties": {"loud": {"type": "boolean"}},
    "required": ["loud"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def claude(api_server):
    return anthropic.Anthropic(base_url=api_server.url + "/anthropic", api_key=MAIN_KEY, max_retries=0)


def test_text_message_matches_the_chat_endpoint(claude, client):
    message = claude.messages.create(
        model="deepseek-chat", max_tokens=8, messages=ASK, system="Be brief.", extra_body=SEEDED
    )
    assert message.type == "message" and message.role == "assistant" and message.model == "deepseek-chat"
    assert [block.type for block in message.content] == ["text"]
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert 1 <= message.usage.output_tokens <= 8
    chat = client.chat.completions.create(
        model="deepseek-chat", max_tokens=8, seed=7, messages=[{"role": "system", "content": "Be brief."}] + ASK
    )
    assert message.content[0].text == chat.choices[0].message.content


def test_streaming_events_give_the_same_text(claude):
    whole = claude.messages.create(model="deepseek-chat", max_tokens=8, messages=ASK, extra_body=SEEDED)
    with claude.messages.stream(model="deepseek-chat", max_tokens=8, messages=ASK, extra_body=SEEDED) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[0].text == whole.content[0].text
    assert streamed.stop_reason == whole.stop_reason and streamed.usage.output_tokens == whole.usage.output_tokens


def test_a_matched_stop_sequence_is_reported(claude):
    free = claude.messages.create(model="deepseek-chat", max_tokens=24, messages=ASK, extra_body=SEEDED)
    text = free.content[0].text
    stop = text[len(text) // 2 :][:3]  # a piece of the greedy answer, so the same request must stop there
    assert stop.strip(), text
    whole = claude.messages.create(
        model="deepseek-chat", max_tokens=24, messages=ASK, stop_sequences=[stop], extra_body=SEEDED
    )
    assert whole.stop_reason == "stop_sequence" and whole.stop_sequence == stop
    assert whole.content[0].text == text[: text.find(stop)]
    with claude.messages.stream(
        model="deepseek-chat", max_tokens=24, messages=ASK, stop_sequences=[stop], extra_body=SEEDED
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "stop_sequence" and streamed.stop_sequence == stop
    assert free.stop_sequence is None


def test_thinking_blocks(claude):
    message = claude.messages.create(
        model="deepseek-chat", max_tokens=12, messages=ASK, thinking={"type": "enabled", "budget_tokens": 1024}
    )
    assert [block.type for block in message.content] == ["thinking", "text"]
    with claude.messages.stream(model="deepseek-reasoner", max_tokens=12, messages=ASK) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] in (["thinking", "text"], ["thinking"])
    # a zero budget closes the thought before it starts: the thinking block is still there, empty, in both shapes
    closed = {"type": "enabled", "budget_tokens": 0}
    whole = claude.messages.create(model="deepseek-chat", max_tokens=6, messages=ASK, thinking=closed)
    with claude.messages.stream(model="deepseek-chat", max_tokens=6, messages=ASK, thinking=closed) as stream:
        streamed = stream.get_final_message()
    for message in (whole, streamed):
        assert [block.type for block in message.content] == ["thinking", "text"]
        assert message.content[0].thinking == ""


def test_forced_tool_use_and_tool_result(claude):
    tools = [{"name": "ping", "description": "ping a host", "input_schema": PING}]
    message = claude.messages.create(
        model="deepseek-chat", max_tokens=64, messages=ASK, tools=tools, tool_choice={"type": "tool", "name": "ping"}
    )
    uses = [block for block in message.content if block.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "ping" and message.stop_reason == "tool_use"
    jsonschema.validate(uses[0].input, PING)
    follow_up = ASK + [
        {"role": "assistant", "content": message.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "pong"}]},
    ]
    answer = claude.messages.create(model="deepseek-chat", max_tokens=4, messages=follow_up, tools=tools)

    def prompt_size(usage):
        return usage.input_tokens + usage.cache_read_input_tokens

    assert prompt_size(answer.usage) > prompt_size(message.usage)


def test_auth_and_errors_in_anthropic_shape(api_server):
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=api_server.url + "/anthropic", api_key="sk-wrong", max_retries=0).messages.create(
            model="x", max_tokens=4, messages=ASK
        )
    response = httpx.post(
        f"{api_server.url}/anthropic/v1/messages", headers={"x-api-key": MAIN_KEY}, json={"model": "x", "messages": ASK}
    )  # max_tokens is required
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and "max_tokens" in body["error"]["message"]
