"""The R1-Lite chart at equal compute (`nanoseek thinking-chart`): settings, caps through the real engine, resume,
the summary's arithmetic, and the RL stage's curves beside it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nanoseek.eval.backends import EngineBackend
from nanoseek.eval.thinking_chart import (
    ANSWERS,
    RL_CHART,
    RL_LOG,
    Setting,
    chart_settings,
    main,
    run_chart,
    summarize,
)
from nanoseek.tasks import generate


def test_votes_share_the_single_samples_budget_and_too_small_voters_are_left_out():
    settings = chart_settings([32, 64], [2, 4], seeds=2, min_voter_budget=16)
    points = sorted({(s.budget, s.votes) for s in settings})
    assert points == [(0, 1), (32, 1), (32, 2), (64, 1), (64, 2), (64, 4)]  # 32 // 4 = 8 < 16: no 4-vote at 32
    assert {s.seed for s in settings} == {0, 1}
    assert Setting(64, 4, 0).per_voter_budget == 16


@pytest.fixture(scope="module")
def backend(tiny_checkpoint):
    backend = EngineBackend.from_checkpoint(str(tiny_checkpoint))
    yield backend
    backend.close()


def test_every_answer_keeps_within_its_thinking_budget_and_a_stopped_run_resumes(backend, tmp_path):
    items = generate("math", "phrasing", 3, 0)
    settings = chart_settings([8], [2], seeds=1, min_voter_budget=4)
    rows = run_chart(backend, items, settings, tmp_path, temperature=1.0, max_tokens=24, concurrency=4, progress=False)
    assert sorted((r["budget"], r["votes"], r["item"]) for r in rows) == [
        (b, k, i) for b, k in [(0, 1), (8, 1), (8, 2)] for i in range(3)
    ]
    for row in rows:
        assert row["thinking_tokens"] <= row["budget"]  # a 2-vote's two thoughts together, too
    assert max(r["thinking_tokens"] for r in rows if r["budget"] == 8) > 0  # the random model does think
    # A kill mid-write leaves half a line: that answer alone is asked again.
    lines = (tmp_path / ANSWERS).read_text().splitlines()
    (tmp_path / ANSWERS).write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    again = run_chart(backend, items, settings, tmp_path, temperature=1.0, max_tokens=24, concurrency=4, progress=False)
    assert len(again) == len(rows)
    assert len((tmp_path / ANSWERS).read_text().splitlines()) == len(rows)  # the broken line is gone


def test_summary_averages_seeds_and_questions_with_an_interval_around_the_mean():
    rows = [
        {"budget": 64, "votes": 1, "seed": seed, "item": item, "correct": correct, "thinking_tokens": tokens}
        for seed, item, correct, tokens in [(0, 0, 1.0, 60), (0, 1, 0.0, 64), (1, 0, 1.0, 50), (1, 1, 1.0, 30)]
    ]
    [point] = summarize(rows)
    assert point["accuracy"] == 0.75 and point["per_seed"] == [0.5, 1.0]
    assert point["thinking_tokens"] == 51.0
    low, high = point["interval"]
    assert 0.5 <= low <= 0.75 <= high <= 1.0  # questions average 1.0 and 0.5: no resample leaves that range
    assert (point["questions"], point["seeds"]) == (2, 2)


def test_command_writes_chart_table_and_summary(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "chart"
    argv = ["--model", str(tiny_checkpoint), "--out", str(out), "--n", "2", "--seeds", "2", "--budgets", "8"]
    assert main([*argv, "--votes", "2", "--min-voter-budget", "4", "--max-tokens", "4", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {(p["budget"], p["votes"]) for p in summary["points"]} == {(0, 1), (8, 1), (8, 2)}
    assert all(p["seeds"] == 2 and p["questions"] == 2 for p in summary["points"])
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "README.md").read_text()
    assert "| 8 | 2 |" in table and "phrasing" in table
    assert np.isclose(sum(1 for line in capsys.readouterr().out.splitlines() if line.startswith("budget")), 3)


def test_the_rl_stages_curves_join_the_report_and_stay_on_a_rerun(tiny_checkpoint, tmp_path):
    """`--rl-log` with a real (tiny) RL stage's folder: the report shows its curves (reward, held-out accuracy,
    reply length by update) as a PNG and a table that is the log's; a rerun without the flag keeps them."""
    from nanoseek.model.loader import load_checkpoint
    from nanoseek.train.rl import curve_table, train_rl
    from tests.train.test_train_rl import even_share, small_config

    checkpoint = load_checkpoint(tiny_checkpoint)
    config = small_config(4, eval_every=2, eval_items=4)
    train_rl(checkpoint.model.float(), checkpoint.tokenizer, config, tmp_path / "rl", reward=even_share)
    log = [json.loads(line) for line in (tmp_path / "rl" / "log.jsonl").read_text().splitlines()]
    out = tmp_path / "chart"
    argv = ["--model", str(tiny_checkpoint), "--out", str(out), "--n", "2", "--seeds", "1", "--budgets", "8"]
    argv += ["--votes", "2", "--min-voter-budget", "4", "--max-tokens", "4", "--no-progress"]
    assert main([*argv, "--rl-log", str(tmp_path / "rl")]) == 0
    for rerun in (False, True):  # the second run has every answer already and no --rl-log
        if rerun:
            (out / RL_CHART).unlink()
            assert main(argv) == 0
        assert (out / RL_LOG).read_text() == (tmp_path / "rl" / "log.jsonl").read_text()
        assert (out / RL_CHART).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        summary = json.loads((out / "summary.json").read_text())
        assert summary["rl"] == curve_table(log) and [t["step"] for t in summary["rl"]] == [0, 2, 4]
        report = (out / "README.md").read_text()
        assert f"![RL curves]({RL_CHART})" in report and "| after update | held-out accuracy (greedy) |" in report
        last = summary["rl"][-1]
        assert f"| 4 | {last['heldout_accuracy']:.3f} | 2 | {last['reward']:.3f} |" in report
    with pytest.raises(SystemExit):
        main([*argv, "--rl-log", str(tmp_path / "nowhere")])


def test_command_runs_on_a_lora_adapter_folder_merged_into_its_base(tiny_checkpoint, tmp_path):
    """`--model runs/smol/rl/adapter`, the folder the default model ships as: the loader merges it into the base
    it names (tests/train/test_train_lora.py checks the logits), and the chart names the run and stage rather
    than `adapter`."""
    import torch

    from nanoseek.model.adapter import LoraSettings, attach_lora, save_adapter, trainable_token_ids
    from nanoseek.model.loader import load_checkpoint

    base = load_checkpoint(tiny_checkpoint, dtype="float32")
    torch.manual_seed(0)
    adapted = attach_lora(base.model, LoraSettings(rank=2, alpha=4), trainable_token_ids(base.tokenizer))
    adapter = save_adapter(adapted, tmp_path / "smol" / "rl" / "adapter", base=str(tiny_checkpoint))
    out = tmp_path / "chart"
    argv = ["--model", str(adapter), "--out", str(out), "--n", "2", "--seeds", "1", "--budgets", "8", "--votes", "2"]
    assert main([*argv, "--min-voter-budget", "4", "--max-tokens", "4", "--concurrency", "2", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["model"] == "smol/rl/adapter"
    assert {(p["budget"], p["votes"]) for p in summary["points"]} == {(0, 1), (8, 1), (8, 2)}
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "smol/rl/adapter" in (out / "README.md").read_text()
