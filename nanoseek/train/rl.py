"""The RL stage: group-relative policy optimisation (GRPO, as in DeepSeek-R1) on verifiable rewards.

    nanoseek train rl --recipe default --out runs/default      # after sft; resumes like every stage
    from nanoseek.train.config import RLConfig
    from nanoseek.train.rl import train_rl

Each step draws `prompts_per_step` train-split items (a pure function of seed and step, so a resumed run
replays the same prompts), asks the model for `samples_per_prompt` sampled replies to each through the
engine (the same generation loop and output parser as the server and the evaluator: `EngineBackend`), and
scores every reply with the evaluator's own check (`verifiable_reward`: math-verify for math, exact match for
instructions, ...). A reply's advantage is its reward minus the mean of its group, over the group's
standard deviation; groups whose replies all score the same teach nothing and are skipped. The update raises
the log-probability of the sampled tokens (thought, answer and end-of-sentence) in proportion to their reply's
advantage, normalised by the step's total completion tokens (so long replies are not favoured), with one
AdamW step per batch of rollouts. The batch is used once, right after it was sampled, so GRPO's importance
ratio and its clipping are left out; the replies are sampled at the rollout temperature and scored under the
model's own (temperature 1) log-probabilities, a common simplification. There is no KL term: a small learning
rate and few steps keep the policy near the SFT model instead.

Rollouts use a fresh engine every step, built on the current weights: the native decode step packs its own
copy of them, so an engine kept across updates would fall back to the slower PyTorch path.
With `rollout_backend = "vllm"` they go through one vLLM server instead (as TRL and verl sample with vLLM),
started when the stage starts (`NANOSEEK_VLLM_PYTHON`: the interpreter that has vLLM; `NANOSEEK_VLLM_ARGS`: its
flags, e.g. "-tp 2") and handed each step's weights (`RemoteEngine.load_weights`), parsed and scored the same way.
The log (log.jsonl) has the reward, accuracy and reply lengths of every step and a greedy held-out accuracy
every `eval_every` steps; rewards.png plots them and rewards.md tabulates them by held-out evaluation.

Data parallel under `torchrun` (as the other stages):

    torchrun --nproc_per_node 2 -m nanoseek.train.cli rl --recipe default --out runs/default

every process holds the whole model and samples with its own engine the step's prompts i with i % world_size ==
rank (each reply seeded by its prompt's place in the step, so the rollouts do not depend on the number of
processes), backpropagates its share of the loss (normalised by the step's total completion tokens over all
processes), and the gradients are summed over processes before the one clipped AdamW step every process takes:
the update is one process's to float tolerance, and a checkpoint (written by rank 0: the weights are the same
everywhere) resumes on any number of processes. The held-out items are split the same way. vLLM rollouts stay
in one process: a vLLM server shards itself (`NANOSEEK_VLLM_ARGS="-tp 2"`).
"""

from __future__ import annotations

import os
import random
import shlex
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from nanoseek.engine import Engine
from nanoseek.eval import scorers
from nanoseek.eval.backends import EngineBackend, Reply
from nanoseek.fileio import write_text_atomic
from nanoseek.tasks import generate
from nanoseek.tasks.item import Item
from nanoseek.tokenizer.tokenizer import Tokenizer
from nanoseek.train.config import RLConfig
from nanoseek.train.data import train_items
from nanoseek.train.loop import (
    CHECKPOINT_NAME,
    LOG_NAME,
    append_log,
    distributed_setup,
    plot_lines,
    read_log,
    resume_stage_checkpoint,
    rewrite_log,
    save_stage_checkpoint,
)
from nanoseek.train.optim import learning_rate, make_optimizer

PLOT_NAME, TABLE_NAME = "rewards.png", "rewards.md"
# Settings a checkpoint may be resumed with changed. How a step's passes are cut does not change its gradient
# (micro_batch: replies a pass before commit 226ded0, micro_batch_tokens since), so a checkpoint resumes across it.
ADJUSTABLE_ON_RESUME = {
    "steps",
    "eval_every",
    "checkpoint_every",
    "rollout_backend",
    "micro_batch",
    "micro_batch_tokens",
}
# Suites asked with thinking on, as the evaluator asks them.
THINKING_SUITES = {"math"}


Reward = Callable[[Item, Reply], float]


def verifiable_reward(item: Item, reply: Reply) -> float:
    """The evaluator's own check of a reply (math-verify for math, exact match for instructions, ...)."""
    return scorers.reward(item, reply.content, reply.tool_calls)


