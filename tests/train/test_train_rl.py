"""The RL stage (nanoseek.train.rl): group-relative advantages, the policy-gradient update, learning a reward
through real engine rollouts and the curves' table from their log, exact resume, and `nanoseek train rl` on the
tiny recipe."""

from __future__ import annotations

import copy
import gc
import json
import shutil
import weakref
from pathlib import Path

import pytest
import torch

from nanoseek.eval.backends import Reply
from nanoseek.model.loader import load_checkpoint
from nanoseek.tasks.item import Item
from nanoseek.train.config import LoopConfig, RLConfig
from nanoseek.train.optim import make_optimizer
from nanoseek.train.rl import (
    Rollout,
    advantages,
    curve_markdown,
    curve_table,
    micro_batches,
    policy_gradient_loss,
    prompts_for_step,
    train_rl,
)

REPO = Path(__file__).resolve().parents[2]


def even_share(_item: Item, reply: Reply) -> float:
    """A reward a random model can learn in a few steps: the share of its first 6 tokens that are even."""
    first = reply.token_ids[:6]
    return sum(t % 2 == 0 for t in first) / max(1, len(first))


def small_config(steps: int, **overrides) -> RLConfig:
    settings = dict(
        steps=steps,
        prompts_per_step=4,
        samples_per_prompt=4,
        max_tokens=6,
        lr=2e-2,
        warmup_steps=0,
        eval_every=0,
        checkpoint_every=1,
        pool=16,
        mixture={"instructions": 1.0},
    )
    return RLConfig(**{**settings, **overrides})


def rollout(reward: float, completion: list[int] | None = None) -> Rollout:
    return Rollout(item=None, prompt=[1, 2, 3], completion=completion or [4, 5], reward=reward, reasoning_tokens=0)


def test_advantages_are_relative_to_the_group_and_equal_groups_teach_nothing():
    assert advantages([rollout(1.0), rollout(0.0), rollout(0.0), rollout(1.0)]) == [1.0, -1.0, -1.0, 1.0]
    assert advantages([rollout(0.0)] * 4) == [0.0] * 4
    assert advantages([rollout(1.0)] * 3) == [0.0] * 3


def test_prompts_follow_the_mixture_weights_and_are_a_function_of_the_step():
    pools = {
        "math": [f"m{i}" for i in range(50)],
        "instructions": [f"i{i}" for i in range(50)],
        "tools": [f"t{i}" for i in range(50)],
    }
    config = small_config(1, prompts_per_step=16, mixture={"math": 3.0, "instructions": 1.0, "tools": 0.0})
    steps = [prompts_for_step(pools, config, step) for step in range(100)]
    assert steps[7] == prompts_for_step(pools, config, 7) and steps[7] != steps[8]
    assert all(len(set(prompts)) == 16 for prompts in steps)
    drawn = [p for prompts in steps for p in prompts]
    math_share = sum(p.startswith("m") for p in drawn) / len(drawn)
    assert abs(math_share - 0.75) < 0.03 and not any(p.startswith("t") for p in drawn)


def test_the_update_raises_rewarded_replies_and_lowers_penalised_ones(tiny_checkpoint: Path):
    model = load_checkpoint(tiny_checkpoint).model.float().train()
    good, bad = rollout(1.0, [10, 11, 12, 13]), rollout(0.0, [20, 21, 22, 23])

    def logprob(r: Rollout) -> float:
        with torch.no_grad():
            sequence = torch.tensor([r.prompt + r.completion])
            logprobs = model(sequence[:, :-1]).log_softmax(-1)[0, len(r.prompt) - 1 :]
            return float(logprobs.gather(-1, sequence[0, len(r.prompt) :, None]).sum())

    before = logprob(good), logprob(bad)
    optimizer = make_optimizer(model, LoopConfig(steps=1, batch_size=1, lr=1e-2, weight_decay=0.0))
    batch = list(zip([good, bad], advantages([good, bad])))
    policy_gradient_loss(model, batch, total_tokens=8, pad_id=0).backward()
    optimizer.step()
    assert logprob(good) > before[0] and logprob(bad) < before[1]


def test_micro_batches_keep_the_padded_tokens_of_a_pass_in_budget_and_sum_to_the_whole_gradient(tiny_checkpoint: Path):
    lengths = [2, 9, 3, 3, 14, 1, 5]  # completions after a 3-token prompt
    rollouts = [rollout(float(i % 2), list(range(10, 10 + n))) for i, n in enumerate(lengths)]
    weighted = list(zip(rollouts, advantages(rollouts)))
    batches = micro_batches(weighted, max_tokens=24)
    assert [pair for batch in batches for pair in batch] == weighted  # every reply once, in order
    for batch in batches:
        width = max(len(r.prompt) + len(r.completion) for r, _ in batch)
        assert len(batch) * width <= 24 or len(batch) == 1, batch
    assert [len(batch) for batch in batches] == [2, 2, 1, 2]  # 5+12 | 6+6 | 17 alone (34 with another) | 4+8

    model = load_checkpoint(tiny_checkpoint).model.float().train()

    def gradients(passes) -> list[torch.Tensor]:
        model.zero_grad()
        for batch in passes:
            policy_gradient_loss(model, batch, total_tokens=sum(lengths), pad_id=0).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    whole, split = gradients([weighted]), gradients(batches)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole, split))


