"""The grammar that keeps tool calls well-formed, built from a chat format's tool-call text: shared by the server
(nanoseek/api/chat.py, for every tool_choice but `none`) and the in-process evaluator (eval/backends.py, `auto`'s
lazy grammar), so that what the evaluator measures is what the server delivers.

    constraint = tool_call_constraint(DEEPSEEK_TOOLS, tools, "auto", tokenizer)   # tools in OpenAI's shape

`required` and named choices force calls from the first token; `auto` constrains lazily, as llama.cpp does: the
model writes freely until it opens a call (the block opener, or the bare per-call opener a model may skip to),
and from there the call is well-formed and its arguments follow the function's schema (strictly for `strict`
functions, as far as xgrammar compiles it for the others), so a reply never holds a broken call. Tools are
OpenAI's dicts (`{"type": "function", "function": {"name", "parameters", "strict"}}`), as the tokenizer renders
them; the server passes its validated request's.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import xgrammar

from nanoseek.engine.constraint import Constraint
from nanoseek.tokenizer.output_parser import ToolCallFormat
from nanoseek.tokenizer.tokenizer import Tokenizer

ANY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}
ToolMode = Literal["required", "named", "auto"]


class ToolSchemaError(ValueError):
    """A strict function's schema cannot be compiled into a grammar (the server answers 400 with this message)."""


def arguments_grammar(tool: dict[str, Any]) -> str:
    """EBNF for the arguments: the function's own schema if xgrammar can compile it, in compact JSON
    (a model left free to put whitespace between tokens can pad forever; compact JSON parses the same)."""
    function = tool["function"]
    schema, strict = function.get("parameters") or ANY_OBJECT_SCHEMA, bool(function.get("strict"))
    try:
        grammar = xgrammar.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, strict_mode=strict)
    except Exception:  # noqa: BLE001 - xgrammar raises several types; a non-strict schema still gets valid JSON
        if strict:
            raise ToolSchemaError(
                f"Invalid strict tool schema for {function['name']!r}: it cannot be compiled into a grammar."
            ) from None
        grammar = xgrammar.Grammar.from_json_schema(json.dumps(ANY_OBJECT_SCHEMA), any_whitespace=False)
    return str(grammar)


def tool_call_structural_tag(
    tool_format: ToolCallFormat, tools: list[dict[str, Any]], mode: ToolMode, tokenizer: Tokenizer
) -> dict[str, Any]:
    """An xgrammar structural tag: `required`/`named` force calls right away (named: exactly one), `auto`
    lets the model write text and constrains only what follows a tool-call trigger. Markers that are
    special tokens of the checkpoint must be that one token (not their spelling in byte tokens), which keeps
    forced calls short and the same as the model was trained on."""

    def piece(text: str) -> dict[str, Any]:
        token_id = tokenizer.backend.token_to_id(text)
        if token_id is not None and token_id in tokenizer.special_ids:
            return {"type": "token", "token": token_id}
        return {"type": "const_string", "value": text}

    def literal(text: str) -> dict[str, Any] | str:
        item = piece(text)  # tag begin/end take a plain string or a token
        return item if item["type"] == "token" else text

    tags, bodies = [], []
    for tool in tools:
        before, after = tool_format.call_pieces(tool["function"]["name"])
        inner = (
            [piece(p) for p in before[1:]]
            + [{"type": "grammar", "grammar": arguments_grammar(tool)}]
            + [piece(p) for p in after[:-1]]
        )
        body = inner[0] if len(inner) == 1 else {"type": "sequence", "elements": inner}
        bodies.append(body)  # a call after its opening marker: what the bare-opener trigger must be followed by
        tags.append({"type": "tag", "begin": literal(before[0]), "content": body, "end": literal(after[-1])})
    calls = {
        "type": "tags_with_separator",
        "tags": tags,
        "separator": tool_format.call_separator,
        "at_least_one": True,
        "stop_after_first": mode == "named",
    }
    if mode != "auto":
        if not tool_format.calls_begin:
            return {"type": "structural_tag", "format": calls}
        elements = [piece(tool_format.calls_begin), calls, piece(tool_format.calls_end)]
        return {"type": "structural_tag", "format": {"type": "sequence", "elements": elements}}

    if not tool_format.calls_begin:  # calls stand alone (Hermes): each call is a tag its opener triggers
        fmt: dict[str, Any] = {"type": "triggered_tags", "triggers": [tool_format.trigger], "tags": tags}
        return {"type": "structural_tag", "format": fmt}
    block = {
        "type": "tag",
        "begin": literal(tool_format.calls_begin),
        "content": calls,
        "end": literal(tool_format.calls_end),
    }
    triggered = [(tool_format.calls_begin, block)]
    # A model may skip the block opener and start a call (the shipped SmolLM2 adapter did, in 17 of 100 held-out
    # requests): that marker triggers one well-formed call of any of the functions, which the output parser
    # reads as a call without its block. xgrammar takes triggers of one kind: all tokens or all strings.
    if piece(tool_format.call_begin)["type"] == piece(tool_format.calls_begin)["type"]:
        bare = {
            "type": "tag",
            "begin": literal(tool_format.call_begin),
            "content": bodies[0] if len(bodies) == 1 else {"type": "or", "elements": bodies},
            "end": literal(tool_format.call_end),
        }
        triggered.append((tool_format.call_begin, bare))
    if piece(tool_format.calls_begin)["type"] == "token":
        fmt = {"type": "token_triggered_tags", "trigger_tokens": [piece(text)["token"] for text, _ in triggered]}
    else:
        fmt = {"type": "triggered_tags", "triggers": [text for text, _ in triggered]}
    fmt |= {"tags": [tag for _, tag in triggered], "stop_after_first": True}
    return {"type": "structural_tag", "format": fmt}


def tool_call_constraint(
    tool_format: ToolCallFormat, tools: list[dict[str, Any]], mode: ToolMode, tokenizer: Tokenizer
) -> Constraint:
    """The engine constraint of `tool_call_structural_tag` (ToolSchemaError for a strict schema xgrammar cannot
    compile)."""
    return Constraint.structural_tag(tool_call_structural_tag(tool_format, tools, mode, tokenizer))


def lazy_grammar_applies(tools: list[dict[str, Any]], response_format: bool) -> bool:
    """Whether `auto` gets the lazy tool-call grammar: it does, except that a response format (JSON Output) keeps
    its own grammar unless one of the functions is strict."""
    return not response_format or any(tool["function"].get("strict") for tool in tools)
