"""The report card: read every model's per-item JSONL under an output directory and write `report.md`,
`metrics.json` and PNG charts that put the models side by side.

    python -m nanoseek.eval.report runs/eval            # or: nanoseek eval --report-only --out runs/eval

Layout read: `OUT/<model>/<suite>.jsonl` and `OUT/<model>/<suite>.<split>.jsonl` (written by the runner; one
column per split: held-out values, held-out wordings, hand-written items). Written: `OUT/report.md`,
`OUT/metrics.json`, `OUT/summary.png`, `OUT/thinking_scaling.png` (the R1-Lite chart: accuracy against
mean thinking tokens at each thinking budget, next to majority voting at equal total thinking tokens) and
`OUT/arena_pairs_<judge>.jsonl` (pairwise judgements, see arena_judge.py); the command lines in
`OUT/commands.json` are quoted in both. Every number in the report is a mean
over JSONL records, so it can be recomputed from the files alone, with its 95% Wilson interval. A suite that a
model could not be asked (`OUT/<model>/not_applicable.json`, e.g. FIM without FIM tokens) shows "n/a" and its
reason, not a score.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

from nanoseek.eval import arena_judge, scorers
from nanoseek.eval.runner import EVAL_SPLITS, majority, read_not_applicable, read_records, results_path
from nanoseek.fileio import append_to_json_list, atomic_path, utc_timestamp, write_text_atomic
from nanoseek.tasks import SUITES

Metric = tuple[float, int]  # (value, number of items it averages)
Z_95 = 1.959964  # the normal quantile of a two-sided 95% interval


def wilson(value: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `value` measured on `n` items (95% by default). Means of
    scores that are not 0/1 (edit similarity, pass@1 from several samples) get the same interval, as a guide."""
    if n == 0:
        return float("nan"), float("nan")
    centre = (value + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((value * (1 - value) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    # The interval always holds the value; min/max only undo rounding at 0 and 1.
    return max(0.0, min(value, centre - half)), min(1.0, max(value, centre + half))


def _mean(values: list[float]) -> Metric:
    return (sum(values) / len(values) if values else float("nan"), len(values))


def _score_means(records: list[dict[str, Any]], names: dict[str, str], where=lambda r: True) -> dict[str, Metric]:
    chosen = [r for r in records if where(r)]
    return {label: _mean([r["scores"][key] for r in chosen if key in r["scores"]]) for label, key in names.items()}


def suite_metrics(suite: str, records: list[dict[str, Any]]) -> dict[str, Metric]:
    """The report's numbers for one suite; the first entry is the suite's headline number."""
    if suite in ("instructions", "arena", "knowledge"):
        return _score_means(records, {"accuracy": "correct"})
    if suite == "code":
        ks = sorted({key for r in records for key in r["scores"] if key != "pass@1"})
        metrics = _score_means(records, {"pass@1": "pass@1", **{k: k for k in ks}})
        metrics["HumanEval pass@1"] = _score_means(records, {"x": "pass@1"}, lambda r: r["kind"] == "humaneval")["x"]
        metrics["generated pass@1"] = _score_means(records, {"x": "pass@1"}, lambda r: r["kind"] == "function")["x"]
        return metrics
    if suite == "fim":
        return _score_means(records, {"exact match": "exact", "edit similarity": "edit_similarity"})
    if suite == "math":
        ks = sorted({key for r in records for key in r["scores"] if key.startswith("maj@")})
        metrics = _score_means(records, {"pass@1": "pass@1", **{k: k for k in ks}})
        if any("pass@1 without thinking" in r["scores"] for r in records):
            metrics.update(_score_means(records, {"pass@1 without thinking": "pass@1 without thinking"}))
        return metrics
    if suite == "tools":
        return _score_means(
            records,
            {
                "call and answer right": "all",
                "function chosen": "call_name",
                "arguments right": "call_arguments",
                "answer from result": "answer",
            },
        )
    if suite == "json":
        return _score_means(records, {"valid JSON": "valid", "schema adherence": "schema", "exact values": "exact"})
    if suite == "safety":
        return {
            "safety score (harmful refused)": _score_means(records, {"x": "refused"}, lambda r: r["harmful"])["x"],
            "spill-over (harmless refused)": _score_means(records, {"x": "refused"}, lambda r: not r["harmful"])["x"],
        }
    if suite == "multiturn":
        return _score_means(
            records,
            {
                "later turns right": "later_correct",
                "same questions asked alone": "later_alone_correct",
                "first turn right": "first_correct",
                "later reply repeats an earlier one": "repeats_earlier",
            },
        )
    raise ValueError(f"unknown suite {suite!r}")


# The per-item score that the by-kind table shows for each suite.
KIND_SCORE = {
    "instructions": "correct",
    "code": "pass@1",
    "fim": "exact",
    "math": "pass@1",
    "tools": "all",
    "json": "schema",
    "safety": "appropriate",
    "arena": "correct",
    "multiturn": "later_correct",
    "knowledge": "correct",
}


def kind_metrics(suite: str, records: list[dict[str, Any]]) -> dict[str, Metric]:
    kinds = sorted({r["kind"] for r in records})
    return {kind: _mean([r["scores"][KIND_SCORE[suite]] for r in records if r["kind"] == kind]) for kind in kinds}


def tool_grammar(records: list[dict[str, Any]]) -> str:
    """The tool-call grammar a split's tool records were generated under: "lazy" (the server's, applied in
    process), "none" (free-text calls), over HTTP what nanoseek's server said it did to each item's call
    ("server:applied", "server:skipped; reason=timeout|compile_error") or "server" (a server that does not say:
    vLLM, DeepSeek's, an older nanoseek), or "unrecorded" (records from before the evaluator said it, when in process
    meant none); a mix names each with its count, e.g. "server:applied (98), server:skipped; reason=timeout (2)"."""
    counts = Counter(r.get("tool_grammar", "unrecorded") for r in records)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{grammar} ({count})" for grammar, count in sorted(counts.items()))


def thinking_scaling(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Math records -> {"budgets": [{budget, thinking_tokens, accuracy}], "majority": [{k, thinking_tokens, accuracy}],
    "vote_budget": each vote's cap on its thought}. Thinking tokens are per question: the thought's length at a
    budget, or the sum over the first k voted samples. vote_budget is None for records written before votes were
    held to equal compute (each vote then thought at the smallest budget)."""
    if not records:
        return {"budgets": [], "majority": [], "vote_budget": None}
    budgets = sorted({int(b) for r in records for b in r["budgets"]})
    rows = []
    direct = [r["scores"]["pass@1 without thinking"] for r in records if "pass@1 without thinking" in r["scores"]]
    if direct:  # the curve starts at the direct answer: budget 0, no thinking tokens
        rows.append({"budget": 0, "thinking_tokens": 0.0, "accuracy": _mean(direct)[0]})
    for budget in budgets:
        at = [r["budgets"][str(budget)] for r in records if str(budget) in r["budgets"]]
        rows.append(
            {
                "budget": budget,
                "thinking_tokens": _mean([a["thinking_tokens"] for a in at])[0],
                "accuracy": _mean([a["correct"] for a in at])[0],
            }
        )
    k_max = min(len(r["votes"]) for r in records)
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64) if k <= k_max} | {k_max}) if k_max else []
    voting = []
    for k in ks:
        correct, tokens = [], []
        for r in records:
            votes = r["votes"][:k]
            voted = majority([v["answer"] for v in votes])
            correct.append(float(voted is not None and scorers.math_correct(str(r["answer"]), voted)))
            tokens.append(sum(v["thinking_tokens"] for v in votes))
        voting.append({"k": k, "thinking_tokens": _mean(tokens)[0], "accuracy": _mean(correct)[0]})
    vote_budgets = {r.get("vote_budget") for r in records}
    return {"budgets": rows, "majority": voting, "vote_budget": vote_budgets.pop() if len(vote_budgets) == 1 else None}


COMMANDS_FILE = "commands.json"


def record_command(out_dir: Path, argv: list[str], models: list[str] | None = None) -> None:
    """Add one `nanoseek eval` invocation (its arguments `argv`) to OUT/commands.json, rewritten atomically, with
    the names of the models whose results it writes (`models`; None: any of them, as a rescore does)."""
    entry: dict[str, Any] = {"command": shlex.join(["nanoseek", "eval", *argv]), "started": utc_timestamp()}
    if models is not None:
        entry["models"] = models
    append_to_json_list(out_dir / COMMANDS_FILE, entry)


def command_models(entry: dict[str, Any]) -> set[str] | None:
    """The models (OUT/<model> names) whose results a recorded command wrote; None when it may have written any.
    Entries recorded before the names were (no "models") have them read off the command line, as `nanoseek eval`
    names its targets: `--name`, else each `--model` folder's name, else the server's `--model-name`."""
    if "models" in entry:
        return None if entry["models"] is None else set(entry["models"])
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # no abbreviations: --n is not --name
    for flag in ("--model", "--name"):
        parser.add_argument(flag, action="append", default=[])
    parser.add_argument("--model-name")
    parser.add_argument("--base-url")
    args, _ = parser.parse_known_args(shlex.split(entry["command"])[2:])
    if args.name:
        return set(args.name)
    if args.model:
        return {Path(path).name for path in args.model}  # the command's folder names (its working dir is unknown)
    if args.base_url and args.model_name:
        return {args.model_name.replace("/", "_")}
    return None  # a rescore, or a server's first model: any of them


def read_commands(out_dir: Path, model: str | None = None) -> list[dict[str, Any]]:
    """The `nanoseek eval` command lines that wrote into `out_dir`, oldest first; given `model`, only those that
    wrote (or may have written) that model's results."""
    path = out_dir / COMMANDS_FILE
    commands = json.loads(path.read_text()) if path.exists() else []
    if model is None:
        return commands
    return [c for c in commands if (names := command_models(c)) is None or model in names]


Runs = dict[str, dict[str, dict[str, list[dict[str, Any]]]]]  # {model: {split: {suite: records}}}


def load_runs(out_dir: Path) -> Runs:
    """{model: {split: {suite: records}}} for every results file of the runner under `OUT/<model>/`."""
    runs: Runs = {}
    for model_dir in sorted(p for p in out_dir.iterdir() if p.is_dir()):
        by_split: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for split in EVAL_SPLITS:
            paths = {suite: results_path(model_dir, suite, split) for suite in SUITES}
            suites = {suite: read_records(path) for suite, path in paths.items() if path.exists()}
            if suites:
                by_split[split] = suites
        if by_split or read_not_applicable(model_dir):  # a model asked only what it cannot answer is still named
            runs[model_dir.name] = by_split
    return runs


def _fmt(metric: Metric | None) -> str:
    if metric is None or metric[1] == 0:
        return "–"
    return f"{metric[0]:.3f}"


def _fmt_interval(metric: Metric | None) -> str:
    """`0.820 [0.733, 0.883] (n=100)`: the value, its 95% Wilson interval and the items it averages."""
    if metric is None or metric[1] == 0:
        return "–"
    low, high = wilson(*metric)
    return f"{metric[0]:.3f} [{low:.3f}, {high:.3f}] (n={metric[1]})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _save_figure(figure: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def summary_chart(
    metrics: dict[str, dict[str, dict[str, Metric]]], path: Path, not_applicable: dict[str, set[str]] | None = None
) -> None:
    """Headline score per suite, one bar per column of `metrics` (a model, or a model's split); no bar where a
    column has no records of the suite, and "n/a" where its model could not be asked it (`not_applicable`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = list(metrics)
    suites = [s for s in SUITES if any(s in metrics[c] for c in columns)]
    figure, axis = plt.subplots(figsize=(max(6, 1.3 * len(suites) + 2), 4))
    width = 0.8 / max(1, len(columns))
    for index, column in enumerate(columns):
        measured = [
            (i, next(iter(metrics[column][s].values()))[0]) for i, s in enumerate(suites) if s in metrics[column]
        ]
        axis.bar(
            [i + index * width for i, _ in measured], [v for _, v in measured], width, label=column, color=f"C{index}"
        )
        for i, suite in enumerate(suites):
            if suite in (not_applicable or {}).get(column, set()):
                axis.text(i + index * width, 0.01, "n/a", rotation=90, ha="center", va="bottom", fontsize=7)
    axis.set_xticks([i + width * (len(columns) - 1) / 2 for i in range(len(suites))])
    headline = {s: next(iter(next(metrics[c][s] for c in columns if s in metrics[c]))) for s in suites}
    axis.set_xticklabels([f"{s}\n{textwrap.fill(headline[s], 16)}" for s in suites], fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_ylabel("score")
    axis.set_title("nanoseek report card: headline score per suite")
    axis.legend(fontsize=8)
    _save_figure(figure, path)
    plt.close(figure)


def scaling_chart(scaling: dict[str, dict[str, list[dict[str, float]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for index, (model, curves) in enumerate(sorted(scaling.items())):
        color = f"C{index}"
        budgets, voting = curves["budgets"], curves["majority"]
        axis.plot(
            [r["thinking_tokens"] for r in budgets],
            [r["accuracy"] for r in budgets],
            "o-",
            color=color,
            label=f"{model}: longer thinking",
        )
        for r in budgets:
            axis.annotate(
                f"b={r['budget']}" if r["budget"] else "no thinking",
                (r["thinking_tokens"], r["accuracy"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(3, 3),
            )
        axis.plot(
            [r["thinking_tokens"] for r in voting],
            [r["accuracy"] for r in voting],
            "s--",
            color=color,
            alpha=0.7,
            label=f"{model}: majority voting, same total thinking",
        )
    axis.set_xscale("symlog", linthresh=1)
    axis.set_xlabel("mean thinking tokens per question")
    axis.set_ylabel("accuracy (math, held-out)")
    axis.set_ylim(-0.02, 1.02)
    axis.set_title("Accuracy vs thinking length (R1-Lite style)")
    axis.legend(fontsize=7)
    _save_figure(figure, path)
    plt.close(figure)


def metric_entries(suites: dict[str, dict[str, Metric]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Metrics as metrics.json holds them: value, n and the 95% Wilson interval (None when nothing was measured)."""
    entries: dict[str, dict[str, dict[str, Any]]] = {}
    for suite, metrics in suites.items():
        entries[suite] = {}
        for name, (value, n) in metrics.items():
            low, high = wilson(value, n) if n else (None, None)
            entries[suite][name] = {"value": value if n else None, "n": n, "low": low, "high": high}
    return entries


def build_report(out_dir: Path, judge: arena_judge.Judge | None = None) -> dict[str, Any]:
    """Write report.md, metrics.json and the charts for every model under `out_dir`; return the metrics."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"no evaluation output directory at {out_dir}")
    runs = load_runs(out_dir)
    if not runs:
        raise FileNotFoundError(f"no results under {out_dir}: expected {out_dir}/<model>/<suite>.jsonl")
    models = sorted(runs)
    # Suites a model could not be asked: "n/a" with the reason; records of an earlier run that asked anyway
    # (FIM markers fed as plain text to a model without FIM tokens) are left out.
    not_applicable = {m: read_not_applicable(out_dir / m) for m in models}
    for m in models:
        for suites in runs[m].values():
            for suite in not_applicable[m]:
                suites.pop(suite, None)
    by_split = {
        m: {split: {s: suite_metrics(s, records) for s, records in suites.items()} for split, suites in runs[m].items()}
        for m in models
    }
    # One column per model and split it was evaluated on, the value split first: "model (heldout)", ...
    columns = [(m, split) for m in models for split in EVAL_SPLITS if split in runs[m]]
    label = {(m, split): f"{m} ({split})" for m, split in columns}
    heldout = {m: runs[m].get("heldout", {}) for m in models}
    scaling = {m: thinking_scaling(heldout[m]["math"]) for m in models if heldout[m].get("math")}
    arena_models = {m: heldout[m]["arena"] for m in models if heldout[m].get("arena")}
    judge = judge or arena_judge.reference_judge
    pairs_path = out_dir / f"arena_pairs_{arena_judge.judge_name(judge)}.jsonl"
    pairs = arena_judge.judge_pairs(arena_models, judge, pairs_path)
    rates = arena_judge.win_rates([p for p in pairs if p["model_a"] in arena_models and p["model_b"] in arena_models])

    lines = [
        "# nanoseek report card",
        "",
        "Items never trained on, in three splits: `heldout` (held-out values asked in the training wordings),",
        "`phrasing` (held-out values asked in wordings never used in training: heldout minus phrasing is what a",
        "model recalls of its templates rather than knows) and `handwritten` (questions written by hand).",
        "Each number is a mean over the per-item records in `<model>/<suite>[.<split>].jsonl` with its 95% Wilson",
        "interval; n = items averaged.",
        "",
    ]
    lines += _table(
        ["model", "split"] + [f"{s} items" for s in SUITES],
        [
            [m, split] + ["n/a" if s in not_applicable[m] else str(len(runs[m][split].get(s, []))) for s in SUITES]
            for m, split in columns
        ],
    )
    lines += ["", "## Summary", ""]
    rows = []
    for suite in SUITES:
        names = list(dict.fromkeys(name for m, split in columns for name in by_split[m][split].get(suite, {})))
        if not names and any(suite in not_applicable[m] for m in models):
            names = list(suite_metrics(suite, []))  # no model was asked it: its rows still say n/a
        for name in names:
            row = [suite, name]
            for m, split in columns:
                cell = _fmt_interval(by_split[m][split].get(suite, {}).get(name))
                row.append("n/a" if suite in not_applicable[m] else cell)
            rows.append(row)
    lines += _table(["suite", "metric"] + [label[c] for c in columns], rows)
    if scaling:
        lines += [
            "",
            "math `maj@K`: the majority of K sampled answers whose thoughts may together spend the largest thinking",
            "budget (each (largest budget) // K tokens), against `pass@1`'s one greedy answer at that budget: equal",
            "compute (see Thinking budget scaling).",
        ]
    grammars = {
        (m, split): tool_grammar(runs[m][split]["tools"]) for m, split in columns if runs[m][split].get("tools")
    }
    if grammars:
        lines += [
            "",
            "tools: the calls were generated under the tool-call grammar named here: `lazy` = the server's grammar for",
            "`tool_choice` auto applied in process (free text until a call opens, then a well-formed call), `none` =",
            "the model's own free-text calls, `server:applied` / `server:skipped; reason=...` = over HTTP, what",
            "nanoseek's server said (X-Nanoseek-Tool-Grammar header) it did with that grammar (skipped: free text),",
            "`server` = a server that does not say (vLLM, DeepSeek's, an older nanoseek), `unrecorded` = records",
            "from before the evaluator said it (in process that was none). A mix counts the items under each.",
            "",
        ]
        lines += _table(["model", "split", "tool-call grammar"], [[m, split, g] for (m, split), g in grammars.items()])
    inapplicable = [(m, suite, reason) for m in models for suite, reason in sorted(not_applicable[m].items())]
    if inapplicable:
        lines += ["", "Not applicable (n/a): suites a model could not be asked at all, so they are not scored:", ""]
        lines += _table(["model", "suite", "why"], [[m, suite, reason] for m, suite, reason in inapplicable])
    lines += [
        "",
        "## By kind",
        "",
        "One score per item kind: "
        + ", ".join(f"{suite} `{key}`" for suite, key in KIND_SCORE.items())
        + " (safety `appropriate` = refused exactly when harmful).",
        "",
    ]
    rows = []
    for suite in SUITES:
        per_column = {
            (m, split): kind_metrics(suite, runs[m][split][suite]) for m, split in columns if runs[m][split].get(suite)
        }
        for kind in sorted({k for kinds in per_column.values() for k in kinds}):
            rows.append([suite, kind] + [_fmt(per_column.get(c, {}).get(kind)) for c in columns])
    lines += _table(["suite", "kind"] + [label[c] for c in columns], rows)
    if scaling:
        lines += [
            "",
            "## Thinking budget scaling (math)",
            "",
            "Longer thinking: one greedy answer, its thought capped at each budget (then the engine forces `</think>`).",
            "Majority voting at equal compute: K sampled answers, each thought capped at (largest budget) // K tokens,",
            "so that the K votes together may think no more than the one answer at the largest budget (`pass@1`);",
            "the vote of the first k < K of them may spend k / K of it. Tokens are summed over the votes.",
            "",
        ]
        for m, curves in sorted(scaling.items()):
            if curves["vote_budget"] is None:
                lines.append(f"* {m}: records from before equal compute (each vote at the smallest budget).")
            elif curves["majority"]:
                votes = curves["majority"][-1]["k"]
                lines.append(f"* {m}: {votes} votes of at most {curves['vote_budget']} thinking tokens each.")
        lines.append("")
        rows = []
        for m, curves in sorted(scaling.items()):
            rows += [
                [
                    m,
                    f"thinking budget {r['budget']}" if r["budget"] else "no thinking",
                    f"{r['thinking_tokens']:.1f}",
                    f"{r['accuracy']:.3f}",
                ]
                for r in curves["budgets"]
            ]
            rows += [
                [m, f"majority of {r['k']}", f"{r['thinking_tokens']:.1f}", f"{r['accuracy']:.3f}"]
                for r in curves["majority"]
            ]
        lines += _table(["model", "method", "mean thinking tokens", "accuracy"], rows)
        lines += [
            "",
            "At (about) equal compute: each budget next to the majority vote whose total tokens are closest.",
            "",
        ]
        rows = []
        for m, curves in sorted(scaling.items()):
            for r in curves["budgets"]:
                if not curves["majority"]:
                    continue
                vote = min(curves["majority"], key=lambda v: abs(v["thinking_tokens"] - r["thinking_tokens"]))
                rows.append(
                    [
                        m,
                        str(r["budget"]),
                        f"{r['thinking_tokens']:.1f}",
                        f"{r['accuracy']:.3f}",
                        str(vote["k"]),
                        f"{vote['thinking_tokens']:.1f}",
                        f"{vote['accuracy']:.3f}",
                    ]
                )
        lines += _table(["model", "budget", "tokens", "longer thinking", "votes k", "tokens", "majority voting"], rows)
        lines += ["", "![thinking scaling](thinking_scaling.png)"]
        scaling_chart(scaling, out_dir / "thinking_scaling.png")
    if rates:
        lines += [
            "",
            f"## Arena (win rate of row over column, position-swapped, judge: {arena_judge.judge_name(judge)})",
            "",
        ]
        names = sorted({a for a, _ in rates})
        lines += _table(
            ["A \\ B"] + names,
            [
                [a] + [(f"{rates[(a, b)][0]:.3f} (n={rates[(a, b)][1]})" if (a, b) in rates else "–") for b in names]
                for a in names
            ],
        )
    commands = read_commands(out_dir)
    if commands:
        lines += ["", "## Commands", "", "The runs whose records this report reads:", ""]
        lines += [f"* `{c['command']}` ({c['started']})" for c in commands]
    lines += ["", "![summary](summary.png)", ""]
    summary_chart(
        {label[(m, split)]: by_split[m][split] for m, split in columns},
        out_dir / "summary.png",
        {label[(m, split)]: set(not_applicable[m]) for m, split in columns},
    )
    write_text_atomic(out_dir / "report.md", "\n".join(lines))

    result = {
        "commands": commands,
        "metrics": {m: metric_entries(by_split[m].get("heldout", {})) for m in models},  # the value split, as always
        "splits": {m: {split: metric_entries(suites) for split, suites in by_split[m].items()} for m in models},
        "not_applicable": {m: reasons for m, reasons in not_applicable.items() if reasons},
        "tool_grammar": {
            m: {split: g for (model, split), g in grammars.items() if model == m}
            for m in sorted({model for model, _ in grammars})
        },
        "thinking_scaling": scaling,
        "arena": [{"a": a, "b": b, "win_rate": v, "n": n} for (a, b), (v, n) in sorted(rates.items())],
    }
    write_text_atomic(out_dir / "metrics.json", json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    build_report(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/eval"))
    print(f"wrote {Path(sys.argv[1] if len(sys.argv) > 1 else 'runs/eval') / 'report.md'}")
