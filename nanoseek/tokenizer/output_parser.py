"""The chat format read back: split a model's reply into reasoning, answer and tool calls, streaming or at
once, and the ids that end a reply or its thought. chat_format.py writes the format; this module reads it.
The API, the evaluator (and through it RL) and the terminal chat all parse replies here.

Two families of chat formats are understood:
* **DeepSeek**: `<think>…</think>` before the answer, and tool calls as `<｜tool▁calls▁begin｜>` +
  `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>`… + `<｜tool▁calls▁end｜>` (V3.1 and nanoseek's
  own format, see tokenizer/chat_format.py), or the V2.5/V3 fenced form
  `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\nARGS\\n```<｜tool▁call▁end｜>`.
* **Hermes / Qwen2.5**: `<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>`, and `<think>` for Qwen3.

Parsers are fed text deltas as they arrive and never emit a half marker: text that could be the start of
a marker is held back until the next delta decides. Tool calls come out twice: as `tool_call_pieces` for
streaming (OpenAI's delta shape; in the nanoseek/V3.1 shape the arguments stream as they are written, the
other shapes give each call whole) and as complete `tool_calls`. The same parser object serves the
non-streaming path (feed everything, then finish).

    parser = OutputParser(tool_format=tool_format_for_template(template), thinking=True, tools_enabled=True)
    for delta in deltas: piece = parser.feed(delta)       # -> ParsedDelta(reasoning, content, tool_calls, ...)
    piece = parser.finish()

A checkpoint's ids, worked out here and nowhere else: `stop_token_ids(tokenizer, eos_token_id)` (what ends a
reply: the tokenizer's EOS plus the checkpoint's configured `eos_token_id`s), `think_end_id(tokenizer)`
(the `</think>` that ends a thought, None when the vocabulary has none) and `think_token_ids(tokenizer)` (what a
reply with thinking off must never emit).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from nanoseek.tokenizer.special_tokens import (
    THINK_BEGIN,
    THINK_END,
    TOOL_CALL_BEGIN,
    TOOL_CALL_END,
    TOOL_CALLS_BEGIN,
    TOOL_CALLS_END,
    TOOL_SEP,
)
from nanoseek.tokenizer.tokenizer import Tokenizer


def stop_token_ids(tokenizer: Tokenizer, eos_token_id: int | list[int] | None = None) -> list[int]:
    """The ids that end a reply: the tokenizer's EOS, then `eos_token_id` as a checkpoint configures it (one id
    or a list, from generation_config.json, or else config.json: chat models often stop on more than one)."""
    configured = eos_token_id if isinstance(eos_token_id, list) else [] if eos_token_id is None else [eos_token_id]
    return ([tokenizer.eos_id] if tokenizer.eos_id is not None else []) + configured


def think_end_id(tokenizer: Tokenizer) -> int | None:
    """The id of `</think>`, which ends a thought (None for a vocabulary without one)."""
    return tokenizer.backend.token_to_id(THINK_END)


def think_token_ids(tokenizer: Tokenizer) -> list[int]:
    """The ids of `<think>` and `</think>` when the checkpoint's chat template writes thoughts with them: a reply
    with thinking off (the prompt closes the thought, `<｜Assistant｜></think>`) never emits them, as DeepSeek's
    non-thinking content never holds one. [] for a template that never writes `</think>` (ChatML checkpoints):
    there they are nobody's format, and a vocabulary without them has nothing to ban."""
    if THINK_END not in (tokenizer.chat_template or ""):
        return []
    ids = (tokenizer.backend.token_to_id(token) for token in (THINK_BEGIN, THINK_END))
    return [token_id for token_id in ids if token_id is not None]


