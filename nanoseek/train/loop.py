"""The one training loop every supervised stage uses (pretrain, SFT and later SFT rounds).

    from nanoseek.train.config import LoopConfig
    from nanoseek.train.loop import train
    result = train(model, train_rows, eval_rows, LoopConfig(steps=100, ...), out_dir="runs/x/pretrain")

What it does, top to bottom: AdamW with linear warm-up and cosine decay, gradient accumulation and
clipping, bf16 autocast when it is faster on the machine at hand (`bf16="auto"` times both precisions on a
copy of the model when a stage starts: it won 1.4x on one CPU kind and lost 0.87x on another), loss masked by the
data's per-token mask (all ones for pretraining, assistant tokens only for SFT), periodic held-out loss,
a tqdm bar with tokens/s, loss and ETA, JSONL logs, a loss-curve PNG, and atomic checkpoints
(temp file + fsync + rename) holding model, optimizer, RNG states and the step.

Exact resume: the batch of every step is a pure function of (seed, step) -- see `PackedRows.rows_for` --
so the step number *is* the data position, and a run killed with `kill -9` and resumed from its last
checkpoint replays the same batches and produces the same loss curve as an uninterrupted run.

Devices: the model trains on the GPU when there is one (under `torchrun`, the one of the process's LOCAL_RANK),
else on the CPU.

Data parallel: launched under `torchrun`, each process takes its slice of the same global batch and
gradients are averaged by DDP (gloo on CPU, NCCL on GPUs). The loss is normalised by the token count of
the whole global batch, so 2 processes compute the same update as 1 process with twice the accumulation.
With `sharding = "fsdp"` the processes shard the model, its gradients and AdamW states instead (FSDP2) and
checkpoint with DCP, resumable on another number of processes (sharded.py); the global batch
(batch_size x grad_accum x processes) must stay the same, so grad_accum may change with the process count.

    torchrun --nproc_per_node 2 -m nanoseek.train.cli pretrain --recipe tiny --set pretrain.sharding=fsdp
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29400 \
        -m nanoseek.train.cli sft --recipe R --set sft.sharding=fsdp          # and node_rank 1 on the other machine
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from nanoseek.fileio import atomic_path, write_text_atomic
from nanoseek.train.config import LoopConfig
from nanoseek.train.optim import learning_rate, make_optimizer, masked_loss_sum
from nanoseek.train.packing import PackedRows
from nanoseek.train.sharded import (
    DCP_DIR,
    META_NAME,
    copy_full_weights,
    full_tensor,
    latest_checkpoint,
    load_sharded,
    save_sharded,
    shard_model,
)
from nanoseek.train.throughput import faster_precision

CHECKPOINT_NAME = "checkpoint.pt"
# A run may be lengthened or shortened when resumed (the cosine schedule then follows the new length);
# anything else changed would silently train a different run.
# bf16 may change on resume: the data order and the schedule do not depend on it.
# grad_accum may change with the number of processes, as long as the global batch stays the same (check_resume).
ADJUSTABLE_ON_RESUME = {"steps", "eval_every", "eval_rows", "checkpoint_every", "bf16", "grad_accum"}
LOG_NAME = "log.jsonl"
PLOT_NAME = "loss.png"


@dataclass
class TrainResult:
    step: int
    train_loss: float
    eval_loss: float | None
    tokens_per_second: float
    elapsed_seconds: float


def training_device() -> torch.device:
    """The GPU of this process (LOCAL_RANK under torchrun) when there is one, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


def distributed_setup() -> tuple[int, int]:
    """Join the process group when launched by torchrun; returns (rank, world_size)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1
    if not dist.is_initialized():
        # NCCL needs each process bound to its own GPU before the group forms.
        backend = "nccl" if training_device().type == "cuda" else "gloo"
        dist.init_process_group(backend)
        # Two processes on two cores: more than one thread each only makes them fight.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    return dist.get_rank(), dist.get_world_size()


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint must hold to resume: the whole state when every parameter trains, else only the trained
    parameters (a LoRA stage's adapter, a few MB, not the frozen base it rebuilds identically on resume)."""
    parameters = dict(model.named_parameters())
    if all(p.requires_grad for p in parameters.values()):
        return model.state_dict()
    return {name: p.detach().clone() for name, p in parameters.items() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    if all(p.requires_grad for p in model.parameters()):
        model.load_state_dict(state)
        return
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    if set(state) != trained:
        raise ValueError(f"{path} holds other trained parameters than this stage trains: resume with the same recipe")
    model.load_state_dict(state, strict=False)


# Checkpoints written before NumPy's RNG keys were saved as a tensor hold them as an ndarray; these globals rebuild a
# uint32 array and nothing else, so allowing them keeps such runs resumable without giving up `weights_only`.
LEGACY_NUMPY_RNG_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]


