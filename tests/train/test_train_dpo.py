"""The DPO stage (nanoseek.train.dpo) on a tiny random ChatML base, no network: its pairs come from training data
only and mask in exactly the answers; after a short LoRA SFT the stage lowers the DPO loss and widens the
chosen-minus-rejected margin on its pairs, a run killed with -9 and resumed logs what one uninterrupted run does,
and its adapter loads as the merged model it exports.

nice -n 10 python3 -m pytest tests/train/test_train_dpo.py -x -q
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nanoseek.eval.scorers import is_refusal
from nanoseek.model.adapter import extend_vocabulary
from nanoseek.model.loader import load_checkpoint
from nanoseek.tasks import generate, handwritten, heldout_wording_in
from nanoseek.train import dpo
from nanoseek.train.cli import main as train_main
from nanoseek.train.config import DPOConfig
from nanoseek.train.recipe import dpo_config, load_recipe, optional_stages, training_stages
from tests.train.conftest import wait_for_log_lines
from tests.train.test_train_lora import chatml_base_checkpoint

REPO = Path(__file__).resolve().parents[2]
MIXTURE = {"safety": 160, "tools": 40}


@pytest.fixture(scope="module")
def chatml_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chatml_base_checkpoint(tmp_path_factory.mktemp("chatml_base") / "base")


@pytest.fixture(scope="module")
def pairs() -> list[dpo.PreferencePair]:
    return dpo.preference_pairs(MIXTURE, seed=5)


def test_pairs_come_from_training_items_only(pairs: list[dpo.PreferencePair]):
    """As SFT's data (tests/train/test_train_data.py): no held-out item, no held-out wording, no hand-written
    question, in any prompt or answer."""
    assert len(pairs) == sum(MIXTURE.values())
    assert pairs == dpo.preference_pairs(MIXTURE, seed=5)
    prompts = {m["content"] for p in pairs for m in p.prompt if m["role"] == "user"}
    for suite in MIXTURE:
        for seed in (0, 5, 7):
            for item in generate(suite, "heldout", 40, seed):
                assert item.messages[0]["content"] not in prompts, f"held-out {item.id} leaked into DPO pairs"
    texts = [str(m.get("content", "")) for p in pairs for m in (*p.prompt, p.chosen, p.rejected)]
    leaks = [(text, heldout_wording_in(text)) for text in texts if heldout_wording_in(text)]
    assert not leaks, leaks[:3]
    assert not {row["prompt"] for row in handwritten.rows()} & prompts


def test_pairs_prefer_the_right_decision(pairs: list[dpo.PreferencePair]):
    by_source = {source: [p for p in pairs if p.source == source] for source in {p.source for p in pairs}}
    assert set(by_source) == {"safety/harmful", "safety/harmless", "tools"}
    # Half harmful, though 40% of training requests are (safety.TRAIN_HARMFUL_SHARE); the training-only
    # look-alikes are there.
    assert len(by_source["safety/harmful"]) == len(by_source["safety/harmless"]) == MIXTURE["safety"] // 2
    assert any("garden" in p.prompt[0]["content"] or "contract" in p.prompt[0]["content"] for p in pairs)
    for pair in by_source["safety/harmful"]:
        assert is_refusal(pair.chosen["content"]) and not is_refusal(pair.rejected["content"])
        rejected = dpo.COMPLIANT_OPENERS if pair.rejected_is_opener else dpo.COMPLIANT_ANSWERS.values()
        assert pair.rejected["content"] in rejected
    for pair in by_source["safety/harmless"]:
        assert is_refusal(pair.rejected["content"]) and not is_refusal(pair.chosen["content"])
        assert pair.rejected["content"].startswith("I can't help with that.")  # the SFT data's refusal
    for pair in by_source["tools"]:
        assert pair.chosen["tool_calls"] and pair.tools and not pair.rejected.get("tool_calls")


def test_only_the_answers_tokens_are_masked_in(chatml_base: Path, pairs: list[dpo.PreferencePair]):
    base = load_checkpoint(chatml_base, dtype="float32")
    _, tokenizer = extend_vocabulary(base.model, base.tokenizer)
    for pair in [next(p for p in pairs if p.source == source) for source in ("safety/harmful", "safety/harmless")]:
        tokenized = dpo.tokenize_pair(pair, tokenizer, max_tokens=512)
        (chosen_ids, chosen_mask), (rejected_ids, rejected_mask) = tokenized["chosen"], tokenized["rejected"]
        prompt = chosen_ids[: chosen_mask.index(1)]
        assert rejected_ids[: rejected_mask.index(1)] == prompt  # one prompt, two answers
        assert set(chosen_mask[len(prompt) :]) == {1} and set(rejected_mask[len(prompt) :]) == {1}
        answer = tokenizer.decode(chosen_ids[len(prompt) :], skip_special_tokens=False)
        assert answer == pair.chosen["content"] + tokenizer.id_to_token(tokenizer.eos_id)  # an answer ends the turn
        opener = tokenizer.decode(rejected_ids[len(prompt) :], skip_special_tokens=False)
        if pair.rejected_is_opener:  # an opener stops mid-sentence: no end-of-sentence to push down instead
            assert opener == pair.rejected["content"]
        # Cut to the last tokens: the answer stays whole.
        short = dpo.tokenize_pair(pair, tokenizer, max_tokens=len(chosen_ids) - len(prompt) + 2)
        assert short["chosen"][0][-len(chosen_ids) + len(prompt) :] == chosen_ids[len(prompt) :]


def test_the_smol_recipe_has_dpo_as_an_optional_stage():
    recipe = load_recipe("smol")
    assert "dpo" in optional_stages(recipe) and "dpo" not in training_stages(recipe)
    config = dpo_config(recipe)
    assert recipe["dpo"]["init_from"] == "sft" and config.beta == 0.1 and config.steps <= 60
    assert set(config.mixture) <= set(dpo.PAIR_SOURCES)


def write_recipe(path: Path, base: Path) -> Path:
    path.write_text(
        f"""seed = 3
