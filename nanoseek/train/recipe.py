"""Recipes: small TOML files in `nanoseek/train/recipes/` naming the data mixture, model shape and budget.

    python -m nanoseek.train.recipe default      # print the recipe as loaded, with the model's size

A recipe has a `[tokenizer]`, a `[model]` (ModelConfig fields, vocab_size comes from the tokenizer), and one
section per training stage (`[pretrain]`, `[sft]`) holding LoopConfig fields, `seq_len`, and a `mixture`
table of data counts (SFT may add `widened_share`). An optional `[rl]` section (RLConfig fields, with a
`mixture` of suite weights) adds the RL stage after SFT. `load_recipe` accepts a recipe name or a path to a TOML file.
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nanoseek.train.loop import LoopConfig

RECIPE_DIR = Path(__file__).parent / "recipes"
STAGES = ("pretrain", "sft")
# Stage keys that shape the data rather than the loop (`widened_share`: see `nanoseek.train.data.sft_corpus`).
DATA_KEYS = {"seq_len", "mixture", "init_from", "widened_share"}


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


def load_recipe(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = RECIPE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ValueError(f"unknown recipe {name_or_path!r}: expected one of {', '.join(available_recipes())} "
                         "or a path to a .toml file")
    try:
        recipe = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"recipe {path} is not valid TOML: {exc}") from exc
    check_recipe(recipe, path)
    recipe.setdefault("name", path.stem)
    return recipe


def check_recipe(recipe: dict[str, Any], path: Path) -> None:
    from nanoseek.train.loop import LoopConfig

    for section in ("tokenizer", "model", *STAGES):
        if section not in recipe:
            raise ValueError(f"recipe {path} has no [{section}] section")
    if "seed" not in recipe:
        raise ValueError(f"recipe {path} needs a top-level `seed`")
    loop_fields = {f.name for f in fields(LoopConfig)}
    for stage in STAGES:
        unknown = set(recipe[stage]) - loop_fields - DATA_KEYS
        if unknown:
            raise ValueError(f"recipe {path}: unknown keys in [{stage}]: {', '.join(sorted(unknown))}")
        for key in ("steps", "batch_size", "seq_len", "mixture"):
            if key not in recipe[stage]:
                raise ValueError(f"recipe {path}: [{stage}] needs `{key}`")
    if "rl" in recipe:
        from nanoseek.train.rl import RLConfig

        unknown = set(recipe["rl"]) - {f.name for f in fields(RLConfig)} - {"init_from"}
        if unknown:
            raise ValueError(f"recipe {path}: unknown keys in [rl]: {', '.join(sorted(unknown))}")
        if "steps" not in recipe["rl"]:
            raise ValueError(f"recipe {path}: [rl] needs `steps`")


def loop_config(recipe: dict[str, Any], stage: str) -> "LoopConfig":
    from nanoseek.train.loop import LoopConfig

    settings = {k: v for k, v in recipe[stage].items() if k not in DATA_KEYS}
    return LoopConfig(seed=recipe["seed"], **settings)


if __name__ == "__main__":
    from nanoseek.model.config import ModelConfig

    loaded = load_recipe(sys.argv[1] if len(sys.argv) > 1 else "default")
    config = ModelConfig(vocab_size=loaded["tokenizer"]["vocab_size"], **loaded["model"])
    print(loaded)
    print(f"model: {config.num_parameters() / 1e6:.2f}M parameters")
