"""nanoseek's API over vLLM (`nanoseek serve --backend vllm`, nanoseek/engine/remote.py) on SmolLM2-135M-Instruct:
the same SDK checks as over nanoseek's own engine (test_api_smollm2.py's tests, imported and run here against the
vLLM backend: every served name, a grammar-enforced Hermes tool call, JSON Output, chat prefix completion, FIM's
clear 400), plus what travels through the backend: greedy text equal to nanoseek's engine on the same weights,
logprobs, stop strings, seeds, prefix-cache hits in usage, a JSON Schema (what the backend refuses is
tests/engine/test_remote_engine.py's, over a scripted server).

vLLM's CPU build pins other fastapi and transformers versions than nanoseek, so it lives in its own virtual
environment: `bash .ci/vllm-env` makes `.venv-vllm` (or set NANOSEEK_VLLM_PYTHON to an interpreter that has
vLLM). Without one these tests skip, saying so.

NANOSEEK_VLLM_PYTHON=.venv-vllm/bin/python nice -n 19 python3 -m pytest tests/api/test_api_vllm.py -x -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.api.conftest import free_port, wait_until_healthy
from tests.api.test_api_smollm2 import (  # noqa: F401 - collected here: the same checks, over vLLM
    test_chat_answers_under_every_served_name,
    test_fim_is_a_clear_400_without_fim_tokens,
    test_json_output_is_json,
    test_prefix_completion_continues_the_assistant_message,
    test_tool_call_in_the_hermes_shape,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def smol_folder(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder in bf16 (what vLLM loads; the native engine too)."""
    from nanoseek.model.convert import convert

    return convert(str(smollm2_gguf), tmp_path_factory.mktemp("smol") / "SmolLM2-135M-Instruct", "bf16")


@pytest.fixture(scope="module")
def server(vllm_python: str, smol_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    logs = tmp_path_factory.mktemp("vllm-log")
    env = {**os.environ, "NANOSEEK_DB_PATH": str(logs / "web.sqlite3"), "VLLM_CPU_KVCACHE_SPACE": "1"}
    command = [
        *(sys.executable, "-m", "nanoseek.cli", "serve", "--model", str(smol_folder), "--port", str(port)),
        *("--backend", "vllm", "--vllm-python", vllm_python, "--vllm-args", "--max-model-len 2048 --enforce-eager"),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, url, 1500)
        yield url
    finally:
        process.terminate()  # nanoseek's shutdown stops the vLLM server it started
        process.wait(timeout=120)


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", timeout=600)


QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]


def test_the_first_tokens_distribution_matches_nanoseeks_engine_on_the_same_weights(client, smol_folder: Path):
    """Same prompt ids (nanoseek renders them for both), same bf16 weights: the top candidates of the first token
    agree within bf16 rounding. (Greedy text may still part at a near tie: here the top two are 0.1 nats apart.)"""
    from nanoseek.engine import Engine, Request, SamplingParams
    from nanoseek.eval.backends import EngineBackend

    served = client.chat.completions.create(
        model="deepseek-chat", messages=QUESTION, max_tokens=1, temperature=0, logprobs=True, top_logprobs=5
    )
    remote = {entry.token: entry.logprob for entry in served.choices[0].logprobs.content[0].top_logprobs}
    native = EngineBackend(Engine.from_checkpoint(str(smol_folder)))
    try:
        prompt_ids = native.chat(QUESTION, max_tokens=1, temperature=0.0)[0].prompt_ids
        params = SamplingParams(max_tokens=1, temperature=0, logprobs=True, top_logprobs=20)
        first = native.engine.generate([Request(prompt_ids, params)])[0].logprobs[0]
    finally:
        native.close()
    local = {entry.token: entry.logprob for entry in first.top_logprobs}
    assert list(remote)[0] in list(local)[:3], (remote, local)
    for token, logprob in remote.items():
        assert token in local and abs(local[token] - logprob) < 0.15, (token, logprob, local.get(token))


def test_logprobs_stop_strings_and_seeds(client):
    reply = client.chat.completions.create(
        model="deepseek-chat",
        messages=QUESTION,
        max_tokens=12,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    content = reply.choices[0].logprobs.content
    assert content and all(len(entry.top_logprobs) == 3 for entry in content)
    assert all(entry.logprob <= 0 and entry.top_logprobs[0].logprob >= entry.logprob - 1e-4 for entry in content)
    text = reply.choices[0].message.content
    stop = text.split()[1]  # the second word: the answer must end just before it
    stopped = client.chat.completions.create(
        model="deepseek-chat", messages=QUESTION, max_tokens=12, temperature=0, stop=[stop]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[: text.index(stop)]
    seeded = [
        client.chat.completions.create(model="deepseek-chat", messages=QUESTION, max_tokens=12, seed=7)
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]  # sampled at temperature 1, repeatable by its seed


def test_json_schema_through_structured_outputs(client):
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model="deepseek-chat",
        messages=[{"role": "user", "content": "Pick a colour. Answer in JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema, "strict": True}},
        max_tokens=30,
        temperature=0,
    )
    assert json.loads(reply.choices[0].message.content)["colour"] in ("red", "green", "blue")


def test_a_repeated_long_prompt_is_a_prefix_cache_hit(server):
    system = "You are a careful assistant. " * 40  # a few hundred tokens: several of vLLM's cache blocks
    body = {
        "model": "deepseek-chat",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": "Say hi."}],
        "max_tokens": 4,
        "temperature": 0,
    }
    first = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=600).json()["usage"]
    second = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=600).json()["usage"]
    assert second["prompt_cache_hit_tokens"] > 0.8 * second["prompt_tokens"], (first, second)
    assert second["prompt_cache_hit_tokens"] + second["prompt_cache_miss_tokens"] == second["prompt_tokens"]