def load_training_state(path: Path) -> dict:
    """A checkpoint.pt, read as data only (`weights_only`): resuming from a planted file must not run its code."""
    with torch.serialization.safe_globals(LEGACY_NUMPY_RNG_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True)


def numpy_rng_state() -> tuple:
    """NumPy's global RNG state with its key array as a tensor, which `weights_only` loading accepts."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return name, torch.from_numpy(keys.copy()), position, has_gauss, gauss


def atomic_torch_save(obj: object, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line half-written when the process was killed: everything after it is invalid too
    return rows


def rewrite_log(path: Path, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def append_log(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def refuse_other_settings(
    state: dict, config: Any, adjustable: set[str], path: Path, what: str, advice: str
) -> set[str]:
    """The settings in which `config` (a stage's dataclass) differs from those the checkpoint `state` at `path` was
    written with; raises ValueError when one is not `adjustable`: the resumed run would silently be another run."""
    changed = {k for k, v in state["config"].items() if v != asdict(config).get(k)}
    if changed - adjustable:
        raise ValueError(
            f"{path} was written with different {what} settings ({', '.join(sorted(changed - adjustable))}); "
            f"resume with the same recipe or {advice}"
        )
    return changed


def save_stage_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, elapsed: float, config: Any
) -> None:
    """The RL and DPO stages' checkpoint, written atomically: the trained parameters (`trainable_state`), the
    optimiser, the step, the seconds trained and the stage's settings."""
    state = {
        "model": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "elapsed": elapsed,
        "config": asdict(config),
    }
    atomic_torch_save(state, path)


def resume_stage_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Any,
    adjustable: set[str],
    what: str,
    advice: str,
) -> tuple[int, float]:
    """A `save_stage_checkpoint` checkpoint loaded into `model` and `optimizer`, once its settings are found to be
    `config`'s but for `adjustable` ones (`refuse_other_settings`): (step, seconds trained) to go on from."""
    state = load_training_state(path)
    refuse_other_settings(state, config, adjustable, path, what, advice)
    load_trainable_state(model, state["model"], path)
    optimizer.load_state_dict(state["optimizer"])
    return state["step"], state["elapsed"]


