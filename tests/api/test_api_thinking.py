"""Model names and thinking controls as DeepSeek documents them in 2026 (docs/API.md), through the official openai
and anthropic SDKs against a live server: the seed-era and V4 names with their thinking defaults, the checkpoint's
own name, `reasoning_effort` and the `thinking` object, thinking budgets (cap and s1-style minimum), the 400 for a
thinking request that ends in an assistant message, tool calls in thinking mode, the Anthropic name mapping, and no
think token in a reply with thinking off."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
import torch

from nanoseek.api.errors import APIError
from nanoseek.api.thinking import EFFORT_BUDGETS, choose_thinking
from nanoseek.tokenizer.output_parser import think_token_ids
from tests.api.conftest import MAIN_KEY
from tests.api.test_api_chat import USER, engine_completion, thought_closing_sample

PING = {
    "type": "object",
    "properties": {"loud": {"type": "boolean"}},
    "required": ["loud"],
    "additionalProperties": False,
}
TOOLS = [{"type": "function", "function": {"name": "ping", "parameters": PING}}]


def ask(client, model: str, **kwargs):
    kwargs.setdefault("max_tokens", 12)
    kwargs.setdefault("seed", 5)
    return client.chat.completions.create(model=model, messages=kwargs.pop("messages", USER), **kwargs)


def reasoning(response) -> str | None:
    return response.choices[0].message.model_extra.get("reasoning_content")


def test_models_lists_seed_and_2026_names_and_the_checkpoints_own(client, tiny_checkpoint):
    names = [m.id for m in client.models.list()]
    assert names[:6] == [
        "deepseek-chat",
        "deepseek-coder",
        "deepseek-reasoner",
        "deepseek-v4-flash",
        "deepseek-v4-pro",
        "deepseek-flash",
    ]
    assert names[6:] == [tiny_checkpoint.name]


def test_each_name_has_deepseeks_thinking_default(client, tiny_checkpoint):
    reasoner = ask(client, "deepseek-reasoner")
    chat = ask(client, "deepseek-chat", temperature=1)
    for name in ("deepseek-v4-flash", "deepseek-v4-pro", "deepseek-flash"):
        thinks = ask(client, name)
        assert (reasoning(thinks), thinks.choices[0].message.content) == (
            reasoning(reasoner),
            reasoner.choices[0].message.content,
        )
        plain = ask(client, name, extra_body={"thinking": {"type": "disabled"}})
        assert reasoning(plain) is None and plain.choices[0].message.content == chat.choices[0].message.content
    for own in (tiny_checkpoint.name, str(tiny_checkpoint)):  # what vLLM clients send: no thinking by default
        response = ask(client, own, temperature=1)
        assert reasoning(response) is None and response.choices[0].message.content == chat.choices[0].message.content
        assert response.model == own


def test_reasoning_effort_none_turns_thinking_off_and_unknown_efforts_are_422(client):
    off = ask(client, "deepseek-v4-flash", reasoning_effort="none", temperature=1)
    assert reasoning(off) is None
    assert off.choices[0].message.content == ask(client, "deepseek-chat", temperature=1).choices[0].message.content
    for effort in ("low", "medium", "high", "max", "xhigh"):
        assert reasoning(ask(client, "deepseek-v4-flash", reasoning_effort=effort)) is not None
    with pytest.raises(openai.UnprocessableEntityError, match="reasoning_effort"):
        ask(client, "deepseek-v4-flash", reasoning_effort="extreme")


def test_budget_tokens_caps_the_thought_then_the_model_answers(client):
    free = ask(client, "deepseek-reasoner", max_tokens=16, seed=11)
    free_tokens = free.usage.completion_tokens_details.reasoning_tokens
    assert free_tokens > 4, "the reference thought should run past the cap"
    for budget in (0, 3):
        capped = ask(
            client,
            "deepseek-reasoner",
            max_tokens=16,
            seed=11,
            extra_body={"thinking": {"type": "enabled", "budget_tokens": budget}},
        )
        assert capped.usage.completion_tokens_details.reasoning_tokens == budget + 1  # the thought and </think>
        assert reasoning(free).startswith(reasoning(capped))  # the same draws up to the cap
        assert capped.usage.completion_tokens > budget + 1 or capped.choices[0].finish_reason == "stop"


def test_each_effort_caps_the_thought_at_its_budget_in_every_format(client, api_server, monkeypatch):
    """`reasoning_effort` low / medium / high / max through the API: each caps the thought at its level's budget
    (docs/API.md; shrunk here from 256 and 2048 tokens so that the random model's thought runs past them), then
    `</think>` is forced; max has no cap. Responses' `reasoning.effort` and Anthropic's `output_config.effort` too."""
    monkeypatch.setitem(EFFORT_BUDGETS, "low", 2)
    monkeypatch.setitem(EFFORT_BUDGETS, "high", 4)
    free = ask(client, "deepseek-reasoner", max_tokens=16, seed=11, reasoning_effort="max")
    assert free.usage.completion_tokens_details.reasoning_tokens > 5, "the reference thought should run past the caps"
    thoughts = {}
    for effort, cap in (("low", 2), ("medium", 4), ("high", 4), ("minimal", 2), ("xhigh", 4)):
        capped = ask(client, "deepseek-reasoner", max_tokens=16, seed=11, reasoning_effort=effort)
        assert capped.usage.completion_tokens_details.reasoning_tokens == cap + 1, effort  # the thought, </think>
        thoughts[effort] = reasoning(capped)
        assert reasoning(free).startswith(thoughts[effort])  # the same draws up to the cap
    default = ask(client, "deepseek-reasoner", max_tokens=16, seed=11)  # no effort: DeepSeek's default, high
    assert default.usage.completion_tokens_details.reasoning_tokens == 5
    responses = client.responses.create(
        model="deepseek-reasoner",
        input="hi",
        max_output_tokens=16,
        reasoning={"effort": "low"},
        extra_body={"seed": 11},
    )
    assert responses.usage.output_tokens_details.reasoning_tokens == 3
    claude = httpx.post(
        f"{api_server.url}/anthropic/v1/messages",
        headers={"x-api-key": MAIN_KEY},
        json={
            "model": "claude-opus-4-1",
            "max_tokens": 16,
            "messages": USER,
            "output_config": {"effort": "low"},
            "seed": 11,
        },
    )
    thought = claude.json()["content"][0]
    assert thought["type"] == "thinking" and thought["thinking"] == thoughts["low"]


def test_min_tokens_extends_a_thought_that_ends_early_with_wait(client, api_server):
    tokenizer = api_server.engine.tokenizer
    seed, reference = thought_closing_sample(api_server, tokenizer.render_chat(USER, thinking=True))
    early = reference.token_ids.index(tokenizer.token_id("</think>"))
    thinking = {"type": "enabled", "min_tokens": early + 3, "budget_tokens": early + 8}
    response = ask(client, "deepseek-reasoner", max_tokens=40, seed=seed, extra_body={"thinking": thinking})
    thought = reasoning(response)
    special = tokenizer.special_token_pattern  # the API strips special tokens from answer text
    assert thought.startswith(special.sub("", reference.text.partition("</think>")[0]) + "\nWait")
    assert early + 3 < response.usage.completion_tokens_details.reasoning_tokens <= early + 9
    with pytest.raises(openai.UnprocessableEntityError, match="min_tokens"):
        ask(
            client,
            "deepseek-reasoner",
            extra_body={"thinking": {"type": "enabled", "min_tokens": 9, "budget_tokens": 4}},
        )


@pytest.fixture(scope="module")
def think_writing_server(start_server, tmp_path_factory):
    """A server over a tiny model that, with thinking off, writes `</think>` as its first token, as the smol adapter
    wrote a thought and `</think>` into half its no-thinking math replies: a random model with an output projection
    of its own (untied), whose rows for `</think>` and for the token it would have written first are swapped, so it
    reads its prompt as before and ranks `</think>` where that token was."""
    from nanoseek.model.checkpoint import save_checkpoint
    from nanoseek.model.loader import load_checkpoint
    from nanoseek.model.random_init import make_random_checkpoint

    untied = make_random_checkpoint(tmp_path_factory.mktemp("untied"), tie_word_embeddings=False)
    checkpoint = load_checkpoint(untied)
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    with torch.no_grad():
        first = int(model(torch.tensor([tokenizer.encode_chat(USER, thinking=False)]))[0, -1].argmax())
        rows = model.lm_head.weight
        think_end = tokenizer.token_id("</think>")
        rows[[first, think_end]] = rows[[think_end, first]]
    return start_server(model=save_checkpoint(model, tokenizer, tmp_path_factory.mktemp("writes_think_end")))


def test_a_reply_with_thinking_off_holds_no_think_token(think_writing_server):
    """With thinking off the prompt closes the thought (`<｜Assistant｜></think>`); the think tokens are banned from
    the reply, so a model that would write `</think>` first writes its next best token instead, and the API's reply
    holds no think token (before the ban the API stripped the tag and returned the thought run into the answer as
    `content`). Thinking mode bans nothing: the same model's thought ends with its own `</think>`."""
    server = think_writing_server
    client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120)
    tokenizer = server.engine.tokenizer
    think_ids = think_token_ids(tokenizer)
    prompt = tokenizer.render_chat(USER, thinking=False)
    assert prompt.endswith("</think>") and len(think_ids) == 2
    unbanned = engine_completion(server, prompt, max_tokens=8, temperature=0)
    assert unbanned.token_ids[0] == tokenizer.token_id("</think>")  # what the model writes when nothing bans it
    banned = engine_completion(server, prompt, max_tokens=8, temperature=0, banned_token_ids=think_ids)
    assert not set(banned.token_ids) & set(think_ids)
    special = tokenizer.special_token_pattern  # the API strips the other special tokens from answer text
    for model in ("deepseek-chat", "deepseek-v4-flash"):
        extra = {"thinking": {"type": "disabled"}} if model == "deepseek-v4-flash" else {}
        response = ask(client, model, max_tokens=8, temperature=0, logprobs=True, extra_body=extra)
        message = response.choices[0].message
        assert reasoning(response) is None
        assert not {entry.token for entry in response.choices[0].logprobs.content} & {"<think>", "</think>"}
        assert message.content == special.sub("", banned.text)
        assert "<think>" not in message.content and "</think>" not in message.content
    streamed = client.chat.completions.create(
        model="deepseek-chat", messages=USER, max_tokens=8, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed) == special.sub("", banned.text)
    thinking_prompt = tokenizer.render_chat(USER, thinking=True)
    reference = engine_completion(server, thinking_prompt, max_tokens=8, seed=5)
    thought = ask(client, "deepseek-reasoner", max_tokens=8, seed=5)
    assert reasoning(thought) == special.sub("", reference.text.partition("</think>")[0])


