"""The training configurations, plain dataclasses with no imports from the rest of nanoseek (a leaf module):
`LoopConfig` for the loop every supervised stage runs (loop.py), `RLConfig` for the RL stage (rl.py), `DPOConfig`
for the preference stage (dpo.py), the last two on LoopConfig's optimiser and schedule (`OnLoopSchedule`). A
recipe's stage section holds their fields (recipe.py `loop_config`, `rl_config`, `dpo_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoopConfig:
    steps: int
    batch_size: int  # rows per micro-batch per process
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 0
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 0  # 0: only at the end
    eval_rows: int = 64
    checkpoint_every: int = 50
    bf16: bool | str = False  # True, False, or "auto": the faster of the two here (loop.resolve_precision)
    seed: int = 0
    # "ddp": every process holds the whole model, one checkpoint.pt. "fsdp": under torchrun the parameters,
    # gradients and optimizer states are sharded (FSDP2), checkpoints are DCP directories that resume on any
    # number of processes (sharded.py)
    sharding: str = "ddp"

    def __post_init__(self) -> None:
        if self.bf16 not in (True, False, "auto"):  # a typo such as "true" would otherwise turn autocast on
            raise ValueError(f'bf16 must be true, false or "auto", not {self.bf16!r}')
        if self.sharding not in ("ddp", "fsdp"):
            raise ValueError(f'sharding must be "ddp" or "fsdp", not {self.sharding!r}')


class OnLoopSchedule:
    """What the RL and DPO stages' configs share with LoopConfig: an AdamW run on the loop's learning-rate schedule
    (optim.py), each with its own defaults. `loop_config()` hands those settings to the shared training helpers in
    the shape they take; `batch_field` names the config's batch of a step."""

    batch_field = "batch_size"
    steps: int
    lr: float
    min_lr_ratio: float
    warmup_steps: int
    weight_decay: float
    grad_clip: float
    seed: int

    def loop_config(self) -> LoopConfig:
        return LoopConfig(
            steps=self.steps,
            batch_size=getattr(self, self.batch_field),
            lr=self.lr,
            min_lr_ratio=self.min_lr_ratio,
            warmup_steps=self.warmup_steps,
            weight_decay=self.weight_decay,
            grad_clip=self.grad_clip,
            seed=self.seed,
        )


@dataclass
class RLConfig(OnLoopSchedule):
    batch_field = "prompts_per_step"
    steps: int
    prompts_per_step: int = 16
    samples_per_prompt: int = 8
    max_tokens: int = 320  # thought + answer
    temperature: float = 1.0
    lr: float = 3e-5
    min_lr_ratio: float = 1.0  # a constant rate after warm-up unless the recipe asks for decay
    warmup_steps: int = 5
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # Padded tokens (rows x longest row) per forward/backward pass: a pass's logits take tokens x vocabulary x 4
    # bytes, three times over with the loss and its gradient. 16 replies a pass took recipe smol (49k vocabulary,
    # 384-token replies) from 4.5 to 15 GB in one step and the OOM killer stopped it twice at step 9.
    micro_batch_tokens: int = 4096
    eval_every: int = 10
    eval_items: int = 64  # held-out items scored greedily at each evaluation (monitoring only)
    checkpoint_every: int = 5
    pool: int = 4000  # distinct train items drawn per suite
    mixture: dict[str, float] = field(default_factory=lambda: {"math": 1.0})
    seed: int = 0
    # where rollouts are sampled: "engine" (a fresh nanoseek engine each step) or "vllm" (one vLLM server for the
    # whole stage, given each step's weights; NANOSEEK_VLLM_PYTHON and NANOSEEK_VLLM_ARGS say how to start it)
    rollout_backend: str = "engine"

    def __post_init__(self) -> None:
        if self.rollout_backend not in ("engine", "vllm"):
            raise ValueError(f'rollout_backend must be "engine" or "vllm", not {self.rollout_backend!r}')


@dataclass
class DPOConfig(OnLoopSchedule):
    steps: int
    batch_size: int = 16  # preference pairs per optimiser step
    lr: float = 1e-5
    min_lr_ratio: float = 0.1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    beta: float = 0.1  # DPO's inverse temperature: how far from the reference policy a margin may pull
    max_tokens: int = 512  # prompt + answer tokens kept of one side of a pair (longer ones lose their start)
    # Padded tokens (rows x longest row) per forward/backward pass; a pass holds whole pairs (chosen and rejected
    # side by side), so how a step is cut into passes does not change its gradient.
    micro_batch_tokens: int = 4096
    eval_every: int = 0  # 0: only at the end
    eval_pairs: int = 32  # held-out pairs scored at each evaluation (monitoring only)
    checkpoint_every: int = 10
    bf16: bool = False
    mixture: dict[str, int] = field(default_factory=lambda: {"safety": 100})  # pairs per source (dpo.py)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bf16 not in (True, False):
            raise ValueError(f"bf16 must be true or false, not {self.bf16!r}")