@dataclass(frozen=True)
class ToolCallFormat:
    """The literal text around tool calls in one chat format; the parser and the grammar builder share it."""

    name: str
    calls_begin: str  # opens the block of calls ("" when each call stands alone)
    calls_end: str
    call_separator: str  # between two calls inside the block

    def call_pieces(self, name: str) -> tuple[list[str], list[str]]:
        """The literal pieces of one call before and after its JSON arguments. Pieces that are special
        tokens stand alone, so the grammar builder can require the single token rather than its spelling."""
        if self.name == "hermes":
            return [f'<tool_call>\n{{"name": {json.dumps(name)}, "arguments": '], ["}\n</tool_call>"]
        if self.name == "deepseek_v3":
            return [TOOL_CALL_BEGIN, "function", TOOL_SEP, f"{name}\n```json\n"], ["\n```", TOOL_CALL_END]
        return [TOOL_CALL_BEGIN, name, TOOL_SEP], [TOOL_CALL_END]

    def call_text(self, name: str, arguments: str) -> str:
        before, after = self.call_pieces(name)
        return "".join(before) + arguments + "".join(after)

    @property
    def trigger(self) -> str:
        """The text whose appearance means the model has started calling tools."""
        return "<tool_call>" if self.name == "hermes" else TOOL_CALLS_BEGIN

    @property
    def call_begin(self) -> str:
        """The marker that opens each call inside the block ("" where calls stand alone); a model may skip the
        block opener and start with it."""
        return TOOL_CALL_BEGIN if self.calls_begin else ""

    @property
    def call_end(self) -> str:
        return TOOL_CALL_END if self.calls_begin else ""


DEEPSEEK_TOOLS = ToolCallFormat("deepseek", TOOL_CALLS_BEGIN, TOOL_CALLS_END, "")  # V3.1, nanoseek's own
DEEPSEEK_V3_TOOLS = ToolCallFormat("deepseek_v3", TOOL_CALLS_BEGIN, TOOL_CALLS_END, "\n")  # V2.5/V3 fenced JSON
HERMES_TOOLS = ToolCallFormat("hermes", "", "", "\n")
TOOL_FORMATS = {f.name: f for f in (DEEPSEEK_TOOLS, DEEPSEEK_V3_TOOLS, HERMES_TOOLS)}


def tool_format_for_template(chat_template: str | None, override: str = "auto") -> ToolCallFormat:
    """Choose the tool-call format from the checkpoint's Jinja chat template (or the --tool-parser flag)."""
    if override != "auto":
        return TOOL_FORMATS[override]
    from nanoseek.tokenizer.chat_format import template_renders_tools

    template = chat_template or ""
    if TOOL_CALL_BEGIN in template:
        return DEEPSEEK_V3_TOOLS if "```json" in template else DEEPSEEK_TOOLS
    if "<tool_call>" in template or (template and not template_renders_tools(template)):
        return HERMES_TOOLS  # a template without tools gets them the Hermes way (chat_format.hermes_tool_messages)
    return DEEPSEEK_TOOLS


def new_tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ParsedToolCall:
    index: int
    id: str
    name: str
    arguments: str  # a JSON string, as the OpenAI shape wants


@dataclass
class ToolCallPiece:
    """A streamed part of a call, in OpenAI's delta shape: the first piece of a call has its id and name,
    later pieces continue its arguments."""

    index: int
    arguments: str
    id: str | None = None
    name: str | None = None


@dataclass
class ParsedDelta:
    reasoning: str = ""
    content: str = ""
    tool_calls: list[ParsedToolCall] = field(default_factory=list)  # calls completed by this delta
    tool_call_pieces: list[ToolCallPiece] = field(default_factory=list)


def _split_held(buffer: str, markers: tuple[str, ...]) -> tuple[str, str]:
    """Split buffer into (safe to emit, held back): held back is the longest tail that starts a marker."""
    for start in range(max(0, len(buffer) - max(len(m) for m in markers) + 1), len(buffer)):
        tail = buffer[start:]
        if any(m.startswith(tail) for m in markers):
            return buffer[:start], tail
    return buffer, ""


class ReasoningParser:
    """Separates `<think>…</think>` from the answer. Starts inside the thought when the prompt opened it."""

    def __init__(self, start_in_reasoning: bool, enabled: bool = True) -> None:
        self.enabled = enabled
        self.in_reasoning = start_in_reasoning and enabled
        self.seen_any = False
        self.buffer = ""

    def feed(self, text: str) -> tuple[str, str]:
        if not self.enabled:
            return "", text
        self.buffer += text
        reasoning, content = "", ""
        while self.buffer:
            if self.in_reasoning:
                at = self.buffer.find(THINK_END)
                if at >= 0:
                    reasoning += self.buffer[:at]
                    self.buffer = self.buffer[at + len(THINK_END) :]
                    self.in_reasoning = False
                    self.seen_any = True
                    continue
                safe, held = _split_held(self.buffer, (THINK_END,))
                reasoning += safe
                self.buffer = held
                break
            if not self.seen_any:
                # a model may open its own thought at the very start of the answer
                stripped = self.buffer.lstrip()
                if stripped.startswith(THINK_BEGIN):
                    self.buffer = stripped[len(THINK_BEGIN) :]
                    self.in_reasoning = True
                    continue
                if THINK_BEGIN.startswith(stripped):
                    break  # could still become <think>
                self.seen_any = True
            content += self.buffer
            self.buffer = ""
        return reasoning, content

    def finish(self) -> tuple[str, str]:
        rest, self.buffer = self.buffer, ""
        return (rest, "") if self.in_reasoning else ("", rest)


