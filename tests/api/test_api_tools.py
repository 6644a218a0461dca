"""Tool calls through the openai SDK: required / named / auto / strict, parallel calls, streaming deltas in
OpenAI's shape, tool results in later turns, strict-schema checks, and the Hermes (<tool_call>) format of a
checkpoint whose chat template uses it. A random model never chooses to call a tool, so calls are forced
by the grammar (required or named tool_choice) and the parsed calls are checked against the schemas; `auto`'s
lazy grammar is checked on a random model rewired to open calls all the time (`opener_server`)."""

from __future__ import annotations

import json
import shutil

import jsonschema
import openai
import pytest

from nanoseek.tokenizer import special_tokens as st

# short names and enums: a random model spells JSON almost a character per token
WEATHER = {
    "type": "object",
    "properties": {"unit": {"type": "string", "enum": ["C", "F"]}, "now": {"type": "boolean"}},
    "required": ["unit", "now"],
    "additionalProperties": False,
}
PING = {
    "type": "object",
    "properties": {"loud": {"type": "boolean"}},
    "required": ["loud"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER, "strict": True},
    },
    {"type": "function", "function": {"name": "ping", "parameters": PING, "strict": True}},
]
SCHEMAS = {"get_weather": WEATHER, "ping": PING}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def check_calls(message, allowed: set[str], cut_by_length: bool = False) -> list:
    """The calls are well-formed and match their schemas (the last one may be cut short by max_tokens)."""
    calls = message.tool_calls
    assert calls, "the grammar forces at least one call"
    for position, call in enumerate(calls):
        assert call.type == "function" and call.id.startswith("call_") and call.function.name in allowed
        if cut_by_length and position == len(calls) - 1:
            continue
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    assert len({call.id for call in calls}) == len(calls)
    return calls


def test_required_tool_choice_forces_valid_and_parallel_calls(beta_client):
    """Sample seeds until one answer holds parallel calls; every answer on the way must be valid calls."""
    for seed in range(12):
        response = beta_client.chat.completions.create(
            model="deepseek-chat", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=64, seed=seed
        )
        choice = response.choices[0]
        assert choice.finish_reason in ("tool_calls", "length")
        calls = check_calls(choice.message, {"get_weather", "ping"}, cut_by_length=choice.finish_reason == "length")
        if choice.finish_reason == "tool_calls":
            assert choice.message.content == ""
            if len(calls) >= 2:
                return
    pytest.fail("no seed in 0..11 made parallel calls")


def test_named_tool_choice_calls_exactly_that_function(client):
    response = client.chat.completions.create(
        model="deepseek-chat",
        messages=ASK,
        tools=TOOLS,
        max_tokens=64,
        tool_choice={"type": "function", "function": {"name": "ping"}},
    )
    calls = check_calls(response.choices[0].message, {"ping"})
    assert len(calls) == 1 and response.choices[0].finish_reason == "tool_calls"


def test_streamed_tool_calls_arrive_as_openai_deltas(client):
    chunks = list(
        client.chat.completions.create(
            model="deepseek-chat",
            messages=ASK,
            tools=TOOLS,
            max_tokens=64,
            stream=True,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
    )
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].index == 0 and deltas[0].id.startswith("call_") and deltas[0].type == "function"
    assert deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas if d.index == 0)
    jsonschema.validate(json.loads(arguments), WEATHER)
    assert len([d for d in deltas if d.function.arguments]) > 1  # the arguments stream as they are written
    assert all(d.id is None and d.function.name is None for d in deltas[1:])
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_auto_and_none_answer_in_text(client):
    for choice in ("auto", "none"):
        response = client.chat.completions.create(
            model="deepseek-chat",
            messages=ASK,
            tools=TOOLS,
            max_tokens=6,
            tool_choice=choice,
            temperature=0,
            frequency_penalty=2,
        )
        assert response.choices[0].finish_reason in ("stop", "length", "tool_calls")
        assert isinstance(response.choices[0].message.content, str)


def test_tool_results_in_a_later_turn(client):
    call = {
        "id": "call_abc",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"unit": "C", "now": false}'},
    }
    messages = ASK + [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "21 degrees"},
    ]
    response = client.chat.completions.create(model="deepseek-chat", messages=messages, tools=TOOLS, max_tokens=4)
    assert response.usage.prompt_tokens > len("21 degrees")


