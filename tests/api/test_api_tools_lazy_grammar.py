"""`auto`'s lazy tool grammar through a live server and the openai SDK, when its build is slow or fails: a request
waits for it (on the event loop, past the plan limit) and gets well-formed calls while /health and other clients
are served; a build that fails, or overruns `grammar_seconds`, leaves the request unconstrained and says so (the
X-Nanoseek-Tool-Grammar header, a warning, the nanoseek_tool_grammar_total counter in /metrics).

The model always opens a tool call (`opener_checkpoint`): unconstrained it writes the opener over and over and no
call parses; under the grammar its calls are well-formed. Builds are slowed or broken by a stand-in for
`chat.chat_constraint` that the test holds until it releases it."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from nanoseek.api import chat
from nanoseek.api.errors import APIError
from nanoseek.tokenizer import special_tokens as st

PLAN_SECONDS = 1.0
PING = {"type": "object", "properties": {"loud": {"type": "boolean"}}, "required": ["loud"]}
ASK = [{"role": "user", "content": "Ping them."}]


def tools(description: str) -> list[dict]:
    """A non-strict function; each test describes it its own way, so its grammar is a build of its own."""
    return [{"type": "function", "function": {"name": "ping", "description": description, "parameters": PING}}]


@pytest.fixture(scope="module")
def server(start_server, opener_checkpoint):
    return start_server(model=opener_checkpoint(st.TOOL_CALLS_BEGIN), plan_seconds=PLAN_SECONDS)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


class HeldBuilds:
    """Stands in for chat.chat_constraint: counts the builds and holds each until `release` (or fails them)."""

    def __init__(self, fail: bool = False) -> None:
        self.real, self.fail = chat.chat_constraint, fail
        self.started, self.release = threading.Event(), threading.Event()
        self.count = 0

    def __call__(self, *args):
        self.count += 1
        self.started.set()
        if self.fail:
            raise APIError(400, "The engine cannot compile this request's grammar: held to fail", param="tools")
        self.release.wait(120)
        return self.real(*args)


def ask(client: openai.OpenAI, description: str):
    return client.chat.completions.with_raw_response.create(
        model="deepseek-chat", messages=ASK, tools=tools(description), max_tokens=48, temperature=0
    )


def grammar_counter(server, outcome: str) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(f'nanoseek_tool_grammar_total{{outcome="{outcome}"}}'):
            return float(line.split()[-1])
    return 0.0


def well_formed_calls(raw) -> list:
    choice = raw.parse().choices[0]
    assert choice.finish_reason in ("tool_calls", "length") and choice.message.tool_calls
    assert {call.function.name for call in choice.message.tool_calls} == {"ping"}
    return choice.message.tool_calls


def test_a_slow_build_is_waited_for_and_applied_while_health_and_other_clients_are_served(server, client, monkeypatch):
    held = HeldBuilds()
    monkeypatch.setattr(chat, "chat_constraint", held)
    applied_before = grammar_counter(server, "applied")
    with ThreadPoolExecutor(6) as pool:
        # six identical requests, more than the four planning threads: they share one build and hold no thread
        asked = [pool.submit(ask, client, "slow") for _ in range(6)]
        assert held.started.wait(60)
        time.sleep(2 * PLAN_SECONDS)  # past the plan limit (the old optional grammar was dropped at half of it)
        started = time.monotonic()
        assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
        other = client.chat.completions.create(model="deepseek-chat", messages=ASK, max_tokens=4, temperature=0)
        assert other.choices[0].finish_reason == "length" and time.monotonic() - started < 30
        assert not any(request.done() for request in asked)
        held.release.set()
        answers = [request.result(timeout=120) for request in asked]
    assert held.count == 1
    for raw in answers:
        assert raw.headers["x-nanoseek-tool-grammar"] == "applied"
        well_formed_calls(raw)
    assert grammar_counter(server, "applied") == applied_before + 6


def test_a_failed_build_serves_without_the_grammar_and_says_so(server, client, monkeypatch, caplog):
    held = HeldBuilds(fail=True)
    monkeypatch.setattr(chat, "chat_constraint", held)
    caplog.set_level(logging.WARNING, logger="nanoseek.api")
    for _ in range(2):
        raw = ask(client, "fails")
        assert raw.headers["x-nanoseek-tool-grammar"] == "skipped; reason=compile_error"
        assert not raw.parse().choices[0].message.tool_calls  # the model's openers, unconstrained: no call parses
    assert held.count == 1  # the failure is remembered: not built again
    assert grammar_counter(server, "skipped_compile_error") == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "nanoseek.api" and "tool grammar" in r.getMessage()]
    assert len(warnings) == 2 and "held to fail" in warnings[0] and "ping" in warnings[0]


def test_a_build_that_overruns_grammar_seconds_serves_without_it_and_the_next_request_gets_it(
    server, client, monkeypatch
):
    held = HeldBuilds()
    monkeypatch.setattr(chat, "chat_constraint", held)
    monkeypatch.setattr(server.app.state.planner, "grammar_seconds", 1.0)
    started = time.monotonic()
    raw = ask(client, "overruns")
    assert raw.headers["x-nanoseek-tool-grammar"] == "skipped; reason=timeout" and time.monotonic() - started < 60
    assert not raw.parse().choices[0].message.tool_calls
    assert grammar_counter(server, "skipped_timeout") == 1
    held.release.set()  # the build goes on and ends: the next request of these tools has the grammar
    monkeypatch.setattr(server.app.state.planner, "grammar_seconds", 60.0)
    again = ask(client, "overruns")
    assert again.headers["x-nanoseek-tool-grammar"] == "applied"
    well_formed_calls(again)
    assert held.count <= 2  # joined while it ran, or built again after it ended (xgrammar's cache then has it)


def test_the_anthropic_and_responses_endpoints_say_whether_the_grammar_applied(server, monkeypatch):
    """They plan through chat's start_chat: the same wait, and the same header on their answers, streamed or not."""
    monkeypatch.setattr(chat, "chat_constraint", HeldBuilds(fail=True))
    anthropic_tools = [{"name": "ping", "description": "other endpoints", "input_schema": PING}]
    responses_tools = [{"type": "function", "name": "ping", "description": "other endpoints", "parameters": PING}]
    for path, body in [
        ("/anthropic/v1/messages", {"messages": ASK, "tools": anthropic_tools, "max_tokens": 8}),
        ("/responses", {"input": "Ping them.", "tools": responses_tools, "max_output_tokens": 8}),
    ]:
        for stream in (False, True):
            answer = httpx.post(
                f"{server.url}{path}", json={"model": "deepseek-chat", **body, "stream": stream}, timeout=120
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-nanoseek-tool-grammar"] == "skipped; reason=compile_error"
