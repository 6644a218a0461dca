"""Where replies come from: a model in this process (through `nanoseek.engine.Engine`, the same generation
loop the server uses) or any OpenAI-compatible server (through the official `openai` SDK).

    backend = EngineBackend.from_checkpoint("path/to/checkpoint")
    backend = OpenAIBackend("http://127.0.0.1:8000/v1", api_key="sk-...", model="deepseek-chat")
    [reply] = backend.chat([{"role": "user", "content": "hi"}], max_tokens=32)

Both give `Reply(content, reasoning, tool_calls, finish_reason, completion_tokens, reasoning_tokens)`.
`backend.not_applicable(suite)` says why a suite cannot be asked of the model at all (FIM for a model whose
tokenizer has no FIM tokens), so that the runner reports it "n/a" with the reason instead of scoring it 0.

Tool calls: a request with tools is the API's `tool_choice: "auto"`, and in process it gets the grammar the server
applies to it (`tool_grammar="lazy"`, the default: free text until the model opens a call, then a call
well-formed to the functions' schemas; engine/tool_grammar.py builds it for both), so the report's tool figures are
what the server delivers; `tool_grammar="none"` measures the model's own free-text calls. The in-process build
has no time limit (the server skips an optional grammar not built within half its planning limit). Over HTTP
each reply says what the server did in `Reply.tool_grammar`: nanoseek's server answers a request with tools in its
X-Nanoseek-Tool-Grammar header ("applied", or "skipped; reason=timeout|compile_error" when it served free text),
recorded as "server:applied" / "server:skipped; reason=..."; servers that send no such header (vLLM, DeepSeek's,
nanoseek's before the header) leave the backend's "server": whatever grammar the server applies, unknown.

Thinking budgets (the R1-Lite scaling chart): think for at most `thinking_budget` tokens, then close the
thought and let the model answer in at most `max_tokens` more. Both backends use the budget that the server
honours, in one request: in process the engine's `max_thinking_tokens` (engine/thinking.py forces `</think>`
once the thought is that long, as it does for an API request), over HTTP `thinking: {"type": "enabled",
"budget_tokens": N}` (nanoseek's server honours it; DeepSeek's ignores it, so there only `max_tokens` bounds the
thought, and the reported thinking tokens show it). The request's `max_tokens` is the budget + 1 (`</think>`)
+ the answer's `max_tokens`. Thinking tokens are the thought's own in process; over HTTP they are the server's
`usage.completion_tokens_details.reasoning_tokens`, which in nanoseek's count the closing `</think>` too.

Without thinking, in process as through nanoseek's server, the think tokens are banned from the reply (a model
trained to think would otherwise write a thought and a literal `</think>` into the answer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from nanoseek.tokenizer.output_parser import OutputParser, think_end_id, think_token_ids, tool_format_for_template

if TYPE_CHECKING:  # the engine (and torch) load only when a model runs in process, not for a server URL
    from nanoseek.engine import Constraint, Engine, SamplingParams

TOOL_GRAMMARS = ("lazy", "none")  # in process: the server's lazy tool-call grammar for `auto`, or free text
# nanoseek's server (api/chat.py's TOOL_GRAMMAR_HEADER; not imported: the API's app is no dependency of a client)
TOOL_GRAMMAR_HEADER = "X-Nanoseek-Tool-Grammar"


class NotApplicable(Exception):
    """The model cannot be asked this kind of question at all; the message says why."""


@dataclass
class Reply:
    content: str
    reasoning: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)  # in process only: what the model generated (RL trains on it)
    prompt_ids: list[int] = field(default_factory=list)  # in process only: the prompt it was generated after
    tool_grammar: str | None = None  # over HTTP, when the server says: the tool-call grammar it applied to this reply


class Backend(Protocol):
    """What the runner needs from a model: a name (the results directory), the tool-call grammar its replies were
    generated under (the records say it), chat, FIM, close."""

    name: str
    tool_grammar: str

    def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        json_mode: bool = False,
        thinking: bool = False,
        max_tokens: int = 256,
        temperature: float = 0.0,
        n: int = 1,
        seed: int | None = None,
        thinking_budget: int | None = None,
    ) -> list[Reply]: ...

    def fim(self, prefix: str, suffix: str, *, max_tokens: int, stop: list[str] | None = None) -> Reply: ...

    def not_applicable(self, suite: str) -> str | None:
        """Why `suite` cannot be asked of this model at all, or None when it can."""
        ...

    def close(self) -> None: ...


class EngineBackend:
    """Generate in this process with the engine; parse replies with the chat format's output parser (the
    API's too)."""

    def __init__(self, engine: Engine, name: str = "model", tool_grammar: str = "lazy") -> None:
        if tool_grammar not in TOOL_GRAMMARS:
            raise ValueError(f"tool_grammar must be one of {TOOL_GRAMMARS}, got {tool_grammar!r}")
        self.engine, self.tokenizer, self.name, self.tool_grammar = engine, engine.tokenizer, name, tool_grammar
        self.tool_format = tool_format_for_template(self.tokenizer.chat_template)
        self.think_end_id = think_end_id(self.tokenizer)
        self._tool_constraints: dict[str, Constraint] = {}  # by the tools' JSON: an item's tools serve two turns
        self.think_token_ids = think_token_ids(self.tokenizer)

    @classmethod
    def from_checkpoint(
        cls, path: str, name: str | None = None, tool_grammar: str = "lazy", **engine_kwargs: Any
    ) -> EngineBackend:
        from pathlib import Path

        from nanoseek.engine import Engine

        engine = Engine.from_checkpoint(str(path), **engine_kwargs)
        return cls(engine, name=name or Path(path).name, tool_grammar=tool_grammar)

    def close(self) -> None:
        self.engine.shutdown()

    def not_applicable(self, suite: str) -> str | None:
        if suite != "fim":
            return None
        from nanoseek.tokenizer import special_tokens as st

        missing = [t for t in (st.FIM_BEGIN, st.FIM_HOLE, st.FIM_END) if not self.tokenizer.has_token(t)]
        return f"the tokenizer has no fill-in-the-middle tokens ({', '.join(missing)})" if missing else None

    def _params(self, max_tokens: int, temperature: float, n: int, seed: int | None, **kw: Any) -> SamplingParams:
        from nanoseek.engine import SamplingParams

        return SamplingParams(max_tokens=max_tokens, temperature=temperature, n=n, seed=seed, **kw)

    def _constraint(self, tools: list[dict[str, Any]] | None, json_mode: bool) -> Constraint | None:
        """The grammar the server would apply to this request with `tool_choice` auto (none when tool_grammar is
        "none": then JSON Output's alone, as the server's for `tool_choice` none)."""
        from nanoseek.engine import Constraint
        from nanoseek.engine.tool_grammar import lazy_grammar_applies, tool_call_constraint

        if tools and self.tool_grammar == "lazy" and lazy_grammar_applies(tools, json_mode):
            key = json.dumps(tools, sort_keys=True)
            if key not in self._tool_constraints:
                self._tool_constraints[key] = tool_call_constraint(self.tool_format, tools, "auto", self.tokenizer)
            return self._tool_constraints[key]
        return Constraint.json_object() if json_mode else None

    def _parse(self, text: str, token_ids: list[int], finish: str, thinking: bool, tools: bool) -> Reply:
        parser = OutputParser(self.tool_format, thinking=thinking, tools_enabled=tools, start_in_reasoning=thinking)
        first, last = parser.feed(text), parser.finish()
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in first.tool_calls + last.tool_calls
        ]
        reasoning_tokens = 0
        if thinking:
            reasoning_tokens = token_ids.index(self.think_end_id) if self.think_end_id in token_ids else len(token_ids)
        return Reply(
            content=(first.content + last.content).strip(),
            reasoning=(first.reasoning + last.reasoning).strip(),
            tool_calls=calls,
            finish_reason=finish,
            completion_tokens=len(token_ids),
            reasoning_tokens=reasoning_tokens,
            token_ids=list(token_ids),
        )

    def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        json_mode: bool = False,
        thinking: bool = False,
        max_tokens: int = 256,
        temperature: float = 0.0,
        n: int = 1,
        seed: int | None = None,
        thinking_budget: int | None = None,
    ) -> list[Reply]:
        from nanoseek.engine import Request

        prompt = self.tokenizer.encode_chat(messages, tools=tools, thinking=thinking)
        extra: dict[str, Any] = {}
        constraint = self._constraint(tools, json_mode)
        if constraint is not None:
            extra["constraint"] = constraint
            if thinking:  # the grammar starts after the thought, as the server's
                extra["constraint_after_token"] = self.think_end_id
        if thinking and thinking_budget is not None and self.think_end_id is not None:
            # the engine forces </think> after `thinking_budget` thought tokens; the answer gets max_tokens more
            extra.update(think_end_token=self.think_end_id, max_thinking_tokens=thinking_budget)
            max_tokens += thinking_budget + 1
        if not thinking and self.think_token_ids:  # as the server does (api/thinking.py non_thinking_bans)
            extra["banned_token_ids"] = self.think_token_ids
        params = self._params(max_tokens, temperature, n, seed, **extra)
        [completion] = self.engine.generate([Request(prompt, params)])
        replies = [self._parse(o.text, o.token_ids, o.finish_reason, thinking, bool(tools)) for o in completion.outputs]
        for reply in replies:
            reply.prompt_ids = prompt
        return replies

    def fim(self, prefix: str, suffix: str, *, max_tokens: int, stop: list[str] | None = None) -> Reply:
        from nanoseek.engine import Request
        from nanoseek.tokenizer.chat_format import render_fim

        reason = self.not_applicable("fim")
        if reason is not None:  # rendered anyway, the markers would be plain text the model was never trained on
            raise NotApplicable(reason)
        prompt = self.tokenizer.encode(render_fim(prefix, suffix))
        [completion] = self.engine.generate([Request(prompt, self._params(max_tokens, 0.0, 1, None, stop=stop or []))])
        return Reply(
            content=completion.text, finish_reason=completion.finish_reason, completion_tokens=len(completion.token_ids)
        )


