"""FIM and plain completions (/beta/completions) through the openai SDK: the middle the engine writes for
the FIM prompt, echo, legacy logprobs, streaming, stop, and the thinking-mode and max_tokens limits."""

from __future__ import annotations

import openai
import pytest

from nanoseek.engine import Request, SamplingParams
from nanoseek.tokenizer.chat_format import render_fim

PREFIX, SUFFIX = "def area(r):\n    ", "\n    return result\n"


def engine_text(server, prompt: str, **params) -> str:
    tokenizer = server.engine.tokenizer
    [completion] = server.engine.generate(
        [Request(tokenizer.encode(prompt), SamplingParams(stop_token_ids=[tokenizer.eos_id], **params))]
    )
    return completion.text


def test_fim_fills_the_middle_the_engine_writes(api_server, beta_client):
    response = beta_client.completions.create(
        model="deepseek-chat", prompt=PREFIX, suffix=SUFFIX, max_tokens=8, temperature=0, frequency_penalty=2
    )
    assert response.object == "text_completion"
    expected = engine_text(api_server, render_fim(PREFIX, SUFFIX), max_tokens=8, temperature=0, frequency_penalty=2)
    assert response.choices[0].text == expected
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.usage.prompt_tokens == len(api_server.engine.tokenizer.encode(render_fim(PREFIX, SUFFIX)))


def test_fim_streaming_matches_non_streaming(beta_client):
    kwargs = dict(model="deepseek-chat", prompt=PREFIX, suffix=SUFFIX, max_tokens=8, temperature=0, frequency_penalty=2)
    whole = beta_client.completions.create(**kwargs).choices[0].text
    chunks = list(beta_client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")


def test_echo_and_logprobs(beta_client):
    response = beta_client.completions.create(
        model="deepseek-chat",
        prompt=PREFIX,
        suffix=SUFFIX,
        max_tokens=5,
        echo=True,
        logprobs=3,
        temperature=0,
        frequency_penalty=2,
    )
    choice = response.choices[0]
    assert choice.text.startswith(PREFIX)
    logprobs = choice.logprobs
    assert (
        len(logprobs.tokens)
        == len(logprobs.token_logprobs)
        == len(logprobs.text_offset)
        == response.usage.completion_tokens
    )
    assert logprobs.text_offset[0] == len(PREFIX)
    assert all(len(top) <= 3 and max(top.values()) <= 0 for top in logprobs.top_logprobs)
    assert all(lp <= 0 for lp in logprobs.token_logprobs)


def test_plain_completion_without_suffix(beta_client):
    response = beta_client.completions.create(model="deepseek-coder", prompt="import os\n", max_tokens=4, temperature=0)
    assert response.usage.completion_tokens <= 4 and response.choices[0].finish_reason in ("stop", "length")


def test_fim_limits(beta_client):
    with pytest.raises(openai.BadRequestError, match="thinking mode"):
        beta_client.completions.create(model="deepseek-reasoner", prompt=PREFIX, suffix=SUFFIX, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="thinking mode"):
        beta_client.completions.create(
            model="deepseek-chat",
            prompt=PREFIX,
            suffix=SUFFIX,
            max_tokens=4,
            extra_body={"thinking": {"type": "enabled"}},
        )
    with pytest.raises(openai.UnprocessableEntityError, match="max_tokens"):
        beta_client.completions.create(model="deepseek-chat", prompt=PREFIX, suffix=SUFFIX, max_tokens=4097)
    with pytest.raises(openai.UnprocessableEntityError, match="logprobs"):
        beta_client.completions.create(model="deepseek-chat", prompt=PREFIX, max_tokens=2, logprobs=21)
