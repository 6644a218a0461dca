"""What a new user meets in the first hour: no special-token text in answers, an access-log line per request
with its tokens, and `nanoseek --help` grouped with an example per command."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import httpx

from nanoseek.api.access_log import access_line
from nanoseek.cli import COMMANDS
from nanoseek.engine import Request, SamplingParams
from tests.api.conftest import MAIN_KEY

USER = [{"role": "user", "content": "hi"}]


def test_special_tokens_never_reach_answer_text(client, api_server):
    # the random tiny model draws a special token (19 of its 512 ids) every few tokens
    tokenizer = api_server.engine.tokenizer
    specials = tokenizer.special_token_strings
    seen_in_raw = 0
    for seed in range(6):
        for model, extra in (("deepseek-chat", {}), ("deepseek-reasoner", {})):
            response = client.chat.completions.create(
                model=model, messages=USER, max_tokens=24, seed=seed, extra_body=extra
            )
            message = response.choices[0].message
            texts = [message.content or "", message.model_extra.get("reasoning_content") or ""]
            assert not any(special in text for text in texts for special in specials), texts
        [raw] = api_server.engine.generate(
            [Request(tokenizer.encode_chat(USER), SamplingParams(max_tokens=24, seed=seed))]
        )
        seen_in_raw += any(special in raw.text for special in specials)
    assert seen_in_raw, "the model should have drawn special tokens for this test to mean anything"


def test_one_access_log_line_per_request_with_tokens(api_server, caplog):
    caplog.set_level(logging.INFO, logger="nanoseek.access")
    headers = {"Authorization": f"Bearer {MAIN_KEY}"}
    # seeded: an unseeded sample of the random model ends on its end-of-sentence token within 3 tokens about once
    # in 200 (10 of 2,048 seeds), and the line then says completion=1 or 2
    body = {"model": "deepseek-chat", "messages": USER, "max_tokens": 3, "seed": 0}
    httpx.post(f"{api_server.url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    httpx.post(f"{api_server.url}/v1/chat/completions", json=body | {"model": "nope"}, headers=headers, timeout=60)
    # the server logs a line once the response is over, which may be just after the client has read it
    deadline = time.monotonic() + 10
    while len(lines := [r.getMessage() for r in caplog.records if r.name == "nanoseek.access"]) < 2:
        assert time.monotonic() < deadline, lines
        time.sleep(0.01)
    assert len(lines) == 2
    assert '"POST /v1/chat/completions" 200 prompt=' in lines[0] and "completion=3" in lines[0]
    assert '"POST /v1/chat/completions" 400' in lines[1] and "prompt=" not in lines[1]


def test_an_access_log_line_cannot_be_forged_through_the_path():
    scope = {"client": ("127.0.0.1", 5000), "method": "GET", "path": '/x" 200\n10.0.0.1 "GET /admin'}
    line = access_line(scope, 404, 0.001)
    assert "\n" not in line and line.startswith('127.0.0.1 "GET /x\\" 200\\n10.0.0.1 \\"GET /admin" 404 ')


def test_help_groups_commands_with_an_example_each():
    text = subprocess.run(
        [sys.executable, "-m", "nanoseek.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for group in ("use a model:", "build a model:", "measure:"):
        assert group in text
    for _, command, _, _, example in COMMANDS:
        assert f"  {command} " in text and f"e.g. {example}" in text and example.startswith(f"nanoseek {command}")