class OpenAIBackend:
    """Any OpenAI-compatible server; DeepSeek extensions (reasoning_content, thinking, FIM) used when present."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str | None = None,
        name: str | None = None,
        timeout: float = 600.0,
    ) -> None:
        import openai

        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", timeout=timeout, max_retries=2)
        self.model = model or self.client.models.list().data[0].id
        self.name = (name or self.model).replace("/", "_")  # it names the results directory
        self.tool_grammar = "server"  # unless a reply's header says more: whatever grammar the server applies
        self._fim_refused: str | None = None  # why the server refuses FIM ("" when it does not), once asked

    def close(self) -> None:
        self.client.close()

    def not_applicable(self, suite: str) -> str | None:
        """FIM: asked once with a one-token probe, since only the server knows whether its model has FIM tokens."""
        if suite != "fim":
            return None
        if self._fim_refused is None:
            try:
                self.fim("def f():\n    return", "\n", max_tokens=1)
                self._fim_refused = ""
            except NotApplicable as refused:
                self._fim_refused = str(refused)
        return self._fim_refused or None

    def _one(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None,
        json_mode: bool,
        thinking: bool,
        max_tokens: int,
        temperature: float,
        seed: int | None,
        thinking_budget: int | None = None,
    ) -> Reply:
        body: dict[str, Any] = {"thinking": {"type": "enabled" if thinking else "disabled"}}
        if thinking and thinking_budget is not None:
            body["thinking"]["budget_tokens"] = thinking_budget
            max_tokens += thinking_budget + 1  # the thought, </think>, then max_tokens for the answer
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "extra_body": body,
        }
        if seed is not None:
            kwargs["seed"] = seed
        if tools:
            kwargs["tools"] = tools
        if json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        raw = self.client.chat.completions.with_raw_response.create(**kwargs)
        header = raw.headers.get(TOOL_GRAMMAR_HEADER)
        response = raw.parse()
        choice = response.choices[0]
        message = choice.message
        extra = message.model_extra or {}
        usage = response.usage
        details = getattr(usage, "completion_tokens_details", None) if usage else None
        return Reply(
            content=(message.content or "").strip(),
            reasoning=(extra.get("reasoning_content") or "").strip(),
            tool_calls=[call.model_dump() for call in (message.tool_calls or [])],
            finish_reason=choice.finish_reason,
            completion_tokens=usage.completion_tokens if usage else 0,
            reasoning_tokens=(getattr(details, "reasoning_tokens", None) or 0) if details else 0,
            tool_grammar=f"server:{header}" if header else None,
        )

    def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        json_mode: bool = False,
        thinking: bool = False,
        max_tokens: int = 256,
        temperature: float = 0.0,
        n: int = 1,
        seed: int | None = None,
        thinking_budget: int | None = None,
    ) -> list[Reply]:
        # One request per sample: many OpenAI-compatible servers (DeepSeek's included) ignore n > 1.
        return [
            self._one(
                messages,
                tools=tools,
                json_mode=json_mode,
                thinking=thinking,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=None if seed is None else seed + i,
                thinking_budget=thinking_budget,
            )
            for i in range(n)
        ]

    def fim(self, prefix: str, suffix: str, *, max_tokens: int, stop: list[str] | None = None) -> Reply:
        import openai

        try:
            response = self.client.completions.create(
                model=self.model, prompt=prefix, suffix=suffix, max_tokens=max_tokens, temperature=0, stop=stop or None
            )
        except openai.BadRequestError as error:  # nanoseek's server: "This model has no fill-in-the-middle tokens"
            if "fill-in-the-middle" in str(error):
                raise NotApplicable(f"the server refuses FIM for {self.model}: {error}") from None
            raise
        choice = response.choices[0]
        return Reply(
            content=choice.text,
            finish_reason=choice.finish_reason,
            completion_tokens=response.usage.completion_tokens if response.usage else 0,
        )
