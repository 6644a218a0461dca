"""Self-distillation data for the smol recipe (nanoseek.train.self_distill): which requests are asked, which of the
base's replies are kept, and the base stage recording them resumably for SFT to train on.

nice -n 10 python3 -m pytest tests/train/test_self_distill.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nanoseek.tasks import handwritten
from nanoseek.train import data, self_distill
from nanoseek.train.self_distill import general_requests, read_distilled, short_questions, usable_reply, word_runs

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("draw", [general_requests, short_questions])
def test_requests_are_seeded_distinct_and_resemble_no_evaluated_question(draw):
    requests = draw(300, seed=1)
    assert requests == draw(300, seed=1) and requests != draw(300, seed=2)
    assert len(set(requests)) == 300
    hand_written = set().union(*(word_runs(row["prompt"]) for row in handwritten.rows()))
    assert not any(word_runs(r) & hand_written for r in requests)
    with pytest.raises(ValueError, match="only"):
        draw(100_000, seed=1)


def test_a_reply_cut_by_the_limit_is_trimmed_to_its_last_sentence_and_loops_are_dropped():
    assert usable_reply("Paris is the capital. It is large.", "stop") == "Paris is the capital. It is large."
    assert (
        usable_reply('Bees make honey. They say "buzz." Then they fl', "length") == 'Bees make honey. They say "buzz."'
    )
    assert usable_reply("Bees make honey and then they fl", "length") is None
    looping = "1. Stars are the most beautiful thing.\n2. Stars are the most beautiful thing."
    assert usable_reply(looping, "stop") is None
    assert usable_reply("   ", "stop") is None


def record(path: Path, rows: list[tuple[str, str, str]], kinds: list[str] | None = None) -> None:
    kinds = kinds or ["request"] * len(rows)
    lines = [json.dumps({"prompt": p, "reply": r, "finish": f, "kind": k}) for (p, r, f), k in zip(rows, kinds)]
    path.write_text("".join(line + "\n" for line in lines))


def test_sft_trains_the_kept_replies_in_the_mixture_count(tmp_path: Path):
    path = tmp_path / "self_distill.jsonl"
    record(
        path,
        [
            ("Explain owls in simple terms.", "Owls are birds that hunt at night.", "stop"),
            ("Write a short poem about snow.", "Snow falls soft. The world is white. Then it me", "length"),
            ("Explain ants in simple terms.", "Ants are small", "length"),
            ("Which planet is nearest the Sun?", "Mercury is the nearest planet to the Sun.", "stop"),
            ("Which bird lays the biggest egg?", "The ostrich.", "stop"),
        ],
        kinds=["request", "request", "request", "question", "question"],
    )
    kept = read_distilled(path)
    assert [c.messages[1]["content"] for c in kept] == [
        "Owls are birds that hunt at night.",
        "Snow falls soft. The world is white.",
        "Mercury is the nearest planet to the Sun.",
        "The ostrich.",
    ]
    mixture = {"self_distill": 1, "self_distill_questions": 2, "identity_posttrained": 2}
    corpus = data.sft_corpus(mixture, seed=0, distilled=kept)
    sources = [c.source for c in corpus.conversations]
    assert sources.count("self_distill") == 1 and sources.count("identity") == 2
    assert sources.count("self_distill:question") == 2


def test_the_base_stage_records_the_bases_answers_and_resumes(tmp_path: Path, run_train):
    from tests.train.test_train_lora import chatml_base_checkpoint

    base = chatml_base_checkpoint(tmp_path / "base")
    recipe = tmp_path / "distill.toml"
    recipe.write_text(
        f"""seed = 3
stages = ["sft"]

[base]
model = "{base}"
self_distill = {{ requests = 5, questions = 2, max_tokens = 6 }}

[sft]
init_from = "base"
seq_len = 96
steps = 2
batch_size = 2
lr = 5e-3
warmup_steps = 1
eval_every = 0
checkpoint_every = 1
lora = {{ rank = 4, alpha = 8 }}

[sft.mixture]
math = 4
self_distill = 1
"""
    )
    out = tmp_path / "run"
    done = run_train(["base", "--recipe", str(recipe), "--out", str(out)], cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    records = self_distill.read_records(out / "base" / self_distill.RECORDS_FILE)
    assert [r["prompt"] for r in records] == general_requests(5, seed=3) + short_questions(2, seed=3)
    assert [r["kind"] for r in records] == ["request"] * 5 + ["question"] * 2
    assert all(r["finish"] in ("stop", "length") for r in records)
    # A random model's six tokens hold no complete sentence: nothing is kept, and SFT says what is missing.
    sft = run_train(["sft", "--recipe", str(recipe), "--out", str(out)], cwd=REPO)
    assert sft.returncode != 0 and "holds 0" in sft.stderr
    # Answers already recorded are never asked again; kept ones reach SFT.
    rows = [(r["prompt"], "A whole sentence.", "stop") for r in records]
    record(out / "base" / self_distill.RECORDS_FILE, rows, kinds=[r["kind"] for r in records])
    again = run_train(["all", "--recipe", str(recipe), "--out", str(out)], cwd=REPO)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "kept: 5 of 5 general requests and 2 of 2 short questions" in again.stdout
