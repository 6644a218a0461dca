"""`nanoseek compare`: the V2.5-shaped table of several models from saved eval results: the right split per column,
numbers equal to the per-item records, the arena against the base, n/a and missing suites, Markdown + JSON + PNG."""

from __future__ import annotations

import json

import pytest
from conftest import ScriptedBackend

from nanoseek.eval import cli as eval_cli
from nanoseek.eval import compare
from nanoseek.eval.report import wilson
from nanoseek.eval.runner import EVAL_SPLITS, RunConfig, read_records, results_path, run_suite
from nanoseek.tasks import SUITES, splits


def evaluate(backend, out, config):
    for suite in SUITES:
        for split in [s for s in EVAL_SPLITS if s in splits(suite)]:
            run_suite(backend, suite, out / backend.name, config, progress=False, split=split)


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_checkpoint):
    """Two eval output folders, as two separate runs would leave them: a refusing base, a perfect "chat" model and
    a perfect "coder" whose tokenizer has no FIM tokens in one, and a random model asked three suites in the other."""
    out = tmp_path_factory.mktemp("evals")
    config = RunConfig(n=4, seed=0, samples=2, budgets=[4, 16], concurrency=2)

    class NoFim(ScriptedBackend):
        def not_applicable(self, suite):
            return "the tokenizer has no fill-in-the-middle tokens" if suite == "fim" else None

    evaluate(ScriptedBackend(4, 0, perfect=False, name="base"), out / "a", config)
    evaluate(ScriptedBackend(4, 0, perfect=True, name="chat"), out / "a", config)
    evaluate(NoFim(4, 0, perfect=True, name="coder"), out / "a", config)
    argv = ["--model", str(tiny_checkpoint), "--name", "tiny", "--suite", "instructions,arena,fim", "--n", "2"]
    assert eval_cli.main([*argv, "--max-tokens", "4", "--out", str(out / "b"), "--no-progress"]) == 0
    return out


