"""Recipes with later rounds: a section named in `stages` takes the settings of the first section of its kind,
starts from the stage before it, and runs under `nanoseek train` like the built-in stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nanoseek.train.recipe import (
    RECIPE_DIR,
    apply_overrides,
    check_recipe,
    init_stage,
    load_recipe,
    loop_config,
    rl_config,
    stage_settings,
    training_stages,
)
from nanoseek.train.stages import all_stages

REPO = Path(__file__).resolve().parents[2]


def tiny_with_rounds(**sft2: object) -> dict:
    recipe = load_recipe("tiny")
    recipe["stages"] = ["pretrain", "sft", "rl", "sft2"]
    recipe["sft2"] = {"kind": "sft", **sft2}
    check_recipe(recipe, Path("tiny with rounds"))
    return recipe


def test_a_later_round_inherits_its_kinds_settings_and_starts_from_the_stage_before():
    recipe = tiny_with_rounds(steps=3, seed=7, mixture={"instructions": 12})
    assert all_stages(recipe) == ["tokenizer", "pretrain", "sft", "rl", "sft2"]
    settings = stage_settings(recipe, "sft2")
    assert settings["seq_len"] == recipe["sft"]["seq_len"] and settings["lr"] == recipe["sft"]["lr"]
    assert settings["steps"] == 3 and settings["mixture"] == {"instructions": 12}  # its own table, whole
    assert loop_config(recipe, "sft2").seed == 7 and loop_config(recipe, "sft").seed == recipe["seed"]
    assert [init_stage(recipe, s) for s in ("sft", "rl", "sft2")] == ["pretrain", "sft", "rl"]
    assert rl_config(recipe).steps == recipe["rl"]["steps"]
    # --set on the first section reaches the rounds that do not set the value themselves, and only those.
    apply_overrides(recipe, ["sft.lr=1e-3", "sft2.warmup_steps=3"])
    assert loop_config(recipe, "sft2").lr == 1e-3 and loop_config(recipe, "sft2").warmup_steps == 3
    assert loop_config(recipe, "sft").warmup_steps != 3


def test_stage_order_is_the_built_in_one_unless_the_recipe_lists_its_stages():
    assert training_stages(load_recipe("tiny")) == ["pretrain", "sft", "rl"]  # no `stages`
    default = load_recipe("default")
    assert training_stages(default) == ["pretrain", "sft", "rl", "sft2", "sft3"]
    assert init_stage(default, "sft2") == "rl" and loop_config(default, "sft3").seed != default["seed"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"stages": ["pretrain", "sft", "missing"]}, "not a stage section"),
        ({"stages": ["pretrain", "sft", "model"]}, "not a stage section"),
        ({"extra": {"kind": "ppo", "steps": 1}, "stages": ["pretrain", "sft", "extra"]}, "kind 'ppo'"),
        (  # the DPO stage trains an adapter
            {"extra": {"kind": "dpo", "steps": 1, "mixture": {"safety": 4}}, "stages": ["pretrain", "sft", "extra"]},
            "[extra] needs `lora`",
        ),
        (
            {"extra": {"kind": "sft", "stpes": 1}, "stages": ["pretrain", "sft", "extra"]},
            "unknown keys in [extra]: stpes",
        ),
        ({"stages": ["pretrain", "sft", "sft"]}, "names a stage twice"),
        ({"stages": ["pretrain", "sft"], "rl": {"steps": 1, "bogus": 1}}, "unknown keys in [rl]: bogus"),  # unlisted
    ],
)
def test_bad_stage_lists_are_refused_with_the_reason(change: dict, message: str):
    recipe = {**load_recipe("tiny"), **change}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_recipe(recipe, Path("bad"))


def test_only_the_first_stage_starts_from_scratch():
    recipe = load_recipe("tiny")
    recipe["stages"] = ["sft", "pretrain"]  # an SFT-only start, then more pretraining on top of it
    check_recipe(recipe, Path("reordered"))
    assert init_stage(recipe, "pretrain") == "sft"
    with pytest.raises(ValueError, match="no stage before it"):
        init_stage(recipe, "sft")


def test_nanoseek_train_runs_a_later_round_from_the_stage_before_it(run_dir: Path, tmp_path: Path, run_train):
    # lr 0: the round's AdamW steps leave every weight where it started, so its model shows where it started.
    text = (RECIPE_DIR / "tiny.toml").read_text()
    recipe = tmp_path / "rounds.toml"
    recipe.write_text(
        'stages = ["pretrain", "sft", "sft2"]\n' + text + '\n[sft2]\nkind = "sft"\nsteps = 2\nlr = 0.0\nseed = 5\n'
    )
    for stage in ("pretrain", "sft", "sft2"):
        done = run_train([stage, "--recipe", str(recipe), "--out", str(run_dir)], cwd=REPO)
        assert done.returncode == 0, done.stderr[-2000:]
    sft, sft2 = (load_file(run_dir / s / "model" / "model.safetensors") for s in ("sft", "sft2"))
    pretrain = load_file(run_dir / "pretrain" / "model" / "model.safetensors")
    assert sft.keys() == sft2.keys() and all(torch.equal(sft[k], sft2[k]) for k in sft)
    assert not all(torch.equal(sft[k], pretrain[k]) for k in sft)
    log = [json.loads(line) for line in (run_dir / "sft2" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [0, 1]
    assert json.loads((run_dir / "wall_clock.json").read_text())[-1]["stage"] == "sft2"
    dest = tmp_path / "exported"
    exported = run_train(
        ["export", "--recipe", str(recipe), "--out", str(run_dir), "--to", str(dest), "--dtype", "float32"], cwd=REPO
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert json.loads((dest / "generation_config.json").read_text())["trained_steps"] == 2  # sft2's, the last stage
    unknown = run_train(["sft9", "--recipe", str(recipe), "--out", str(run_dir)], cwd=REPO)
    assert unknown.returncode == 2 and "no stage 'sft9'" in unknown.stderr


def test_mla_moe_recipe_matches_the_default_in_active_parameters_with_a_fifth_of_mha_kv():
    from nanoseek.model.config import ModelConfig

    dense = ModelConfig(vocab_size=8192, **load_recipe("default")["model"])
    mla_moe = ModelConfig(vocab_size=8192, **load_recipe("mla_moe")["model"])
    assert mla_moe.is_moe and mla_moe.q_lora_rank is None
    assert abs(mla_moe.num_parameters(active=True) / dense.num_parameters() - 1) < 0.01
    assert mla_moe.num_parameters() > 1.6 * dense.num_parameters()
    mha_values = 2 * mla_moe.num_attention_heads * mla_moe.v_head_dim
    assert mla_moe.latent_dim / mha_values < 0.25
