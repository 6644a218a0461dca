"""The chat + coder merge experiment (issue 21), end to end, as DeepSeek-V2.5 merged DeepSeek-V2-Chat and
DeepSeek-Coder-V2: `nanoseek train merge-experiment`.

    nanoseek train merge-experiment --recipe smol_specialists --out runs/merge
    nanoseek train merge-experiment --recipe smol_specialists --out runs/merge --until train   # one step at a time
    nanoseek train merge-experiment ... --also default=runs/smol/rl/adapter      # another model in the table

Every step skips what already exists, so after any stop (kill -9 included) the same command goes on:

1. train: the recipe's base stage, then its SFT stages `chat`, `coder` and `sft` (the data-mix model on the union of
   both mixtures), each resuming from its last checkpoint (recipe `smol_specialists` says what each learns);
2. base: the recipe's base model as it is (its own chat format, no added tokens), in float32: OUT/original. The
   table's base row, and what the arena win rates are against; its weights are those every adapter was trained on;
3. merge: mergekit configurations for linear, TIES and SLERP (OUT/merges/NAME.yaml, written once: edit one and
   delete OUT/merges/NAME to merge again) and their merges (OUT/merges/NAME/) with `nanoseek merge`;
4. eval: `nanoseek eval` of every model into OUT/eval/LABEL: the chat suites (instructions, general knowledge,
   multi-turn, arena, math, tools, JSON, safety with spill-over) on the phrasing and hand-written splits, HumanEval,
   generated code and FIM on the held-out split; a model whose results are complete is not loaded again;
5. compare: `nanoseek compare` of all rows against the base: OUT/comparison/comparison.md, .json and .png.

How LoRA specialists are merged: their full weights, base + B·A as each stage exports them (STAGE/model, the
same logits as the adapter, tests/train/test_train_lora.py), with mergekit, never the adapters' factors. A LoRA
delta B·A is the same for (B·R, R⁻¹·A) with any invertible R, so the factors of two adapters trained apart share
no coordinates: their mean is not the mean of the deltas (mean(B)·mean(A) adds the cross terms B_chat·A_coder),
TIES would trim and elect signs on meaningless entries, and SLERP would measure the angle between
parametrisations rather than between models. On full weights each method does what mergekit defines: linear is
the mean of base + ΔW_chat and base + ΔW_coder, TIES trims and sign-elects the entries of the real task vectors
ΔW (and of the trained rows of DeepSeek's special tokens, which are no low-rank delta at all), SLERP interpolates
the two models' weights. The merge of two rank-16 deltas is of rank up to 32 (TIES: any rank), so it is shipped
as a full checkpoint, not as an adapter of the specialists' rank.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nanoseek.eval.cli import main as eval_main
from nanoseek.eval.compare import main as compare_main
from nanoseek.eval.runner import read_not_applicable, read_records, results_path
from nanoseek.fileio import write_text_atomic
from nanoseek.model.convert import convert
from nanoseek.tasks import generate
from nanoseek.tasks import splits as suite_splits
from nanoseek.train.merge import merge_models
from nanoseek.train.recipe import apply_overrides, load_recipe, loop_config, stage_kind, training_stages
from nanoseek.train.stages import all_stages, exported_step, run_stage

# The recipe's stages, by the role they play in the experiment.
CHAT, CODER, MIX = "chat", "coder", "sft"
# Table rows in order: label -> stage whose model/ it is (the base row and the merges are added around them).
SPECIALISTS = {"chat": CHAT, "coder": CODER, "data-mix": MIX}
MERGE_METHODS = ("linear", "ties", "slerp")
STEPS = ("train", "base", "merge", "eval", "compare")
# `nanoseek eval` in two runs per model, as the default model's report card is evaluated: the chat suites on the
# wordings never trained on and the hand-written items; code and FIM where HumanEval and FIM exist (held-out).
CHAT_SUITES = ("instructions", "knowledge", "multiturn", "arena", "math", "tools", "json", "safety")
CHAT_SPLITS = ("phrasing", "handwritten")
CODE_SUITES = ("code", "fim")
CODE_SPLITS = ("heldout",)


@dataclass(frozen=True)
class EvalPlan:
    """What every model is asked (the `nanoseek eval` flags of both runs)."""

    # The default model's report card asks as many (docs/runs/2026-12-06-smol/eval/): its rows compare with these.
    n: int = 100  # items per chat suite and split
    code_n: int = 328  # code items (all 164 HumanEval problems and as many generated) and FIM items
    budgets: str = "256"  # math thinking budget(s)
    max_tokens: int = 128
    code_max_tokens: int = 256
    concurrency: int = 16
    seed: int = 0
    progress: bool = False
    unsafe_exec: bool = False

    def runs(self) -> list[tuple[tuple[str, ...], tuple[str, ...], int]]:
        return [(CHAT_SUITES, CHAT_SPLITS, self.n), (CODE_SUITES, CODE_SPLITS, self.code_n)]

    def argv(self, suites: tuple[str, ...], splits: tuple[str, ...], n: int) -> list[str]:
        flags = [
            *("--suite", ",".join(suites), "--split", ",".join(splits), "--n", str(n), "--seed", str(self.seed)),
            *("--samples", "1", "--budgets", self.budgets, "--max-tokens", str(self.max_tokens)),
            *("--code-max-tokens", str(self.code_max_tokens), "--concurrency", str(self.concurrency)),
        ]
        return flags + ([] if self.progress else ["--no-progress"]) + (["--unsafe-exec"] if self.unsafe_exec else [])


def say(message: str) -> None:
    print(f"merge-experiment: {message}", flush=True)


# ---------------------------------------------------------------- 1. train


def check_recipe_roles(recipe: dict[str, Any]) -> None:
    if "base" not in recipe:
        raise ValueError(f"recipe {recipe['name']} has no [base]: the specialists must share a pretrained base")
    for stage in SPECIALISTS.values():
        if stage not in training_stages(recipe) or stage_kind(recipe, stage) != "sft":
            raise ValueError(
                f"recipe {recipe['name']} needs SFT stages {', '.join(SPECIALISTS.values())} "
                f"(chat specialist, coder specialist, data-mix model); it has {', '.join(training_stages(recipe))}"
            )
        if recipe[stage].get("init_from") != "base":
            raise ValueError(f'recipe {recipe["name"]}: [{stage}] must start from the base (init_from = "base")')


def train_all(recipe: dict[str, Any], out: Path) -> None:
    """The base stage, then every SFT stage not already trained to its last step (each resumes where it stopped)."""
    for stage in all_stages(recipe):
        if stage != "base" and exported_step(out / stage / "model") == loop_config(recipe, stage).steps:
            say(f"train: {stage} already trained ({out / stage / 'model'})")
            continue
        say(f"train: {stage}")
        run_stage(stage, recipe, out, resume=True)


# ---------------------------------------------------------------- 2. the base as it is


def original_base(recipe: dict[str, Any], out: Path) -> Path:
    """The recipe's base in its own format and float32, written once (through a staging folder: whole or absent)."""
    target = out / "original"
    if (target / "model.safetensors").exists():
        say(f"base: already in {target}")
        return target
    staging = out / ".original.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    convert(recipe["base"]["model"], staging, "f32")
    staging.rename(target)
    say(f"base: {recipe['base']['model']} in float32 -> {target}")
    return target


