"""Multi-turn: chats of three instruction questions in a row, answered with the model's own earlier replies
in context, to measure whether a conversation stays coherent as it grows.

The runner asks turn by turn (what the web page and the API send: the whole history each time) and also asks
each later question alone, so the report can say whether earlier turns help, hurt or leave the answer
alone, and how often a reply just repeats an earlier one (the usual way a small model loses the thread).
Questions are held-out instruction items (same split keys, drawn with another seed), so a multi-turn
held-out item is held-out everywhere.

    from nanoseek.tasks import generate
    items = generate("multiturn", "heldout", n=10, seed=0)
"""

from __future__ import annotations

from nanoseek.tasks import instructions
from nanoseek.tasks.item import Item, item_id

SUITE = "multiturn"
TURNS = 3


def generate(split: str, n: int, seed: int) -> list[Item]:
    questions = instructions.generate(split, n * TURNS, seed + 15485863)  # other problems than that suite's
    items = []
    for start in range(0, len(questions), TURNS):
        chat = questions[start : start + TURNS]
        turns = [
            {
                "question": q.messages[0]["content"],
                "answer": q.answer,
                "kind": q.kind,
                "case_sensitive": q.meta["case_sensitive"],
            }
            for q in chat
        ]
        ideal: list[dict[str, str]] = []
        for i, turn in enumerate(turns):
            if i:
                ideal.append({"role": "user", "content": turn["question"]})
            ideal.append({"role": "assistant", "content": turn["answer"]})
        items.append(
            Item(
                id=item_id(SUITE, f"{TURNS}_turns", [q.id for q in chat]),
                suite=SUITE,
                kind=f"{TURNS}_turns",
                messages=[{"role": "user", "content": turns[0]["question"]}],
                answer=[turn["answer"] for turn in turns],
                ideal=ideal,
                meta={"turns": turns},
            )
        )
    return items
