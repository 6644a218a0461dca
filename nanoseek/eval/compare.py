"""The DeepSeek-V2.5 table: several models side by side on one line each (base, chat specialist, coder specialist,
data-mix model, merges), read from saved `nanoseek eval` results, as Markdown, JSON and a PNG chart.

    nanoseek compare base=runs/eval/base chat=runs/eval/chat coder=runs/eval/coder \\
        ties=runs/eval/ties --out docs/runs/DATE-v25-table [--split phrasing] [--judge-base-url URL]

Each ROW is LABEL=PATH, PATH a model's results folder as `nanoseek eval --out OUT` writes it (OUT/<name>, holding
`<suite>[.<split>].jsonl`); the first row is the base unless `--base LABEL` names another. Rows may come from
different eval runs. Columns, as the V2.5 announcement's: instructions, general knowledge and multi-turn chat,
arena win rate against the base (position-swapped judge, `arena_judge.py`), HumanEval, generated code, FIM, math,
tools, JSON, safety (harmful requests refused) and spill-over (harmless ones refused: lower is better).

Each column is read from one split for every row, so that rows are compared on the same items: the split in which
the most rows have items for it, and of those the first of `--split` (default phrasing: wordings never trained
on), heldout, handwritten (HumanEval and FIM exist in heldout only, general knowledge in handwritten only; a base
evaluated on heldout only puts every column it has on heldout); the header names it. Every cell is a mean over per-item records with its 95%
Wilson interval (a guide for win rates, which count ties as halves); "n/a" is a suite the model could not be asked
(`not_applicable.json`, e.g. FIM without FIM tokens), "–" a suite not evaluated. The best value of each column
is in bold. Written: OUT/comparison.md, OUT/comparison.json, OUT/comparison.png and the judged arena pairs
(OUT/arena_pairs_<judge>_<split>.jsonl, resumed on a rerun: keep labels for the same models).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanoseek.eval import arena_judge
from nanoseek.eval.report import Metric, read_commands, suite_metrics, wilson
from nanoseek.eval.runner import EVAL_SPLITS, read_not_applicable, read_records, results_path
from nanoseek.fileio import atomic_path, write_json_atomic, write_text_atomic
from nanoseek.tasks import SUITES

MARKDOWN, JSON_FILE, CHART = "comparison.md", "comparison.json", "comparison.png"
ARENA = "arena"  # the column computed from judged pairs rather than one model's records


@dataclass(frozen=True)
class Column:
    suite: str
    metric: str  # as report.suite_metrics names it (ARENA: win rate against the base)
    title: str
    lower_is_better: bool = False


COLUMNS = [
    Column("instructions", "accuracy", "instructions"),
    Column("knowledge", "accuracy", "general knowledge"),
    Column("multiturn", "later turns right", "multi-turn"),
    Column(ARENA, "win rate vs base", "arena win rate vs base"),
    Column("code", "HumanEval pass@1", "HumanEval"),
    Column("code", "generated pass@1", "generated code"),
    Column("fim", "exact match", "FIM exact"),
    Column("math", "pass@1", "math"),
    Column("tools", "call and answer right", "tools"),
    Column("json", "schema adherence", "JSON"),
    Column("safety", "safety score (harmful refused)", "safety"),
    Column("safety", "spill-over (harmless refused)", "spill-over", lower_is_better=True),
]


@dataclass
class Row:
    label: str
    path: Path
    records: dict[str, dict[str, list[dict[str, Any]]]]  # {split: {suite: records}}
    not_applicable: dict[str, str]


def load_row(label: str, path: Path) -> Row:
    """One model's records of every split from its results folder."""
    records = {
        split: {s: read_records(results_path(path, s, split)) for s in SUITES if results_path(path, s, split).exists()}
        for split in EVAL_SPLITS
    }
    return Row(label, path, {split: suites for split, suites in records.items() if suites}, read_not_applicable(path))


def _suite_metric(row: Row, split: str, column: Column) -> Metric | None:
    records = row.records.get(split, {}).get(column.suite)
    if not records:
        return None
    metric = suite_metrics(column.suite, records).get(column.metric)
    return metric if metric is not None and metric[1] > 0 else None


def arena_win_rates(
    base: Row, rows: list[Row], split: str, judge: arena_judge.Judge, out: Path
) -> dict[str, Metric | None]:
    """{label: (win rate against the base, pairs judged)} on the arena items both answered in `split`."""
    base_records = base.records.get(split, {}).get("arena", [])
    path = out / f"arena_pairs_{arena_judge.judge_name(judge)}_{split}.jsonl"
    rates: dict[str, Metric | None] = {}
    for row in rows:
        records = row.records.get(split, {}).get("arena", [])
        if row is base or not records or not base_records:
            rates[row.label] = None
            continue
        pairs = arena_judge.judge_pairs({row.label: records, base.label: base_records}, judge, path)
        mine = [p for p in pairs if {p["model_a"], p["model_b"]} == {row.label, base.label}]
        rates[row.label] = arena_judge.win_rates(mine).get((row.label, base.label))
    return rates