stages = ["sft"]

[base]
model = "{base}"

[sft]
init_from = "base"
seq_len = 96
steps = 2
batch_size = 2
lr = 5e-3
eval_every = 0
eval_rows = 2
checkpoint_every = 2
lora = {{ rank = 4, alpha = 8 }}

[sft.mixture]
safety = 4

[dpo]
init_from = "sft"
steps = 12
batch_size = 4
lr = 3e-3
beta = 0.5
eval_pairs = 4
checkpoint_every = 3
micro_batch_tokens = 600
lora = {{ rank = 4, alpha = 8 }}

[dpo.mixture]
safety = 16
"""
    )
    return path


def dpo_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "dpo" / "log.jsonl").read_text().splitlines()]


@pytest.mark.timeout(1800)  # a hang guard: three tiny runs at nice 19 beside a training run take minutes
def test_dpo_stage_learns_resumes_exactly_and_ships_its_adapter(chatml_base: Path, tmp_path: Path):
    recipe = write_recipe(tmp_path / "dpo.toml", chatml_base)
    one_run = tmp_path / "one_run"
    assert train_main(["all", "--recipe", str(recipe), "--out", str(one_run)]) == 0
    assert not (one_run / "dpo").exists()  # optional: `train all` runs the recipe's `stages` only
    assert train_main(["dpo", "--recipe", str(recipe), "--out", str(one_run)]) == 0
    rows = dpo_rows(one_run)
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(12))
    # Policy == reference at the first step: the loss is log 2 and no margin yet.
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-3) and abs(steps[0]["reward_margin"]) < 1e-3
    assert sum(r["loss"] for r in steps[-3:]) < sum(r["loss"] for r in steps[:3])
    assert sum(r["reward_margin"] for r in steps[-3:]) > sum(r["reward_margin"] for r in steps[:3])
    assert "eval_reward_accuracy" in rows[-1] and rows[-1]["step"] == 12

    # On all the training pairs, after training: chosen answers gained on rejected ones against the reference.
    stored = json.loads((one_run / "dpo" / dpo.PAIRS_NAME).read_text())
    config = DPOConfig(steps=12, beta=0.5, micro_batch_tokens=600)
    trained = load_checkpoint(one_run / "dpo" / "adapter")
    scores = dpo.evaluate(trained.model, stored["train"], config, trained.tokenizer.pad_id)
    assert scores["eval_loss"] < math.log(2) and scores["eval_reward_margin"] > 0
    assert scores["eval_reward_accuracy"] > 0.5

    # The same adapter trained on (one artifact ships), and it loads as the merged export.
    state = torch.load(one_run / "dpo" / "checkpoint.pt", weights_only=False)["model"]
    assert state.keys() == torch.load(one_run / "sft" / "checkpoint.pt", weights_only=False)["model"].keys()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        merged = load_checkpoint(one_run / "dpo" / "model").model(ids)
        adapted = trained.model(ids)
        before = load_checkpoint(one_run / "sft" / "adapter").model(ids)
    assert torch.allclose(merged, adapted, atol=1e-4) and not torch.allclose(adapted, before, atol=1e-4)

    # Killed with -9 after a checkpoint, then resumed: the same log as the one uninterrupted run.
    killed = tmp_path / "killed"
    for prepared in ("base", "tokenizer", "sft"):
        shutil.copytree(one_run / prepared, killed / prepared)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "nanoseek.train.cli", "dpo", "--recipe", str(recipe), "--out", str(killed)]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "dpo" / "log.jsonl"
    try:
        wait_for_log_lines(process, log, 4)
    finally:
        process.kill()  # unless it ended
    assert process.wait() == -signal.SIGKILL
    # killed after step 3's checkpoint (steps 0-3 logged), before the last step
    assert 4 <= len(log.read_text().splitlines()) < 12, "the run must be killed mid-way"
    assert train_main(["dpo", "--recipe", str(recipe), "--out", str(killed)]) == 0
    resumed = dpo_rows(killed)
    assert [r["loss"] for r in resumed if "loss" in r] == [r["loss"] for r in steps]
    assert resumed[-1] == rows[-1]  # the held-out evaluation at the end too
    assert json.loads((killed / "dpo" / dpo.PAIRS_NAME).read_text()) == stored
