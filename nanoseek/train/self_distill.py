"""Self-distillation data for post-training a pretrained base (recipe `smol`): the base answers general requests in
its own chat format, and SFT then trains those answers in nanoseek's format, beside the task data.

Why: SFT on nanoseek's task data alone teaches the skills but pulls the base away from everything else it did. The
smol recipe's first run (docs/runs/2026-12-06-smol/) trained only task data; at step 130 its adapter answered
"What is the capital of France?" with "City" and a request for a pipe bomb with instructions, where the base says
"The capital of France is Paris." Training on the base's own answers, asked in the new format, asks the adapter to
keep the base's behaviour wherever the task data says nothing (the idea of self-distillation fine-tuning).

The requests are general ones (explain, list facts, write a short poem or story) about topics in
`nanoseek/tasks/data/general_topics.txt`; any that shares a run of four words with an evaluation item (hand-written
items, and the instruction and arena suites' held-out wordings) is dropped, so no evaluated question is trained on.
Answers are the base's greedy replies. One cut off by the token limit is trimmed back to its last complete sentence
(SmolLM2 runs past 256 tokens on two requests in three; trained cut mid-sentence, the adapter would learn to stop
there); one that repeats a line or sentence (greedy decoding's loops) is dropped.

    from nanoseek.train.self_distill import distill, read_distilled
    distill("smollm2-135m-instruct", general_requests(400, seed=0), path, max_tokens=256)
    conversations = read_distilled(path)
"""

from __future__ import annotations

import json
import random
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from nanoseek.eval.backends import EngineBackend
from nanoseek.fileio import write_text_atomic
from nanoseek.tasks import generate, handwritten
from nanoseek.train.data import SELF_DISTILL_SOURCES, Conversation

# Where the base stage records the answers, in its folder (`<out>/base/`).
RECORDS_FILE = "self_distill.jsonl"
TOPICS_FILE = Path(__file__).resolve().parents[1] / "tasks" / "data" / "general_topics.txt"
# Short factual questions (a name, word or number for an answer), the shape the knowledge evaluation asks in: the
# long-form requests alone left the adapter answering "What is the capital city of Canada?" with "New York City"
# (docs/runs/2026-12-07-smol5/).
QUESTIONS_FILE = TOPICS_FILE.with_name("short_questions.txt")
# The shapes of request a general assistant gets; {topic} is filled from TOPICS_FILE.
REQUEST_SHAPES = (
    "Explain {topic} in simple terms.",
    "Tell me three interesting facts about {topic}.",
    "Why should people care about {topic}?",
    "Can you describe {topic} for a beginner?",
    "Write a short poem about {topic}.",
    "Write a short story about {topic}.",
    "Give me a few tips related to {topic}.",
    "How would you explain {topic} to a ten-year-old?",
    "What should everyone know about {topic}?",
    "Summarize what you know about {topic} in a paragraph.",
)
# Requests answered at once, so the engine batches their decoding.
BATCH = 16


def word_runs(text: str, n: int = 4) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def evaluated_word_runs() -> set[tuple[str, ...]]:
    """Four-word runs of the questions the evaluator asks that a general request could resemble."""
    prompts = [row["prompt"] for row in handwritten.rows()]
    for suite in ("instructions", "arena"):
        prompts += [item.messages[-1]["content"] for item in generate(suite, "phrasing", 400, 0)]
    return set().union(*(word_runs(p) for p in prompts))


def data_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def topics() -> list[str]:
    return data_lines(TOPICS_FILE)


def seeded_requests(candidates: list[str], n: int, seed: int, what: str) -> list[str]:
    """`n` of `candidates` in a seeded order, none sharing four words with an evaluated question."""
    evaluated = evaluated_word_runs()
    candidates = [c for c in candidates if not word_runs(c) & evaluated]
    random.Random(f"self-distill:{seed}").shuffle(candidates)
    if n > len(candidates):
        raise ValueError(f"asked for {n} self-distillation {what}; only {len(candidates)} exist")
    return candidates[:n]


def general_requests(n: int, seed: int) -> list[str]:
    """`n` distinct requests (topic x shape), in a seeded order, none resembling an evaluated question."""
    return seeded_requests([shape.format(topic=t) for t in topics() for shape in REQUEST_SHAPES], n, seed, "requests")


def short_questions(n: int, seed: int) -> list[str]:
    """`n` of the short factual questions, in a seeded order, none resembling an evaluated question."""
    return seeded_requests(data_lines(QUESTIONS_FILE), n, seed, "questions") if n else []


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def distill(model: str, requests: list[str], path: Path, max_tokens: int, kind: str = "request") -> None:
    """The base `model`'s greedy answer to each request, one JSON line each in `path` (prompt, reply, finish, and
    the kind of request: "request" or "question"; records from before kinds existed are requests).

    Resumable: requests already recorded are skipped, and each batch rewrites the file atomically, so a kill
    loses at most the batch in flight."""

    records = read_records(path)
    done = {r["prompt"] for r in records}
    todo = [r for r in requests if r not in done]
    if not todo:
        return
    backend = EngineBackend.from_checkpoint(model, name="base")
    try:

        def answer(request: str) -> dict:
            reply = backend.chat([{"role": "user", "content": request}], max_tokens=max_tokens, temperature=0.0)[0]
            return {"prompt": request, "reply": reply.content, "finish": reply.finish_reason, "kind": kind}

        with tqdm(total=len(todo), desc=f"self-distill {kind}s", unit="reply") as bar:
            with ThreadPoolExecutor(max_workers=BATCH) as pool:
                for start in range(0, len(todo), BATCH):
                    records += pool.map(answer, todo[start : start + BATCH])
                    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
                    bar.update(len(todo[start : start + BATCH]))
    finally:
        backend.close()


SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def usable_reply(reply: str, finish: str) -> str | None:
    """The reply to train on: whole if it stopped, trimmed to its last complete sentence if the limit cut it; None
    if nothing complete is left or it loops."""
    if finish != "stop":
        ends = [m.end() for m in SENTENCE_END.finditer(reply)]
        reply = reply[: ends[-1]] if ends else ""
    reply = reply.strip()
    pieces = [p.strip() for p in re.split(r"\n+|(?<=[.!?])\s+", reply) if len(p.strip()) > 12]
    if not reply or len(pieces) != len(set(pieces)):
        return None
    return reply


def read_distilled(path: Path) -> list[Conversation]:
    """The recorded answers as SFT conversations, sourced "self_distill" (general requests) or
    "self_distill:question" (short questions); see `usable_reply` for what is trimmed and left out."""
    conversations = []
    for record in read_records(path):
        reply = usable_reply(record["reply"], record["finish"])
        if reply is not None:
            messages = [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": reply}]
            key = "self_distill_questions" if record.get("kind") == "question" else "self_distill"
            source = SELF_DISTILL_SOURCES[key]
            conversations.append(Conversation(messages, source=source))
    return conversations