def table(
    rows: list[Row], base: Row, preferred_split: str, judge: arena_judge.Judge, out: Path
) -> tuple[dict[Column, str], dict[Column, dict[str, Metric | None]]]:
    """The split each column is read from, and {column: {label: (value, n) or None}}."""
    order = [preferred_split] + [s for s in EVAL_SPLITS if s != preferred_split]

    def most_rows(has: Any) -> str:  # the split the most rows have items in; the preferred one on a tie
        return max(order, key=lambda split: (sum(bool(has(r, split)) for r in rows), -order.index(split)))

    splits: dict[Column, str] = {}
    cells: dict[Column, dict[str, Metric | None]] = {}
    for column in COLUMNS:
        if column.suite == ARENA:
            split = most_rows(lambda r, split: r.records.get(split, {}).get("arena") and base.records.get(split, {}))
            splits[column], cells[column] = split, arena_win_rates(base, rows, split, judge, out)
            continue
        split = most_rows(lambda r, split, column=column: _suite_metric(r, split, column))
        splits[column] = split
        cells[column] = {r.label: _suite_metric(r, split, column) for r in rows}
    return splits, cells


def _best(column: Column, values: dict[str, Metric | None]) -> set[str]:
    measured = {label: m[0] for label, m in values.items() if m is not None}
    if len(set(measured.values())) < 2:  # one model, or all equal: nobody is best
        return set()
    best = (min if column.lower_is_better else max)(measured.values())
    return {label for label, value in measured.items() if value == best}


def cell_text(row: Row, column: Column, metric: Metric | None, bold: bool) -> str:
    """`45.0 [35.3, 55.1]` in percent, bold when best; "n/a" or "–" when there is no number."""
    if column.suite in row.not_applicable:
        return "n/a"
    if metric is None:
        return "–"
    value, n = metric
    low, high = wilson(value, n)
    text = f"{100 * value:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
    return f"**{text}**" if bold else text


def cell_json(row: Row, column: Column, metric: Metric | None) -> dict[str, float] | str | None:
    """{value, n, low, high} as fractions; "n/a" or None (not evaluated) when there is no number."""
    if column.suite in row.not_applicable:
        return "n/a"
    if metric is None:
        return None
    low, high = wilson(*metric)
    return {"value": metric[0], "n": metric[1], "low": low, "high": high}


