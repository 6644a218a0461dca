"""Accuracy against thinking length at equal compute: DeepSeek-R1-Lite's chart, measured honestly.

    nanoseek thinking-chart --model PATH --out docs/runs/DATE-thinking-chart [--split phrasing] [--n 100]
        [--seeds 3] [--budgets 32,64,128,256,512] [--votes 2,4,8] [--temperature 0.7]
    nanoseek thinking-chart --model runs/smol/rl/adapter --out ...     # a LoRA adapter: merged into its base at load

R1-Lite's claim is that accuracy keeps rising with the length of the thought, and that one long thought beats
majority voting over several short ones at the same cost. So for each thinking budget B (tokens) and each seed:

* longer thinking: one sampled answer per question, its thought capped at B (then `</think>` is forced);
* majority voting: k sampled answers per question, each thought capped at B // k, so that the k thoughts together
  may spend no more thinking tokens than the single one; the most common extracted answer is scored;
* budget 0 is the answer without thinking.

The x axis is the thinking tokens a question actually cost (a thought may end before its cap; for a vote, the
sum over its k thoughts); the y axis is accuracy on math questions of the chosen split (the held-out *phrasing*
split by default: wordings never used in training), the mean over seeds with a 95% bootstrap interval over
questions. Every answer goes to OUT/answers.jsonl as it is scored, so a stopped run resumes where it stopped;
OUT/chart.png, OUT/summary.json and OUT/README.md are rebuilt from that file alone.

`--rl-log RUN/rl/log.jsonl` adds the model's RL stage to the report, as R1's paper shows it beside the chart: the
sampled reward, the greedy held-out accuracy and the mean reply length against the update (OUT/rl_curves.png, and a
table by held-out evaluation). The log is copied to OUT/rl_log.jsonl, which later reruns read without the flag.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from nanoseek.eval import scorers
from nanoseek.eval.backends import Backend
from nanoseek.eval.runner import majority
from nanoseek.fileio import atomic_path, write_json_atomic, write_text_atomic
from nanoseek.tasks import generate, splits
from nanoseek.tasks.item import Item

ANSWERS, SUMMARY, CHART, README = "answers.jsonl", "summary.json", "chart.png", "README.md"
RL_LOG, RL_CHART = "rl_log.jsonl", "rl_curves.png"


@dataclass(frozen=True)
class Setting:
    """One point of the chart for one seed: `votes` sampled answers, each thought capped at budget // votes."""

    budget: int
    votes: int
    seed: int

    @property
    def per_voter_budget(self) -> int:
        return self.budget // self.votes

    def key(self) -> tuple[int, int, int]:
        return (self.budget, self.votes, self.seed)