def test_a_few_steps_raise_the_reward_through_real_rollouts(tiny_checkpoint: Path, tmp_path: Path):
    checkpoint = load_checkpoint(tiny_checkpoint)
    model = checkpoint.model.float()
    train_rl(model, checkpoint.tokenizer, small_config(12, eval_every=5, eval_items=8), tmp_path, reward=even_share)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    updates = [r for r in rows if "reward" in r]
    rewards = [r["reward"] for r in updates]
    assert len(rewards) == 12 and all(r["groups_learning"] > 0 for r in updates[:3])
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.15, rewards
    assert (tmp_path / "rewards.png").stat().st_size > 0 and (tmp_path / "checkpoint.pt").exists()
    # The curves' table: one row per held-out evaluation (before any update, after 5, 10 and the last, 12), with
    # the means of the updates since the row before, as the log has them.
    accuracy = {r["step"]: r["heldout_accuracy"] for r in rows if "heldout_accuracy" in r}
    assert sorted(accuracy) == [0, 5, 10, 12]
    table = curve_table(rows)
    assert [(t["step"], t["heldout_accuracy"], t["updates"]) for t in table] == [
        (0, accuracy[0], 0),
        (5, accuracy[5], 5),
        (10, accuracy[10], 5),
        (12, accuracy[12], 2),
    ]
    assert table[0]["reward"] is None and table[2]["reward"] == pytest.approx(sum(rewards[5:10]) / 5)
    tokens = [r["completion_tokens"] for r in updates]
    assert table[3]["completion_tokens"] == pytest.approx(sum(tokens[10:]) / 2)
    written = (tmp_path / "rewards.md").read_text().splitlines()
    row_10 = f"| 10 | {accuracy[10]:.3f} | 5 | {sum(rewards[5:10]) / 5:.3f} | {sum(tokens[5:10]) / 5:.1f} | "
    assert any(line.startswith(row_10) for line in written), written
    assert f"| 0 | {accuracy[0]:.3f} | 0 | – | – | – |" in written


def test_the_curves_table_ends_with_the_updates_after_the_last_evaluation():
    rows = [{"step": 0, "heldout_accuracy": 0.25}] + [
        {"step": s, "reward": s / 10, "completion_tokens": 10 + s, "reasoning_tokens": s} for s in range(3)
    ]
    assert curve_table(rows)[1] == {
        "step": 3,
        "heldout_accuracy": None,  # not evaluated after update 3 (eval_every 0, or a stopped run)
        "updates": 3,
        "reward": pytest.approx(0.1),
        "completion_tokens": pytest.approx(11.0),
        "reasoning_tokens": pytest.approx(1.0),
    }
    assert "| 3 | – | 3 | 0.100 | 11.0 | 1.0 |" in curve_markdown(curve_table(rows))


def test_stopping_and_resuming_gives_the_same_weights_as_one_run(tiny_checkpoint: Path, tmp_path: Path):
    def fresh():
        checkpoint = load_checkpoint(tiny_checkpoint)
        return checkpoint.model.float(), checkpoint.tokenizer

    model, tokenizer = fresh()
    train_rl(model, tokenizer, small_config(3), tmp_path / "whole", reward=even_share)
    first, tokenizer = fresh()
    train_rl(first, tokenizer, small_config(2), tmp_path / "split", reward=even_share)
    resumed, tokenizer = fresh()  # a new process would start from the SFT weights too; the checkpoint wins
    train_rl(resumed, tokenizer, small_config(3), tmp_path / "split", reward=even_share)
    start = load_checkpoint(tiny_checkpoint).model.float().state_dict()
    whole = model.state_dict()
    assert any(not torch.equal(start[k], whole[k]) for k in whole), "RL never changed the weights"
    assert all(torch.equal(whole[k], v) for k, v in resumed.state_dict().items())
    # How passes are cut does not change a gradient: a checkpoint resumes across it; the learning rate does.
    train_rl(resumed, tokenizer, small_config(3, micro_batch_tokens=8), tmp_path / "split", reward=even_share)
    with pytest.raises(ValueError, match="lr"):
        train_rl(resumed, tokenizer, small_config(3, lr=1.0), tmp_path / "split", reward=even_share)


def test_each_steps_rollout_model_is_freed_when_its_engine_is_done(tiny_checkpoint: Path, tmp_path: Path):
    # The smol recipe's rollouts decode from a fresh merged copy of the model every step: each must be gone
    # once its step's engine is, by reference counting alone (the cyclic collector counts objects, not bytes,
    # and let a real run keep every step's copy until the kernel killed it).
    checkpoint = load_checkpoint(tiny_checkpoint)
    model = checkpoint.model.float()
    copies: list[weakref.ref] = []
    live_after_step: list[int] = []

    def rollout_model() -> torch.nn.Module:
        fresh = copy.deepcopy(model)
        copies.append(weakref.ref(fresh))
        return fresh

    def count_live(_step: int) -> None:
        live_after_step.append(sum(ref() is not None for ref in copies))

    gc.collect()
    gc.disable()
    try:
        train_rl(
            model,
            checkpoint.tokenizer,
            small_config(3),
            tmp_path,
            reward=even_share,
            rollout_model=rollout_model,
            on_checkpoint=count_live,
        )
    finally:
        gc.enable()
    assert len(copies) == 3 and live_after_step == [0, 0, 0]


@pytest.mark.slow
def test_train_rl_on_the_tiny_recipe_exports_a_servable_checkpoint(tiny_checkpoint: Path, tmp_path: Path, run_train):
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, run / "sft" / "model")
    (run / "tokenizer").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_checkpoint / name, run / "tokenizer" / name)
    done = run_train(["rl", "--recipe", "tiny", "--out", str(run)], cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (run / "rl" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [0, 1] and any("heldout_accuracy" in r for r in rows)
    dest = tmp_path / "exported"
    exported = run_train(["export", "--recipe", "tiny", "--out", str(run), "--to", str(dest)], cwd=REPO)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert json.loads((dest / "generation_config.json").read_text())["trained_steps"] == 2  # the rl stage's
    assert load_checkpoint(dest).chat_template
