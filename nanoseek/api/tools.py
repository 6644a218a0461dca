"""Tool definitions: DeepSeek's strict-mode schema check, and the grammar that forces well-formed calls.

DeepSeek's strict mode (beta) accepts a subset of JSON Schema; anything outside it is a 400 that names the
keyword and where it sits. Every tool_choice but `none` is enforced by an xgrammar structural tag built from
the chat format's tool-call text (tokenizer/output_parser.py's ToolCallFormat): `required` and named choices
from the first token, `auto` lazily, as llama.cpp does: the model writes freely until it opens a call (the
block opener, or the bare per-call opener a model may skip to), and from there the call is well-formed and its
arguments follow the function's schema (strictly for `strict` functions, as far as xgrammar compiles it for
the others), so a reply never holds a broken call.

    check_strict_schema(tool.function.parameters, where="tools[0].function.parameters")
    tag = tool_call_structural_tag(DEEPSEEK_TOOLS, tools, mode="required")
"""

from __future__ import annotations

import json
from typing import Any, Literal

import xgrammar

from nanoseek.api.errors import APIError
from nanoseek.api.protocol import Tool
from nanoseek.tokenizer.output_parser import ToolCallFormat
from nanoseek.tokenizer.tokenizer import Tokenizer

STRING_FORMATS = {"email", "hostname", "ipv4", "ipv6", "uuid"}
COMMON_KEYWORDS = {"type", "description", "title", "enum", "const", "default", "anyOf", "$ref", "$defs"}
KEYWORDS_BY_TYPE: dict[str, set[str]] = {
    "object": {"properties", "required", "additionalProperties"},
    "string": {"pattern", "format"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
    "boolean": set(),
    "array": {"items"},
    "null": set(),
}
ANY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}


def _unsupported(keyword: str, where: str, why: str = "") -> APIError:
    detail = f" ({why})" if why else ""
    return APIError(
        400,
        f"Invalid strict tool schema: keyword '{keyword}' at {where} is not supported in strict mode{detail}.",
        param=where,
        code="invalid_tool_schema",
    )


def check_strict_schema(schema: Any, where: str, defs: dict[str, Any] | None = None) -> None:
    """Raise APIError(400) naming the first keyword outside DeepSeek's strict subset."""
    if not isinstance(schema, dict):
        raise APIError(
            400,
            f"Invalid strict tool schema at {where}: expected an object, got {type(schema).__name__}.",
            param=where,
            code="invalid_tool_schema",
        )
    defs = {**(defs or {}), **schema.get("$defs", {})}
    for name, sub in schema.get("$defs", {}).items():
        check_strict_schema(sub, f"{where}.$defs.{name}", defs)
    if "$ref" in schema:
        ref = schema["$ref"]
        if not (isinstance(ref, str) and (ref == "#" or ref.startswith("#/$defs/"))):
            raise _unsupported("$ref", where, f"only '#' and '#/$defs/...' references are supported, got {ref!r}")
        if ref != "#" and ref.removeprefix("#/$defs/") not in defs:
            raise APIError(
                400,
                f"Invalid strict tool schema: $ref {ref!r} at {where} points to no $defs entry.",
                param=where,
                code="invalid_tool_schema",
            )
        return
    if "anyOf" in schema:
        for i, sub in enumerate(schema["anyOf"]):
            check_strict_schema(sub, f"{where}.anyOf[{i}]", defs)
        return
    schema_type = schema.get("type")
    if schema_type is None:
        if "enum" in schema or "const" in schema:
            return
        raise APIError(
            400,
            f"Invalid strict tool schema at {where}: every schema needs a 'type' (or 'enum', 'anyOf', '$ref').",
            param=where,
            code="invalid_tool_schema",
        )
    types = schema_type if isinstance(schema_type, list) else [schema_type]
    allowed = set(COMMON_KEYWORDS)
    for t in types:
        if t not in KEYWORDS_BY_TYPE:
            raise _unsupported("type", where, f"type {t!r} is not a JSON Schema type")
        allowed |= KEYWORDS_BY_TYPE[t]
    for keyword in schema:
        if keyword not in allowed:
            raise _unsupported(keyword, where)
    if "format" in schema and schema["format"] not in STRING_FORMATS:
        raise _unsupported("format", where, f"format {schema['format']!r}; supported: {sorted(STRING_FORMATS)}")
    if "object" in types:
        properties = schema.get("properties", {})
        missing = sorted(set(properties) - set(schema.get("required", [])))
        if missing:
            raise APIError(
                400,
                f"Invalid strict tool schema at {where}: in strict mode every property must be "
                f"in 'required'; missing {missing}.",
                param=where,
                code="invalid_tool_schema",
            )
        if schema.get("additionalProperties", True) is not False:
            raise APIError(
                400,
                f"Invalid strict tool schema at {where}: strict mode needs "
                "'additionalProperties': false on every object.",
                param=where,
                code="invalid_tool_schema",
            )
        for name, sub in properties.items():
            check_strict_schema(sub, f"{where}.properties.{name}", defs)
    if "array" in types and "items" in schema:
        check_strict_schema(schema["items"], f"{where}.items", defs)


def check_tools(tools: list[Tool]) -> None:
    names = [tool.function.name for tool in tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise APIError(400, f"Tool names must be unique; repeated: {duplicates}.", param="tools")
    for i, tool in enumerate(tools):
        if tool.function.strict:
            check_strict_schema(tool.function.parameters or {}, f"tools[{i}].function.parameters")


def arguments_grammar(tool: Tool) -> str:
    """EBNF for the arguments: the function's own schema if xgrammar can compile it, in compact JSON
    (a model left free to put whitespace between tokens can pad forever; compact JSON parses the same)."""
    schema = tool.function.parameters or ANY_OBJECT_SCHEMA
    try:
        grammar = xgrammar.Grammar.from_json_schema(
            json.dumps(schema), any_whitespace=False, strict_mode=tool.function.strict
        )
    except Exception:  # noqa: BLE001 - xgrammar raises several types; a non-strict schema still gets valid JSON
        if tool.function.strict:
            raise APIError(
                400,
                f"Invalid strict tool schema for {tool.function.name!r}: it cannot be compiled into a grammar.",
                param="tools",
                code="invalid_tool_schema",
            ) from None
        grammar = xgrammar.Grammar.from_json_schema(json.dumps(ANY_OBJECT_SCHEMA), any_whitespace=False)
    return str(grammar)


ToolMode = Literal["required", "named", "auto"]


def tool_call_structural_tag(
    tool_format: ToolCallFormat, tools: list[Tool], mode: ToolMode, tokenizer: Tokenizer
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
        before, after = tool_format.call_pieces(tool.function.name)
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
