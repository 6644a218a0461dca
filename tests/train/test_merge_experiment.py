"""`nanoseek train merge-experiment` end to end on a tiny random ChatML base (no network): specialists trained
from one base, merged by mergekit on their full weights, every model evaluated, the V2.5 table written; a rerun
skips every step, and a merge of LoRA specialists is the merge of their full weights.

nice -n 19 python3 -m pytest tests/train/test_merge_experiment.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from nanoseek.eval.runner import read_records, results_path
from nanoseek.train.cli import main as train_main
from nanoseek.train.merge_experiment import MERGE_METHODS, merge_configs
from tests.train.test_train_lora import chatml_base_checkpoint

# The module's first test pays for the whole experiment (~20 s of CPU): room for a crowded machine, where a run at
# nice 19 waited past the default 300 s.
pytestmark = pytest.mark.timeout(900)
ROWS = ["base", "chat", "coder", "data-mix", *MERGE_METHODS]
# Small enough that the seven models' evaluations take seconds: one item per chat suite and split, two code and
# two FIM items, a 4-token thought.
EVAL_FLAGS = ["--n", "1", "--code-n", "2", "--budgets", "4", "--max-tokens", "4", "--code-max-tokens", "8"]


def write_recipe(path: Path, base: Path) -> Path:
    """recipe smol_specialists in miniature: the same stages and roles, a few steps of tiny mixtures."""
    path.write_text(
        f"""seed = 5
stages = ["chat", "coder", "sft"]

[base]
model = "{base}"

[sft]
init_from = "base"
seq_len = 96
steps = 6
batch_size = 2
lr = 5e-3
warmup_steps = 1
eval_every = 0
eval_rows = 2
checkpoint_every = 3
lora = {{ rank = 4, alpha = 8 }}

[sft.mixture]
instructions = 6
identity_posttrained = 2
math = 6
fim = 4

[chat]
kind = "sft"
init_from = "base"
steps = 3

[chat.mixture]
instructions = 6
identity_posttrained = 2

[coder]
kind = "sft"
init_from = "base"
steps = 3

[coder.mixture]
math = 6
fim = 4
"""
    )
    return path


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(recipe, run directory) after one full run of the experiment, plus another model compared alongside."""
    root = tmp_path_factory.mktemp("merge_experiment")
    recipe = write_recipe(root / "specialists.toml", chatml_base_checkpoint(root / "base"))
    out = root / "run"
    argv = ["merge-experiment", "--recipe", str(recipe), "--out", str(out), "--threads", "1", *EVAL_FLAGS]
    assert train_main([*argv, "--also", f"again={out / 'chat' / 'model'}"]) == 0
    return recipe, out


