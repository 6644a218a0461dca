"""Eval test helpers: a backend that answers every evaluated item with its `ideal` turns (a perfect model)
or with a fixed wrong reply, to prove that the scorers, runner and report see right and wrong answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nanoseek.eval import cli
from nanoseek.eval.backends import Reply
from nanoseek.eval.runner import EVAL_SPLITS, read_records, results_path
from nanoseek.tasks import SUITES, generate, splits


def _key(messages: list[dict[str, Any]]) -> str:
    return json.dumps([{k: m.get(k) for k in ("role", "content", "tool_calls")} for m in messages], sort_keys=True)


class ScriptedBackend:
    """Replies from the items' ideal turns (perfect=True) or with an unhelpful refusal (perfect=False)."""

    tool_grammar = "none"  # its calls are the items' own

    def __init__(self, n: int, seed: int, perfect: bool = True, name: str = "oracle") -> None:
        self.name, self.perfect, self.calls = name, perfect, 0
        self.by_prompt: dict[str, Any] = {}
        self.by_fim: dict[tuple[str, str], Any] = {}
        items = [
            item
            for suite in SUITES
            for split in splits(suite)
            if split in EVAL_SPLITS
            for item in generate(suite, split, n, seed, at_most=True)
        ]
        for item in items:
            if item.messages:
                self.by_prompt[_key(item.messages)] = item.ideal[0]
                if item.suite == "tools":
                    self.by_prompt[_key(item.messages + item.ideal[:2])] = item.ideal[2]
                if item.suite == "multiturn":  # every turn's history, and each question asked alone
                    chat = item.messages + item.ideal
                    for turn in range(2, len(chat), 2):
                        self.by_prompt[_key(chat[: turn + 1])] = chat[turn + 1]
                        self.by_prompt[_key(chat[turn : turn + 1])] = chat[turn + 1]
            else:
                self.by_fim[(item.meta["prefix"], item.meta["suffix"])] = item.answer

    def close(self) -> None:
        pass

    def not_applicable(self, suite):
        return None

    def chat(
        self,
        messages,
        *,
        tools=None,
        json_mode=False,
        thinking=False,
        max_tokens=256,
        temperature=0.0,
        n=1,
        seed=None,
        thinking_budget=None,
    ) -> list[Reply]:
        self.calls += 1
        if not self.perfect:
            return [Reply(content="I'm sorry, but I can't help with that.", reasoning="hmm", reasoning_tokens=1)] * n
        ideal = self.by_prompt[_key(messages)]
        reasoning = ideal.get("reasoning_content", "")
        tokens = len(reasoning.split())
        if thinking_budget is not None:
            tokens = min(tokens, thinking_budget)
        return [
            Reply(
                content=ideal.get("content") or "",
                reasoning=reasoning,
                tool_calls=ideal.get("tool_calls", []),
                finish_reason="stop",
                reasoning_tokens=tokens,
            )
        ] * n

    def fim(self, prefix, suffix, *, max_tokens, stop=None) -> Reply:
        self.calls += 1
        middle = self.by_fim[(prefix, suffix)] if self.perfect else "<no idea>\n"
        if stop:  # as a server would: cut at the first stop string
            middle = middle.split(stop[0])[0]
        return Reply(content=middle, finish_reason="stop")


@pytest.fixture
def scripted_backend():
    return ScriptedBackend


def run_every_suite_cli(source: list[str], name: str, n: int, out: Path) -> None:
    """The eval CLI over every suite with budgets small enough for the tiny model, replies from `source`
    (`--model PATH` or `--base-url URL ...`); every split of every suite must have `n` records of model `name`."""
    argv = [
        *source,
        "--name",
        name,
        "--suite",
        "all",
        "--n",
        str(n),
        "--samples",
        "2",
        "--budgets",
        "2,6",
        "--max-tokens",
        "6",
        "--code-max-tokens",
        "8",
        "--concurrency",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    for suite in SUITES:
        for split in [s for s in EVAL_SPLITS if s in splits(suite)]:
            records = read_records(results_path(out / name, suite, split))
            assert len(records) == n and all(r["model"] == name and r["split"] == split for r in records), suite


@pytest.fixture
def every_suite_cli():
    return run_every_suite_cli


def serve(model, tmp_path_factory):
    """A real nanoseek API server (uvicorn, 127.0.0.1, random port, key `sk-eval`) over `model`; yields its URL."""
    import socket
    import threading
    import time

    import uvicorn

    from nanoseek.api.app import create_app
    from nanoseek.api.settings import KeyPolicy, Settings

    settings = Settings(
        model=model,
        api_keys=[KeyPolicy("sk-eval")],
        max_batch=4,
        kv_budget_tokens=8192,
        web=False,
        db_path=tmp_path_factory.mktemp("eval_web") / "web.sqlite3",
    ).validate()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the nanoseek server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def live_nanoseek_server(tiny_checkpoint, tmp_path_factory):
    """A live nanoseek server over the tiny random model."""
    yield from serve(tiny_checkpoint, tmp_path_factory)
