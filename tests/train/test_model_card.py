"""The model card's goal rows: each verdict follows from the figures it is given."""

from __future__ import annotations

from nanoseek.train.model_card import coherence_row, goal_rows


def multiturn(later: float, alone: float, repeats: float) -> dict:
    return {"multiturn": {"later turns right": {"value": later, "n": 50},
                          "same questions asked alone": {"value": alone, "n": 50},
                          "later reply repeats an earlier one": {"value": repeats, "n": 50}}}


def test_coherence_is_met_only_without_a_drop_and_without_repeats():
    assert coherence_row(multiturn(0.40, 0.42, 0.02)).endswith("| met |")
    assert "**missed**" in coherence_row(multiturn(0.30, 0.42, 0.02))  # earlier turns cost 12 points
    assert "**missed**" in coherence_row(multiturn(0.45, 0.42, 0.25))  # a quarter of replies repeat
    assert "not measured" in coherence_row({})


def test_goal_rows_mark_each_goal_from_its_metric():
    metrics = {"json": {"valid JSON": {"value": 1.0, "n": 100}},
               "instructions": {"accuracy": {"value": 0.5, "n": 100}}, **multiturn(0.4, 0.4, 0.0)}
    rows = goal_rows(metrics, {})
    assert any("JSON Output 100% valid" in r and r.endswith("| met |") for r in rows)
    assert any("instructions" in r and "**missed**" in r for r in rows)
    assert any("FIM exact line" in r and "not measured" in r for r in rows)
