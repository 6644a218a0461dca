"""Recipes: small TOML files in `nanoseek/train/recipes/` naming the data mixture, model shape and budget.

    python -m nanoseek.train.recipe default      # print the recipe as loaded, with the model's size

A recipe has a `[tokenizer]`, a `[model]` (ModelConfig fields, vocab_size comes from the tokenizer), and one
section per training stage (`[pretrain]`, `[sft]`) holding LoopConfig fields, `seq_len`, and a `mixture`
table of data counts (SFT may add `widened_share`). An optional `[rl]` section (RLConfig fields, with a
`mixture` of suite weights) adds the RL stage after SFT. `load_recipe` accepts a recipe name or a path to a TOML file.
A `[dpo]` section (DPOConfig fields, with a `mixture` of pair counts per source and a `lora` table) is the preference
stage, `nanoseek.train.dpo`.

Later rounds: a top-level `stages = ["pretrain", "sft", "rl", "sft2"]` runs the named sections in that order.
A section whose name is not a stage kind says what it is (`kind = "sft"`) and takes every setting of the
section of that kind that it does not set itself (its `mixture` replaces the whole table); it may set its own
`seed` (data draw and batch order). Each stage starts from the model of the stage before it unless it names
another with `init_from`. A stage section left out of `stages` is optional: `train all` skips it, `nanoseek train
NAME` runs it (`optional_stages`), from its `init_from`.

Post-training a pretrained base (`smol`): a `[base]` section (`model` = a named model, GGUF file or checkpoint
directory) replaces `[tokenizer]`, `[model]` and `[pretrain]`; its stage, first in `train all`, writes the base
with DeepSeek's special tokens added to its vocabulary (`base/model`, `tokenizer/`), and the stage after it
starts from there. A stage with a `lora` table (`{rank = 16, alpha = 32}`: `nanoseek.model.adapter.LoraSettings`)
trains a LoRA adapter instead of every weight.
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from nanoseek.model.config import ModelConfig
from nanoseek.train.config import DPOConfig, LoopConfig, RLConfig

RECIPE_DIR = Path(__file__).parent / "recipes"
STAGES = ("pretrain", "sft")  # the sections every recipe has
BASE_STAGES = ("base", "sft")  # the sections of a recipe that post-trains a pretrained base
STAGE_KINDS = ("pretrain", "sft", "dpo", "rl")
# Stage keys that shape the data or the stage order rather than the loop (`widened_share`, `direct_copies`: see
# `nanoseek.train.data.sft_corpus`).
DATA_KEYS = {"seq_len", "mixture", "init_from", "widened_share", "direct_copies", "kind", "lora"}
# Settings a later round does not take from the first section of its kind.
NOT_INHERITED = {"init_from", "kind", "seed"}
# RL and DPO stage keys that are not fields of their config.
RL_STAGE_KEYS = {"init_from", "kind", "lora"}
DPO_STAGE_KEYS = {"init_from", "kind", "lora"}


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


def load_recipe(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = RECIPE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ValueError(
            f"unknown recipe {name_or_path!r}: expected one of {', '.join(available_recipes())} "
            "or a path to a .toml file"
        )
    try:
        recipe = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"recipe {path} is not valid TOML: {exc}") from exc
    check_recipe(recipe, path)
    recipe.setdefault("name", path.stem)
    return recipe


def training_stages(recipe: dict[str, Any]) -> list[str]:
    """The recipe's training stages in the order `nanoseek train all` runs them (the tokenizer comes first)."""
    return list(recipe.get("stages") or [s for s in STAGE_KINDS if s in recipe])


def optional_stages(recipe: dict[str, Any]) -> list[str]:
    """Stage sections that `stages` leaves out: `train all` skips them, `nanoseek train NAME` runs one."""
    order = training_stages(recipe)
    return [
        name
        for name, section in recipe.items()
        if name not in order and isinstance(section, dict) and (name in STAGE_KINDS or "kind" in section)
    ]


def stage_kind(recipe: dict[str, Any], stage: str) -> str:
    return recipe[stage].get("kind", stage)


def stage_settings(recipe: dict[str, Any], stage: str) -> dict[str, Any]:
    """A stage's settings: its own, over those of the first section of its kind (for later rounds)."""
    kind = stage_kind(recipe, stage)
    inherited = {k: v for k, v in recipe.get(kind, {}).items() if k not in NOT_INHERITED} if kind != stage else {}
    return {**inherited, **recipe[stage]}


def stage_seed(recipe: dict[str, Any], stage: str) -> int:
    return recipe[stage].get("seed", recipe["seed"])


