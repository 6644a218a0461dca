"""The nanoseek chat format (DeepSeek-V3.1 hybrid style) as a Python renderer and as the same Jinja template.

    from nanoseek.tokenizer.chat_format import render_chat, render_fim
    prompt = render_chat([{"role": "user", "content": "hi"}], thinking=True)
    ids = tokenizer.encode(prompt)          # transformers' apply_chat_template gives the same ids

`render_chat` is the one renderer nanoseek uses (API, training, eval); `CHAT_TEMPLATE` is its Jinja twin that
ships in tokenizer_config.json so other tools (transformers, vLLM, llama.cpp) build identical prompts. Tests
check the two agree token for token. Tokens below are the special-token strings of special_tokens.py:
BOS `<｜begin▁of▁sentence｜>`, EOS `<｜end▁of▁sentence｜>`, `<｜User｜>`, `<｜Assistant｜>`, `<think>`, `</think>`.

## The format (exact; parsers rely on it)

    prompt     = BOS system user-or-other-turns* [generation]
    system     = the text of every system message, empty ones skipped, joined by "\\n\\n", in list order
                 (they are all hoisted here, wherever they stand); then, if tools are given, "\\n\\n" (only
                 when that text is non-empty) followed by the TOOLS SECTION below
    user       = <｜User｜> content
    assistant  = <｜Assistant｜> mode content [calls] EOS
    mode       = <think> reasoning_content </think>   in thinking mode, for an assistant message after the last
                                                       user message (the current tool-call loop); a missing
                                                       reasoning renders as <think></think>
               | </think>                              otherwise: earlier turns' reasoning is dropped, and
                                                       non-thinking mode never shows reasoning
                 So every assistant turn extends the generation prompt of its mode (training relies on this).
    calls      = <｜tool▁calls▁begin｜> call+ <｜tool▁calls▁end｜>
    call       = <｜tool▁call▁begin｜> NAME <｜tool▁sep｜> ARGUMENTS <｜tool▁call▁end｜>
                 (the DeepSeek-V3.1 call shape: no type word, no ```json fence; ARGUMENTS is the
                 OpenAI `function.arguments` string verbatim, or json.dumps(dict, ensure_ascii=False);
                 calls follow each other with nothing in between)
    outputs    = <｜tool▁outputs▁begin｜> (<｜tool▁output▁begin｜> content <｜tool▁output▁end｜>)+ <｜tool▁outputs▁end｜>
                 one block per run of adjacent tool messages, outputs in message order (DeepSeek-V3 grouping)
    generation = <｜Assistant｜><think>    in thinking mode (the model writes reasoning, </think>, the answer)
               | <｜Assistant｜></think>   in non-thinking mode
                 added when add_generation_prompt is true, also after tool outputs, unless the last
                 message is a prefix message.

A model's reply after the generation prompt is therefore, in thinking mode,
`REASONING</think>CONTENT[calls]EOS` and in non-thinking mode `CONTENT[calls]EOS`. An output parser splits
reasoning at the first `</think>`, content ends at `<｜tool▁calls▁begin｜>` or EOS, and each call is the
text between `<｜tool▁call▁begin｜>` and `<｜tool▁sep｜>` (name) and between `<｜tool▁sep｜>` and
`<｜tool▁call▁end｜>` (JSON arguments).

Prefix completion (`"prefix": true` on the last message, which must be an assistant message without
tool_calls): the message is opened and left open, no EOS and no generation prompt follow. Non-thinking:
`<｜Assistant｜></think>CONTENT`. Thinking: `<｜Assistant｜><think>REASONING` when the content is empty (the
model continues its thought), else `<｜Assistant｜><think>REASONING</think>CONTENT`.

Content is a string, None (empty), or a list of OpenAI content parts of which only `{"type": "text"}` parts
are allowed (their texts are concatenated). Reasoning is read from `reasoning_content`, or else from
`thinking` / `reasoning` (the field names transformers aliases). Tool `id`s, `tool_call_id` and `name` on
tool messages are not rendered: outputs are matched to calls by order.

TOOLS SECTION (tools in the OpenAI shape `{"type": "function", "function": {...}}` or the bare function):

    ## Tools
    You can call these functions:
    <for each tool:> "\\n\\n### " NAME ["\\n" DESCRIPTION if non-empty] "\\nParameters: " json.dumps(parameters or {})
    "\\n\\n" + TOOL_USE_RULE (one line showing the call syntax above)

Special-token strings inside content are, in the plain string, indistinguishable from the format's own;
`render_chat_segments` keeps them apart so `Tokenizer.encode_chat` (literal by default) can encode
content as plain text (for untrusted input; identical ids whenever content holds no special-token string).

FIM (`render_fim`, DeepSeek-Coder/V2.5 order): BOS <｜fim▁begin｜> PREFIX <｜fim▁hole｜> SUFFIX <｜fim▁end｜>;
the model writes the middle and then EOS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from nanoseek.tokenizer import special_tokens as st

ROLES = ("system", "user", "assistant", "tool")
TOOLS_HEADER = "## Tools\nYou can call these functions:"
TOOL_USE_RULE = (
    f"To call functions, reply with {st.TOOL_CALLS_BEGIN}, then for each call {st.TOOL_CALL_BEGIN}"
    f"name{st.TOOL_SEP}JSON arguments{st.TOOL_CALL_END}, then {st.TOOL_CALLS_END}."
)


class ChatFormatError(ValueError):
    """A message list the chat format cannot render; the message says which message and why."""


# ---- the Python renderer ---------------------------------------------------------------------------------


def content_text(content: Any, where: str) -> str:
    """The text of a message's content: str, None, or a list of {"type": "text", "text": ...} parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ChatFormatError(f"{where}: only text content parts are supported, got {part!r}")
            texts.append(part["text"])
        return "".join(texts)
    raise ChatFormatError(
        f"{where}: content must be a string, null or a list of text parts, got {type(content).__name__}"
    )