def chart_settings(budgets: list[int], votes: list[int], seeds: int, min_voter_budget: int) -> list[Setting]:
    """Every (budget, k, seed) to measure: k = 1 at every budget and at 0 (no thinking), k > 1 where each voter
    still gets `min_voter_budget` tokens to think."""
    points = [(0, 1)] + [(b, 1) for b in budgets if b > 0]
    points += [(b, k) for b in budgets for k in votes if k > 1 and b // k >= min_voter_budget]
    return [Setting(b, k, s) for b, k in points for s in range(seeds)]


def ask(backend: Backend, item: Item, setting: Setting, index: int, temperature: float, max_tokens: int) -> dict:
    """Score one question at one setting; the sampling seed is a function of (setting seed, question) only."""
    thinking = setting.budget > 0
    replies = backend.chat(
        item.messages,
        thinking=thinking,
        thinking_budget=setting.per_voter_budget if thinking else None,
        max_tokens=max_tokens,
        temperature=temperature,
        n=setting.votes,
        seed=setting.seed * 1_000_003 + index,
    )
    voted = majority([scorers.extracted_math_answer(r.content) for r in replies])
    return {
        "budget": setting.budget,
        "votes": setting.votes,
        "seed": setting.seed,
        "item": index,
        "correct": float(voted is not None and scorers.math_correct(item.answer, voted)),
        "thinking_tokens": sum(r.reasoning_tokens for r in replies),
        "answer": voted,
    }


def read_answers(out: Path) -> list[dict[str, Any]]:
    path = out / ANSWERS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a killed run may be half-written: that one is asked again
            continue
    return rows


def run_chart(
    backend: Backend,
    items: list[Item],
    settings: list[Setting],
    out: Path,
    *,
    temperature: float,
    max_tokens: int,
    concurrency: int,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Ask every question at every setting not already in OUT/answers.jsonl; returns all answers."""
    out.mkdir(parents=True, exist_ok=True)
    rows = read_answers(out)
    if rows:  # drop a half-written last line of a killed run, so that new rows start on a line of their own
        write_text_atomic(out / ANSWERS, "".join(json.dumps(r) + "\n" for r in rows))
    done = {(r["budget"], r["votes"], r["seed"], r["item"]) for r in rows}
    todo = [(s, i) for s in settings for i in range(len(items)) if (*s.key(), i) not in done]
    bar = tqdm(total=len(todo), desc="thinking chart", unit="question", disable=not progress, dynamic_ncols=True)
    with open(out / ANSWERS, "a") as log, ThreadPoolExecutor(max_workers=concurrency) as pool:
        # Concurrent questions share the engine's batches; each row is appended as soon as it is scored.
        for row in pool.map(lambda job: ask(backend, items[job[1]], job[0], job[1], temperature, max_tokens), todo):
            log.write(json.dumps(row) + "\n")
            log.flush()
            bar.update(1)
    bar.close()
    return read_answers(out)


def bootstrap_interval(per_question: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean over questions, resampling questions (the seeds of a question stay together)."""
    rng = np.random.default_rng(seed)
    means = per_question[rng.integers(0, len(per_question), size=(resamples, len(per_question)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per (budget, k): accuracy (mean over seeds and questions), its interval, the per-seed
    accuracies and the mean thinking tokens per question."""
    points = []
    for budget, votes in sorted({(r["budget"], r["votes"]) for r in rows}):
        at = [r for r in rows if r["budget"] == budget and r["votes"] == votes]
        questions = sorted({r["item"] for r in at})
        per_question = np.array([statistics.fmean(r["correct"] for r in at if r["item"] == q) for q in questions])
        seeds = sorted({r["seed"] for r in at})
        low, high = bootstrap_interval(per_question)
        points.append(
            {
                "budget": budget,
                "votes": votes,
                "accuracy": float(per_question.mean()),
                "interval": [low, high],
                "per_seed": [statistics.fmean(r["correct"] for r in at if r["seed"] == s) for s in seeds],
                "thinking_tokens": statistics.fmean(r["thinking_tokens"] for r in at),
                "questions": len(questions),
                "seeds": len(seeds),
            }
        )
    return points


def curve(points: list[dict[str, Any]], votes: int) -> list[dict[str, Any]]:
    """The points of one curve by thinking tokens; a vote's curve starts at the direct answer, like one sample's."""
    line = sorted((p for p in points if p["votes"] == votes), key=lambda p: p["thinking_tokens"])
    direct = [p for p in points if p["votes"] == 1 and p["budget"] == 0]
    return (direct + line) if votes > 1 else line


def plot(points: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 4.8))
    for votes in sorted({p["votes"] for p in points}):
        line = curve(points, votes)
        accuracy = [100 * p["accuracy"] for p in line]
        below = [a - 100 * p["interval"][0] for a, p in zip(accuracy, line, strict=True)]
        above = [100 * p["interval"][1] - a for a, p in zip(accuracy, line, strict=True)]
        single = votes == 1
        axes.errorbar(
            [p["thinking_tokens"] for p in line],
            accuracy,
            yerr=[below, above],
            marker="o" if single else "s",
            capsize=3,
            lw=2 if single else 1.2,
            label="one sample, longer thinking" if single else f"majority of {votes}, same total thinking",
        )
        for p, a in zip(line, accuracy, strict=True):
            if single:
                axes.annotate(f"{p['budget']}", (p["thinking_tokens"], a), textcoords="offset points", xytext=(4, -12))
    axes.set_xlabel("thinking tokens per question (mean; a vote counts all its samples)")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(title, fontsize=10)
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=130)
    plt.close(figure)


def rl_section(out: Path, model: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The report's RL section from OUT/rl_log.jsonl (none without it): Markdown lines and the table's rows;
    draws OUT/rl_curves.png."""
    # The RL stage's own plot and table (train/rl.py), imported here only: a chart without RL needs no torch.
    from nanoseek.train.loop import read_log
    from nanoseek.train.rl import curve_markdown, curve_table, plot_rewards

    rows = read_log(out / RL_LOG)
    if not rows:
        return [], []
    plot_rewards(rows, out / RL_CHART, f"{model}: RL stage")
    table = curve_table(rows)
    lines = [
        "",
        "## The RL stage: reward, held-out accuracy and reply length by update",
        "",
        f"From `{RL_LOG}` (the stage's log.jsonl). Sampled reward: the mean over a step's sampled replies (its "
        "prompts are train items); held-out accuracy: greedy replies to held-out items, scored by the same check; "
        "reply tokens: the mean sampled reply length, thought included. The plot smooths reward and reply length "
        "over 10 updates (the raw reward faint behind).",
        "",
        f"![RL curves]({RL_CHART})",
        "",
        *curve_markdown(table),
    ]
    return lines, table


def write_report(out: Path, points: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    rl_lines, rl_table = rl_section(out, meta["model"])
    write_json_atomic(out / SUMMARY, {"meta": meta, "points": points, **({"rl": rl_table} if rl_table else {})})
    plot(points, out / CHART, f"{meta['model']}: math, {meta['split']} split, {meta['questions']} questions")
    lines = [
        f"# Accuracy vs thinking length at equal compute: {meta['model']}",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Math, `{meta['split']}` split, {meta['questions']} questions, {meta['seeds']} seeds, temperature "
        f"{meta['temperature']}. Accuracy is the mean over seeds and questions with a 95% bootstrap interval over "
        "questions; tokens are thinking tokens per question (for a vote, summed over its samples). A vote of k at "
        "budget B gives each sample B // k tokens to think.",
        "",
        "![accuracy vs thinking tokens](chart.png)",
        "",
        "| budget | answers voted | thinking tokens | accuracy | 95% interval | per seed |",
        "|---:|---:|---:|---:|---|---|",
    ]
    for p in sorted(points, key=lambda p: (p["budget"], p["votes"])):
        per_seed = ", ".join(f"{100 * a:.0f}%" for a in p["per_seed"])
        lines.append(
            f"| {p['budget']} | {p['votes']} | {p['thinking_tokens']:.1f} | {100 * p['accuracy']:.1f}% | "
            f"{100 * p['interval'][0]:.1f}–{100 * p['interval'][1]:.1f}% | {per_seed} |"
        )
    write_text_atomic(out / README, "\n".join(lines + rl_lines) + "\n")


def model_label(model: str) -> str:
    """The chart's name for a --model value: a stage export or adapter (`runs/smol/rl/adapter`) by its run and
    stage (`smol/rl/adapter`: every adapter folder is called `adapter`), anything else by its own name."""
    path = Path(model)
    if path.name in ("adapter", "model") and path.parent.name:
        return "/".join(path.parts[-3:])
    return path.name


def parse_ints(text: str, flag: str, parser: argparse.ArgumentParser) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        parser.error(f"{flag} must be comma-separated integers, got {text!r}")
    if not values or values[0] < 1:
        parser.error(f"{flag} needs integers >= 1, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="nanoseek thinking-chart", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", required=True, help="checkpoint folder, LoRA adapter folder, GGUF file or named model"
    )
    parser.add_argument("--name", default=None, help="the model's name in the chart (default: from --model)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split", default="phrasing", help="math split: phrasing (default), heldout, handwritten")
    parser.add_argument("--n", type=int, default=100, help="questions")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", default="32,64,128,256,512", help="thinking budgets in tokens (0 is implied)")
    parser.add_argument("--votes", default="2,4,8", help="k for majority voting at equal total thinking")
    parser.add_argument("--min-voter-budget", type=int, default=16, help="the smallest thought a voter may get")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, default=64, help="answer tokens after the thought")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--rl-log",
        type=Path,
        default=None,
        help="the model's RL stage log (RUN/rl/log.jsonl): its curves in the report",
    )
    args = parser.parse_args(argv)
    if args.rl_log is not None and args.rl_log.is_dir():
        args.rl_log = args.rl_log / "log.jsonl"  # the stage folder given
    if args.rl_log is not None and not args.rl_log.is_file():
        parser.error(f"--rl-log {args.rl_log}: no such file (the RL stage writes RUN/rl/log.jsonl)")
    if args.split not in splits("math"):
        parser.error(f"--split must be one of {', '.join(splits('math'))}")
    if args.n < 1 or args.seeds < 1:
        parser.error("--n and --seeds must be >= 1")
    budgets = parse_ints(args.budgets, "--budgets", parser)
    votes = parse_ints(args.votes, "--votes", parser)
    from nanoseek.eval.backends import EngineBackend

    items = generate("math", args.split, args.n, 0, at_most=True)
    if args.rl_log is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out / RL_LOG, args.rl_log.read_text())  # the report rebuilds from OUT alone
    settings = chart_settings(budgets, votes, args.seeds, args.min_voter_budget)
    backend = EngineBackend.from_checkpoint(args.model)
    try:
        rows = run_chart(
            backend,
            items,
            settings,
            args.out,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            concurrency=args.concurrency,
            progress=not args.no_progress,
        )
    finally:
        backend.close()
    wanted = {s.key() for s in settings}
    rows = [r for r in rows if (r["budget"], r["votes"], r["seed"]) in wanted and r["item"] < len(items)]
    meta = {
        "model": args.name or model_label(args.model),
        "split": args.split,
        "questions": len(items),
        "seeds": args.seeds,
        "temperature": args.temperature,
        "command": "nanoseek thinking-chart " + " ".join(argv),
    }
    points = summarize(rows)
    write_report(args.out, points, meta)
    for p in points:
        print(
            f"budget {p['budget']:>4}, {p['votes']} answer(s): {p['thinking_tokens']:7.1f} thinking tokens, "
            f"accuracy {100 * p['accuracy']:5.1f}% [{100 * p['interval'][0]:.1f}, {100 * p['interval'][1]:.1f}]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
