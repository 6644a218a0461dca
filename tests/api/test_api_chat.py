"""Chat completions through the official openai SDK against a live server: plain and streaming chat,
include_usage, the reasoner, multi-turn and tool-loop reasoning rules, prefix completion, JSON Output,
logprobs, stop sequences, penalties and prompt-cache usage."""

from __future__ import annotations

import json
import shutil

import openai
import pytest

from nanoseek.engine import Request, SamplingParams

USER = [{"role": "user", "content": "hi"}]


def test_chat_returns_deepseek_shape(client):
    response = client.chat.completions.create(model="deepseek-chat", messages=USER, max_tokens=8, temperature=0)
    choice = response.choices[0]
    assert response.object == "chat.completion" and response.model == "deepseek-chat"
    assert response.system_fingerprint.startswith("fp_")
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.completion_tokens <= 8 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    extra = usage.model_extra
    assert extra["prompt_cache_hit_tokens"] + extra["prompt_cache_miss_tokens"] == usage.prompt_tokens


def test_coder_and_chat_reach_the_same_model(client):
    outputs = {
        model: client.chat.completions.create(
            model=model, messages=USER, max_tokens=6, temperature=0, frequency_penalty=2
        )
        .choices[0]
        .message.content
        for model in ("deepseek-chat", "deepseek-coder")
    }
    assert outputs["deepseek-chat"] == outputs["deepseek-coder"]


def test_all_paths_serve_the_api(api_server, client):
    import httpx

    for prefix in ("", "/v1", "/beta"):
        response = httpx.get(f"{api_server.url}{prefix}/models", headers={"Authorization": "Bearer sk-main"})
        assert response.status_code == 200
        assert {"deepseek-chat", "deepseek-coder", "deepseek-reasoner"} <= {m["id"] for m in response.json()["data"]}
    assert [m.id for m in client.models.list()][:3] == ["deepseek-chat", "deepseek-coder", "deepseek-reasoner"]


def test_streaming_with_include_usage(client):
    kwargs = dict(model="deepseek-chat", messages=USER, max_tokens=8, temperature=0, frequency_penalty=2)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    *content_chunks, usage_chunk = chunks
    assert content_chunks[0].choices[0].delta.role == "assistant"
    assert all(chunk.usage is None for chunk in content_chunks)
    assert content_chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert "".join(c.choices[0].delta.content or "" for c in content_chunks) == whole.choices[0].message.content
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == whole.usage.completion_tokens