def reasoning_of(message: dict[str, Any]) -> str:
    """Reasoning under any of the names transformers aliases (first non-null wins)."""
    for key in ("reasoning_content", "thinking", "reasoning"):
        if message.get(key) is not None:
            if not isinstance(message[key], str):
                raise ChatFormatError(f"{key} must be a string, got {type(message[key]).__name__}")
            return message[key]
    return ""


def function_of(item: dict[str, Any], where: str) -> dict[str, Any]:
    """The function dict of an OpenAI tool / tool call ({"type": "function", "function": {...}}) or a bare one."""
    function = item.get("function", item) if isinstance(item, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise ChatFormatError(f"{where}: needs a function with a non-empty string 'name', got {item!r}")
    return function


# A rendered chat is a list of segments (text, is_markup): markup is the format's own text and tokens,
# everything else comes from the caller (message text, reasoning, tool names, schemas and arguments).
# render_chat joins them; Tokenizer.encode_chat (literal by default) encodes the non-markup text with
# special-token parsing off, so a user typing "<｜Assistant｜>" cannot forge a turn.
Segment = tuple[str, bool]


def render_tools(tools: Sequence[dict[str, Any]]) -> list[Segment]:
    segments: list[Segment] = [(TOOLS_HEADER, True)]
    for index, tool in enumerate(tools):
        function = function_of(tool, f"tools[{index}]")
        segments.append(("\n\n### ", True))
        entry = function["name"]
        if function.get("description"):
            entry += f"\n{function['description']}"
        parameters = function.get("parameters")
        entry += "\nParameters: " + json.dumps({} if parameters is None else parameters, ensure_ascii=False)
        segments.append((entry, False))
    segments.append(("\n\n" + TOOL_USE_RULE, True))
    return segments


def render_tool_calls(tool_calls: Any, where: str) -> list[Segment]:
    if not isinstance(tool_calls, list):
        raise ChatFormatError(f"{where}: tool_calls must be a list, got {type(tool_calls).__name__}")
    segments: list[Segment] = [(st.TOOL_CALLS_BEGIN, True)]
    for index, call in enumerate(tool_calls):
        function = function_of(call, f"{where}.tool_calls[{index}]")
        arguments = function.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        segments += [
            (st.TOOL_CALL_BEGIN, True),
            (function["name"], False),
            (st.TOOL_SEP, True),
            (arguments, False),
            (st.TOOL_CALL_END, True),
        ]
    segments.append((st.TOOL_CALLS_END, True))
    return segments


def validate_messages(messages: Sequence[dict[str, Any]]) -> None:
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ChatFormatError("messages must be a non-empty list of message objects")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ChatFormatError(f"messages[{index}] must be an object, got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise ChatFormatError(f"messages[{index}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if role in ("user", "tool") and message.get("content") is None:
            raise ChatFormatError(f"messages[{index}] ({role}) needs content")
        if message.get("prefix"):
            if role != "assistant" or index != len(messages) - 1:
                raise ChatFormatError(
                    f"messages[{index}]: prefix is only allowed on the last message, which must be an assistant message"
                )
            if message.get("tool_calls"):
                raise ChatFormatError(f"messages[{index}]: a prefix message cannot carry tool_calls")


def render_chat_segments(
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None = None,
    thinking: bool = False,
    add_generation_prompt: bool = True,
) -> list[Segment]:
    """The chat as (text, is_markup) segments; their texts joined are render_chat's string."""
    validate_messages(messages)
    system_texts = [
        content_text(m.get("content"), f"messages[{i}]") for i, m in enumerate(messages) if m["role"] == "system"
    ]
    system = "\n\n".join(text for text in system_texts if text)
    out: list[Segment] = [(st.BOS, True), (system, False)]
    if tools:
        out += [("\n\n" if system else "", True), *render_tools(tools)]
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)

    for index, message in enumerate(messages):
        role, where = message["role"], f"messages[{index}]"
        if role == "user":
            out += [(st.USER, True), (content_text(message["content"], where), False)]
        elif role == "assistant":
            content = content_text(message.get("content"), where)
            reasoning = reasoning_of(message)
            out.append((st.ASSISTANT, True))
            if message.get("prefix"):
                if not thinking:
                    out += [(st.THINK_END, True), (content, False)]
                else:
                    out += [(st.THINK_BEGIN, True), (reasoning, False)]
                    if content:
                        out += [(st.THINK_END, True), (content, False)]
                continue
            if thinking and index > last_user:  # the current tool-call loop keeps its reasoning
                out += [(st.THINK_BEGIN, True), (reasoning, False)]
            out += [(st.THINK_END, True), (content, False)]
            if message.get("tool_calls"):
                out += render_tool_calls(message["tool_calls"], where)
            out.append((st.EOS, True))
        elif role == "tool":
            if index == 0 or messages[index - 1]["role"] != "tool":
                out.append((st.TOOL_OUTPUTS_BEGIN, True))
            out += [
                (st.TOOL_OUTPUT_BEGIN, True),
                (content_text(message["content"], where), False),
                (st.TOOL_OUTPUT_END, True),
            ]
            if index == len(messages) - 1 or messages[index + 1]["role"] != "tool":
                out.append((st.TOOL_OUTPUTS_END, True))
    if add_generation_prompt and not messages[-1].get("prefix"):
        out += [(st.ASSISTANT, True), (st.THINK_BEGIN if thinking else st.THINK_END, True)]
    return [(text, is_markup) for text, is_markup in out if text]


def render_chat(
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None = None,
    thinking: bool = False,
    add_generation_prompt: bool = True,
) -> str:
    """Render a chat in the nanoseek format (see the module docstring); encode the result with the tokenizer."""
    return "".join(text for text, _ in render_chat_segments(messages, tools, thinking, add_generation_prompt))


def render_fim(prefix: str, suffix: str) -> str:
    """Fill-in-the-middle prompt: the model generates the code between `prefix` and `suffix`, then EOS."""
    if not isinstance(prefix, str) or not isinstance(suffix, str):
        raise ChatFormatError("FIM prefix and suffix must be strings")
    return st.BOS + st.FIM_BEGIN + prefix + st.FIM_HOLE + suffix + st.FIM_END


# ---- the same format in Jinja (shipped in tokenizer_config.json) -----------------------------------------
# Every tag trims whitespace ({%- -%}) and no text stands outside tags, so the output does not depend on
# the environment's trim_blocks / lstrip_blocks settings. Only common Jinja is used (no loop.previtem) so
# the smaller C++ Jinja engines (llama.cpp's) can run it too.

CHAT_TEMPLATE = r"""{#- nanoseek chat format (DeepSeek-V3.1 style). Python twin: nanoseek/tokenizer/chat_format.py -#}
{%- set think_mode = (thinking is defined and thinking) or (enable_thinking is defined and enable_thinking) -%}
{%- macro text_of(content) -%}
{%- if content is string -%}{{- content -}}
{%- elif content is not none -%}
{%- for part in content -%}
{%- if part.type != 'text' -%}{{- raise_exception('only text content parts are supported') -}}{%- endif -%}
{{- part.text -}}
{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- set ns = namespace(system='', last_user=-1) -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{%- set text = text_of(message.content) -%}
{%- if text -%}{%- set ns.system = ns.system ~ ('\n\n' if ns.system else '') ~ text -%}{%- endif -%}
{%- elif message.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}
{%- endif -%}
{%- endfor -%}
{%- if tools -%}
{%- set ns.system = ns.system ~ ('\n\n' if ns.system else '') ~ 'TOOLS_HEADER' -%}
{%- for tool in tools -%}
{%- set fn = tool.function if tool.function is defined else tool -%}
{%- set ns.system = ns.system ~ '\n\n### ' ~ fn.name -%}
{%- if fn.description -%}{%- set ns.system = ns.system ~ '\n' ~ fn.description -%}{%- endif -%}
{%- set params = fn.parameters if fn.parameters is defined and fn.parameters is not none else {} -%}
{%- set ns.system = ns.system ~ '\nParameters: ' ~ (params | tojson) -%}
{%- endfor -%}
{%- set ns.system = ns.system ~ '\n\n' ~ 'TOOL_USE_RULE' -%}
{%- endif -%}
{{- '<｜begin▁of▁sentence｜>' ~ ns.system -}}
{%- for message in messages -%}
{%- if message.role == 'user' -%}
{{- '<｜User｜>' ~ text_of(message.content) -}}
{%- elif message.role == 'assistant' -%}
{%- set reasoning = message.reasoning_content if message.reasoning_content is defined and message.reasoning_content is not none else '' -%}
{%- set content = text_of(message.content) -%}
{{- '<｜Assistant｜>' -}}
{%- if loop.last and message.prefix is defined and message.prefix -%}
{%- if think_mode -%}{{- '<think>' ~ reasoning -}}{%- if content -%}{{- '</think>' ~ content -}}{%- endif -%}
{%- else -%}{{- '</think>' ~ content -}}
{%- endif -%}
{%- else -%}
{%- if think_mode and loop.index0 > ns.last_user -%}{{- '<think>' ~ reasoning ~ '</think>' -}}
{%- else -%}{{- '</think>' -}}
{%- endif -%}
{{- content -}}
{%- if message.tool_calls -%}
{{- '<｜tool▁calls▁begin｜>' -}}
{%- for call in message.tool_calls -%}
{%- set fn = call.function if call.function is defined else call -%}
{%- set args = fn.arguments if fn.arguments is defined and fn.arguments is not none else {} -%}
{{- '<｜tool▁call▁begin｜>' ~ fn.name ~ '<｜tool▁sep｜>' ~ (args if args is string else args | tojson) ~ '<｜tool▁call▁end｜>' -}}
{%- endfor -%}
{{- '<｜tool▁calls▁end｜>' -}}
{%- endif -%}
{{- '<｜end▁of▁sentence｜>' -}}
{%- endif -%}
{%- elif message.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<｜tool▁outputs▁begin｜>' -}}{%- endif -%}
{{- '<｜tool▁output▁begin｜>' ~ text_of(message.content) ~ '<｜tool▁output▁end｜>' -}}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<｜tool▁outputs▁end｜>' -}}{%- endif -%}
{%- elif message.role != 'system' -%}{{- raise_exception('unknown role ' ~ message.role) -}}
{%- endif -%}
{%- endfor -%}
{%- set last = messages[-1] -%}
{%- if add_generation_prompt is defined and add_generation_prompt and not (last.role == 'assistant' and last.prefix is defined and last.prefix) -%}
{{- '<｜Assistant｜>' ~ ('<think>' if think_mode else '</think>') -}}
{%- endif -%}""".replace("'TOOLS_HEADER'", json.dumps(TOOLS_HEADER)).replace(
    "'TOOL_USE_RULE'", json.dumps(TOOL_USE_RULE, ensure_ascii=False)
)


# ---- rendering any checkpoint's Jinja template the way transformers does -----------------------------------


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # Jinja's own tojson escapes <, >, & for HTML, which would change prompts.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


@lru_cache(maxsize=16)
def compile_template(template: str) -> Any:
    """A sandboxed jinja2 Template configured like transformers' chat-template environment (cached: compiling
    costs milliseconds, and a server renders the same template for every request)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise ChatFormatError(f"chat template has a syntax error (line {exc.lineno}): {exc.message}") from exc


# For a Jinja template that knows nothing of tools (SmolLM2's ChatML, most small instruct models): tools are
# put to the model the Hermes way, in Qwen2.5's words, and calls and results travel as text in ordinary turns.
# The output parser and the grammar then use the same Hermes <tool_call> shape (output_parser.HERMES_TOOLS).
HERMES_TOOLS_PROMPT = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> "
    'XML tags:\n<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def template_renders_tools(template: str) -> bool:
    return re.search(r"\btools\b", template) is not None


def hermes_tool_messages(
    messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """`messages` for a template without tool support: the tool list joins the system message (one is made
    when there is none), an assistant's calls become `<tool_call>` JSON lines after its text, and each run of
    tool results becomes one user turn of `<tool_response>` blocks (Qwen2.5's layout)."""
    adapted: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            response = (
                f"<tool_response>\n{content_text(message.get('content'), f'messages[{index}]')}\n</tool_response>"
            )
            if adapted and adapted[-1].get("from_tools"):
                adapted[-1]["content"] += "\n" + response
            else:
                adapted.append({"role": "user", "content": response, "from_tools": True})
            continue
        message = dict(message)
        if role == "assistant" and message.get("tool_calls"):
            calls = []
            for call_index, call in enumerate(message.pop("tool_calls")):
                function = function_of(call, f"messages[{index}].tool_calls[{call_index}]")
                arguments = function.get("arguments") or {}
                if isinstance(arguments, str):
                    arguments = json.loads(arguments) if arguments.strip() else {}
                payload = json.dumps({"name": function["name"], "arguments": arguments}, ensure_ascii=False)
                calls.append(f"<tool_call>\n{payload}\n</tool_call>")
            text = content_text(message.get("content"), f"messages[{index}]")
            message["content"] = "\n".join(([text] if text else []) + calls)
        adapted.append(message)
    for message in adapted:
        message.pop("from_tools", None)
    if tools:
        listing = "\n".join(
            json.dumps({"type": "function", "function": function_of(tool, f"tools[{i}]")}, ensure_ascii=False)
            for i, tool in enumerate(tools)
        )
        section = HERMES_TOOLS_PROMPT.format(tools=listing)
        if adapted and adapted[0].get("role") == "system":
            system = content_text(adapted[0].get("content"), "messages[0]")
            adapted[0] = {**adapted[0], "content": f"{system}\n\n{section}" if system else section}
        else:
            adapted.insert(0, {"role": "system", "content": section})
    return adapted


def render_jinja(
    template: str,
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None = None,
    thinking: bool = False,
    add_generation_prompt: bool = True,
    **extra: Any,
) -> str:
    """Render a Hugging Face chat template (Qwen2, Llama-3, DeepSeek, ...) as transformers would: sandboxed
    Jinja with trim_blocks/lstrip_blocks, its `tojson`, `raise_exception` and `strftime_now`, reasoning
    aliased to `reasoning_content`, and `thinking`/`enable_thinking` set. A last message with `prefix: true`
    is continued: templates that read `prefix` themselves (nanoseek's, DeepSeek-V3.1's) render it; for
    others the text is cut right after that message's content (transformers' continue_final_message rule)."""
    import jinja2

    aliased = []
    for message in messages:
        reasoning = next(
            (message[k] for k in ("reasoning_content", "thinking", "reasoning") if message.get(k) is not None), None
        )
        aliased.append(
            message if reasoning is None else {"thinking": reasoning, **message, "reasoning_content": reasoning}
        )
    # Templates that read `prefix` (nanoseek's, DeepSeek-V3.1's) continue the message themselves.
    cut_after_last = bool(aliased) and bool(aliased[-1].get("prefix")) and not re.search(r"\bprefix\b", template)
    try:
        rendered = compile_template(template).render(
            messages=aliased,
            tools=list(tools) if tools else None,
            thinking=thinking,
            enable_thinking=thinking,
            add_generation_prompt=add_generation_prompt and not cut_after_last,
            **extra,
        )
    except jinja2.exceptions.TemplateError as exc:
        raise ChatFormatError(f"chat template failed: {exc}") from exc
    if cut_after_last:
        final = content_text(aliased[-1].get("content"), "last message").strip()
        cut = rendered.rfind(final) if final else -1
        if cut < 0:
            raise ChatFormatError("cannot continue the last message: its content is not in the rendered template")
        rendered = rendered[: cut + len(final)]
    return rendered