def plot_lines(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    lines: list[tuple[list[float], list[float], dict]],
    ylim: tuple[float, float] | None = None,
    right_axis: tuple[str, list[tuple[list[float], list[float], dict]]] | None = None,
) -> None:
    """A line chart written atomically as PNG: one (xs, ys, matplotlib keyword arguments) per line; `right_axis`
    (label, lines) draws more lines against a second y axis on the right (another unit, e.g. tokens)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8 if right_axis else 4))
    for xs, ys, style in lines:
        if xs:
            ax.plot(xs, ys, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if right_axis is not None:
        right = ax.twinx()
        for xs, ys, style in right_axis[1]:
            if xs:
                right.plot(xs, ys, **style)
        right.set_ylabel(right_axis[0])
        right.set_ylim(bottom=0)
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
        # two axes fill the plot area: the legend goes below it
        ax.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)
    else:
        ax.legend(handles, labels)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def plot_losses(
    rows: list[dict], path: Path, title: str, ylabel: str = "loss (nats/token)", accuracy: tuple[str, str] | None = None
) -> None:
    """The train and held-out (`eval_` prefixed) losses of log rows `rows`; with `accuracy` = (log key, label)
    that key's train and held-out values too, on an axis of their own (DPO's reward accuracy)."""
    train_rows = [r for r in rows if "loss" in r]
    eval_rows = [r for r in rows if "eval_loss" in r]
    train_steps, eval_steps = [r["step"] for r in train_rows], [r["step"] for r in eval_rows]
    named = " loss" if accuracy else ""  # beside another quantity the legend says which lines are losses
    right_axis = None
    if accuracy is not None:
        key, label = accuracy
        right_axis = (
            label,
            [
                (train_steps, [r[key] for r in train_rows], {"lw": 0.8, "ls": "--", "label": f"train {label}"}),
                (
                    eval_steps,
                    [r[f"eval_{key}"] for r in eval_rows],
                    {"marker": "s", "ls": "--", "label": f"held-out {label}"},
                ),
            ],
        )
    plot_lines(
        path,
        title,
        "step",
        ylabel,
        [
            (train_steps, [r["loss"] for r in train_rows], {"lw": 0.8, "label": f"train{named}"}),
            (eval_steps, [r["eval_loss"] for r in eval_rows], {"marker": "o", "label": f"held-out{named}"}),
        ],
        right_axis=right_axis,
    )


def resolve_precision(
    config: LoopConfig, model: torch.nn.Module, seq_len: int, state: dict | None, is_main: bool, world_size: int
) -> LoopConfig:
    """`config` with `bf16="auto"` replaced by a choice: on resume the one the checkpoint was trained with (so
    the resumed run computes what the uninterrupted one would), else the faster precision in a few timed
    training steps on a copy of the model (rank 0 decides for every process). Runs before the loop seeds
    its generators, so the probe's random tokens do not change the run."""
    if config.bf16 != "auto":
        return config
    if state is not None and isinstance(state["config"].get("bf16"), bool):
        return replace(config, bf16=state["config"]["bf16"])
    choice = [False]
    if is_main and next(model.parameters()).device.type == "cuda":
        # Tensor cores: bf16 wins wherever the GPU has them; the timing probe is a CPU question.
        choice[0] = torch.cuda.is_bf16_supported()
        print(f"precision: {'bf16 autocast' if choice[0] else 'fp32'} (GPU bf16 support)", flush=True)
    elif is_main:
        choice[0], rates = faster_precision(model, seq_len, config.batch_size)
        print(
            f"precision: {'bf16 autocast' if choice[0] else 'fp32'} "
            f"(fp32 {rates['fp32']:,.0f} vs bf16 {rates['bf16']:,.0f} tokens/s on this machine)",
            flush=True,
        )
    if world_size > 1:
        dist.broadcast_object_list(choice, src=0)
    return replace(config, bf16=choice[0])