@dataclass
class Rollout:
    item: Item
    prompt: list[int]
    completion: list[int]
    reward: float
    reasoning_tokens: int


def item_pools(config: RLConfig) -> dict[str, list[Item]]:
    """The train items RL draws prompts from, per suite of the mixture, in a fixed order."""
    return {suite: train_items(suite, config.pool, config.seed) for suite in sorted(config.mixture)}


def prompts_for_step(pools: dict[str, list[Item]], config: RLConfig, step: int) -> list[Item]:
    """The step's prompts, a pure function of (seed, step): each prompt's suite drawn by its mixture weight,
    then distinct items within each suite."""
    rng = random.Random(f"rl-step:{config.seed}:{step}")
    suites = sorted(pools)
    picked = rng.choices(suites, [config.mixture[suite] for suite in suites], k=config.prompts_per_step)
    return [item for suite in suites for item in rng.sample(pools[suite], picked.count(suite))]


def thinks(item: Item) -> bool:
    return item.suite in THINKING_SUITES


def ask(
    backend: EngineBackend, item: Item, config: RLConfig, n: int, temperature: float, seed: int | None
) -> list[Reply]:
    return backend.chat(
        item.messages,
        tools=item.tools,
        json_mode=item.response_format is not None,
        thinking=thinks(item),
        max_tokens=config.max_tokens,
        temperature=temperature,
        n=n,
        seed=seed,
    )


def in_parallel(items: list[Item], work: Callable[[int, Item], Any], indices: list[int] | None = None) -> list[Any]:
    """`work(index, item)` for every item at once, so that the engine batches all their requests; `index` is the
    item's place in `items`, or `indices`' entry for it (its place in the whole step under torchrun)."""
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        return list(pool.map(work, indices or range(len(items)), items))


def this_process_share(count: int) -> list[int]:
    """The indices of `count` items this process works on: all of them, or every world_size-th under torchrun."""
    rank, world_size = distributed_setup()
    return list(range(rank, count, world_size))