class ToolCallParser:
    """Finds tool calls in the answer text; everything outside them is content."""

    def __init__(self, tool_format: ToolCallFormat) -> None:
        self.format = tool_format
        self.buffer = ""
        self.in_calls = False
        self.calls: list[ParsedToolCall] = []
        # the nanoseek/V3.1 call shape writes raw JSON arguments between two markers, so they can be passed
        # on as they arrive; the fenced and Hermes shapes are emitted whole once a call is complete
        self.streams_arguments = tool_format.name == "deepseek"
        self.open_call: ParsedToolCall | None = None
        if tool_format.name == "hermes":
            self.open_markers: tuple[str, ...] = ("<tool_call>",)
        else:  # a model may skip the block opener and go straight to a call
            self.open_markers = (tool_format.calls_begin, tool_format.call_begin)

    def feed(self, text: str) -> ParsedDelta:
        self.buffer += text
        out = ParsedDelta()
        while self.buffer:
            if not self.in_calls:
                hits = [(self.buffer.find(m), m) for m in self.open_markers if m in self.buffer]
                if hits:
                    at, marker = min(hits)
                    out.content += self.buffer[:at]
                    # keep a bare call opener in the buffer: it is part of the first call
                    self.buffer = self.buffer[at + (len(marker) if marker == TOOL_CALLS_BEGIN else 0) :]
                    self.in_calls = True
                    continue
                safe, held = _split_held(self.buffer, self.open_markers)
                out.content += safe
                self.buffer = held
                break
            if self.streams_arguments:
                if not self._stream_call(out):
                    break
                continue
            if self._leave_block():
                continue
            call = self._take_call()
            if call is None:
                break
            out.tool_calls.append(call)
            out.tool_call_pieces.append(ToolCallPiece(call.index, call.arguments, call.id, call.name))
        return out

    def _stream_call(self, out: ParsedDelta) -> bool:
        """Advance the V3.1 call being written (open it, pass on its arguments, close it); False if the
        buffer cannot move until more text arrives."""
        if self.open_call is None:
            if self._leave_block():
                return True
            begin = self.buffer.find(TOOL_CALL_BEGIN)
            sep = self.buffer.find(TOOL_SEP, begin + 1) if begin >= 0 else -1
            if sep < 0:
                return False
            name = self.buffer[begin + len(TOOL_CALL_BEGIN) : sep].strip()
            self.open_call = ParsedToolCall(len(self.calls), new_tool_call_id(), name, "")
            self.calls.append(self.open_call)
            self.buffer = self.buffer[sep + len(TOOL_SEP) :]
            out.tool_call_pieces.append(ToolCallPiece(self.open_call.index, "", self.open_call.id, name))
            return True
        end = self.buffer.find(TOOL_CALL_END)
        if end >= 0:
            arguments, self.buffer = self.buffer[:end], self.buffer[end + len(TOOL_CALL_END) :]
        else:
            arguments, self.buffer = _split_held(self.buffer, (TOOL_CALL_END,))
        call = self.open_call
        if arguments:
            call.arguments += arguments
            out.tool_call_pieces.append(ToolCallPiece(call.index, arguments))
        if end >= 0:
            out.tool_calls.append(call)
            self.open_call = None
            return True
        return bool(arguments)

    def _leave_block(self) -> bool:
        """At the end of the block of calls, switch back to content; True if it did."""
        head = self.buffer.lstrip()
        if self.format.name == "hermes":
            # calls stand alone: anything but another call after one is prose
            if head and not head.startswith("<tool_call>") and not "<tool_call>".startswith(head):
                self.in_calls = False
                self.buffer = head
                return True
            return False
        if head.startswith(TOOL_CALLS_END):
            self.buffer = head[len(TOOL_CALLS_END) :]
            self.in_calls = False
            return True
        return False

    def _take_call(self) -> ParsedToolCall | None:
        """Remove one complete call from the buffer and return it, or None if the call is still arriving."""
        end_marker = "</tool_call>" if self.format.name == "hermes" else TOOL_CALL_END
        end = self.buffer.find(end_marker)
        if end < 0:
            return None
        body = self.buffer[:end]
        self.buffer = self.buffer[end + len(end_marker) :]
        if self.format.name == "hermes":
            return self._make_call_hermes(body.split("<tool_call>", 1)[-1])
        return self._make_call_deepseek(body.split(TOOL_CALL_BEGIN, 1)[-1])

    def _make_call_deepseek(self, body: str) -> ParsedToolCall:
        left, _, right = body.partition(TOOL_SEP)
        if left.strip() == "function":  # V2.5/V3: function<sep>NAME\n```json\nARGS\n```
            name, _, arguments = right.partition("\n")
        else:  # V3.1: NAME<sep>ARGS
            name, arguments = left, right
        arguments = arguments.strip()
        if arguments.startswith("```"):
            arguments = arguments.split("\n", 1)[1] if "\n" in arguments else ""
        if arguments.endswith("```"):
            arguments = arguments[:-3]
        return self._new_call(name.strip(), arguments.strip())

    def _make_call_hermes(self, body: str) -> ParsedToolCall:
        try:
            payload = json.loads(body)
            name, arguments = str(payload["name"]), payload.get("arguments", {})
        except (ValueError, KeyError, TypeError):
            return self._new_call("", body.strip())  # reported as-is; the client sees what the model wrote
        return self._new_call(name, arguments if isinstance(arguments, str) else json.dumps(arguments))

    def _new_call(self, name: str, arguments: str) -> ParsedToolCall:
        if arguments:
            try:  # normalise valid JSON to compact form; leave invalid JSON as the model wrote it
                arguments = json.dumps(json.loads(arguments), ensure_ascii=False)
            except ValueError:
                pass
        call = ParsedToolCall(len(self.calls), new_tool_call_id(), name, arguments or "{}")
        self.calls.append(call)
        return call

    def finish(self) -> ParsedDelta:
        rest, self.buffer = self.buffer, ""
        if not self.in_calls:
            return ParsedDelta(content=rest)
        if self.open_call is not None:
            # cut by max_tokens inside the arguments: the call stands with what was written, as OpenAI's does
            call, self.open_call = self.open_call, None
            call.arguments += rest
            return ParsedDelta(tool_calls=[call], tool_call_pieces=[ToolCallPiece(call.index, rest)] if rest else [])
        # an unfinished call in a shape emitted whole: give the client the raw text rather than drop it
        leftover = rest.replace(TOOL_CALLS_END, "").strip()
        return ParsedDelta(content=leftover)


