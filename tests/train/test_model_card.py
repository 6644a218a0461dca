"""The model card: each goal verdict follows from the figures it is given, and the card is built from files
(the run's logs and wall clock, the eval directory's metrics and recorded commands)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from nanoseek import DEFAULT_MODEL_DIR
from nanoseek.train.model_card import coherence_row, goal_rows, write_card


def multiturn(later: float, alone: float, repeats: float) -> dict:
    return {
        "multiturn": {
            "later turns right": {"value": later, "n": 50},
            "same questions asked alone": {"value": alone, "n": 50},
            "later reply repeats an earlier one": {"value": repeats, "n": 50},
        }
    }


def test_coherence_is_met_only_without_a_drop_and_without_repeats():
    assert coherence_row(multiturn(0.40, 0.42, 0.02)).endswith("| met |")
    assert "**missed**" in coherence_row(multiturn(0.30, 0.42, 0.02))  # earlier turns cost 12 points
    assert "**missed**" in coherence_row(multiturn(0.45, 0.42, 0.25))  # a quarter of replies repeat
    assert "not measured" in coherence_row({})


def test_goal_rows_mark_each_goal_from_its_metric():
    metrics = {
        "json": {"valid JSON": {"value": 1.0, "n": 100}},
        "instructions": {"accuracy": {"value": 0.5, "n": 100}},
        **multiturn(0.4, 0.4, 0.0),
    }
    rows = goal_rows(metrics, {})
    assert any("JSON Output 100% valid" in r and r.endswith("| met |") for r in rows)
    assert any("instructions" in r and "**missed**" in r for r in rows)
    assert any("FIM exact line" in r and "not measured" in r for r in rows)


def test_goals_are_judged_on_the_phrasing_split_when_it_was_measured():
    held = {"instructions": {"accuracy": {"value": 0.82, "n": 100}}}
    phrased = {"instructions": {"accuracy": {"value": 0.03, "n": 100}}}
    [row] = [r for r in goal_rows(held, {}, phrased) if "instructions" in r]
    assert "3% (n=100, `instructions` accuracy, phrasing split); value split 82% (n=100)" in row
    assert row.endswith("| **missed** |")
    assert goal_rows(held, {})[0].endswith("| met |")


def test_the_card_shows_every_split_with_its_interval(tmp_path: Path):
    run, eval_dir, model_dir = tmp_path / "run", tmp_path / "eval", tmp_path / "model"
    for directory in (run, eval_dir, model_dir):
        directory.mkdir(parents=True)
    entry = {"value": 0.5, "n": 100, "low": 0.404, "high": 0.596}
    splits = {"heldout": {"math": {"pass@1": entry}}, "phrasing": {"math": {"pass@1": {**entry, "value": 0.1}}}}
    metrics = {"metrics": {"m": splits["heldout"]}, "splits": {"m": splits}}
    (eval_dir / "metrics.json").write_text(json.dumps(metrics))
    shutil.copy(DEFAULT_MODEL_DIR / "config.json", model_dir / "config.json")
    card = write_card(run, eval_dir, model_dir, notes="")
    assert "| suite | metric | heldout | phrasing |" in card
    assert "| math | pass@1 | 0.500 [0.404, 0.596] (n=100) | 0.100 [0.404, 0.596] (n=100) |" in card


def test_the_card_quotes_the_recorded_eval_commands_and_the_runs_wall_clock(tmp_path: Path):
    run, eval_dir, model_dir = tmp_path / "run", tmp_path / "eval", tmp_path / "model"
    for directory in (run / "pretrain", eval_dir, model_dir):
        directory.mkdir(parents=True)
    steps = [
        {"step": i, "loss": 5.0 - i, "tokens": 4096 * (i + 1), "elapsed_s": 60.0 * (i + 1), "bf16": False}
        for i in range(3)
    ]
    (run / "pretrain" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    # A tokenizer session, a pretraining run resumed once (90 + 600 + 300 seconds), an SFT session killed, then
    # the default recipe's later stages (120 + 60 + 60 seconds).
    (run / "wall_clock.json").write_text(
        json.dumps(
            [
                {"stage": "tokenizer", "started": "2026-12-02T10:00:00Z", "seconds": 90},
                {"stage": "pretrain", "started": "2026-12-02T10:01:30Z", "seconds": 600},
                {"stage": "pretrain", "started": "2026-12-02T11:00:00Z", "seconds": 300},
                {"stage": "sft", "started": "2026-12-02T11:05:00Z", "seconds": None},  # killed
                {"stage": "rl", "started": "2026-12-02T11:30:00Z", "seconds": 120},
                {"stage": "sft2", "started": "2026-12-02T11:32:00Z", "seconds": 60},
                {"stage": "sft3", "started": "2026-12-02T11:33:00Z", "seconds": 60},
            ]
        )
    )
    command = "nanoseek eval --model nanoseek/default_model --suite json --n 10 --out runs/eval"
    other = "nanoseek eval --model runs/other --suite json --n 10 --out runs/eval"  # another model in that OUT
    (eval_dir / "metrics.json").write_text(
        json.dumps(
            {
                "commands": [
                    {"command": command, "started": "2026-12-02T12:00:00Z"},
                    {"command": other, "started": "2026-12-02T12:30:00Z", "models": ["other"]},
                ],
                "metrics": {"default_model": {"json": {"valid JSON": {"value": 1.0, "n": 10}}}},
            }
        )
    )
    shutil.copy(DEFAULT_MODEL_DIR / "config.json", model_dir / "config.json")

    card = write_card(run, eval_dir, model_dir, notes="")
    assert f"* `{command}`" in card and other not in card
    assert (
        "Wall clock end to end: 20 min over 6 stage session(s) (tokenizer 2 min, pretrain 15 min, rl 2 min, "
        "sft2 1 min, sft3 1 min;"
    ) in card
    assert "1 session(s) killed before they ended are not counted" in card
    assert "| pretrain | 3 | 12,288 | 3 min | 5.000 |" in card
    assert "| json | valid JSON | 1.000 (n=10) |" in card  # a metrics.json from before intervals and splits
    assert "RL, stage" not in card  # its RL stage left no log
    assert "* SFT round `sft2`: from `rl`'s model, 800 steps at lr 0.0005, seed 1234" in card


def test_the_card_summarises_the_rl_stage_from_its_log(tmp_path: Path):
    run, eval_dir, model_dir = tmp_path / "run", tmp_path / "eval", tmp_path / "model"
    for directory in (run / "rl", eval_dir, model_dir):
        directory.mkdir(parents=True)
    rows = [{"step": 0, "heldout_accuracy": 0.25}]
    rows += [
        {"step": i, "reward": 0.1 if i < 10 else 0.3, "completion_tokens": 120.0, "elapsed_s": 6.0 * (i + 1)}
        for i in range(20)
    ]
    rows += [{"step": 20, "heldout_accuracy": 0.375}]
    (run / "rl" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (eval_dir / "metrics.json").write_text(
        json.dumps({"metrics": {"m": {"json": {"valid JSON": {"value": 1.0, "n": 1}}}}})
    )
    shutil.copy(DEFAULT_MODEL_DIR / "config.json", model_dir / "config.json")
    card = write_card(run, eval_dir, model_dir, notes="")
    assert "20 steps of 16 prompts x 8 sampled replies in 2 min" in card
    assert "mean sampled reward 0.100 over the first 10 steps → 0.300 over the last 10" in card
    assert "25.0% at step 0 → 37.5% at step 20" in card
    assert "Stages with no logs in" in card and ": pretrain, sft, sft2, sft3 (trained elsewhere" in card
    assert "| stage | steps |" not in card
