"""Output parsers, strict-schema checks and settings, without a server: every way of cutting a model's output
into stream deltas must give the same reasoning, content and tool calls as parsing it whole."""

from __future__ import annotations

import json

import pytest
import torch

from nanoseek.api.errors import APIError
from nanoseek.api.protocol import Tool
from nanoseek.api.settings import SettingsError, settings_from_env
from nanoseek.api.tools import check_strict_schema, check_tools
from nanoseek.tokenizer import special_tokens as st
from nanoseek.tokenizer.chat_format import CHAT_TEMPLATE, render_chat
from nanoseek.tokenizer.output_parser import (
    DEEPSEEK_TOOLS,
    DEEPSEEK_V3_TOOLS,
    HERMES_TOOLS,
    OutputParser,
    tool_format_for_template,
)


def parse_in_pieces(text: str, step: int, tool_format, thinking: bool, start_in_reasoning: bool = False):
    parser = OutputParser(tool_format, thinking=thinking, tools_enabled=True, start_in_reasoning=start_in_reasoning)
    reasoning = content = ""
    calls = []
    for i in range(0, len(text), step):
        piece = parser.feed(text[i : i + step])
        reasoning, content, calls = reasoning + piece.reasoning, content + piece.content, calls + piece.tool_calls
    tail = parser.finish()
    return (
        reasoning + tail.reasoning,
        content + tail.content,
        [(c.index, c.name, json.loads(c.arguments)) for c in calls],
    )


@pytest.mark.parametrize("tool_format", [DEEPSEEK_TOOLS, DEEPSEEK_V3_TOOLS, HERMES_TOOLS], ids=lambda f: f.name)
def test_streamed_parse_equals_whole_parse(tool_format):
    calls = (
        tool_format.call_text("get_weather", '{"city": "Paris"}')
        + tool_format.call_separator
        + tool_format.call_text("ping", "{}")
    )
    text = "first I think</think>Let me check." + tool_format.calls_begin + calls + tool_format.calls_end
    expected = ("first I think", "Let me check.", [(0, "get_weather", {"city": "Paris"}), (1, "ping", {})])
    for step in (1, 2, 3, 7, len(text)):
        assert parse_in_pieces(text, step, tool_format, thinking=True, start_in_reasoning=True) == expected


def test_nanoseek_chat_format_round_trips_through_the_parser():
    """What render_chat writes for an assistant turn with calls is what the parser reads back."""
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
    rendered = render_chat(
        [{"role": "user", "content": "1+2?"}, {"role": "assistant", "content": "Adding.", "tool_calls": [call]}],
        add_generation_prompt=False,
    )
    reply = rendered.split(st.ASSISTANT + st.THINK_END, 1)[1].removesuffix(st.EOS)
    assert tool_format_for_template(CHAT_TEMPLATE) is DEEPSEEK_TOOLS
    assert parse_in_pieces(reply, 1, DEEPSEEK_TOOLS, thinking=False) == ("", "Adding.", [(0, "add", {"a": 1, "b": 2})])


def test_reasoning_parser_holds_back_half_tags():
    parser = OutputParser(DEEPSEEK_TOOLS, thinking=True, tools_enabled=False, start_in_reasoning=True)
    first = parser.feed("abc</th")
    assert (first.reasoning, first.content) == ("abc", "")
    second = parser.feed("ink>answer <")
    assert (second.reasoning, second.content) == ("", "answer <")
    # a model that opens its own thought (no <think> in the prompt)
    parser = OutputParser(DEEPSEEK_TOOLS, thinking=True, tools_enabled=False)
    pieces = [parser.feed(t) for t in ("<thi", "nk>hm", "m</think>ok")]
    assert "".join(p.reasoning for p in pieces) == "hmm" and "".join(p.content for p in pieces) == "ok"


def test_arguments_stream_as_they_arrive_and_a_cut_call_keeps_them():
    text = (
        "ok"
        + st.TOOL_CALLS_BEGIN
        + st.TOOL_CALL_BEGIN
        + "f"
        + st.TOOL_SEP
        + '{"a": 1}'
        + st.TOOL_CALL_END
        + st.TOOL_CALL_BEGIN
        + "g"
        + st.TOOL_SEP
        + '{"b": '
    )
    parser = OutputParser(DEEPSEEK_TOOLS, thinking=False, tools_enabled=True)
    pieces, completed = [], []
    for ch in text:
        delta = parser.feed(ch)
        pieces += delta.tool_call_pieces
        completed += delta.tool_calls
        assert all(p.arguments for p in delta.tool_call_pieces if p.id is None)
    tail = parser.finish()
    pieces, completed = pieces + tail.tool_call_pieces, completed + tail.tool_calls
    starts = [p for p in pieces if p.id is not None]
    assert [(p.index, p.name) for p in starts] == [(0, "f"), (1, "g")]
    assert "".join(p.arguments for p in pieces if p.index == 0) == '{"a": 1}'
    assert len([p for p in pieces if p.index == 0 and p.id is None]) > 1  # arrived in several deltas
    assert [(c.name, c.arguments) for c in completed] == [("f", '{"a": 1}'), ("g", '{"b": ')]  # cut by length