@pytest.mark.parametrize(
    "schema,keyword",
    [
        (
            {
                "type": "object",
                "properties": {"city": {"type": "string", "minLength": 2}},
                "required": ["city"],
                "additionalProperties": False,
            },
            "minLength",
        ),
        (
            {
                "type": "object",
                "properties": {"xs": {"type": "array", "items": {"type": "integer"}, "maxItems": 3}},
                "required": ["xs"],
                "additionalProperties": False,
            },
            "maxItems",
        ),
        ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}, "additionalProperties"),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": [], "additionalProperties": False},
            "required",
        ),
        (
            {
                "type": "object",
                "properties": {"d": {"type": "string", "format": "date-time"}},
                "required": ["d"],
                "additionalProperties": False,
            },
            "format",
        ),
    ],
)
def test_strict_schema_outside_the_subset_is_400_naming_the_keyword(beta_client, schema, keyword):
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema, "strict": True}}]
    with pytest.raises(openai.BadRequestError, match=keyword):
        beta_client.chat.completions.create(model="deepseek-chat", messages=ASK, tools=tools, max_tokens=2)


def test_strict_schema_inside_the_subset_is_accepted(beta_client):
    schema = {
        "type": "object",
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "value": {"type": "integer", "minimum": 0, "multipleOf": 2},
                    "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]},
                },
                "required": ["value", "next"],
                "additionalProperties": False,
            }
        },
        "properties": {
            "head": {"$ref": "#/$defs/node"},
            "id": {"type": "string", "format": "uuid"},
            "tag": {"type": "string", "pattern": "^[a-z]+$"},
        },
        "required": ["head", "id", "tag"],
        "additionalProperties": False,
    }
    tools = [{"type": "function", "function": {"name": "walk", "parameters": schema, "strict": True}}]
    response = beta_client.chat.completions.create(model="deepseek-chat", messages=ASK, tools=tools, max_tokens=2)
    assert response.choices[0].finish_reason in ("stop", "length")


def test_bad_tool_choices_are_400(client):
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(model="deepseek-chat", messages=ASK, tool_choice="required", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="nope"):
        client.chat.completions.create(
            model="deepseek-chat",
            messages=ASK,
            tools=TOOLS,
            max_tokens=2,
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )


HERMES_TEMPLATE = """{%- for message in messages -%}
{{ message.role }}: {{ message.content }}
{% endfor -%}
{%- if tools -%}Tools: {{ tools | tojson }}. Call one as <tool_call>{"name": ..., "arguments": ...}</tool_call>
{% endif -%}
{%- if add_generation_prompt %}assistant: {% endif -%}"""


@pytest.fixture(scope="module")
def hermes_server(start_server, tiny_checkpoint, tmp_path_factory):
    checkpoint = tmp_path_factory.mktemp("hermes") / "ckpt"
    shutil.copytree(tiny_checkpoint, checkpoint)
    config_file = checkpoint / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["chat_template"] = HERMES_TEMPLATE
    config_file.write_text(json.dumps(config))
    return start_server(model=checkpoint)


def test_hermes_checkpoint_renders_its_template_and_parses_tool_call_tags(hermes_server):
    assert hermes_server.app.state.registry.default.tool_format.name == "hermes"
    client = openai.OpenAI(base_url=hermes_server.url, api_key="unused", max_retries=0)
    # no special tokens here: the call's text is spelled out in ordinary tokens, so it needs more of them
    response = client.chat.completions.create(
        model="deepseek-chat",
        messages=ASK,
        tools=TOOLS,
        max_tokens=128,
        tool_choice={"type": "function", "function": {"name": "ping"}},
        seed=0,
    )
    assert len(check_calls(response.choices[0].message, {"ping"})) == 1
    assert response.choices[0].finish_reason == "tool_calls"


