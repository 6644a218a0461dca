"""The model card: each goal verdict follows from the figures it is given, and the card is built from files
(the run's logs and wall clock, the eval directory's metrics and recorded commands)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

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


def test_a_dpo_log_is_no_row_of_the_training_table(tmp_path: Path):
    """A DPO stage logs a preference loss and no token count (docs/runs/2026-12-07-smol5/dpo-*/log.jsonl): the
    table of next-token stages leaves it out instead of failing on it."""
    from nanoseek.train.model_card import stage_summary

    (tmp_path / "dpo").mkdir()
    rows = [{"step": 0, "loss": 0.69, "reward_accuracy": 0.19, "elapsed_s": 26.4}, {"step": 8, "eval_loss": 0.5}]
    (tmp_path / "dpo" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert stage_summary(tmp_path, "dpo") is None


def test_an_adapter_card_is_built_from_the_adapter_its_run_and_the_eval_records(tmp_path: Path):
    """A real tiny LoRA adapter on a ChatML base, both evaluated by `nanoseek eval`: the card reads the LoRA
    settings and parameter count from the adapter's files, the prose from its card.toml, the training table from
    the run's log, and every evaluation figure from the per-item records (the base's FIM: n/a, it has no FIM
    tokens); it quotes the command that regenerates it, and that command writes the same card."""
    import torch

    from nanoseek.eval import cli as eval_cli
    from nanoseek.eval.report import wilson
    from nanoseek.eval.runner import read_records
    from nanoseek.model.adapter import LoraSettings, attach_lora, extend_vocabulary, save_adapter, trainable_token_ids
    from nanoseek.model.loader import load_checkpoint
    from nanoseek.train.model_card import main
    from tests.train.test_train_lora import chatml_base_checkpoint

    base_dir = chatml_base_checkpoint(tmp_path / "base")
    base = load_checkpoint(base_dir, dtype="float32")
    model, tokenizer = extend_vocabulary(base.model, base.tokenizer)
    torch.manual_seed(0)
    peft_model = attach_lora(model, LoraSettings(rank=4, alpha=8), trainable_token_ids(tokenizer))
    lora_parameters = sum(p.numel() for name, p in peft_model.named_parameters() if ".lora_" in name)
    adapter = save_adapter(
        peft_model, tmp_path / "adapter", base=str(base_dir), generation_config={"max_new_tokens": 64}
    )
    (adapter / "card.toml").write_text(
        'title = "tiny assistant"\nlicense = """\nMIT,\n    for the test."""\n'
        'limits = ["It is random."]\n[training]\nrecipe = "smol"\nstage = "sft"\n[evaluation]\nbase = "base"\n'
    )

    run = tmp_path / "run"
    (run / "sft").mkdir(parents=True)
    steps = [
        {"step": i, "loss": 3.0 - i, "tokens": 512 * (i + 1), "elapsed_s": 60.0 * (i + 1), "bf16": True}
        for i in range(3)
    ]
    (run / "sft" / "log.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in steps + [{"step": 3, "eval_loss": 1.5}])
    )

    eval_dir = tmp_path / "eval"
    common = ["--suite", "json,fim", "--split", "phrasing,heldout", "--n", "2", "--max-tokens", "4", "--samples", "1"]
    for path, name in ((base_dir, "base"), (adapter, "tiny-sft")):
        argv = ["--model", str(path), "--name", name, *common, "--out", str(eval_dir), "--no-progress"]
        assert eval_cli.main(argv) == 0

    argv = ["--model", str(adapter), "--run", str(run), "--eval", str(eval_dir)]
    assert main(argv) == 0
    card = (adapter / "README.md").read_text()

    assert card.startswith("# tiny assistant\n")
    assert f"python -m nanoseek.train.model_card --model {adapter} --run {run} --eval {eval_dir}\n" in card
    layers = base.model.config.num_hidden_layers
    assert (
        f"LoRA rank 4, alpha 8 on down_proj, gate_up_proj, o_proj, qkv_proj of {layers} blocks "
        f"({lora_parameters:,} parameters) plus the rows of 19 tokens added to the vocabulary"
    ) in card
    assert "generation config: max_new_tokens 64." in card
    assert "* License: MIT, for the test.\n" in card and "* It is random.\n" in card
    assert "Recipe `nanoseek/train/recipes/smol.toml`; this adapter is what its stage `sft` saved." in card
    assert "| sft (this adapter) | 3 | 1,536 | 3 min | 3.000 | 2.000 | 1.500 (step 3) | bf16 autocast |" in card

    # Every evaluation figure is the mean of the records, with its interval; FIM is n/a for the base only.
    def cell(records: list[dict], key: str) -> str:
        value = sum(r["scores"][key] for r in records) / len(records)
        low, high = wilson(value, len(records))
        return f"{value:.1%} [{100 * low:.1f}, {100 * high:.1f}] (n={len(records)})"

    valid = [cell(read_records(eval_dir / m / "json.phrasing.jsonl"), "valid") for m in ("base", "tiny-sft")]
    assert "| base (base) | tiny-sft (this adapter) |" in card
    assert f"| json | valid JSON | {valid[0]} | {valid[1]} |" in card
    assert f"| JSON Output valid | phrasing | {valid[0]} | {valid[1]} |" in card
    fim = cell(read_records(eval_dir / "tiny-sft" / "fim.jsonl"), "exact")
    assert f"| fim | exact match | n/a | {fim} |" in card
    assert "* base, fim: " in card
    assert "| FIM exact line ≥ 20% | " in card and "(heldout, n=2)" in card
    assert "| general knowledge ≥ 95% of the base's | not measured | — |" in card
    for command in json.loads((eval_dir / "commands.json").read_text()):
        assert f"* `{command['command']}`" in card

    # The quoted command, run again, writes the same card.
    (adapter / "README.md").unlink()
    assert main(argv) == 0
    assert (adapter / "README.md").read_text() == card


def test_an_adapters_card_toml_is_checked(tmp_path: Path):
    from nanoseek.train.model_card import read_card_data

    assert read_card_data(tmp_path) == {}
    (tmp_path / "card.toml").write_text('licence = "MIT"\n')
    with pytest.raises(ValueError, match="unknown key 'licence'"):
        read_card_data(tmp_path)
    (tmp_path / "card.toml").write_text('[training]\nrecipe = "smol"\nsteps = 3\n')
    with pytest.raises(ValueError, match=r"\[training\] must be a table of recipe, commit, stage, how"):
        read_card_data(tmp_path)
