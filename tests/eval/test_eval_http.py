"""Every suite against a live nanoseek server over HTTP (official openai SDK), report matching the JSONL."""

from __future__ import annotations

import json

import pytest
from eval_report_check import assert_report_matches_jsonl

from nanoseek.eval import cli
from nanoseek.eval.backends import OpenAIBackend
from nanoseek.eval.runner import read_records, results_path


@pytest.mark.slow
def test_every_suite_against_a_live_nanoseek_server(tmp_path, live_nanoseek_server, every_suite_cli):
    out = tmp_path / "out"
    every_suite_cli(["--base-url", live_nanoseek_server, "--api-key", "sk-eval"], "served", 1, out)
    assert_report_matches_jsonl(out, ["served"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["served"]["json"]["valid JSON"]["n"] == 1
    thought = read_records(out / "served" / "math.jsonl")[0]["budgets"]
    assert set(thought) == {"2", "6"}


def test_openai_backend_reports_reasoning_and_tool_calls_shapes(live_nanoseek_server):
    backend = OpenAIBackend(live_nanoseek_server, api_key="sk-eval")
    [reply] = backend.chat([{"role": "user", "content": "hi"}], thinking=True, max_tokens=8)
    assert (
        reply.completion_tokens >= 1 and isinstance(reply.reasoning, str) and reply.finish_reason in ("stop", "length")
    )
    fim = backend.fim("def f(x):\n", "\n", max_tokens=4)
    assert fim.completion_tokens >= 1
    backend.close()


def test_wrong_api_key_fails_loudly(live_nanoseek_server):
    import openai

    with pytest.raises(openai.AuthenticationError):
        OpenAIBackend(live_nanoseek_server, api_key="sk-wrong")


def test_an_openai_compatible_model_can_judge_the_arena(tmp_path, live_nanoseek_server):
    from nanoseek.eval.arena_judge import OpenAIJudge, judge_pairs, win_rates

    record = {"id": "arena/x/1", "question": "Reverse 'abc'.", "answer": "cba", "source_suite": "instructions"}
    runs = {"a": [{**record, "reply": "cba"}], "b": [{**record, "reply": "abc"}]}
    judge = OpenAIJudge(live_nanoseek_server, api_key="sk-eval")
    pairs = judge_pairs(runs, judge, tmp_path / "pairs.jsonl")
    assert len(pairs) == 1 and pairs[0]["verdict_a_first"] in ("first", "second", "tie")
    rates = win_rates(pairs)
    assert rates[("a", "b")][0] + rates[("b", "a")][0] == 1.0
    assert judge_pairs(runs, judge, tmp_path / "pairs.jsonl") == pairs  # resumed: nothing judged twice


def test_tool_records_say_what_the_server_did_with_the_lazy_grammar(tmp_path, live_nanoseek_server):
    """nanoseek's server says in its X-Nanoseek-Tool-Grammar header that it applied auto's lazy tool grammar
    (built in ~0.1 s for the tiny model); the records and the report carry it per item."""
    argv = ["--base-url", live_nanoseek_server, "--api-key", "sk-eval", "--name", "served", "--suite", "tools"]
    argv += ["--split", "phrasing", "--n", "2", "--max-tokens", "6", "--no-progress", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    records = read_records(results_path(tmp_path / "served", "tools", "phrasing"))
    assert len(records) == 2 and {r["tool_grammar"] for r in records} == {"server:applied"}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["tool_grammar"] == {"served": {"phrasing": "server:applied"}}
    assert "| served | phrasing | server:applied |" in (tmp_path / "report.md").read_text()
