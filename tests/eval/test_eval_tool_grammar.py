"""The in-process evaluator asks tool items under the grammar the server applies to `tool_choice` auto (unless told
`--tool-grammar none`), so its tool figures are what the server delivers; the records and the report say which
grammar was measured. Checked on a tiny model rewired to open a tool call and never finish it (`opener_checkpoint`):
its own output holds no usable call; under the lazy grammar every item gets a well-formed call of its functions."""

from __future__ import annotations

import json

import jsonschema
import pytest

from nanoseek.eval import cli
from nanoseek.eval.runner import read_records, results_path
from nanoseek.tasks import generate
from nanoseek.tokenizer import special_tokens as st

N = 3


@pytest.mark.parametrize("marker", [st.TOOL_CALLS_BEGIN, st.TOOL_CALL_BEGIN], ids=["block", "bare"])
def test_tool_items_in_process_get_the_servers_lazy_grammar_unless_told_none(tmp_path, opener_checkpoint, marker):
    common = ["--model", str(opener_checkpoint(marker)), "--suite", "tools", "--split", "phrasing"]
    common += ["--n", str(N), "--max-tokens", "48", "--concurrency", str(N), "--no-progress", "--out", str(tmp_path)]
    assert cli.main([*common, "--name", "lazy"]) == 0  # the default
    assert cli.main([*common, "--name", "free", "--tool-grammar", "none"]) == 0
    offered = {item.id: {t["function"]["name"]: t for t in item.tools} for item in generate("tools", "phrasing", N, 0)}

    lazy = read_records(results_path(tmp_path / "lazy", "tools", "phrasing"))
    assert len(lazy) == N and {r["tool_grammar"] for r in lazy} == {"lazy"}
    for record in lazy:
        calls = record["tool_calls"]
        assert calls and all(call["function"]["name"] in offered[record["id"]] for call in calls), record
        for call in calls[:-1]:  # the last may be cut short by --max-tokens; the ones before it are whole
            schema = offered[record["id"]][call["function"]["name"]]["function"]["parameters"]
            jsonschema.validate(json.loads(call["function"]["arguments"]), schema)

    free = read_records(results_path(tmp_path / "free", "tools", "phrasing"))
    assert len(free) == N and {r["tool_grammar"] for r in free} == {"none"}
    assert not any(call["function"]["name"] in offered[r["id"]] for r in free for call in r["tool_calls"])

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["tool_grammar"] == {"free": {"phrasing": "none"}, "lazy": {"phrasing": "lazy"}}
    report = (tmp_path / "report.md").read_text()
    assert "| lazy | phrasing | lazy |" in report and "| free | phrasing | none |" in report
