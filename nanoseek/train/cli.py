"""`nanoseek train`: run the training stages of a recipe.

    nanoseek train tokenizer|pretrain|sft|rl|STAGE|all --recipe NAME [--out DIR] [--resume | --restart]
    nanoseek train dpo --recipe smol --out runs/smol               # an optional stage (not in `stages`), by name
    nanoseek train export --out DIR --to nanoseek/default_model     # copy the last stage's model
    nanoseek train merge-experiment --recipe smol_specialists       # specialists, merges, evals, the V2.5 table
    torchrun --nproc_per_node 2 -m nanoseek.train.cli pretrain --recipe tiny --out runs/tiny   # data parallel
    torchrun --nproc_per_node 2 -m nanoseek.train.cli pretrain --recipe tiny --set 'pretrain.sharding="fsdp"'  # sharded
    torchrun --nproc_per_node 2 -m nanoseek.train.cli rl --recipe tiny --out runs/tiny        # RL rollouts split

Recipes live in nanoseek/train/recipes/*.toml (`default`: the embedded model, <= 2 h on a 2-core CPU;
`tiny`: seconds, for tests). A stage resumes from its last checkpoint by default, so rerunning the same
command after an interruption (even `kill -9`) continues where it stopped, with the same loss curve.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from nanoseek.train.recipe import apply_overrides, available_recipes, load_recipe, optional_stages


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nanoseek train", description="Train nanoseek's tokenizer and model.")
    parser.add_argument(
        "stage",
        help="a stage of the recipe (tokenizer, pretrain, sft, rl, a later round it names in `stages`, or an "
        "optional stage section such as dpo), `all` to run the `stages` in order, `export`, or `merge-experiment` "
        "(its own --help)",
    )
    parser.add_argument("--recipe", default="default", help=f"one of {', '.join(available_recipes())} or a .toml path")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default runs/RECIPE)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--resume",
        dest="resume",
        action="store_true",
        default=True,
        help="continue from the stage's last checkpoint if there is one (the default)",
    )
    group.add_argument(
        "--restart",
        dest="resume",
        action="store_false",
        help="ignore existing checkpoints and train the stage from scratch",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a recipe value, e.g. --set pretrain.steps=50 (VALUE is TOML)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per process, overriding the recipe's `threads` "
        "(on a crowded machine 1 beats 2: no barrier waits, see BENCHMARKS.md)",
    )
    parser.add_argument("--to", type=Path, default=None, help="export: destination directory")
    parser.add_argument(
        "--stage-dir", default=None, help="export: which stage's model to export (default: the last stage that has one)"
    )
    parser.add_argument("--dtype", default="bfloat16", help="export: weight dtype (bfloat16 or float32)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["merge-experiment"]:  # its own flags (nanoseek.train.merge_experiment)
        from nanoseek.train.merge_experiment import main as merge_experiment

        return merge_experiment(argv[1:])
    args = parse_args(argv)
    try:
        recipe = apply_overrides(load_recipe(args.recipe), args.overrides)
    except ValueError as exc:
        print(f"nanoseek train: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path("runs") / recipe["name"]
    threads = args.threads or recipe.get("threads")
    if threads:
        import torch

        torch.set_num_threads(threads)
    # torch and the stages load only now: `nanoseek train --help` and a bad flag answer at once
    from nanoseek.train.loop import TrainingStopped
    from nanoseek.train.stages import all_stages, run_stage

    stages = all_stages(recipe) + optional_stages(recipe)
    if args.stage not in (*stages, "all", "export"):
        print(
            f"nanoseek train: recipe {recipe['name']} has no stage {args.stage!r}: expected one of "
            f"{', '.join(stages)}, all or export",
            file=sys.stderr,
        )
        return 2

    if args.stage == "export":
        from nanoseek.train.export import export_model

        if args.to is None:
            print("nanoseek train export: --to DIR is required", file=sys.stderr)
            return 2
        stage_dir = args.stage_dir or next(
            (s for s in reversed(all_stages(recipe)) if (out / s / "model").is_dir()), "sft"
        )
        export_model(out / stage_dir / "model", args.to, dtype=args.dtype)
        return 0
    try:
        for stage in all_stages(recipe) if args.stage == "all" else [args.stage]:
            run_stage(stage, recipe, out, resume=args.resume)
    except (FileNotFoundError, ValueError) as exc:
        print(f"nanoseek train: {exc}", file=sys.stderr)
        return 1
    except TrainingStopped as stop:
        again = shlex.join(["nanoseek", "train", *argv])
        print(
            f"nanoseek train: stopped by Ctrl-C after step {stop.step}; the checkpoint is saved in {stop.checkpoint}. "
            f"Resume with the same command: {again}",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
