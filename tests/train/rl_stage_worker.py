"""`nanoseek train rl` on the tiny recipe with a reward a random model can learn (test_train_rl.even_share), so
that its updates are not all zero: tests/train/test_train_rl_torchrun.py runs it under torchrun and in its own
process.

    python -m torch.distributed.run --nproc_per_node 2 -m tests.train.rl_stage_worker RUN_DIR STEPS   # in the repo
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from nanoseek.train import rl, stages
from nanoseek.train.cli import main
from tests.train.test_train_rl import even_share

# 16 replies a step (4 prompts x 4 samples: 8 per process under 2), a rate that moves a random model's reward.
LEARNING_RATE = 2e-2
SETTINGS = [
    *("rl.prompts_per_step=4", "rl.samples_per_prompt=4", "rl.max_tokens=6", f"rl.lr={LEARNING_RATE}"),
    "rl.warmup_steps=0",
    *("rl.eval_every=2", "rl.eval_items=4", "rl.checkpoint_every=2", "rl.pool=16"),
]


def train_rl_stage(run: Path, steps: int) -> int:
    """`nanoseek train rl --recipe tiny --out RUN` for `steps` steps, rewarded by `even_share`."""
    overrides = [arg for setting in [*SETTINGS, f"rl.steps={steps}"] for arg in ("--set", setting)]
    learnable = functools.partial(rl.train_rl, reward=even_share)
    plain, stages.train_rl = stages.train_rl, learnable  # the name the RL stage calls
    try:
        return main(["rl", "--recipe", "tiny", "--out", str(run), *overrides])
    finally:
        stages.train_rl = plain


if __name__ == "__main__":
    sys.exit(train_rl_stage(Path(sys.argv[1]), int(sys.argv[2])))