def test_thinking_request_ending_in_an_assistant_message_is_400_unless_prefix(client, beta_client):
    ending = USER + [{"role": "assistant", "content": "Hello"}]
    with pytest.raises(openai.BadRequestError, match="must be a user message, or an assistant message with prefix"):
        ask(client, "deepseek-v4-flash", messages=ending)
    assert ask(client, "deepseek-chat", messages=ending).choices[0].message.role == "assistant"
    prefixed = USER + [{"role": "assistant", "content": "Hello", "prefix": True}]
    # DeepSeek takes prefix only under /beta; nanoseek takes it at every base URL (docs/API.md), with one answer
    at_beta, at_v1 = (ask(c, "deepseek-v4-flash", messages=prefixed) for c in (beta_client, client))
    assert at_beta.choices[0].finish_reason in ("stop", "length")
    assert (
        reasoning(at_beta) == reasoning(at_v1)
        and at_beta.choices[0].message.content == at_v1.choices[0].message.content
    )


def test_tool_calls_in_thinking_mode_and_the_reasoning_pass_back(client):
    # the budget closes the random model's thought; then the grammar forces the call
    response = ask(
        client,
        "deepseek-v4-flash",
        tools=TOOLS,
        tool_choice="required",
        max_tokens=40,
        extra_body={"thinking": {"type": "enabled", "budget_tokens": 4}},
    )
    message = response.choices[0].message
    assert message.tool_calls and message.tool_calls[0].function.name == "ping"
    assert response.usage.completion_tokens_details.reasoning_tokens == 5
    call = message.tool_calls[0]
    turn = {"role": "assistant", "content": "", "tool_calls": [call.model_dump(include={"id", "type", "function"})]}
    result = {"role": "tool", "tool_call_id": call.id, "content": "pong"}
    with pytest.raises(openai.BadRequestError, match="reasoning_content"):
        ask(client, "deepseek-v4-flash", messages=USER + [turn, result], tools=TOOLS)
    turn["reasoning_content"] = reasoning(response)
    follow_up = ask(client, "deepseek-v4-flash", messages=USER + [turn, result], tools=TOOLS)
    assert follow_up.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_anthropic_names_map_as_deepseek_documents(api_server):
    claude = anthropic.Anthropic(base_url=api_server.url + "/anthropic", api_key=MAIN_KEY, max_retries=0)
    for name in ("claude-sonnet-4-6", "claude-opus-4-1", "claude-3-haiku-20240307"):
        message = claude.messages.create(model=name, max_tokens=8, messages=USER)
        assert message.model == name
        assert message.content[0].type == "thinking"  # the V4 models think by default
    plain = claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=8, messages=USER, thinking={"type": "disabled"}
    )
    assert [block.type for block in plain.content] == ["text"]
    capped = claude.messages.create(
        model="claude-opus-4-1", max_tokens=12, messages=USER, thinking={"type": "enabled", "budget_tokens": 0}
    )
    assert capped.content[0].type == "thinking" and capped.content[0].thinking == ""
    with pytest.raises(anthropic.BadRequestError, match="Model Not Exist"):
        claude.messages.create(model="gpt-4o", max_tokens=8, messages=USER)
    response = httpx.post(
        f"{api_server.url}/anthropic/v1/messages",
        headers={"x-api-key": MAIN_KEY},
        json={"model": "claude-opus-4-1", "max_tokens": 8, "messages": USER, "output_config": {"effort": "huge"}},
    )
    assert response.status_code == 422 and response.json()["type"] == "error"


def test_effort_mapping_follows_deepseek():
    assert choose_thinking(False).enabled is False
    assert choose_thinking(True).budget_tokens == EFFORT_BUDGETS["high"]  # DeepSeek's default effort
    for requested, level in (("minimal", "low"), ("medium", "high"), ("xhigh", "high"), ("ultra", "max")):
        choice = choose_thinking(True, effort=requested)
        assert (choice.effort, choice.budget_tokens) == (level, EFFORT_BUDGETS[level])
    assert choose_thinking(True, effort="max").budget_tokens is None
    assert choose_thinking(False, "enabled", "low", budget_tokens=7).budget_tokens == 7
    assert not choose_thinking(True, "enabled", "none").enabled
    with pytest.raises(APIError):
        choose_thinking(True, effort="turbo")
