"""RL rollouts through vLLM (nanoseek/train/rl.py with `rollout_backend = "vllm"`, RemoteEngine.load_weights): the
server samples from the weights it was last handed, matching nanoseek's engine on them, and a GRPO run draws its
rollouts from one vLLM server for the whole stage. Skips, saying so, without vLLM (`bash .ci/vllm-env`).

nice -n 19 python3 -m pytest tests/train/test_train_rl_vllm.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nanoseek.engine import Engine, Request, SamplingParams
from nanoseek.engine.remote import RemoteEngine, write_rollout_weights
from nanoseek.model.loader import load_checkpoint
from nanoseek.model.random_init import make_random_checkpoint
from nanoseek.train.config import RLConfig
from nanoseek.train.rl import train_rl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
# vLLM's CPU attention takes head sizes of 32 and up: the tiny shape with 32-wide heads
VLLM_ARGS = ["--enforce-eager", "--max-model-len", "2048", "--dtype", "float32"]


@pytest.fixture(autouse=True)
def small_kv_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: vLLM's CPU default takes more than a shared machine has


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny32") / "model"
    return make_random_checkpoint(folder, shape="tiny", vocab_size=512, seed=3, init_std=0.2, hidden_size=128)


def first_token_logprobs(engine, prompt: list[int]) -> dict[int, float]:
    params = SamplingParams(max_tokens=1, temperature=0, logprobs=True, top_logprobs=5)
    entry = engine.generate([Request(prompt, params)])[0].logprobs[0]
    return {alternative.token_id: alternative.logprob for alternative in entry.top_logprobs}


def test_the_server_samples_from_the_weights_it_was_handed(vllm_python: str, checkpoint: Path, tmp_path: Path):
    loaded = load_checkpoint(checkpoint)
    model, tokenizer = loaded.model, loaded.tokenizer
    prompt = tokenizer.encode("def add(a, b):")
    served_folder = tmp_path / "weights"
    tokenizer.save(served_folder)
    write_rollout_weights(model, served_folder)  # the layout a server that takes new weights starts on
    remote = RemoteEngine.launch_vllm(
        served_folder, python=vllm_python, extra_args=VLLM_ARGS, weight_updates=True, log_path=tmp_path / "vllm.log"
    )
    try:
        for round_ in range(2):
            native = Engine(model, tokenizer)
            try:
                expected = first_token_logprobs(native, prompt)
            finally:
                native.shutdown()
            served = first_token_logprobs(remote, prompt)
            assert list(served) == list(expected), (round_, served, expected)
            assert all(abs(served[t] - expected[t]) < 1e-3 for t in served), (round_, served, expected)
            before = served
            with torch.no_grad():  # an RL step's worth of change: the server must follow it
                torch.manual_seed(round_)
                for parameter in model.parameters():
                    parameter.add_(torch.randn_like(parameter) * 0.05)
            remote.load_weights(model, served_folder)
        assert first_token_logprobs(remote, prompt) != before
    finally:
        remote.shutdown()


def test_grpo_steps_draw_their_rollouts_from_vllm(
    vllm_python: str, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NANOSEEK_VLLM_PYTHON", vllm_python)
    monkeypatch.setenv("NANOSEEK_VLLM_ARGS", " ".join(VLLM_ARGS))
    loaded = load_checkpoint(checkpoint)
    config = RLConfig(
        steps=2,
        prompts_per_step=2,
        samples_per_prompt=2,
        max_tokens=12,
        eval_every=0,
        checkpoint_every=1,
        rollout_backend="vllm",
        lr=1e-3,
        warmup_steps=0,
    )
    row = train_rl(loaded.model, loaded.tokenizer, config, tmp_path / "rl")
    rows = [json.loads(line) for line in (tmp_path / "rl" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [0, 1] and row["step"] == 1
    assert all(0 < r["completion_tokens"] <= 12 for r in rows if "reward" in r)
    assert (tmp_path / "rl" / "vllm-weights" / "model.safetensors").is_file()