def test_every_model_is_trained_merged_evaluated_and_compared(experiment):
    _, out = experiment
    for stage, steps in (("chat", 3), ("coder", 3), ("sft", 6)):
        assert json.loads((out / stage / "model" / "generation_config.json").read_text())["trained_steps"] == steps
        assert (out / stage / "adapter" / "nanoseek_adapter.json").exists()
    # The base row is the base as it is: its own ChatML vocabulary, without DeepSeek's tokens.
    assert "<|im_start|>" in (out / "original" / "tokenizer.json").read_text()
    assert "｜begin▁of▁sentence｜" not in (out / "original" / "tokenizer.json").read_text()
    for label in [*ROWS, "again"]:
        for suite, split in (("instructions", "phrasing"), ("math", "handwritten"), ("arena", "phrasing")):
            assert read_records(results_path(out / "eval" / label, suite, split)), (label, suite, split)
        assert read_records(results_path(out / "eval" / label, "code", "heldout"))
    # The base has no FIM tokens: n/a there; every model trained from it has them.
    assert "fim" in json.loads((out / "eval" / "base" / "not_applicable.json").read_text())
    assert len(read_records(results_path(out / "eval" / "coder", "fim", "heldout"))) == 2
    table = json.loads((out / "comparison" / "comparison.json").read_text())
    assert list(table["rows"]) == [*ROWS, "again"] and table["base"] == "base"
    arena = next(c for c in table["columns"] if c["title"] == "arena win rate vs base")
    assert arena["cells"]["base"] is None and all(arena["cells"][label]["n"] > 0 for label in ROWS[1:])
    assert (out / "comparison" / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_merges_operate_on_the_specialists_full_weights(experiment):
    _, out = experiment
    for method, config in merge_configs(out).items():
        assert yaml.safe_load((out / "merges" / f"{method}.yaml").read_text()) == config
    base, chat, coder = (load_file(out / name / "model" / "model.safetensors") for name in ("base", "chat", "coder"))
    linear, slerp = (load_file(out / "merges" / m / "model.safetensors") for m in ("linear", "slerp"))
    # LoRA moved the projections and DeepSeek's token rows away from the base, each specialist its own way.
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(chat[q_proj], base[q_proj]) and not torch.equal(chat[q_proj], coder[q_proj])
    # Linear is the mean of the full weights, B·A included: the mean of two rank-4 deltas, not a rank-4 product.
    for name, tensor in linear.items():
        torch.testing.assert_close(tensor, (chat[name] + coder[name]) / 2, rtol=0, atol=1e-6)
    delta = linear[q_proj] - base[q_proj]
    assert torch.linalg.matrix_rank(delta) > 4
    # SLERP halfway between two nearby weight vectors is close to their mean, but on the arc, not the chord.
    assert not torch.equal(slerp[q_proj], linear[q_proj])
    torch.testing.assert_close(slerp[q_proj], linear[q_proj], rtol=0, atol=1e-2)


def test_a_rerun_skips_every_step(experiment, capsys):
    recipe, out = experiment
    capsys.readouterr()
    watched = [
        out / "chat" / "model" / "model.safetensors",
        out / "merges" / "ties" / "model.safetensors",
        results_path(out / "eval" / "ties", "math", "phrasing"),
    ]
    before = [path.stat().st_mtime_ns for path in watched]
    argv = ["merge-experiment", "--recipe", str(recipe), "--out", str(out), "--threads", "1", *EVAL_FLAGS]
    assert train_main(argv) == 0
    printed = capsys.readouterr().out
    assert [path.stat().st_mtime_ns for path in watched] == before
    for stage in ("chat", "coder", "sft"):
        assert f"train: {stage} already trained" in printed
    assert "base: already in" in printed
    assert all(f"merge: {method} already in" in printed for method in MERGE_METHODS)
    assert printed.count("eval: ") == printed.count("already has") == 2 * len(ROWS)


def test_the_recipe_trains_the_data_mix_on_the_union_for_the_specialists_steps_together():
    from nanoseek.train.recipe import init_stage, load_recipe, loop_config, stage_settings

    recipe = load_recipe("smol_specialists")
    chat, coder, mix = (stage_settings(recipe, stage) for stage in ("chat", "coder", "sft"))
    assert mix["mixture"] == chat["mixture"] | coder["mixture"]
    assert not set(chat["mixture"]) & set(coder["mixture"])
    assert mix["steps"] == chat["steps"] + coder["steps"]  # equal total tokens
    smol = load_recipe("smol")
    assert recipe["base"] == smol["base"]  # the same base, vocabulary and self-distilled answers as the default
    for stage in ("chat", "coder", "sft"):
        assert init_stage(recipe, stage) == "base"
        assert stage_settings(recipe, stage)["lora"] == smol["sft"]["lora"]
        assert stage_settings(recipe, stage)["direct_copies"] == smol["sft"]["direct_copies"]
        ours, smols = loop_config(recipe, stage), loop_config(smol, "sft")
        assert (ours.lr, ours.batch_size, ours.grad_accum, ours.bf16) == (
            smols.lr,
            smols.batch_size,
            smols.grad_accum,
            smols.bf16,
        )
