"""`nanoseek serve --model smollm2-135m-instruct` (a real ChatML checkpoint, fetched by name) answering the
official openai SDK: chat under every served name, a grammar-enforced Hermes tool call, JSON Output and chat
prefix completion; FIM is a clear 400 because the checkpoint has no FIM tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.api.conftest import free_port, wait_until_healthy

# the server loads a 135M model; a busy 2-core machine makes every step slower
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
# A request's planning (with its grammar build) may take 5 s by default, and a first grammar over SmolLM2's 49k-token
# vocabulary (its tokenizer table too) took longer than that at low priority on a loaded machine: a 400 that says
# nothing about the tool-call grammars checked here (tests/api/test_api_hardening.py checks the limit itself).
PLAN = ("--plan-seconds", "300")
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def server(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "NANOSEEK_DB_PATH": str(tmp_path_factory.mktemp("smol") / "web.sqlite3")}
    command = [sys.executable, "-m", "nanoseek.cli", "serve", "--model", "smollm2-135m-instruct", "--port", str(port)]
    command += PLAN
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, url, 600)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", timeout=600)


@pytest.mark.parametrize("model", ["deepseek-chat", "deepseek-coder", "deepseek-reasoner"])
def test_chat_answers_under_every_served_name(client, model):
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=24, seed=0
    )  # seeded: an answer sampled at temperature 1 could end at once, with no content
    message = reply.choices[0].message
    assert message.content
    if model == "deepseek-reasoner":  # thinking mode over a model without one: the answer comes directly
        assert not message.reasoning_content


def test_tool_call_in_the_hermes_shape(client):
    reply = client.chat.completions.create(
        model="deepseek-chat",
        messages=[{"role": "user", "content": "What is the weather in Paris right now?"}],
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=120,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)


def test_json_output_is_json(client):
    reply = client.chat.completions.create(
        model="deepseek-chat",
        messages=[{"role": "user", "content": "Give the capital of France as JSON with the key capital."}],
        response_format={"type": "json_object"},
        max_tokens=40,
        temperature=0,
    )
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_prefix_completion_continues_the_assistant_message(server):
    beta = openai.OpenAI(base_url=f"{server}/beta", api_key="unused", timeout=600)
    reply = beta.chat.completions.create(
        model="deepseek-chat",
        messages=[
            {"role": "user", "content": "Write a Python function that adds two numbers."},
            {"role": "assistant", "content": "```python\ndef add(", "prefix": True},
        ],
        max_tokens=30,
        temperature=0,
        stop=["```"],
    )
    assert "return" in reply.choices[0].message.content


def test_fim_is_a_clear_400_without_fim_tokens(server):
    beta = openai.OpenAI(base_url=f"{server}/beta", api_key="unused", timeout=600)
    with pytest.raises(openai.BadRequestError, match="no fill-in-the-middle tokens"):
        beta.completions.create(model="deepseek-chat", prompt="def add(a, b):\n", suffix="\n", max_tokens=8)


def test_serve_with_no_model_serves_the_shipped_adapter_on_its_fetched_base(
    smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory
):
    """The README's main command: the default (nanoseek/default_adapter/ merged into SmolLM2, fetched by name) in
    nanoseek's own chat format, so deep thinking and tool calls come back as DeepSeek's fields."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "NANOSEEK_DEFAULT_MODEL"}
    env["NANOSEEK_DB_PATH"] = str(tmp_path_factory.mktemp("default") / "web.sqlite3")
    command = [sys.executable, "-m", "nanoseek.cli", "serve", "--port", str(port), *PLAN]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, url, 600)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=600)
        question = [{"role": "user", "content": "What is 12 + 30?"}]
        # seeded: thinking mode samples whatever the request's temperature, and a sample may close the thought at once
        reply = client.chat.completions.create(model="deepseek-reasoner", messages=question, max_tokens=96, seed=0)
        message = reply.choices[0].message
        assert message.reasoning_content, "the adapter thinks in <think> before it answers"
        # strict (DeepSeek's beta): the grammar holds the arguments to the schema; without it a sampled call may
        # wrap them in quotes, as this adapter did once ('{"city": "Lisbon"}' with the quotes)
        strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
        strict["function"]["parameters"] = {**WEATHER["function"]["parameters"], "additionalProperties": False}
        beta = openai.OpenAI(base_url=f"{url}/beta", api_key="unused", timeout=600)
        asked = [{"role": "user", "content": "What's the weather like in Lisbon right now?"}]
        # greedy: a sampled reply chose to answer without the tool once in a full CI run
        call = beta.chat.completions.create(
            model="deepseek-chat", messages=asked, tools=[strict], max_tokens=64, temperature=0
        )
        calls = call.choices[0].message.tool_calls or []
        assert [c.function.name for c in calls] == ["get_weather"]
        assert json.loads(calls[0].function.arguments) == {"city": "Lisbon"}
    finally:
        process.terminate()
        process.wait(timeout=60)