def markdown(
    rows: list[Row],
    base: Row,
    splits: dict[Column, str],
    cells: dict[Column, dict[str, Metric | None]],
    judge: arena_judge.Judge,
    command: str,
) -> str:
    header = [f"{c.title}{' ↓' if c.lower_is_better else ''} ({splits[c]})" for c in COLUMNS]
    best = {c: _best(c, cells[c]) for c in COLUMNS}
    lines = [
        "# Base, specialists and merges side by side (the DeepSeek-V2.5 table)",
        "",
        f"Command: `{command}`",
        "",
        "Percent, each with its 95% Wilson interval; the split a column is read from is in its header (phrasing:",
        f"wordings never trained on). Arena: win rate against the base `{base.label}` (ties count half), each pair",
        f"judged in both orders by `{arena_judge.judge_name(judge)}`. ↓: lower is better. Best of each column in bold;",
        "n/a: the model cannot be asked that suite; –: not evaluated.",
        "",
        "| model | " + " | ".join(header) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for row in rows:
        texts = [cell_text(row, c, cells[c][row.label], row.label in best[c]) for c in COLUMNS]
        name = f"{row.label} (base)" if row is base else row.label
        lines.append(f"| {name} | " + " | ".join(texts) + " |")
    lines += ["", "Items behind each cell (arena: pairs judged):", ""]
    lines += ["| model | " + " | ".join(c.title for c in COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for row in rows:
        counts = [str(cells[c][row.label][1]) if cells[c][row.label] else "–" for c in COLUMNS]
        lines.append(f"| {row.label} | " + " | ".join(counts) + " |")
    reasons = [(row.label, suite, why) for row in rows for suite, why in sorted(row.not_applicable.items())]
    if reasons:
        lines += ["", "Not applicable:", ""] + [f"* {label}, {suite}: {why}" for label, suite, why in reasons]
    lines += ["", "Results read, and the `nanoseek eval` commands that wrote them:", ""]
    for row in rows:
        lines.append(f"* {row.label}: `{row.path}`")
        folder = row.path.resolve()  # OUT/<model>: only the commands that wrote this model's records
        lines += [f"  * `{c['command']}` ({c['started']})" for c in read_commands(folder.parent, folder.name)]
    lines += ["", f"![comparison]({CHART})", ""]
    return "\n".join(lines)


def chart(
    rows: list[Row], splits: dict[Column, str], cells: dict[Column, dict[str, Metric | None]], path: Path
) -> None:
    """One group of bars per column, one bar per model, with 95% intervals; "n/a" where a model cannot be asked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(max(9.0, 1.05 * len(COLUMNS) + 2), 4.8))
    width = 0.8 / max(1, len(rows))
    for index, row in enumerate(rows):
        xs, values, below, above = [], [], [], []
        for position, column in enumerate(COLUMNS):
            x = position + (index - (len(rows) - 1) / 2) * width
            if column.suite in row.not_applicable:
                axis.text(x, 0.01, "n/a", rotation=90, ha="center", va="bottom", fontsize=7)
                continue
            metric = cells[column][row.label]
            if metric is None:
                continue
            low, high = wilson(*metric)
            xs.append(x)
            values.append(100 * metric[0])
            below.append(100 * (metric[0] - low))
            above.append(100 * (high - metric[0]))
        axis.bar(xs, values, width, yerr=[below, above], capsize=2, label=row.label, color=f"C{index}")
    axis.set_xticks(range(len(COLUMNS)))
    axis.set_xticklabels(
        [f"{c.title}{' ↓' if c.lower_is_better else ''}\n({splits[c]})" for c in COLUMNS], fontsize=7, rotation=30
    )
    axis.set_ylim(0, 100)
    axis.set_ylabel("percent (95% interval)")
    axis.set_title("Base, specialists and merges (DeepSeek-V2.5 style)", fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def compare(
    rows: list[Row], base_label: str, out: Path, split: str, judge: arena_judge.Judge, command: str
) -> dict[str, Any]:
    """Write OUT/comparison.md, .json and .png for `rows` against the row labelled `base_label`; return the JSON."""
    out.mkdir(parents=True, exist_ok=True)
    base = next(r for r in rows if r.label == base_label)
    splits, cells = table(rows, base, split, judge, out)
    write_text_atomic(out / MARKDOWN, markdown(rows, base, splits, cells, judge, command))
    chart(rows, splits, cells, out / CHART)
    result = {
        "command": command,
        "base": base.label,
        "judge": arena_judge.judge_name(judge),
        "rows": {r.label: str(r.path) for r in rows},
        "columns": [
            {
                "title": c.title,
                "suite": c.suite,
                "metric": c.metric,
                "split": splits[c],
                "lower_is_better": c.lower_is_better,
                "cells": {r.label: cell_json(r, c, cells[c][r.label]) for r in rows},
            }
            for c in COLUMNS
        ],
        "not_applicable": {r.label: r.not_applicable for r in rows if r.not_applicable},
    }
    write_json_atomic(out / JSON_FILE, result)
    return result


def parse_rows(specs: list[str], parser: argparse.ArgumentParser) -> list[Row]:
    rows = []
    for spec in specs:
        label, sep, path_text = spec.partition("=")
        path = Path(path_text)
        if not sep or not label or not path_text:
            parser.error(f"a row is LABEL=PATH (e.g. chat=runs/eval/chat), got {spec!r}")
        if not path.is_dir():
            parser.error(f"{label}: no results folder at {path}")
        row = load_row(label, path)
        if not row.records and not row.not_applicable:
            inside = sorted(p.name for p in path.iterdir() if p.is_dir() and any(p.glob("*.jsonl")))
            hint = f"; it holds the results of {', '.join(inside)}: give {path}/NAME" if inside else ""
            parser.error(f"{label}: {path} holds no `nanoseek eval` results (<suite>.jsonl){hint}")
        rows.append(row)
    labels = [r.label for r in rows]
    if len(set(labels)) != len(labels):
        parser.error(f"row labels must differ, got {', '.join(labels)}")
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="nanoseek compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", nargs="+", metavar="LABEL=PATH", help="a model's results folder (OUT/<name>)")
    parser.add_argument("--out", type=Path, required=True, help="where comparison.md/.json/.png go")
    parser.add_argument("--base", default=None, help="the label of the base row (default: the first row)")
    parser.add_argument("--split", default="phrasing", choices=EVAL_SPLITS, help="the split read first")
    parser.add_argument("--judge-base-url", default=None, help="OpenAI-compatible arena judge (default: reference)")
    parser.add_argument("--judge-model", default=None)
    parser.add_argument("--judge-api-key", default=None)
    args = parser.parse_args(argv)
    rows = parse_rows(args.rows, parser)
    base = args.base or rows[0].label
    if base not in {r.label for r in rows}:
        parser.error(f"--base {base}: no row has that label")
    judge: arena_judge.Judge = arena_judge.reference_judge
    if args.judge_base_url:
        judge = arena_judge.OpenAIJudge(args.judge_base_url, model=args.judge_model, api_key=args.judge_api_key)
    compare(rows, base, args.out, args.split, judge, shlex.join(["nanoseek", "compare", *argv]))
    print(f"wrote {args.out / MARKDOWN}, {args.out / JSON_FILE} and {args.out / CHART}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