def init_stage(recipe: dict[str, Any], stage: str) -> str:
    """What this stage starts from: `init_from` (a stage or any folder in the run directory, whose model/ it
    loads; else a checkpoint directory, GGUF file or named model), else the stage before it."""
    if "init_from" in recipe[stage]:
        return recipe[stage]["init_from"]
    order = training_stages(recipe)
    if stage not in order or order.index(stage) == 0:
        raise ValueError(f"stage {stage!r} has no stage before it to start from: set its `init_from`")
    return order[order.index(stage) - 1]


def check_recipe(recipe: dict[str, Any], path: Path) -> None:
    required = BASE_STAGES if "base" in recipe else ("tokenizer", "model", *STAGES)
    for section in required:
        if section not in recipe:
            raise ValueError(f"recipe {path} has no [{section}] section")
    if "seed" not in recipe:
        raise ValueError(f"recipe {path} needs a top-level `seed`")
    if "base" in recipe and not isinstance(recipe["base"].get("model"), str):
        raise ValueError(f"recipe {path}: [base] needs `model` (a named model, GGUF file or checkpoint directory)")
    order = training_stages(recipe)
    if len(set(order)) != len(order):
        raise ValueError(f"recipe {path}: `stages` names a stage twice: {order}")
    # Stage sections left out of `stages` are checked too: a typo there should not wait for the day they run.
    unlisted = optional_stages(recipe)
    loop_keys = {f.name for f in fields(LoopConfig)} | DATA_KEYS
    valid_keys = {
        "pretrain": loop_keys,
        "sft": loop_keys,
        "rl": {f.name for f in fields(RLConfig)} | RL_STAGE_KEYS,
        "dpo": {f.name for f in fields(DPOConfig)} | DPO_STAGE_KEYS,
    }
    for stage in order + unlisted:
        if not isinstance(recipe.get(stage), dict) or stage in ("tokenizer", "model"):
            raise ValueError(f"recipe {path}: `stages` names {stage!r}, which is not a stage section")
        kind = stage_kind(recipe, stage)
        if kind not in STAGE_KINDS:
            raise ValueError(f"recipe {path}: [{stage}] has kind {kind!r}: expected one of {', '.join(STAGE_KINDS)}")
        unknown = set(recipe[stage]) - valid_keys[kind]
        if unknown:
            raise ValueError(f"recipe {path}: unknown keys in [{stage}]: {', '.join(sorted(unknown))}")
        settings = stage_settings(recipe, stage)
        needed = {"rl": ("steps",), "dpo": ("steps", "mixture", "lora")}.get(
            kind, ("steps", "batch_size", "seq_len", "mixture")
        )
        for key in needed:
            if key not in settings:
                raise ValueError(f"recipe {path}: [{stage}] needs `{key}`")
        if stage in order[1:]:
            init_stage(recipe, stage)  # raises when there is nothing to start from
        if "lora" in settings:
            from nanoseek.model.adapter import LoraSettings

            try:
                LoraSettings.from_table(settings["lora"])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"recipe {path}: [{stage}] lora: {exc}") from exc


def config_arguments(recipe: dict[str, Any], stage: str, not_fields: set[str]) -> dict[str, Any]:
    """A stage's settings as keyword arguments of its config dataclass: the keys that are not fields dropped,
    the seed the stage's own or the recipe's."""
    settings = {k: v for k, v in stage_settings(recipe, stage).items() if k not in not_fields}
    return {"seed": recipe["seed"], **settings}


def loop_config(recipe: dict[str, Any], stage: str) -> LoopConfig:
    return LoopConfig(**config_arguments(recipe, stage, DATA_KEYS))


def rl_config(recipe: dict[str, Any], stage: str = "rl") -> RLConfig:
    return RLConfig(**config_arguments(recipe, stage, RL_STAGE_KEYS))


def dpo_config(recipe: dict[str, Any], stage: str = "dpo") -> DPOConfig:
    return DPOConfig(**config_arguments(recipe, stage, DPO_STAGE_KEYS))


if __name__ == "__main__":
    loaded = load_recipe(sys.argv[1] if len(sys.argv) > 1 else "default")
    config = ModelConfig(vocab_size=loaded["tokenizer"]["vocab_size"], **loaded["model"])
    print(loaded)
    print(f"model: {config.num_parameters() / 1e6:.2f}M parameters")


def apply_overrides(recipe: dict, overrides: list[str]) -> dict:
    """`--set SECTION.KEY=VALUE` overrides (TOML values) applied to a loaded recipe, then checked."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects SECTION.KEY=VALUE, got {override!r}")
        try:
            parsed = tomllib.loads(f"value = {value}")["value"]
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"--set {override!r}: {value!r} is not a TOML value ({exc})") from exc
        *sections, leaf = key.split(".")
        table = recipe
        for section in sections:
            if not isinstance(table.get(section), dict):
                raise ValueError(f"--set {override!r}: the recipe has no [{'.'.join(sections)}] table")
            table = table[section]
        table[leaf] = parsed
    check_recipe(recipe, Path(f"{recipe['name']} with --set overrides"))
    return recipe
