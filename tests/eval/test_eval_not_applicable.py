"""Suites a model cannot be asked at all: FIM for a model whose tokenizer has no FIM tokens (the real SmolLM2 GGUF)
is reported "n/a" with the reason, in process and over HTTP, instead of being asked as plain text and scored 0."""

from __future__ import annotations

import json

import pytest
from conftest import serve

from nanoseek.eval import cli
from nanoseek.eval.backends import EngineBackend, NotApplicable, OpenAIBackend
from nanoseek.eval.runner import RunConfig, read_not_applicable, read_records, run_suite


def test_fim_is_not_applicable_to_a_model_without_fim_tokens(smollm2_gguf, tiny_checkpoint):
    smol = EngineBackend.from_checkpoint(str(smollm2_gguf), name="smol")
    try:
        reason = smol.not_applicable("fim")
        assert reason is not None and "fill-in-the-middle" in reason
        assert smol.not_applicable("math") is None
        with pytest.raises(NotApplicable):  # asked anyway, it refuses rather than feed the markers as plain text
            smol.fim("def f():\n", "\n", max_tokens=2)
    finally:
        smol.close()
    tiny = EngineBackend.from_checkpoint(str(tiny_checkpoint), name="tiny")
    try:
        assert tiny.not_applicable("fim") is None  # nanoseek's own tokenizer has the DeepSeek FIM tokens
    finally:
        tiny.close()


def test_the_report_shows_n_a_with_the_reason_and_ignores_earlier_fim_scores(tmp_path, smollm2_gguf, scripted_backend):
    out = tmp_path / "out"
    # A run from before this check asked SmolLM2 FIM questions anyway and scored them 0: the report must drop them.
    stale = out / "smol" / "fim.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text(
        json.dumps({"id": "fim/x", "suite": "fim", "kind": "single_line", "scores": {"exact": 0.0}}) + "\n"
    )
    run_suite(scripted_backend(2, 0, perfect=True, name="oracle"), "fim", out / "oracle", RunConfig(n=2), False)
    argv = ["--model", str(smollm2_gguf), "--name", "smol", "--suite", "fim,json", "--split", "heldout"]
    assert cli.main([*argv, "--n", "1", "--max-tokens", "4", "--out", str(out), "--no-progress"]) == 0

    assert "fill-in-the-middle" in read_not_applicable(out / "smol")["fim"]
    assert len(read_records(out / "smol" / "json.jsonl")) == 1  # the other suite was asked as usual
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        "fill-in-the-middle" in metrics["not_applicable"]["smol"]["fim"] and "oracle" not in metrics["not_applicable"]
    )
    assert (
        "fim" not in metrics["metrics"]["smol"] and metrics["metrics"]["oracle"]["fim"]["exact match"]["value"] == 1.0
    )
    report = (out / "report.md").read_text()
    [fim_row] = [line for line in report.splitlines() if line.startswith("| fim | exact match |")]
    assert fim_row.split("|")[3:5] == [" 1.000 [0.342, 1.000] (n=2) ", " n/a "]  # oracle (heldout), smol (heldout)
    assert f"| smol | fim | {read_not_applicable(out / 'smol')['fim']} |" in report

    # The same model name evaluated later with a model that has FIM tokens: the n/a goes away.
    run_suite(scripted_backend(2, 0, perfect=True, name="smol"), "fim", out / "smol", RunConfig(n=2), False)
    assert read_not_applicable(out / "smol") == {}


@pytest.fixture(scope="module")
def smol_server(smollm2_gguf, tmp_path_factory):
    yield from serve(smollm2_gguf, tmp_path_factory)


def test_a_server_that_refuses_fim_makes_the_suite_not_applicable(smol_server, live_nanoseek_server):
    backend = OpenAIBackend(smol_server, api_key="sk-eval")
    try:
        reason = backend.not_applicable("fim")
        assert reason is not None and "fill-in-the-middle" in reason
        assert backend.not_applicable("code") is None
    finally:
        backend.close()
    with_fim = OpenAIBackend(live_nanoseek_server, api_key="sk-eval")
    try:
        assert with_fim.not_applicable("fim") is None
    finally:
        with_fim.close()
