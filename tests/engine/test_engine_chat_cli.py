"""`nanoseek chat` as a real subprocess: one turn per input line, clear error for a missing model."""

from __future__ import annotations

import subprocess
import sys

from nanoseek.engine import Request, SamplingParams


def test_chat_answers_each_line_and_exits(engine_checkpoint, make_engine, checkpoint):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nanoseek.cli",
            "chat",
            "--model",
            str(engine_checkpoint),
            "--max-tokens",
            "6",
            "--temperature",
            "0",
        ],
        input="hello there\n/reset\nsecond question\n/exit\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # The same greedy turns in process: /reset means the second turn sees only its own question.
    engine = make_engine()
    expected = [
        engine.generate(
            [
                Request(
                    checkpoint.tokenizer.encode_chat([{"role": "user", "content": text}]),
                    SamplingParams(max_tokens=6, temperature=0),
                )
            ]
        )[0].text
        for text in ("hello there", "second question")
    ]
    assert result.stdout == "".join(text + "\n" for text in expected)


def test_chat_names_a_missing_model(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nanoseek.cli", "chat", "--model", str(tmp_path / "nope")],
        input="",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "no checkpoint" in result.stderr