@torch.no_grad()
def evaluate(model: torch.nn.Module, rows: PackedRows, n_rows: int, batch_size: int, bf16: bool) -> float:
    """Mean loss per target token over the first `n_rows` held-out rows (the same rows every time)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, min(n_rows, len(rows)), batch_size):
        index = np.arange(start, min(start + batch_size, n_rows, len(rows)))
        tokens, mask = rows.tensors(index, device=next(model.parameters()).device)
        total += masked_loss_sum(model, tokens, mask, bf16).item()
        count += int(mask[:, 1:].sum())
    model.train(was_training)
    return total / max(1, count)


def check_resume(state: dict, config: LoopConfig, world_size: int, path: Path, is_main: bool) -> None:
    """Refuse a checkpoint written with other loop settings (the run would silently be another run), except the
    adjustable ones; the global batch must stay the same, whatever the number of processes."""
    changed = refuse_other_settings(state, config, ADJUSTABLE_ON_RESUME, path, "loop", "pass a fresh --out directory")
    before = state["config"]["batch_size"] * state["config"]["grad_accum"] * state.get("world_size", world_size)
    now = config.batch_size * config.grad_accum * world_size
    if before != now:
        raise ValueError(
            f"{path} was trained with a global batch of {before} rows, this run has {now} "
            f"(batch_size {config.batch_size} x grad_accum {config.grad_accum} x {world_size} processes): "
            "set grad_accum so that they match"
        )
    if changed and is_main:
        print(
            f"resuming with changed {', '.join(sorted(changed))}: the schedule follows the new values "
            f"from step {state['step']} on"
        )
    if state["step"] > config.steps:
        raise ValueError(f"{path} is at step {state['step']}, past the requested {config.steps} steps")


class TrainingStopped(KeyboardInterrupt):
    """Ctrl-C stopped a run after a whole step, whose checkpoint was then saved: the run resumes from it."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"stopped at step {step}; checkpoint {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


def checkpoint_or_stop(step: int, config, interrupt: StopOnInterrupt, save, bar, ckpt_path: Path) -> None:
    """The end of a training step: save on the checkpoint cadence and at the last step; after Ctrl-C or SIGTERM,
    save unless this step just did, close the progress bar and stop with TrainingStopped (the run resumes there).
    `config` is any stage config with `steps` and `checkpoint_every`."""
    if step % config.checkpoint_every == 0 or step == config.steps:
        save()
    if interrupt.requested and step < config.steps:
        if step % config.checkpoint_every:  # else this step's checkpoint is already saved
            save()
        bar.close()
        raise TrainingStopped(step, ckpt_path)


class StopOnInterrupt:
    """While active, the first Ctrl-C (SIGINT) only asks the loop to stop after the current step (so the saved
    state is one whole step, not half an optimizer update); a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: object = None

    def __enter__(self) -> StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to stop at once)", flush=True)

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def train(
    model: torch.nn.Module,
    train_rows: PackedRows,
    eval_rows: PackedRows | None,
    config: LoopConfig,
    out_dir: str | Path,
    resume: bool = True,
    title: str = "training",
    on_checkpoint: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train `model` for `config.steps` steps; `on_checkpoint(step)` runs on rank 0 after each checkpoint
    (stages use it to keep an up-to-date Hugging Face export beside the loop state)."""
    out_dir = Path(out_dir)
    rank, world_size = distributed_setup()
    is_main = rank == 0
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path, plot_path = out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME, out_dir / PLOT_NAME

    device = training_device()
    raw_model = model.to(device)
    fsdp = config.sharding == "fsdp"
    if fsdp and not all(p.requires_grad for p in raw_model.parameters()):
        raise ValueError('sharding = "fsdp" trains every parameter: a LoRA stage runs with "ddp"')
    # What the optimizer steps: the model itself, or under FSDP a sharded copy whose full weights are gathered
    # back into `raw_model` (on rank 0) at each checkpoint, for the stage's export and the caller.
    module = shard_model(copy.deepcopy(raw_model)) if fsdp and world_size > 1 else raw_model
    optimizer = make_optimizer(module, config)
    step, elapsed, tokens_seen = 0, 0.0, 0
    sharded_dir = latest_checkpoint(out_dir) if fsdp and resume else None
    if resume and fsdp and sharded_dir is None and ckpt_path.exists():
        raise ValueError(f"{ckpt_path} was written with sharding=ddp: resume with it, or pass a fresh --out")
    if resume and not fsdp and not ckpt_path.exists() and latest_checkpoint(out_dir) is not None:
        raise ValueError(f"{out_dir / DCP_DIR} was written with sharding=fsdp: resume with it, or pass a fresh --out")
    if fsdp:
        state = load_training_state(sharded_dir / META_NAME) if sharded_dir is not None else None
    else:
        state = load_training_state(ckpt_path) if resume and ckpt_path.exists() else None
    config = resolve_precision(config, raw_model, train_rows.seq_len, state, is_main, world_size)
    if state is not None:
        check_resume(state, config, world_size, sharded_dir or ckpt_path, is_main)
        if fsdp:
            load_sharded(sharded_dir, module, optimizer)
        else:
            load_trainable_state(raw_model, state["model"], ckpt_path)
            optimizer.load_state_dict(state["optimizer"])
        step, elapsed, tokens_seen = state["step"], state["elapsed"], state["tokens"]
        torch.set_rng_state(state["rng"]["torch"])
        name, keys, position, has_gauss, gauss = state["rng"]["numpy"]
        np.random.set_state((name, np.asarray(keys), position, has_gauss, gauss))
        random.setstate(state["rng"]["python"])
    else:
        torch.manual_seed(config.seed + rank)
    log_rows = [r for r in read_log(log_path) if r["step"] < step or ("eval_loss" in r and r["step"] == step)]
    if is_main:
        rewrite_log(log_path, log_rows)  # drop rows logged after the checkpoint we resume from

    if world_size > 1 and not fsdp:
        model = torch.nn.parallel.DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    else:
        model = module
    model.train()

    def save_checkpoint() -> None:
        state = {
            "step": step,
            "elapsed": elapsed,
            "tokens": tokens_seen,
            "config": asdict(config),
            "world_size": world_size,
            "rng": {"torch": torch.get_rng_state(), "numpy": numpy_rng_state(), "python": random.getstate()},
        }
        if fsdp:  # every rank writes its shards; the export needs the whole weights on rank 0
            save_sharded(out_dir, module, optimizer, state)
            if module is not raw_model:
                copy_full_weights(module, raw_model, is_main)
        if not is_main:
            return
        if not fsdp:
            state.update(model=trainable_state(raw_model), optimizer=optimizer.state_dict())
            atomic_torch_save(state, ckpt_path)
        plot_losses(read_log(log_path), plot_path, title)
        if on_checkpoint is not None:
            on_checkpoint(step)

    def log(row: dict) -> None:
        if is_main:
            append_log(log_path, row)

    tokens_per_step = config.batch_size * config.grad_accum * world_size * train_rows.seq_len
    bar = tqdm(total=config.steps, initial=step, disable=not is_main, desc=title, unit="step", dynamic_ncols=True)
    train_loss, eval_loss = float("nan"), None
    window_tokens, window_start = 0, time.perf_counter()
    with StopOnInterrupt() as interrupt:
        while step < config.steps:
            step_start = time.perf_counter()
            lr = learning_rate(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            global_index = train_rows.rows_for(step, config.batch_size * config.grad_accum * world_size, config.seed)
            # Normalise by the target-token count of the whole global batch: every process knows it, because
            # the batch is a function of the step, so no extra communication is needed.
            global_count = max(1, int(train_rows.loss_mask[np.sort(global_index)][:, 1:].sum()))
            loss_sum = 0.0
            for micro in range(config.grad_accum):
                start = (micro * world_size + rank) * config.batch_size
                tokens, mask = train_rows.tensors(global_index[start : start + config.batch_size], device=device)
                last = micro == config.grad_accum - 1
                sync = nullcontext() if (world_size == 1 or last or fsdp) else model.no_sync()
                if module is not raw_model:  # FSDP: reduce-scatter the gradients only after the last micro-batch
                    module.set_requires_gradient_sync(last)
                with sync:
                    micro_loss = masked_loss_sum(model, tokens, mask, config.bf16)
                    # DDP averages gradients over processes; scaling by world_size turns that into a sum.
                    (micro_loss * world_size / global_count).backward()
                loss_sum += micro_loss.item()
            grad_norm = full_tensor(torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)).item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if world_size > 1:
                reduced = torch.tensor([loss_sum], dtype=torch.float64, device=device)
                dist.all_reduce(reduced)
                loss_sum = reduced.item()
            train_loss = loss_sum / global_count
            step += 1
            elapsed += time.perf_counter() - step_start
            tokens_seen += tokens_per_step
            window_tokens += tokens_per_step
            tokens_per_second = window_tokens / max(1e-9, time.perf_counter() - window_start)
            log(
                {
                    "step": step - 1,
                    "loss": train_loss,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "tokens": tokens_seen,
                    "tok_per_s": round(tokens_per_second, 1),
                    "elapsed_s": round(elapsed, 2),
                    "bf16": config.bf16,
                }
            )
            bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tokens_per_second:,.0f}", lr=f"{lr:.1e}")
            bar.update(1)
            if window_tokens > 50 * tokens_per_step:  # tokens/s over a recent window, not since start
                window_tokens, window_start = 0, time.perf_counter()
            want_eval = eval_rows is not None and (
                step == config.steps or (config.eval_every and step % config.eval_every == 0)
            )
            if want_eval:
                eval_loss = evaluate(module, eval_rows, config.eval_rows, config.batch_size, config.bf16)
                log({"step": step, "eval_loss": eval_loss})
                bar.write(f"{title} step {step}: held-out loss {eval_loss:.4f}")
            checkpoint_or_stop(step, config, interrupt, save_checkpoint, bar, ckpt_path)
    bar.close()
    if math.isnan(train_loss):  # resumed a finished run: report what its log says
        rows = read_log(log_path)
        train_loss = next((r["loss"] for r in reversed(rows) if "loss" in r), float("nan"))
        eval_loss = next((r["eval_loss"] for r in reversed(rows) if "eval_loss" in r), None)
    if module is not raw_model:  # a resumed finished run took no step: its weights are still only in the shards
        copy_full_weights(module, raw_model, is_main)
    if world_size > 1:
        dist.barrier()
    return TrainResult(step, train_loss, eval_loss, tokens_seen / max(1e-9, elapsed), elapsed)