def test_streaming_without_include_usage_sends_no_usage(api_server):
    import httpx

    body = {"model": "deepseek-chat", "messages": USER, "max_tokens": 4, "stream": True}
    with httpx.stream(
        "POST", f"{api_server.url}/chat/completions", json=body, headers={"Authorization": "Bearer sk-main"}, timeout=60
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks and all("usage" not in chunk and chunk["choices"] for chunk in chunks)


def engine_completion(server, prompt: str, **params):
    """What the engine itself generates for `prompt` (the reference the API's answer is checked against)."""
    engine, tokenizer = server.engine, server.engine.tokenizer
    [completion] = engine.generate(
        [Request(tokenizer.encode(prompt), SamplingParams(stop_token_ids=[tokenizer.eos_id], **params))]
    )
    return completion


def engine_output(server, prompt: str, **params) -> str:
    return engine_completion(server, prompt, **params).text


def split_answer(tokenizer, text: str) -> tuple[str, str]:
    """(reasoning, content) of raw model text as the API reports them: split at </think>, special tokens removed."""
    reasoning, _, content = text.partition("</think>")
    special = tokenizer.special_token_pattern
    return special.sub("", reasoning), special.sub("", content)


def thought_closing_sample(server, prompt: str):
    """(seed, engine completion) for the first seed whose sample closes the thought and then answers."""
    engine, tokenizer = server.engine, server.engine.tokenizer
    think_end, prompt_ids = tokenizer.token_id("</think>"), tokenizer.encode(prompt)
    # A random model closes a thought within 12 tokens in ~1% of samples. Seeds are tried 64 to an engine call
    # (one call per seed took over 300 s on a loaded machine); a hit is decoded again alone, as the API will
    # decode it, since a batch's matmuls may round differently.
    for first in range(0, 1024, 64):
        seeds = range(first, first + 64)
        params = [SamplingParams(max_tokens=12, seed=seed, stop_token_ids=[tokenizer.eos_id]) for seed in seeds]
        batch = engine.generate([Request(prompt_ids, p) for p in params])
        for seed, completion in zip(seeds, batch):
            if think_end in completion.token_ids[1:-2]:
                alone = engine_completion(server, prompt, max_tokens=12, seed=seed)
                if think_end in alone.token_ids[1:-2]:
                    return seed, alone
    pytest.fail("no seed in 0..1023 closes the thought within 12 tokens")


@pytest.mark.parametrize("how", ["reasoner", "thinking_field"])
def test_reasoner_splits_the_thought_from_the_answer(api_server, client, how):
    tokenizer = api_server.engine.tokenizer
    model, extra = (
        ("deepseek-reasoner", {}) if how == "reasoner" else ("deepseek-chat", {"thinking": {"type": "enabled"}})
    )
    prompt = tokenizer.render_chat(USER, thinking=True)
    assert prompt.endswith("<think>")
    seed, reference = thought_closing_sample(api_server, prompt)
    expected_reasoning, expected_content = split_answer(tokenizer, reference.text)

    response = client.chat.completions.create(
        model=model, messages=USER, max_tokens=12, seed=seed, temperature=0, extra_body=extra
    )  # temperature: ignored here
    message = response.choices[0].message
    assert message.model_extra["reasoning_content"] == expected_reasoning
    assert message.content == expected_content
    reasoning_tokens = response.usage.completion_tokens_details.reasoning_tokens
    assert reasoning_tokens == reference.token_ids.index(tokenizer.token_id("</think>")) + 1

    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=USER,
            max_tokens=12,
            seed=seed,
            stream=True,
            extra_body=extra,
            stream_options={"include_usage": True},
        )
    )
    assert (
        "".join(c.choices[0].delta.model_extra.get("reasoning_content") or "" for c in chunks[:-1])
        == expected_reasoning
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == expected_content
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == reasoning_tokens


def test_prefix_completion_continues_a_thought(api_server, beta_client):
    messages = USER + [{"role": "assistant", "content": "", "reasoning_content": "Let me see", "prefix": True}]
    prompt = api_server.engine.tokenizer.render_chat(messages, thinking=True)
    assert prompt.endswith("<think>Let me see")
    expected_reasoning, expected_content = split_answer(
        api_server.engine.tokenizer, engine_output(api_server, prompt, max_tokens=10, seed=3)
    )
    response = beta_client.chat.completions.create(model="deepseek-reasoner", messages=messages, max_tokens=10, seed=3)
    assert response.choices[0].message.model_extra["reasoning_content"] == expected_reasoning
    assert response.choices[0].message.content == expected_content


def test_prefix_completion_continues_the_assistant_text(api_server, beta_client):
    tokenizer = api_server.engine.tokenizer
    messages = USER + [{"role": "assistant", "content": "def add(a, b):", "prefix": True}]
    response = beta_client.chat.completions.create(
        model="deepseek-chat", messages=messages, max_tokens=8, temperature=0, frequency_penalty=2
    )
    prompt = tokenizer.render_chat(messages)
    assert prompt.endswith("def add(a, b):")
    expected = engine_output(api_server, prompt, max_tokens=8, temperature=0, frequency_penalty=2)
    assert response.choices[0].message.content == tokenizer.special_token_pattern.sub("", expected)


def test_earlier_reasoning_is_dropped_but_tool_loop_reasoning_is_kept(client):
    def prompt_tokens(messages):
        return client.chat.completions.create(
            model="deepseek-reasoner", messages=messages, max_tokens=1
        ).usage.prompt_tokens

    earlier = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "two and two make four, surely"},
        {"role": "user", "content": "and 3+3?"},
    ]
    without = [dict(m) for m in earlier]
    without[1].pop("reasoning_content")
    assert prompt_tokens(earlier) == prompt_tokens(without)

    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 3, "b": 3}'}}
    loop = [
        {"role": "user", "content": "3+3?"},
        {"role": "assistant", "content": "", "tool_calls": [call], "reasoning_content": "use the add tool"},
        {"role": "tool", "tool_call_id": "call_1", "content": "6"},
    ]
    short = [dict(m) for m in loop]
    short[1]["reasoning_content"] = ""
    assert prompt_tokens(loop) > prompt_tokens(short)


def test_tool_loop_without_reasoning_content_is_400(client):
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "3+3?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "6"},
    ]
    with pytest.raises(openai.BadRequestError, match="reasoning_content"):
        client.chat.completions.create(model="deepseek-reasoner", messages=messages, max_tokens=4)
    # the same history is fine without thinking
    client.chat.completions.create(model="deepseek-chat", messages=messages, max_tokens=2)


def test_thinking_mode_rejects_logprobs_and_ignores_sampling_knobs(client):
    with pytest.raises(openai.BadRequestError, match="thinking mode"):
        client.chat.completions.create(model="deepseek-reasoner", messages=USER, max_tokens=2, logprobs=True)
    response = client.chat.completions.create(
        model="deepseek-reasoner",
        messages=USER,
        max_tokens=2,
        temperature=0.1,
        top_p=0.5,
        presence_penalty=1,
        frequency_penalty=1,
    )
    assert response.usage.completion_tokens <= 2


def test_json_output_is_a_json_object(client):
    messages = [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "Give me a record"}]
    for seed in range(2):
        response = client.chat.completions.create(
            model="deepseek-chat", messages=messages, max_tokens=24, response_format={"type": "json_object"}, seed=seed
        )
        content, reason = response.choices[0].message.content, response.choices[0].finish_reason
        assert content.startswith("{")
        if reason == "stop":
            assert isinstance(json.loads(content), dict)
        else:
            assert reason == "length"