def test_prefix_completion_finishes_a_tool_call_it_opened(api_server, beta_client):
    """The prefix opens a call; whatever the model writes next is that call's arguments, up to the call's end
    marker, and the response reports the whole call (parsed as the engine's raw output says)."""
    from nanoseek.engine import Request, SamplingParams

    opened = st.TOOL_CALLS_BEGIN + st.TOOL_CALL_BEGIN + "ping" + st.TOOL_SEP + '{"loud": '
    messages = ASK + [{"role": "assistant", "content": opened, "prefix": True}]
    kwargs = dict(
        model="deepseek-chat", messages=messages, tools=TOOLS, max_tokens=6, temperature=0, frequency_penalty=2
    )
    tokenizer = api_server.engine.tokenizer
    prompt = tokenizer.render_chat(messages, tools=TOOLS)
    assert prompt.endswith(opened)
    [raw] = api_server.engine.generate(
        [
            Request(
                tokenizer.encode(prompt),
                SamplingParams(max_tokens=6, temperature=0, frequency_penalty=2, stop_token_ids=[tokenizer.eos_id]),
            )
        ]
    )
    continuation = raw.text.split(st.TOOL_CALL_END)[0]

    message = beta_client.chat.completions.create(**kwargs).choices[0].message
    [call] = message.tool_calls[:1]
    assert call.function.name == "ping" and call.function.arguments == '{"loud": ' + continuation
    chunks = list(beta_client.chat.completions.create(stream=True, **kwargs))
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "ping" and deltas[0].id.startswith("call_")
    assert "".join(d.function.arguments or "" for d in deltas if d.index == 0) == call.function.arguments


# the same functions, not strict: `auto` used to leave their calls to the model alone
LOOSE_TOOLS = [{"type": "function", "function": {**tool["function"], "strict": False}} for tool in TOOLS]


@pytest.fixture(scope="module", params=["block", "bare"])
def opener_server(request, start_server, opener_checkpoint):
    """A server whose model always starts its reply with the tool-call block opener, or with the bare per-call
    opener (the shipped SmolLM2 adapter's commonest broken call: `<｜tool▁call▁begin｜>` and then prose)."""
    marker = st.TOOL_CALLS_BEGIN if request.param == "block" else st.TOOL_CALL_BEGIN
    return marker, start_server(model=opener_checkpoint(marker))


def test_auto_tool_calls_are_grammar_enforced_once_the_model_opens_one(opener_server):
    """Non-strict functions under `auto`: the model's own output would be a broken call (the opener over and over);
    served, it is well-formed calls of the given functions with schema-valid arguments, streamed or not alike."""
    from nanoseek.engine import Request, SamplingParams

    marker, server = opener_server
    tokenizer = server.engine.tokenizer
    prompt = tokenizer.encode(tokenizer.render_chat(ASK, tools=LOOSE_TOOLS))
    [raw] = server.engine.generate(
        [Request(prompt, SamplingParams(max_tokens=8, temperature=0, stop_token_ids=[tokenizer.eos_id]))]
    )
    assert raw.text == marker * 8  # what the model writes unconstrained

    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
    kwargs = dict(model="deepseek-chat", messages=ASK, tools=LOOSE_TOOLS, max_tokens=64, temperature=0)
    choice = client.chat.completions.create(**kwargs).choices[0]
    assert choice.finish_reason in ("tool_calls", "length")
    calls = check_calls(choice.message, {"get_weather", "ping"}, cut_by_length=choice.finish_reason == "length")
    if marker == st.TOOL_CALL_BEGIN:
        assert len(calls) == 1 and choice.finish_reason == "tool_calls"  # a bare opener starts exactly one call
    assert choice.message.content == ""

    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    streamed = {}
    for delta in deltas:
        streamed.setdefault(delta.index, [delta.function.name, ""])[1] += delta.function.arguments or ""
    assert streamed == {i: [call.function.name, call.function.arguments] for i, call in enumerate(calls)}
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason


def test_auto_with_a_json_response_format_keeps_the_json_grammar(opener_server):
    """JSON Output with non-strict tools: the JSON grammar holds as before (the reply is a JSON object, no call)."""
    _, server = opener_server
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "The weather in Paris as json, please."}]
    choice = client.chat.completions.create(
        model="deepseek-chat",
        messages=messages,
        tools=LOOSE_TOOLS,
        response_format={"type": "json_object"},
        max_tokens=64,
        temperature=0,
    ).choices[0]
    assert not choice.message.tool_calls
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)
    none = client.chat.completions.create(
        model="deepseek-chat", messages=ASK, tools=LOOSE_TOOLS, tool_choice="none", max_tokens=4, temperature=0
    ).choices[0]
    assert none.finish_reason == "length" and not none.message.tool_calls  # `none` is unconstrained: the marker
