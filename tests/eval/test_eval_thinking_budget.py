"""Thinking budgets in the evaluator: one request that the engine (in process) or the server (over HTTP) caps, as
an API client's `thinking.budget_tokens` is capped; majority voting in the math suite at equal compute."""

from __future__ import annotations

import pytest

from nanoseek.eval.backends import EngineBackend, OpenAIBackend
from nanoseek.eval.report import build_report
from nanoseek.eval.runner import RunConfig, run_suite
from nanoseek.tasks import generate


@pytest.fixture(scope="module")
def backend(tiny_checkpoint):
    backend = EngineBackend.from_checkpoint(str(tiny_checkpoint), name="tiny")
    yield backend
    backend.close()


def test_a_budget_is_one_engine_request_with_the_engines_thought_cap(backend, monkeypatch):
    requests = []
    generate_with_engine = backend.engine.generate

    def recording(batch):
        requests.extend(batch)
        return generate_with_engine(batch)

    monkeypatch.setattr(backend.engine, "generate", recording)
    messages = generate("math", "heldout", 1, 0)[0].messages
    [reply] = backend.chat(messages, thinking=True, thinking_budget=3, max_tokens=4, temperature=0.0)
    [request] = requests  # not a thought, then a second request for the answer
    assert (request.params.think_end_token, request.params.max_thinking_tokens) == (backend.think_end_id, 3)
    assert request.params.max_tokens == 3 + 1 + 4  # the thought, </think>, the answer
    # The random model thinks past any budget: the engine forced </think> after 3 thought tokens, then it answered.
    assert reply.token_ids.index(backend.think_end_id) == reply.reasoning_tokens == 3
    assert 0 < len(reply.token_ids) - 4 <= 4


def test_over_http_a_budget_is_one_request_with_the_apis_budget_tokens(live_nanoseek_server):
    """The API's `thinking.budget_tokens` caps the thought on the server; the old method sent a second, chat-prefix
    request that began the answer with "The answer is" whenever the first was cut."""
    served = OpenAIBackend(live_nanoseek_server, api_key="sk-eval")
    sent = []
    create = served.client.chat.completions.create

    def recording(**kwargs):
        sent.append(kwargs)
        return create(**kwargs)

    served.client.chat.completions.create = recording
    try:
        item = generate("math", "heldout", 1, 0)[0]
        replies = served.chat(item.messages, thinking=True, thinking_budget=4, max_tokens=6, n=2, seed=1)
    finally:
        served.close()
    assert [(s["extra_body"]["thinking"], s["max_tokens"], s["seed"]) for s in sent] == [
        ({"type": "enabled", "budget_tokens": 4}, 4 + 1 + 6, seed) for seed in (1, 2)
    ]
    for reply in replies:  # the random model never closes its thought by itself: the server cut it at 4
        assert reply.reasoning and not reply.content.startswith("The answer is")
        assert reply.reasoning_tokens == 4 + 1  # the API's usage counts the forced </think> as a reasoning token


def test_math_votes_share_the_largest_budget_and_the_report_says_so(tmp_path, scripted_backend):
    class Recording(scripted_backend):
        asked: list[tuple[int, int | None]] = []

        def chat(self, messages, **kw):
            self.asked.append((kw.get("n", 1), kw.get("thinking_budget")))
            return super().chat(messages, **kw)

    config = RunConfig(n=2, samples=4, budgets=[16, 64])
    records = run_suite(Recording(2, 0, name="oracle"), "math", tmp_path / "oracle", config, progress=False)
    assert {(4, 16)} == {asked for asked in Recording.asked if asked[0] > 1}  # 4 votes x 64 // 4, not 4 x 16
    assert all(r["vote_budget"] == 16 and "maj@4" in r["scores"] for r in records)
    result = build_report(tmp_path)
    assert result["thinking_scaling"]["oracle"]["vote_budget"] == 16
    report = (tmp_path / "report.md").read_text()
    assert "* oracle: 4 votes of at most 16 thinking tokens each." in report
    assert "at the smallest budget" not in report