def test_json_output_without_the_word_json_is_400(client):
    with pytest.raises(openai.BadRequestError, match="json"):
        client.chat.completions.create(
            model="deepseek-chat", messages=USER, max_tokens=4, response_format={"type": "json_object"}
        )


def test_logprobs(client):
    request = dict(
        model="deepseek-chat",
        messages=USER,
        max_tokens=6,
        logprobs=True,
        top_logprobs=3,
        temperature=0,
        frequency_penalty=2,
    )
    response = client.chat.completions.create(**request)
    entries = response.choices[0].logprobs.content
    assert 1 <= len(entries) <= 6
    for entry in entries:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
        assert bytes(entry.bytes).decode("utf-8", "replace") is not None
    chunks = list(client.chat.completions.create(**request, stream=True))  # the same request, streamed
    streamed = [e for c in chunks if c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in entries]
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(
            model="deepseek-chat", messages=USER, max_tokens=2, top_logprobs=21, logprobs=True
        )


def test_stop_sequence_cuts_the_output(client):
    def complete(**kw):
        return client.chat.completions.create(
            model="deepseek-chat", messages=USER, max_tokens=12, temperature=0, frequency_penalty=2, **kw
        ).choices[0]

    full = complete().message.content
    stop = next(
        full[i : i + 2]
        for i in range(3, len(full) - 2)
        if full[i : i + 2].isprintable() and full[i : i + 2].strip() and full.index(full[i : i + 2]) == i
    )
    cut = complete(stop=[stop, "never-seen-stop"])
    assert cut.message.content == full[: full.index(stop)]
    assert cut.finish_reason == "stop"


def test_penalties_change_greedy_output(client):
    def content(**kw):
        return (
            client.chat.completions.create(model="deepseek-chat", messages=USER, max_tokens=10, temperature=0, **kw)
            .choices[0]
            .message.content
        )

    plain = content()
    assert content(frequency_penalty=2.0) != plain
    assert content(presence_penalty=2.0) != plain


def test_repeated_long_prompt_hits_the_prompt_cache(client):
    long_system = "You are a careful assistant. " * 40  # well over 64 tokens
    messages = [{"role": "system", "content": long_system}, {"role": "user", "content": "hello"}]
    first = client.chat.completions.create(model="deepseek-chat", messages=messages, max_tokens=2).usage
    second = client.chat.completions.create(model="deepseek-chat", messages=messages, max_tokens=2).usage
    hit, miss = second.model_extra["prompt_cache_hit_tokens"], second.model_extra["prompt_cache_miss_tokens"]
    assert hit >= 64 and hit % 64 == 0 and hit + miss == second.prompt_tokens == first.prompt_tokens


def test_a_configured_checkpoint_serves_one_model_name(start_server, tiny_checkpoint, tmp_path_factory):
    other = tmp_path_factory.mktemp("reasoner") / "ckpt"
    shutil.copytree(tiny_checkpoint, other)
    config = json.loads((other / "generation_config.json").read_text())
    (other / "generation_config.json").write_text(json.dumps({**config, "temperature": 0.0}))
    server = start_server(model_map={"deepseek-reasoner": other})
    default_engine, reasoner_engine = server.engine, server.app.state.registry.names["deepseek-reasoner"].engine
    assert reasoner_engine is not default_engine
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
    before = reasoner_engine.stats()["requests"], default_engine.stats()["requests"]
    client.chat.completions.create(model="deepseek-reasoner", messages=USER, max_tokens=2)
    assert (reasoner_engine.stats()["requests"], default_engine.stats()["requests"]) == (before[0] + 1, before[1])
    client.chat.completions.create(model="deepseek-coder", messages=USER, max_tokens=2)
    assert (reasoner_engine.stats()["requests"], default_engine.stats()["requests"]) == (before[0] + 1, before[1] + 1)
    # thinking mode ignores the request's temperature and samples as the checkpoint's generation_config says
    # (greedy here), so the answer is the engine's greedy output split at </think>
    reasoner = server.app.state.registry.names["deepseek-reasoner"]
    prompt = reasoner.tokenizer.render_chat(USER, thinking=True)
    [greedy] = reasoner_engine.generate(
        [
            Request(
                reasoner.tokenizer.encode(prompt),
                SamplingParams(max_tokens=8, temperature=0, stop_token_ids=reasoner.eos_ids),
            )
        ]
    )
    message = (
        client.chat.completions.create(model="deepseek-reasoner", messages=USER, max_tokens=8, temperature=1.5)
        .choices[0]
        .message
    )
    reasoning, content = split_answer(reasoner.tokenizer, greedy.text)
    assert (message.model_extra["reasoning_content"], message.content) == (reasoning, content)