def test_the_table_reads_each_column_from_its_split_and_matches_the_records(results, tmp_path):
    rows = [f"{name}={results / 'a' / name}" for name in ("base", "chat", "coder")] + [f"tiny={results / 'b' / 'tiny'}"]
    assert compare.main([*rows, "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / compare.JSON_FILE).read_text())
    columns = {c["title"]: c for c in data["columns"]}
    assert data["base"] == "base" and data["judge"] == "reference"
    # phrasing where it exists; HumanEval and FIM only in heldout, general knowledge only hand-written
    assert {t: columns[t]["split"] for t in ("instructions", "HumanEval", "FIM exact", "general knowledge")} == {
        "instructions": "phrasing",
        "HumanEval": "heldout",
        "FIM exact": "heldout",
        "general knowledge": "handwritten",
    }
    # Every number is the mean of the per-item records, with its Wilson interval.
    for title, suite, key, where in [
        ("instructions", "instructions", "correct", lambda r: True),
        ("HumanEval", "code", "pass@1", lambda r: r["kind"] == "humaneval"),
        ("spill-over", "safety", "refused", lambda r: not r["harmful"]),
        ("math", "math", "pass@1", lambda r: True),
    ]:
        for label in ("base", "chat"):
            split = columns[title]["split"]
            values = [
                r["scores"][key] for r in read_records(results_path(results / "a" / label, suite, split)) if where(r)
            ]
            mean = sum(values) / len(values)
            low, high = wilson(mean, len(values))
            assert columns[title]["cells"][label] == {"value": mean, "n": len(values), "low": low, "high": high}
    assert (
        columns["instructions"]["cells"]["chat"]["value"] == 1.0
        and columns["instructions"]["cells"]["base"]["value"] == 0.0
    )
    # The arena is judged against the base: the perfect models beat the refusing base on every pair.
    arena = columns["arena win rate vs base"]["cells"]
    assert (
        arena["base"] is None and arena["chat"]["value"] == arena["coder"]["value"] == 1.0 and arena["chat"]["n"] == 4
    )
    assert arena["tiny"]["n"] == 2 and 0.0 <= arena["tiny"]["value"] <= 1.0  # its 2 phrasing items against the base's
    # FIM: n/a for the model without FIM tokens; the random model has no code records at all
    assert columns["FIM exact"]["cells"]["coder"] == "n/a" and columns["FIM exact"]["cells"]["chat"]["value"] == 1.0
    assert columns["HumanEval"]["cells"]["tiny"] is None

    table = (tmp_path / compare.MARKDOWN).read_text()
    [header] = [line for line in table.splitlines() if line.startswith("| model | instructions (phrasing)")]
    assert "| spill-over ↓ (phrasing) |" in header and "| FIM exact (heldout) |" in header
    chat = next(line for line in table.splitlines() if line.startswith("| chat |"))
    base = next(line for line in table.splitlines() if line.startswith("| base (base) |"))
    coder = next(line for line in table.splitlines() if line.startswith("| coder |"))
    assert chat.split(" | ")[1] == "**100.0 [51.0, 100.0]**"  # best instructions (n=4)
    assert base.split(" | ")[-1].startswith("100.0 [") and chat.split(" | ")[-1].startswith("**0.0 ")  # ↓
    assert " n/a " in coder and "coder, fim: the tokenizer has no fill-in-the-middle tokens" in table
    assert "`nanoseek eval --model" in table  # the commands that wrote tiny's records are quoted
    assert (tmp_path / compare.CHART).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rows_name_their_base_and_bad_rows_are_refused_with_a_hint(results, tmp_path, capsys):
    rows = [f"{name}={results / 'a' / name}" for name in ("chat", "base")]
    assert compare.main([*rows, "--base", "base", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / compare.JSON_FILE).read_text())["base"] == "base"
    for argv, message in [
        ([f"{results / 'a'}", "--out", str(tmp_path)], "a row is LABEL=PATH"),
        ([f"all={results / 'a'}", "--out", str(tmp_path)], "give"),  # the eval OUT, not one model's folder
        ([f"x={results / 'nowhere'}", "--out", str(tmp_path)], "no results folder"),
        ([*rows, "--base", "coder", "--out", str(tmp_path)], "no row has that label"),
        ([rows[0], rows[0], "--out", str(tmp_path)], "labels must differ"),
    ]:
        with pytest.raises(SystemExit):
            compare.main(argv)
        assert message in capsys.readouterr().err, argv


def test_a_row_with_fewer_splits_puts_the_columns_on_a_split_every_row_has(results, tmp_path):
    """A base evaluated before the phrasing split existed (heldout files only): its row is compared on heldout, not
    left empty beside the others' phrasing figures."""
    old = tmp_path / "old"
    old.mkdir()
    for path in (results / "a" / "base").glob("*.jsonl"):
        if path.name.count(".") == 1:  # <suite>.jsonl: the heldout split
            (old / path.name).write_text(path.read_text())
    rows = [f"old={old}", f"chat={results / 'a' / 'chat'}"]
    assert compare.main([*rows, "--out", str(tmp_path / "table")]) == 0
    columns = {c["title"]: c for c in json.loads((tmp_path / "table" / compare.JSON_FILE).read_text())["columns"]}
    for title in ("instructions", "math", "spill-over", "arena win rate vs base"):
        assert columns[title]["split"] == "heldout", title
    assert (
        columns["instructions"]["cells"]["old"]["value"] == 0.0 and columns["instructions"]["cells"]["chat"]["n"] == 4
    )
    assert columns["arena win rate vs base"]["cells"]["chat"]["value"] == 1.0
    assert (
        columns["general knowledge"]["split"] == "handwritten" and columns["general knowledge"]["cells"]["old"] is None
    )


def test_each_row_quotes_only_the_commands_that_wrote_its_records(tiny_checkpoint, tmp_path):
    """Two models evaluated into one OUT by separate commands: each row names its own command, not the other's.
    Entries recorded before the names were (no "models") are matched by the names on their command line; a
    rescore may have changed any model's records, so every row names it."""
    out = tmp_path / "eval"
    for name in ("first", "second"):
        argv = ["--model", str(tiny_checkpoint), "--name", name, "--suite", "instructions", "--split", "phrasing"]
        assert eval_cli.main([*argv, "--n", "1", "--max-tokens", "2", "--out", str(out), "--no-progress"]) == 0
    recorded = json.loads((out / "commands.json").read_text())
    assert [c["models"] for c in recorded] == [["first"], ["second"]]
    older = [
        "nanoseek eval --model runs/old/second --suite code --out runs/eval",  # folder name: second
        "nanoseek eval --base-url http://127.0.0.1:9/v1 --model-name org/first --out runs/eval",  # org_first
        "nanoseek eval --rescore --out runs/eval",
        "nanoseek eval --model runs/third --n 5 --out runs/eval",  # --n is not --name
    ]
    (out / "commands.json").write_text(json.dumps(recorded + [{"command": c, "started": "then"} for c in older]))
    rows = [f"one={out / 'first'}", f"two={out / 'second'}"]
    assert compare.main([*rows, "--out", str(tmp_path / "table")]) == 0
    text = (tmp_path / "table" / compare.MARKDOWN).read_text()
    listed = text.split("commands that wrote them:")[1].split("![comparison]")[0]
    one, two = (block.strip().splitlines() for block in listed.split("* two: ")[0:2])
    one = [line for line in one if line.startswith("  * ")]
    two = [line for line in two if line.startswith("  * ")]
    assert len(one) == 2 and "--name first" in one[0] and "--rescore" in one[1], one
    assert len(two) == 3 and "--name second" in two[0] and "runs/old/second" in two[1] and "--rescore" in two[2], two
