"""Recompute report numbers from the per-item JSONL and compare them with report.md (used by the eval tests):
every split's column, each value with its 95% Wilson interval."""

from __future__ import annotations

import json
import re
from pathlib import Path

from nanoseek.eval.report import wilson
from nanoseek.eval.runner import EVAL_SPLITS, results_path

# (suite, report metric) -> (score key in the JSONL, which records it averages)
REPORT_METRICS = {
    ("instructions", "accuracy"): ("correct", lambda r: True),
    ("code", "pass@1"): ("pass@1", lambda r: True),
    ("code", "HumanEval pass@1"): ("pass@1", lambda r: r["kind"] == "humaneval"),
    ("fim", "exact match"): ("exact", lambda r: True),
    ("fim", "edit similarity"): ("edit_similarity", lambda r: True),
    ("math", "pass@1"): ("pass@1", lambda r: True),
    ("tools", "call and answer right"): ("all", lambda r: True),
    ("tools", "function chosen"): ("call_name", lambda r: True),
    ("json", "valid JSON"): ("valid", lambda r: True),
    ("json", "schema adherence"): ("schema", lambda r: True),
    ("safety", "safety score (harmful refused)"): ("refused", lambda r: r["harmful"]),
    ("safety", "spill-over (harmless refused)"): ("refused", lambda r: not r["harmful"]),
    ("arena", "accuracy"): ("correct", lambda r: True),
    ("knowledge", "accuracy"): ("correct", lambda r: True),
}


def report_table(out: Path) -> dict[tuple[str, str, str], tuple[float, float, float, int] | None]:
    """{(suite, metric, "model (split)"): (value, low, high, n)} parsed from the Summary table of report.md."""
    lines = (out / "report.md").read_text().split("## Summary")[1].strip().splitlines()
    columns = [c.strip() for c in lines[0].strip("|").split("|")][2:]
    table = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        for column, cell in zip(columns, cells[2:]):
            match = re.fullmatch(r"([\d.]+) \[([\d.]+), ([\d.]+)\] \(n=(\d+)\)", cell)
            table[(cells[0], cells[1], column)] = (
                (float(match[1]), float(match[2]), float(match[3]), int(match[4])) if match else None
            )
    return table


def assert_report_matches_jsonl(out: Path, models: list[str]) -> None:
    table = report_table(out)
    checked = set()
    for model in models:
        for split in EVAL_SPLITS:
            for (suite, metric), (key, where) in REPORT_METRICS.items():
                path = results_path(out / model, suite, split)
                if not path.exists():
                    continue
                records = [json.loads(line) for line in path.read_text().splitlines()]
                values = [r["scores"][key] for r in records if where(r)]
                reported = table[(suite, metric, f"{model} ({split})")]
                if not values:
                    assert reported is None
                    continue
                mean = sum(values) / len(values)
                low, high = wilson(mean, len(values))
                expected = (round(mean, 3), round(low, 3), round(high, 3), len(values))
                assert reported == expected, (suite, metric, model, split)
                assert low <= mean <= high
                checked.add(split)
    assert checked == set(EVAL_SPLITS), checked  # every split was in the report