class OutputParser:
    """Reasoning first, then tool calls inside the answer: the one object a handler feeds deltas to."""

    def __init__(
        self,
        tool_format: ToolCallFormat,
        *,
        thinking: bool,
        tools_enabled: bool,
        start_in_reasoning: bool = False,
        parse_reasoning: bool = True,
    ) -> None:
        self.reasoning = ReasoningParser(
            start_in_reasoning=start_in_reasoning and thinking, enabled=parse_reasoning and thinking
        )
        self.tools = ToolCallParser(tool_format) if tools_enabled else None

    @property
    def in_reasoning(self) -> bool:
        return self.reasoning.in_reasoning

    def _route(self, reasoning: str, content: str) -> ParsedDelta:
        if self.tools is None:
            return ParsedDelta(reasoning=reasoning, content=content)
        out = self.tools.feed(content)
        out.reasoning = reasoning
        return out

    def feed(self, text: str) -> ParsedDelta:
        return self._route(*self.reasoning.feed(text))

    def finish(self) -> ParsedDelta:
        out = self._route(*self.reasoning.finish())
        if self.tools is not None:
            tail = self.tools.finish()
            out.content += tail.content
            out.tool_calls += tail.tool_calls
            out.tool_call_pieces += tail.tool_call_pieces
        return out
