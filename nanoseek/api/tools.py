"""Tool definitions: DeepSeek's strict-mode schema check.

DeepSeek's strict mode (beta) accepts a subset of JSON Schema; anything outside it is a 400 that names the
keyword and where it sits. The grammar that enforces calls (every tool_choice but `none`) is built by
nanoseek/engine/tool_grammar.py, which the in-process evaluator shares.

    check_strict_schema(tool.function.parameters, where="tools[0].function.parameters")
    check_tools(body.tools)
"""

from __future__ import annotations

from typing import Any

from nanoseek.api.errors import APIError
from nanoseek.api.protocol import Tool

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
