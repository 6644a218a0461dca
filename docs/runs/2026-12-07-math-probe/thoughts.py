"""Record a model's greedy thoughts on the math suite's items, which `nanoseek eval` does not store (it keeps the
reply and the thought's length only), so that failures can be read and classified (classify.py).

    python3 docs/runs/2026-12-07-math-probe/thoughts.py --model docs/runs/2026-12-07-smol7/adapter \
        --split phrasing --n 100 --out docs/runs/2026-12-07-math-probe/thoughts/run7.phrasing.jsonl

Same prompts and decoding as `nanoseek eval --samples 1 --budgets 256 --max-tokens 128` (the eval's seed 0
items, greedy, thought capped at 256 tokens), all items in one batch.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nanoseek.eval.backends import EngineBackend
from nanoseek.eval.scorers import math_correct
from nanoseek.tasks import generate, handwritten


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--split", default="phrasing", choices=["phrasing", "heldout", "handwritten"])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--budget", type=int, default=256)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.split == "handwritten":
        items = handwritten.items("math")
    else:
        items = generate("math", args.split, args.n, 0)
    backend = EngineBackend.from_checkpoint(args.model)

    def ask(item):
        [reply] = backend.chat(item.messages, thinking=True, thinking_budget=args.budget, max_tokens=128)
        return item, reply

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(16) as pool, open(args.out, "w") as sink:
        for item, reply in pool.map(ask, items):
            record = {
                "id": item.id,
                "kind": item.kind,
                "prompt": item.messages[-1]["content"],
                "answer": item.answer,
                "correct": bool(math_correct(item.answer, reply.content)),
                "thought": reply.reasoning,
                "reply": reply.content,
            }
            sink.write(json.dumps(record) + "\n")
    backend.close()


if __name__ == "__main__":
    main()