def test_unfinished_call_in_a_whole_emitted_shape_is_returned_as_text():
    text = st.TOOL_CALLS_BEGIN + DEEPSEEK_V3_TOOLS.call_text("f", '{"a": ').removesuffix("\n```" + st.TOOL_CALL_END)
    parser = OutputParser(DEEPSEEK_V3_TOOLS, thinking=False, tools_enabled=True)
    piece = parser.feed(text)
    tail = parser.finish()
    assert piece.tool_calls == tail.tool_calls == [] and tail.content.endswith('{"a":')


def test_format_is_chosen_from_the_template_or_the_flag():
    assert tool_format_for_template("{{ '<tool_call>' }}") is HERMES_TOOLS
    assert tool_format_for_template("{{ '" + st.TOOL_CALL_BEGIN + "' }} ```json") is DEEPSEEK_V3_TOOLS
    assert tool_format_for_template(None) is DEEPSEEK_TOOLS
    assert tool_format_for_template(CHAT_TEMPLATE, override="hermes") is HERMES_TOOLS


def test_strict_schema_rules():
    ok = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "exclusiveMinimum": 0, "default": 1},
            "e": {"enum": ["a", "b"]},
            "x": {"type": ["string", "null"]},
        },
        "required": ["n", "e", "x"],
        "additionalProperties": False,
    }
    check_strict_schema(ok, "p")
    with pytest.raises(APIError, match="'minItems' at p.properties.xs"):
        check_strict_schema(
            {
                "type": "object",
                "properties": {"xs": {"type": "array", "minItems": 1}},
                "required": ["xs"],
                "additionalProperties": False,
            },
            "p",
        )
    with pytest.raises(APIError, match="no \\$defs entry"):
        check_strict_schema({"$ref": "#/$defs/missing"}, "p")
    duplicate = [Tool(function={"name": "f"}), Tool(function={"name": "f"})]
    with pytest.raises(APIError, match="unique"):
        check_tools(duplicate)


def test_settings_from_environment_and_key_files(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# comment\nsk-a\nsk-b quota=100 rpm=5  # note\n")
    settings = settings_from_env(
        environ={"NANOSEEK_PORT": "9001", "NANOSEEK_API_KEYS": "sk-c", "NANOSEEK_WEB": "false"},
        api_keys_file=keys,
        host="0.0.0.0",
    )
    assert settings.port == 9001 and settings.web is False and settings.host == "0.0.0.0"
    policies = settings.keys_by_value
    assert set(policies) == {"sk-a", "sk-b", "sk-c"}
    assert (policies["sk-b"].quota_tokens, policies["sk-b"].requests_per_minute) == (100, 5)
    keys.write_text("sk-a colour=blue\n")
    with pytest.raises(SettingsError, match="keys.txt:1: unknown key option 'colour=blue'"):
        settings_from_env(environ={}, api_keys_file=keys)
    with pytest.raises(SettingsError, match="cannot read the API keys file"):
        settings_from_env(environ={}, api_keys_file=tmp_path / "missing.txt")
    with pytest.raises(SettingsError, match="NANOSEEK_PORT"):
        settings_from_env(environ={"NANOSEEK_PORT": "eighty"})
    with pytest.raises(SettingsError, match="dtype must be"):
        settings_from_env(environ={"NANOSEEK_DTYPE": "int8"})


def test_dtype_setting_converts_a_bf16_checkpoint_so_it_decodes_natively(tmp_path):
    from nanoseek.api.app import load_engine
    from nanoseek.engine.native import load_library
    from nanoseek.model.random_init import make_random_checkpoint

    path = make_random_checkpoint(tmp_path / "bf16", shape="tiny", vocab_size=300, seed=3, dtype="bfloat16")
    as_stored = load_engine(settings_from_env(environ={}), path)
    converted = load_engine(settings_from_env(environ={"NANOSEEK_DTYPE": "float32"}), path)
    try:
        # bf16 as stored decodes natively only where the CPU multiplies bf16 (AVX512-BF16).
        assert as_stored.model.dtype == torch.bfloat16
        assert (as_stored.native is not None) == bool(load_library().nanoseek_supports_bf16())
        assert converted.model.dtype == torch.float32 and converted.native is not None
    finally:
        as_stored.shutdown()
        converted.shutdown()
