"""What every training stage minimises and how: the masked next-token loss, AdamW without decay on norms
and biases, and the learning-rate schedule (linear warm-up, cosine decay). Imports only torch and config.py,
so the loop, the RL stage and the throughput probe share it without importing each other.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from nanoseek.train.config import LoopConfig


def learning_rate(config: LoopConfig, step: int) -> float:
    """Linear warm-up to `lr`, then cosine decay to `lr * min_lr_ratio` at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, config: LoopConfig) -> torch.optim.AdamW:
    # Norm gains and biases are not decayed: shrinking them towards zero only hurts.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=1e-8)


def masked_loss_sum(model: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Sum of next-token cross-entropy over the target positions whose mask is 1."""
    inputs, targets, target_mask = tokens[:, :-1], tokens[:, 1:], mask[:, 1:]
    autocast = torch.autocast(tokens.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    with autocast:
        logits = model(inputs)
    losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return (losses * target_mask.flatten().float()).sum()
