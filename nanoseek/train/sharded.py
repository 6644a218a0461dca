"""Fully sharded training (FSDP2) and its checkpoints, which resume on any number of processes.

    torchrun --nproc_per_node 2 -m nanoseek.train.cli pretrain --recipe tiny --set pretrain.sharding=fsdp

With `sharding = "fsdp"` in a stage's settings, `loop.train` shards a copy of the model with
`torch.distributed.fsdp.fully_shard` (one group per transformer block, the embeddings, final norm and tied head
in the root group), so each process keeps 1/world_size of the parameters, gradients and AdamW moments; a
block's full weights exist only while it runs forward or backward. Gradients are reduce-scattered (averaged,
as DDP's all-reduce), so the update equals DDP's and one process's to float tolerance.

Checkpoints are torch.distributed.checkpoint (DCP) directories, each process writing its own shards:
`OUT/checkpoint-dcp/step-NNNNNNNN/` (model and optimizer tensors as DTensors, plus `meta.pt` from rank 0: step,
clock, settings, RNG states) and `OUT/checkpoint-dcp/latest`, a one-line file replaced atomically only after
every shard of the new step is on disk, so a kill -9 at any moment leaves the previous checkpoint whole. DCP
reshards on load: a checkpoint written by 2 processes loads into 1 process (plain tensors, no process group)
or 4, and the run continues with the same global batch (loop.py lets grad_accum change for that).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from nanoseek.fileio import atomic_path, write_text_atomic

DCP_DIR = "checkpoint-dcp"
LATEST = "latest"
META_NAME = "meta.pt"


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """`model` sharded in place over the default process group: each transformer block its own FSDP group
    (gathered just before it runs, freed after), then the root (embeddings, final norm, the tied head)."""
    for parameter in model.parameters():  # FSDP splits storage by rows: a transposed view cannot be split
        if not parameter.is_contiguous():
            parameter.data = parameter.data.contiguous()
    for block in getattr(model, "layers", []):
        fully_shard(block)
    fully_shard(model)
    return model


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered whole (a collective: every rank calls it), a plain tensor as it is."""
    return value.full_tensor() if isinstance(value, DTensor) else value


def copy_full_weights(sharded: torch.nn.Module, target: torch.nn.Module, is_main: bool) -> None:
    """Gather the sharded model's weights (every rank takes part) into `target` on rank 0: the unsharded model
    the stage exports and the caller gets back. Other ranks' `target` keeps its old weights."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(sharded, options=options)
    if is_main:
        target.load_state_dict(state)


def latest_checkpoint(out_dir: Path) -> Path | None:
    pointer = out_dir / DCP_DIR / LATEST
    if not pointer.exists():
        return None
    return out_dir / DCP_DIR / pointer.read_text().strip()


def save_sharded(out_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict) -> Path:
    """Every rank writes its shards of the model and optimizer for `meta["step"]`; rank 0 then writes `meta`,
    moves the `latest` pointer and deletes older steps. Returns the step's directory."""
    is_main = not dist.is_initialized() or dist.get_rank() == 0
    step_dir = out_dir / DCP_DIR / f"step-{meta['step']:08d}"
    if is_main and step_dir.exists():  # left by a run killed while writing this very step
        shutil.rmtree(step_dir)
    if dist.is_initialized():
        dist.barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save(
        {"model": model_state, "optimizer": optimizer_state}, checkpoint_id=step_dir, no_dist=not dist.is_initialized()
    )
    if is_main:
        with atomic_path(step_dir / META_NAME) as tmp:
            torch.save(meta, tmp)
        write_text_atomic(out_dir / DCP_DIR / LATEST, step_dir.name + "\n")
        for old in (out_dir / DCP_DIR).glob("step-*"):
            if old != step_dir:
                shutil.rmtree(old, ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()  # no rank resumes work (or exits) before the pointer names a whole checkpoint
    return step_dir


def load_sharded(step_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load a checkpoint written at any world size into this process's shards (or whole tensors when the
    model is not sharded). DCP needs the optimizer's state to exist to load into: `get_state_dict` creates it."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=step_dir, no_dist=not dist.is_initialized())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