# ---------------------------------------------------------------- 3. merge


def merge_configs(out: Path) -> dict[str, dict[str, Any]]:
    """The mergekit configuration of each method, over the specialists' full weights (the module docstring says
    why not their adapters). Linear: the plain mean. TIES: each task vector (specialist - base) keeps its
    largest half by magnitude, each entry's sign is elected by the summed deltas, the agreeing deltas are
    averaged. SLERP: halfway along the arc from the chat model to the coder, tensor by tensor."""
    base, chat, coder = (str(out / stage / "model") for stage in ("base", CHAT, CODER))
    return {
        "linear": {
            "merge_method": "linear",
            "models": [{"model": chat, "parameters": {"weight": 0.5}}, {"model": coder, "parameters": {"weight": 0.5}}],
            "dtype": "float32",
        },
        "ties": {
            "merge_method": "ties",
            "base_model": base,
            "models": [
                {"model": chat, "parameters": {"weight": 1.0, "density": 0.5}},
                {"model": coder, "parameters": {"weight": 1.0, "density": 0.5}},
            ],
            "parameters": {"normalize": True},
            "dtype": "float32",
        },
        "slerp": {
            "merge_method": "slerp",
            "base_model": chat,
            "models": [{"model": chat}, {"model": coder}],
            "parameters": {"t": 0.5},
            "dtype": "float32",
        },
    }


def merge_all(out: Path) -> dict[str, Path]:
    """Write each method's configuration (once) and merge it (once); {method: merged folder}."""
    merged = {}
    for method, config in merge_configs(out).items():
        path, target = out / "merges" / f"{method}.yaml", out / "merges" / method
        if not path.exists():
            write_text_atomic(path, yaml.safe_dump(config, sort_keys=False))
        if (target / "config.json").exists():
            say(f"merge: {method} already in {target}")
        else:
            started = time.perf_counter()
            merge_models(path, target, quiet=True)
            say(f"merge: {method} ({path}) in {time.perf_counter() - started:.0f}s -> {target}")
        merged[method] = target
    return merged


# ---------------------------------------------------------------- 4. eval


def models_to_evaluate(out: Path, also: dict[str, str]) -> dict[str, str]:
    """{label: --model value}, in the table's order: base, specialists, data-mix, merges, then `also`."""
    models = {"base": str(out / "original")}
    models |= {label: str(out / stage / "model") for label, stage in SPECIALISTS.items()}
    models |= {method: str(out / "merges" / method) for method in MERGE_METHODS}
    return models | also


