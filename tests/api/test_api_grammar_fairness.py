"""One client's slow schemas do not starve the other clients' grammars, through a live server and the openai SDK.

Four deliberately slow strict schemas used to take all four required-grammar threads for minutes, and meanwhile
every other JSON or `required` tool request waited 60 s for a 400. Now an API key builds on at most half of the
threads: its further builds wait in its own queue, and another key's JSON-schema and `required` requests are
served while its slow schemas are being built. The builds are held by a stand-in for `chat.chat_constraint`
(compiling a slow schema in xgrammar would burn minutes of the machine's CPU, and cannot be stopped)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from nanoseek.api import chat

ASK = [{"role": "user", "content": "Answer in json: is it raining?"}]
VERDICT = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}, "sure": {"type": "boolean"}},
    "required": ["answer", "sure"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def server(start_server, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text("sk-greedy\nsk-other\n")
    # a limit no loaded machine reaches: the held builds must not time out (400, or 503 for the queued two) while
    # the other key's requests are served at nice 19 beside a training run; what is checked is who waits for whom
    return start_server(api_keys_file=keys, grammar_seconds=900.0)


class HeldSlowBuilds:
    """Stands in for chat.chat_constraint: holds the builds for functions named slow* until `release`."""

    def __init__(self) -> None:
        self.real = chat.chat_constraint
        self.started: list[str] = []
        self.release = threading.Event()

    def __call__(self, served, tools, tool_choice, response_format):
        names = [tool.function.name for tool in tools]
        if any(name.startswith("slow") for name in names):
            self.started.extend(names)
            self.release.wait(120)
        return self.real(served, tools, tool_choice, response_format)


def function(name: str, strict: bool) -> dict:
    return {"type": "function", "function": {"name": name, "strict": strict, "parameters": VERDICT}}


def test_a_clients_slow_schemas_leave_the_other_clients_grammar_threads(server, monkeypatch):
    held = HeldSlowBuilds()
    monkeypatch.setattr(chat, "chat_constraint", held)
    greedy = openai.OpenAI(base_url=f"{server.url}/beta", api_key="sk-greedy", max_retries=0, timeout=300)
    other = openai.OpenAI(base_url=f"{server.url}/beta", api_key="sk-other", max_retries=0, timeout=300)

    def slow(name: str):
        tools = [function(name, strict=True)]  # strict: a grammar the request cannot do without
        return greedy.chat.completions.create(
            model="deepseek-chat", messages=ASK, tools=tools, tool_choice="required", max_tokens=48, temperature=0
        )

    with ThreadPoolExecutor(4) as pool:
        slow_requests = [pool.submit(slow, f"slow{i}") for i in range(4)]  # four schemas of their own: four builds
        deadline = time.monotonic() + 60
        while len(held.started) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # time for more to start, which they did before: all four threads
        assert len(held.started) == 2, held.started  # the other two wait in sk-greedy's queue, holding no thread

        schema = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT}}
        answer = other.chat.completions.create(
            model="deepseek-chat", messages=ASK, response_format=schema, max_tokens=48, temperature=0
        )
        assert answer.choices[0].message.content.startswith("{")  # served, under its grammar
        call = other.chat.completions.create(
            model="deepseek-chat",
            messages=ASK,
            tools=[function("verdict", strict=True)],
            tool_choice="required",
            max_tokens=48,
            temperature=0,
        )
        assert call.choices[0].finish_reason in ("tool_calls", "length")
        assert not any(request.done() for request in slow_requests)  # still being built meanwhile

        held.release.set()
        answers = [request.result(timeout=300) for request in slow_requests]  # the queued two started in turn
    assert sorted(held.started) == ["slow0", "slow1", "slow2", "slow3"]
    assert all(answer.choices[0].finish_reason in ("tool_calls", "length") for answer in answers)