def gathered(values: list[Any]) -> list[Any]:
    """Every process's `values` (each process's share of items, as `this_process_share` splits them) back in the
    items' order; `values` itself in one process."""
    world_size = distributed_setup()[1]
    if world_size == 1:
        return values
    shares: list[list[Any]] = [[] for _ in range(world_size)]
    dist.all_gather_object(shares, values)
    count = sum(map(len, shares))
    return [shares[index % world_size][index // world_size] for index in range(count)]


def collect_rollouts(
    backend: EngineBackend,
    items: list[Item],
    config: RLConfig,
    step: int,
    reward: Reward,
    indices: list[int] | None = None,
) -> list[list[Rollout]]:
    """`samples_per_prompt` scored replies to each item; the reply seeds come from each item's place in the
    step (`indices` when `items` is this process's share of it)."""

    def work(index: int, item: Item) -> list[Rollout]:
        replies = ask(
            backend,
            item,
            config,
            config.samples_per_prompt,
            config.temperature,
            seed=config.seed * 1_000_003 + step * 1_000 + index,
        )
        return [
            Rollout(item, reply.prompt_ids, reply.token_ids, reward(item, reply), reply.reasoning_tokens)
            for reply in replies
        ]

    return in_parallel(items, work, indices)


def held_out_accuracy(backend: EngineBackend, items: list[Item], config: RLConfig, reward: Reward) -> float:
    """The mean greedy reward over `items`, each process scoring its share of them."""

    def work(_index: int, item: Item) -> float:
        [reply] = ask(backend, item, config, 1, 0.0, None)
        return reward(item, reply)

    share = this_process_share(len(items))
    return statistics.fmean(gathered(in_parallel([items[i] for i in share], work)))


def advantages(group: list[Rollout]) -> list[float]:
    rewards = [r.reward for r in group]
    spread = statistics.pstdev(rewards)
    if spread == 0:
        return [0.0] * len(group)
    mean = statistics.fmean(rewards)
    return [(r - mean) / spread for r in rewards]


def policy_gradient_loss(
    model: torch.nn.Module, batch: list[tuple[Rollout, float]], total_tokens: int, pad_id: int
) -> torch.Tensor:
    """-(sum over the batch's completion tokens of advantage x log-probability) / total_tokens."""
    sequences = [r.prompt + r.completion for r, _ in batch]
    width = max(map(len, sequences))
    tokens = torch.full((len(batch), width), pad_id, dtype=torch.long)
    weights = torch.zeros(len(batch), width)
    for row, ((rollout, advantage), sequence) in enumerate(zip(batch, sequences)):
        tokens[row, : len(sequence)] = torch.tensor(sequence)
        weights[row, len(rollout.prompt) : len(sequence)] = advantage
    logits = model(tokens[:, :-1]).float()
    logprobs = -F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    return -(logprobs * weights[:, 1:].flatten()).sum() / total_tokens


def micro_batches(weighted: list[tuple[Rollout, float]], max_tokens: int) -> list[list[tuple[Rollout, float]]]:
    """The step's weighted replies in order, cut into passes of at most `max_tokens` padded tokens (rows x the
    longest row); a reply longer than that alone makes a pass."""
    batches: list[list[tuple[Rollout, float]]] = []
    batch: list[tuple[Rollout, float]] = []
    width = 0
    for pair in weighted:
        length = len(pair[0].prompt) + len(pair[0].completion)
        if batch and (len(batch) + 1) * max(width, length) > max_tokens:
            batches.append(batch)
            batch, width = [], 0
        batch.append(pair)
        width = max(width, length)
    if batch:
        batches.append(batch)
    return batches


def sum_gradients_over_processes(model: torch.nn.Module) -> None:
    """Every process's gradients summed into each (a parameter its share of the batch never reached counts
    zero), so every process takes the same optimizer step."""
    for parameter in model.parameters():
        if parameter.requires_grad:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad)


def same_start_everywhere(model: torch.nn.Module) -> None:
    """Rank 0's trainable weights on every process (as DDP starts), whatever each process loaded or drew."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                dist.broadcast(parameter.data, src=0)


def moving_mean(values: list[float], window: int) -> list[float]:
    return [statistics.fmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def plot_rewards(rows: list[dict], path: Path, title: str, window: int = 10) -> None:
    """The RL curves: sampled reward and held-out accuracy (left axis), mean reply length (right axis), by step."""
    steps = [r for r in rows if "reward" in r]
    evals = [r for r in rows if "heldout_accuracy" in r]
    xs = [r["step"] for r in steps]
    rewards = [r["reward"] for r in steps]
    plot_lines(
        path,
        title,
        "RL step",
        "reward / accuracy",
        [
            (xs, rewards, {"lw": 0.6, "alpha": 0.4, "label": "sampled reward"}),
            (xs, moving_mean(rewards, window), {"lw": 1.2, "label": f"sampled reward, mean of {window} steps"}),
            (
                [r["step"] for r in evals],
                [r["heldout_accuracy"] for r in evals],
                {"marker": "o", "label": "held-out accuracy (greedy)"},
            ),
        ],
        ylim=(0, 1),
        right_axis=(
            f"mean reply tokens (mean of {window} steps)",
            [
                (
                    xs,
                    moving_mean([r["completion_tokens"] for r in steps], window),
                    {"lw": 1, "color": "gray", "ls": "--", "label": "reply tokens"},
                ),
                (
                    xs,
                    moving_mean([r.get("reasoning_tokens", 0) for r in steps], window),
                    {"lw": 1, "color": "purple", "ls": ":", "label": "of which thinking"},
                ),
            ],
        ),
    )


def curve_table(rows: list[dict]) -> list[dict[str, Any]]:
    """The RL curves as a table, one row per greedy held-out evaluation: its accuracy after `step` updates, and the
    means over the updates since the evaluation before it (sampled reward, reply tokens, of which thinking); the
    updates after the last evaluation, if any, make a last row without an accuracy."""
    updates = [r for r in rows if "reward" in r]
    accuracy = {r["step"]: r["heldout_accuracy"] for r in rows if "heldout_accuracy" in r}
    ends = sorted(accuracy)
    if updates and updates[-1]["step"] + 1 > (ends[-1] if ends else 0):  # a "step" row is logged after its update
        ends.append(updates[-1]["step"] + 1)
    table, start = [], 0
    for end in ends:
        span = [r for r in updates if start <= r["step"] < end]
        means = {
            key: statistics.fmean(r.get(key, 0) for r in span) if span else None
            for key in ("reward", "completion_tokens", "reasoning_tokens")
        }
        table.append({"step": end, "heldout_accuracy": accuracy.get(end), "updates": len(span), **means})
        start = end
    return table


def curve_markdown(table: list[dict[str, Any]]) -> list[str]:
    """`curve_table` as Markdown lines: a figure, or "–" where there is none."""

    def cell(value: float | None, pattern: str) -> str:
        return "–" if value is None else pattern.format(value)

    lines = [
        "| after update | held-out accuracy (greedy) | updates since the row before | sampled reward (mean) "
        "| reply tokens (mean) | of which thinking |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in table:
        cells = [
            str(row["step"]),
            cell(row["heldout_accuracy"], "{:.3f}"),
            str(row["updates"]),
            cell(row["reward"], "{:.3f}"),
            cell(row["completion_tokens"], "{:.1f}"),
            cell(row["reasoning_tokens"], "{:.1f}"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_curves(rows: list[dict], png: Path, table: Path, title: str) -> None:
    """The RL curves of log rows `rows` as a PNG (`plot_rewards`) and a Markdown table (`curve_table`)."""
    plot_rewards(rows, png, title)
    heading = [f"# {title}: RL curves by update (the log's `heldout_accuracy` and `reward` rows)", ""]
    write_text_atomic(table, "\n".join([*heading, *curve_markdown(curve_table(rows)), ""]))


def vllm_rollouts(policy: torch.nn.Module, tokenizer: Tokenizer, out_dir: Path, weights: Path) -> Any:
    """A vLLM server on `policy` for the stage's rollouts (its log: OUT/rl/vllm.log), able to take new weights."""
    from nanoseek.engine.remote import RemoteEngine, write_rollout_weights

    tokenizer.save(weights)
    write_rollout_weights(policy, weights)
    return RemoteEngine.launch_vllm(
        weights,
        python=os.environ.get("NANOSEEK_VLLM_PYTHON"),
        extra_args=shlex.split(os.environ.get("NANOSEEK_VLLM_ARGS", "")),
        weight_updates=True,
        log_path=out_dir / "vllm.log",
        max_queue=1 << 12,
    )


def train_rl(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    config: RLConfig,
    out_dir: str | Path,
    resume: bool = True,
    title: str = "rl",
    on_checkpoint: Callable[[int], None] | None = None,
    engine_kwargs: dict[str, Any] | None = None,
    reward: Reward = verifiable_reward,
    rollout_model: Callable[[], torch.nn.Module] | None = None,
) -> dict[str, Any]:
    """Run GRPO for `config.steps` steps on `model` (in place); returns the last step's log row.
    `rollout_model()` gives the plain Transformer the engine samples from when `model` is not one (a LoRA
    model: its adapter merged into a copy, so rollouts decode at the base's speed). Under torchrun every process
    calls it (see the module's docstring); rank 0 logs, checkpoints and calls `on_checkpoint`."""
    rank, world_size = distributed_setup()
    is_main = rank == 0
    if world_size > 1 and config.rollout_backend == "vllm":
        raise ValueError(
            'rollout_backend = "vllm" runs in one process: start the RL stage without torchrun and let vLLM shard '
            'itself (NANOSEEK_VLLM_ARGS="-tp N")'
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path, plot_path = out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME, out_dir / PLOT_NAME
    loop = config.loop_config()
    optimizer = make_optimizer(model, loop)
    step, elapsed = 0, 0.0
    if resume and ckpt_path.exists():
        step, elapsed = resume_stage_checkpoint(
            ckpt_path, model, optimizer, config, ADJUSTABLE_ON_RESUME, "RL", "pass a fresh --out directory"
        )
    if world_size > 1:
        same_start_everywhere(model)
    # Rows logged after the checkpoint we resume from are replayed; its own held-out evaluation is kept (but a
    # step-0 one is not: the run starts over and evaluates again).
    if is_main:
        rewrite_log(
            log_path,
            [r for r in read_log(log_path) if r["step"] < step or ("heldout_accuracy" in r and r["step"] == step > 0)],
        )

    pools = item_pools(config)
    suites = sorted(pools)
    per_suite = max(1, config.eval_items // len(suites))
    heldout = [item for suite in suites for item in generate(suite, "heldout", per_suite, 1)]
    engine_settings = {
        "max_batch": min(64, config.prompts_per_step * config.samples_per_prompt),
        "kv_budget_tokens": 1 << 16,
        "max_queue": 1 << 12,
        **(engine_kwargs or {}),
    }

    weights = out_dir / "vllm-weights"
    remote = (
        vllm_rollouts(model if rollout_model is None else rollout_model(), tokenizer, out_dir, weights)
        if config.rollout_backend == "vllm"
        else None
    )

    # Rollouts are the policy's own samples: no tool-call grammar (a mask would make the sampled tokens come from
    # another distribution than the one the policy gradient is taken over). No recipe's RL mixture has tools.
    def with_backend(work: Callable[[EngineBackend], Any]) -> Any:
        policy = model if rollout_model is None else rollout_model()
        if remote is not None:
            remote.load_weights(policy, weights)
            try:
                return work(EngineBackend(remote, tool_grammar="none"))
            finally:
                model.train()
        engine = Engine(policy, tokenizer, **engine_settings)
        try:
            return work(EngineBackend(engine, tool_grammar="none"))
        finally:
            engine.shutdown()
            model.train()

    def log(row: dict) -> None:
        if is_main:
            append_log(log_path, row)

    def save() -> None:
        if not is_main:  # every process holds the same weights and optimizer state
            return
        save_stage_checkpoint(ckpt_path, model, optimizer, step, elapsed, config)
        write_curves(read_log(log_path), plot_path, out_dir / TABLE_NAME, title)
        if on_checkpoint is not None:
            on_checkpoint(step)

    try:
        if step == 0 and config.eval_every:
            accuracy = with_backend(lambda backend: held_out_accuracy(backend, heldout, config, reward))
            log({"step": 0, "heldout_accuracy": accuracy})
            if is_main:
                print(f"{title} step 0: held-out accuracy {accuracy:.3f} (greedy, {len(heldout)} items)", flush=True)
        bar = tqdm(total=config.steps, initial=step, desc=title, unit="step", dynamic_ncols=True, disable=not is_main)
        row: dict[str, Any] = {}
        while step < config.steps:
            started = time.perf_counter()
            items = prompts_for_step(pools, config, step)
            share = this_process_share(len(items))
            groups = with_backend(
                lambda backend: collect_rollouts(backend, [items[i] for i in share], config, step, reward, share)
            )
            rollout_seconds = time.perf_counter() - started
            weighted = [(r, a) for group in groups for r, a in zip(group, advantages(group)) if a != 0.0]
            # Every process's groups (without their items and prompts): the loss's normaliser, whether anything
            # learns this step, and the log are the whole step's.
            every_group = gathered([[replace(r, item=None, prompt=[]) for r in group] for group in groups])
            lr = learning_rate(loop, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            grad_norm = 0.0
            if any(any(advantages(group)) for group in every_group):
                model.train()
                total_tokens = sum(len(r.completion) for group in every_group for r in group)
                for batch in micro_batches(weighted, config.micro_batch_tokens):
                    policy_gradient_loss(model, batch, total_tokens, tokenizer.pad_id).backward()
                if world_size > 1:
                    sum_gradients_over_processes(model)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip).item()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            rollouts = [r for group in every_group for r in group]
            step += 1
            elapsed += time.perf_counter() - started
            row = {
                "step": step - 1,
                "reward": statistics.fmean(r.reward for r in rollouts),
                "groups_learning": sum(any(advantages(g)) for g in every_group),
                "completion_tokens": statistics.fmean(len(r.completion) for r in rollouts),
                "reasoning_tokens": statistics.fmean(r.reasoning_tokens for r in rollouts),
                "lr": lr,
                "grad_norm": grad_norm,
                "rollout_s": round(rollout_seconds, 2),
                "step_s": round(time.perf_counter() - started, 2),
                "elapsed_s": round(elapsed, 2),
            }
            log(row)
            bar.set_postfix(
                reward=f"{row['reward']:.3f}",
                tokens=f"{row['completion_tokens']:.0f}",
                learning=f"{row['groups_learning']}/{len(every_group)}",
            )
            bar.update(1)
            if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
                accuracy = with_backend(lambda backend: held_out_accuracy(backend, heldout, config, reward))
                log({"step": step, "heldout_accuracy": accuracy})
                if is_main:
                    bar.write(f"{title} step {step}: held-out accuracy {accuracy:.3f} (greedy, {len(heldout)} items)")
            if step % config.checkpoint_every == 0 or step == config.steps:
                save()
        bar.close()
        return row or next((r for r in reversed(read_log(log_path)) if "reward" in r), {})
    finally:
        if remote is not None:
            remote.shutdown()
