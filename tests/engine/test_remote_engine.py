"""RemoteEngine (nanoseek/engine/remote.py) against a scripted OpenAI-compatible completions server on 127.0.0.1:
what it sends (token-id prompts, stop ids, structured outputs, cache salt, logprobs by id), what it makes of the
stream (text detokenized and stop-matched here, n samples, usage with the server's cached tokens on the last
event, cancellation), thinking budgets, minimums and a grammar after the thought as several calls, and the API served
over it. The real vLLM server is tests/api/test_api_vllm.py's.

nice -n 19 python3 -m pytest tests/engine/test_remote_engine.py -q
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from nanoseek.engine import Constraint, SamplingParams
from nanoseek.engine import Request as EngineRequest
from nanoseek.engine.remote import RemoteEngine
from nanoseek.tokenizer.output_parser import think_end_id
from nanoseek.tokenizer.tokenizer import Tokenizer
from tests.api.conftest import free_port

CACHED = 64  # what the scripted server says it found in its prefix cache


class Script:
    """The scripted server's state: the bodies it received and its "model": after a prompt ending in a token of
    `successors` it follows that chain (so a call that goes on from earlier output goes on with the chain),
    after any other prompt it says `reply_ids`; two ids per chunk, up to max_tokens or a stop id (included)."""

    def __init__(self, reply_ids: list[int]) -> None:
        self.reply_ids = reply_ids
        self.successors: dict[int, int] = {}
        self.bodies: list[dict] = []
        self.delay = 0.0

    def reply(self, body: dict) -> tuple[list[int], str, int | None]:
        ids, last = [], body["prompt"][-1]
        if last not in self.successors:
            ids = list(self.reply_ids)
        while last in self.successors and len(ids) <= body["max_tokens"]:
            last = self.successors[last]
            ids.append(last)
        for position, token in enumerate(ids[: body["max_tokens"]]):
            if token in body["stop_token_ids"]:
                return ids[: position + 1], "stop", token
        return ids[: body["max_tokens"]], "length" if len(ids) >= body["max_tokens"] else "stop", None


def scripted_app(script: Script) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict:
        return {"data": [{"id": "scripted", "max_model_len": 256}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        script.bodies.append(body)
        if body.get("seed") == 400:
            return JSONResponse({"error": {"message": "scripted refusal"}}, status_code=400)

        async def chunks() -> Iterator[str]:
            produced = 0
            for index in range(body["n"]):
                ids, finish, stop_reason = script.reply(body)
                for start in range(0, len(ids), 2):
                    piece = ids[start : start + 2]
                    produced += len(piece)
                    last = start + 2 >= len(ids)
                    choice = {
                        "index": index,
                        "text": "(the server's text is not used)",
                        "token_ids": piece,
                        "finish_reason": finish if last else None,
                        "stop_reason": stop_reason if last else None,
                    }
                    if body.get("logprobs") is not None:
                        choice["logprobs"] = {
                            "tokens": [f"token_id:{t}" for t in piece],
                            "token_logprobs": [-0.5 for _ in piece],
                            "top_logprobs": [{f"token_id:{t}": -0.5, "token_id:7": -0.25} for t in piece],
                        }
                    await asyncio.sleep(script.delay)
                    yield f"data: {json.dumps({'choices': [choice]})}\n\n"
            details = {"cached_tokens": CACHED}
            usage = {"prompt_tokens": len(body["prompt"]), "completion_tokens": produced}
            yield f"data: {json.dumps({'choices': [], 'usage': {**usage, 'prompt_tokens_details': details}})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint: Path) -> Tokenizer:
    return Tokenizer.load(tiny_checkpoint)


@pytest.fixture(scope="module")
def script(tokenizer: Tokenizer) -> Script:
    return Script(tokenizer.encode("Hello there, general Kenobi. Bye now"))


@pytest.fixture(scope="module")
def scripted_url(script: Script) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(scripted_app(script), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the scripted server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def engine(scripted_url: str, tiny_checkpoint: Path, script: Script) -> RemoteEngine:
    script.bodies.clear()
    script.delay = 0.0
    script.successors = {}
    return RemoteEngine(scripted_url, tiny_checkpoint)


def test_the_servers_context_and_the_checkpoints_stop_ids(engine: RemoteEngine):
    assert engine.model == "scripted" and engine.cache.slot_capacity == 256
    assert engine.tokenizer.eos_id in engine.eos_token_ids


def test_text_comes_from_the_ids_and_a_stop_string_ends_it_here(engine: RemoteEngine, script: Script, tokenizer):
    prompt = tokenizer.encode("Say something")
    params = SamplingParams(max_tokens=50, temperature=0, stop=["Kenobi"], seed=3)
    completion = engine.generate([EngineRequest(prompt, params, cache_salt="owner-1")])[0]
    assert completion.text == "Hello there, general "
    assert completion.finish_reason == "stop"
    assert completion.usage.prompt_tokens == len(prompt) and completion.usage.cached_tokens == CACHED
    assert completion.usage.completion_tokens == len(completion.token_ids) < len(script.reply_ids)
    sent = script.bodies[-1]
    assert sent["prompt"] == prompt and sent["stop"] == ["Kenobi"] and sent["seed"] == 3
    assert sent["cache_salt"] == "owner-1" and sent["skip_special_tokens"] is False
    assert set(sent["stop_token_ids"]) == set(engine.eos_token_ids) and sent["return_token_ids"] is True


def test_a_stop_id_ends_the_sample_without_text(engine: RemoteEngine, script: Script, tokenizer):
    bye = script.reply_ids[-1]
    params = SamplingParams(max_tokens=50, temperature=0, stop_token_ids=[bye])
    completion = engine.generate([EngineRequest([5, 6], params)])[0]
    assert completion.finish_reason == "stop" and completion.token_ids[-1] == bye
    assert completion.text == tokenizer.decode(script.reply_ids[:-1])


def test_max_tokens_n_samples_and_logprobs_by_id(engine: RemoteEngine, script: Script, tokenizer):
    params = SamplingParams(max_tokens=3, temperature=1.0, n=2, logprobs=True, top_logprobs=1)
    completion = engine.generate([EngineRequest([5, 6], params)])[0]
    assert [o.index for o in completion.outputs] == [0, 1]
    for output in completion.outputs:
        assert output.finish_reason == "length" and output.token_ids == script.reply_ids[:3]
        assert output.text == tokenizer.decode(script.reply_ids[:3])
        assert [entry.token_id for entry in output.logprobs] == script.reply_ids[:3]
        assert all(entry.logprob == -0.5 and entry.top_logprobs[0].token_id == 7 for entry in output.logprobs)
        assert output.logprobs[0].bytes == list(tokenizer.token_bytes(script.reply_ids[0]))
    assert completion.usage.completion_tokens == 6
    assert script.bodies[-1]["logprobs"] == 1 and script.bodies[-1]["return_tokens_as_token_ids"] is True


def test_grammars_go_as_structured_outputs(engine: RemoteEngine, script: Script):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    for constraint, expected in [
        (Constraint.ebnf('root ::= "yes" | "no"'), {"grammar": 'root ::= "yes" | "no"'}),
        (Constraint.json_schema(schema), {"json": schema}),
        (Constraint.regex("[a-z]+"), {"regex": "[a-z]+"}),
    ]:
        engine.generate([EngineRequest([5], SamplingParams(max_tokens=2, constraint=constraint))])
        assert script.bodies[-1]["structured_outputs"] == expected


def chain(*ids: int) -> dict[int, int]:
    return dict(zip(ids, ids[1:]))


THOUGHT = list(range(100, 110))  # ten thought tokens, then </think>, then the answer and EOS


def thinking_script(script: Script, engine: RemoteEngine, tokenizer) -> tuple[int, int]:
    end, eos = think_end_id(tokenizer), tokenizer.eos_id
    script.successors = chain(6, *THOUGHT, end, 110, 111, eos) | chain(120, end)
    return end, eos


def test_a_thought_over_budget_gets_its_end_appended_and_goes_on(engine: RemoteEngine, script: Script, tokenizer):
    end, eos = thinking_script(script, engine, tokenizer)
    params = SamplingParams(max_tokens=50, think_end_token=end, max_thinking_tokens=4, seed=1)
    completion = engine.generate([EngineRequest([5, 6], params)])[0]
    assert completion.token_ids == [*THOUGHT[:4], end, 110, 111, eos] and completion.finish_reason == "stop"
    first, second = script.bodies[-2:]
    assert first["max_tokens"] == 4 and end in first["stop_token_ids"]  # the thought's call stops at its end
    assert second["prompt"] == [5, 6, *THOUGHT[:4], end] and end not in second["stop_token_ids"]
    assert completion.usage.completion_tokens == 8 and completion.usage.cached_tokens == CACHED


def test_a_thought_ended_too_early_is_extended(engine: RemoteEngine, script: Script, tokenizer):
    end, eos = thinking_script(script, engine, tokenizer)
    params = SamplingParams(max_tokens=50, think_end_token=end, min_thinking_tokens=12, thinking_extension_ids=[120])
    completion = engine.generate([EngineRequest([5, 6], params)])[0]
    # ten thought tokens, an end drawn at 10 and at 11 (each replaced by the extension), accepted at 12
    assert completion.token_ids == [*THOUGHT, 120, 120, end, 110, 111, eos]


def test_a_grammar_for_after_the_thought_is_sent_once_it_is_over(engine: RemoteEngine, script: Script, tokenizer):
    end, eos = thinking_script(script, engine, tokenizer)
    params = SamplingParams(max_tokens=50, constraint=Constraint.json_object(), constraint_after_token=end)
    completion = engine.generate([EngineRequest([5, 6], params)])[0]
    assert completion.token_ids == [*THOUGHT, end, 110, 111, eos]
    thought_call, answer_call = script.bodies[-2:]
    assert "structured_outputs" not in thought_call and answer_call["structured_outputs"] == {
        "json": {"type": "object"}
    }


def test_a_prompt_longer_than_the_servers_context_is_refused(engine: RemoteEngine):
    with pytest.raises(ValueError, match="context of 256 tokens"):
        engine.check(EngineRequest([5] * 250, SamplingParams(max_tokens=8)))


def test_a_request_the_server_refuses_is_a_value_error(engine: RemoteEngine):
    # the scripted server refuses seed 400 as vLLM refuses a request it cannot run (a grammar it cannot compile)
    with pytest.raises(ValueError, match="refused the request"):
        engine.generate([EngineRequest([5], SamplingParams(max_tokens=2, seed=400))])
    assert engine.stats()["running"] == 0


def test_cancel_ends_every_sample_with_cancelled(engine: RemoteEngine, script: Script):
    script.delay = 0.05

    async def run() -> list:
        events = []
        request = EngineRequest([5, 6], SamplingParams(max_tokens=50), request_id="to-cancel")
        async for event in engine.stream(request):
            events.append(event)
            engine.cancel("to-cancel")
        return events

    events = asyncio.run(run())
    assert events[-1].finish_reason == "cancelled" and events[-1].usage is not None
    assert engine.stats()["running"] == 0


def test_the_api_over_the_remote_engine(engine: RemoteEngine, script: Script, tiny_checkpoint: Path, tmp_path: Path):
    from nanoseek.api.app import create_app
    from nanoseek.api.settings import settings_from_env
    from tests.api.conftest import LiveServer

    settings = settings_from_env(environ={}, model=tiny_checkpoint, db_path=tmp_path / "web.sqlite3")
    app = create_app(settings, engine=engine)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    live = LiveServer(f"http://127.0.0.1:{port}", app, server, threading.Thread(target=server.run, daemon=True))
    live.thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        body = {"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40}
        reply = httpx.post(f"{live.url}/chat/completions", json=body, timeout=30).json()
        assert reply["choices"][0]["message"]["content"].startswith("Hello there")
        assert reply["usage"]["prompt_cache_hit_tokens"] == CACHED
        health = httpx.get(f"{live.url}/health").json()  # vLLM compiles the grammars: none for nanoseek to build
        assert health["decode"] == "remote server (vLLM or SGLang)" and health["grammars_ready"] is True
        thinking = {**body, "model": "deepseek-reasoner", "thinking": {"type": "enabled", "budget_tokens": 4}}
        answer = httpx.post(f"{live.url}/chat/completions", json=thinking, timeout=30).json()
        assert answer["choices"][0]["finish_reason"] in ("stop", "length")
        thought_call, answer_call = script.bodies[-2:]  # the budget of 4 ended the thought's call; forced on
        assert thought_call["max_tokens"] == 4 and answer_call["prompt"][-1] == think_end_id(engine.tokenizer)
    finally:
        live.stop()


def test_backend_settings_refuse_what_vllm_cannot_carry(tiny_checkpoint: Path):
    from nanoseek.api.settings import SettingsError, settings_from_env

    assert settings_from_env(environ={}, backend_url="http://127.0.0.1:1/v1").backend == "vllm"
    with pytest.raises(SettingsError, match="disk tier"):
        settings_from_env(environ={}, backend="vllm", disk_cache_gb=1.0)
    with pytest.raises(SettingsError, match="not q8_0"):
        settings_from_env(environ={}, backend="vllm", dtype="q8_0")
    with pytest.raises(SettingsError, match="backend must be"):
        settings_from_env(environ={"NANOSEEK_BACKEND": "sglang"})


def test_vllm_is_given_a_hugging_face_folder(tiny_checkpoint: Path, tmp_path: Path):
    from nanoseek.api.app import hf_folder
    from nanoseek.model.convert import convert

    assert hf_folder(tiny_checkpoint, tmp_path / "cache") == tiny_checkpoint  # already one: used as it is
    gguf = convert(str(tiny_checkpoint), tmp_path / "tiny.gguf", "f32")
    folder = hf_folder(gguf, tmp_path / "cache")
    assert folder.parent == tmp_path / "cache" and (folder / "model.safetensors").is_file()
    assert Tokenizer.load(folder).encode("def add(a, b):") == Tokenizer.load(tiny_checkpoint).encode("def add(a, b):")
    assert hf_folder(gguf, tmp_path / "cache") == folder  # converted once