def evaluated(results: Path, suites: tuple[str, ...], splits: tuple[str, ...], n: int, seed: int) -> bool:
    """Whether `results` (OUT/eval/LABEL) holds a record for every item this run would ask, or says the suite
    cannot be asked of the model (FIM without FIM tokens)."""
    not_applicable = read_not_applicable(results) if results.is_dir() else {}
    for suite in suites:
        if suite in not_applicable:
            continue
        for split in (s for s in splits if s in suite_splits(suite)):
            wanted = {item.id for item in generate(suite, split, n, seed, at_most=True)}
            done = {record["id"] for record in read_records(results_path(results, suite, split))}
            if not wanted <= done:
                return False
    return True


def evaluate_all(models: dict[str, str], out: Path, plan: EvalPlan) -> None:
    for label, model in models.items():
        for suites, splits, n in plan.runs():
            if evaluated(out / "eval" / label, suites, splits, n, plan.seed):
                say(f"eval: {label} already has {', '.join(suites)} on {', '.join(splits)} (n={n})")
                continue
            say(f"eval: {label} ({model}): {', '.join(suites)} on {', '.join(splits)}, n={n}")
            started = time.perf_counter()
            argv = ["--model", model, "--name", label, *plan.argv(suites, splits, n), "--out", str(out / "eval")]
            if eval_main(argv) != 0:
                raise RuntimeError(f"nanoseek eval {' '.join(argv)} failed")
            say(f"eval: {label} done in {(time.perf_counter() - started) / 60:.1f} min")


# ---------------------------------------------------------------- 5. compare


def compare_all(models: dict[str, str], out: Path) -> Path:
    rows = [f"{label}={out / 'eval' / label}" for label in models if (out / "eval" / label).is_dir()]
    if compare_main([*rows, "--out", str(out / "comparison")]) != 0:
        raise RuntimeError("nanoseek compare failed")
    return out / "comparison"


# ---------------------------------------------------------------- the command


def run_experiment(
    recipe: dict[str, Any], out: Path, plan: EvalPlan, also: dict[str, str] | None = None, until: str = "compare"
) -> None:
    """Every step up to and including `until`, each skipping what exists."""
    check_recipe_roles(recipe)
    steps = STEPS[: STEPS.index(until) + 1]
    models = models_to_evaluate(out, also or {})
    if "train" in steps:
        train_all(recipe, out)
    if "base" in steps:
        original_base(recipe, out)
    if "merge" in steps:
        merge_all(out)
    if "eval" in steps:
        evaluate_all(models, out, plan)
    if "compare" in steps:
        say(f"compare: {compare_all(models, out) / 'comparison.md'}")


def parse_also(specs: list[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    also = {}
    for spec in specs:
        label, sep, model = spec.partition("=")
        if not sep or not label or not model:
            parser.error(f"--also takes LABEL=MODEL (e.g. default=runs/smol/rl/adapter), got {spec!r}")
        if label in ("base", *SPECIALISTS, *MERGE_METHODS):
            parser.error(f"--also {spec}: the label {label!r} is one of the experiment's own rows")
        also[label] = model
    return also


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nanoseek train merge-experiment", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="smol_specialists", help="a recipe with [base] and stages chat, coder, sft")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default runs/RECIPE)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the recipe's `threads`)")
    parser.add_argument("--until", choices=STEPS, default="compare", help="the last step to run (default: all)")
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=MODEL", help="another model to compare")
    evaluation = parser.add_argument_group("evaluation (the `nanoseek eval` flags of every model)")
    evaluation.add_argument("--n", type=int, default=EvalPlan.n, help="items per chat suite and split")
    evaluation.add_argument(
        "--code-n", type=int, default=EvalPlan.code_n, help="code items (half HumanEval), FIM items"
    )
    evaluation.add_argument("--budgets", default=EvalPlan.budgets, help="math thinking budget(s)")
    evaluation.add_argument("--max-tokens", type=int, default=EvalPlan.max_tokens)
    evaluation.add_argument("--code-max-tokens", type=int, default=EvalPlan.code_max_tokens)
    evaluation.add_argument("--concurrency", type=int, default=EvalPlan.concurrency)
    evaluation.add_argument("--progress", action="store_true", help="progress bars while evaluating")
    evaluation.add_argument("--unsafe-exec", action="store_true", help="see `nanoseek eval --help`")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    try:
        recipe = apply_overrides(load_recipe(args.recipe), args.overrides)
        check_recipe_roles(recipe)
    except ValueError as exc:
        parser.error(str(exc))
    threads = args.threads or recipe.get("threads")
    if threads:
        import torch

        torch.set_num_threads(threads)
    plan = EvalPlan(
        n=args.n,
        code_n=args.code_n,
        budgets=args.budgets,
        max_tokens=args.max_tokens,
        code_max_tokens=args.code_max_tokens,
        concurrency=args.concurrency,
        progress=args.progress,
        unsafe_exec=args.unsafe_exec,
    )
    out = args.out or Path("runs") / recipe["name"]
    run_experiment(recipe, out, plan, parse_also(args.also, parser), args.until)
    return 0


if __name__ == "__main__":
    sys.exit(main())
