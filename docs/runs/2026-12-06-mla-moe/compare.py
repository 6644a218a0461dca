"""Loss curves of the dense default and the MLA + MoE recipe against wall time and tokens, and the table of losses
at equal wall time (issue 22). Reads each run's pretrain/log.jsonl; writes loss_vs_time.png, loss_vs_tokens.png.

    python docs/runs/2026-12-06-mla-moe/compare.py RUNS_DIR      # RUNS_DIR holds dense/ and mla_moe/
"""

from __future__ import annotations

import sys
from pathlib import Path

from nanoseek.train.loop import plot_lines, read_log

HERE = Path(__file__).parent
TOKENS_PER_STEP = 8 * 512  # batch 8 x seq_len 512 in both recipes


def curves(run: Path) -> tuple[list[dict], list[dict]]:
    rows = read_log(run / "pretrain" / "log.jsonl")
    return [r for r in rows if "loss" in r], [r for r in rows if "eval_loss" in r]


def main(runs: Path) -> None:
    names = {"dense": "dense default (Llama, MQA)", "mla_moe": "MLA + DeepSeekMoE"}
    data = {name: curves(runs / name) for name in names}
    time_lines, token_lines = [], []
    for name, label in names.items():
        train, held_out = data[name]
        minutes = {r["step"]: r["elapsed_s"] / 60 for r in train}
        for r in train:  # a held-out row after the last training step carries that step's number + 1
            minutes.setdefault(r["step"] + 1, r["elapsed_s"] / 60)
        time_lines.append(
            ([minutes[r["step"]] for r in train], [r["loss"] for r in train], {"lw": 0.6, "label": label})
        )
        time_lines.append(
            (
                [minutes[r["step"]] for r in held_out if r["step"] in minutes],
                [r["eval_loss"] for r in held_out if r["step"] in minutes],
                {"marker": "o", "label": f"{label}, held-out"},
            )
        )
        token_lines.append(
            (
                [r["step"] * TOKENS_PER_STEP / 1e6 for r in held_out],
                [r["eval_loss"] for r in held_out],
                {"marker": "o", "label": f"{label}, held-out"},
            )
        )
        last, steps = train[-1], train[-1]["step"] + 1  # training rows count steps from 0
        print(
            f"| {label} | {steps} | {steps * TOKENS_PER_STEP / 1e6:.2f}M | {last['elapsed_s'] / 60:.1f} | "
            f"{sum(r['tok_per_s'] for r in train[-20:]) / 20:.0f} | {held_out[-1]['eval_loss']:.3f} |"
        )
    title = "Pretraining, 3.9M active parameters each (shared 2-core CPU)"
    # ylim: the MLA + MoE run spiked to 12 once at the end of warm-up (step 15), which would flatten the rest
    plot_lines(HERE / "loss_vs_time.png", title, "wall minutes", "loss (nats/token)", time_lines, ylim=(5.0, 9.5))
    plot_lines(HERE / "loss_vs_tokens.png", title, "tokens (M)", "held-out loss (nats/token)", token_lines)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
