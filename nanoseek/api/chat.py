"""POST /chat/completions: DeepSeek chat, reasoner mode, tool calls, JSON Output and chat prefix completion.

One request becomes: checks (thinking-mode parameter rules, the tool-loop reasoning rule, JSON Output's
"json" rule, strict tool schemas) -> prompt through the checkpoint's chat format -> an engine request with
the right grammar constraint -> the engine's token stream, split by the output parsers into
reasoning_content, content and tool_calls -> SSE chunks or one JSON body (preceded by blank keep-alive
lines while the request waits in the queue).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request

from nanoseek.api.auth import require_key
from nanoseek.api.errors import APIError
from nanoseek.api.planning import GrammarBuild, GrammarUnavailable, Planner
from nanoseek.api.prompts import chat_input_chars, check_messages, check_prompt_size, encode_chat_prompt
from nanoseek.api.protocol import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceLogprobs,
    ChunkChoice,
    CompletionTokensDetails,
    Delta,
    ErrorResponse,
    FunctionCall,
    ResponseFormat,
    ResponseMessage,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallDeltaFunction,
    TopLogprob,
    Usage,
)
from nanoseek.api.serving import (
    KEEPALIVE,
    SSE_DONE,
    SSE_HEADERS,
    SSE_KEEPALIVE,
    ClosingStreamingResponse,
    EventSource,
    ServedModel,
    choose_max_tokens,
    completion_id,
    engine_top_p,
    error_json,
    make_sampling_params,
    now,
    sse,
    start_generation,
    stop_list,
)
from nanoseek.api.settings import KeyPolicy, Settings
from nanoseek.api.thinking import ThinkingChoice, budget_params, choose_thinking, non_thinking_bans
from nanoseek.api.tools import check_strict_schema, check_tools
from nanoseek.engine.constraint import Constraint
from nanoseek.engine.params import Request as EngineRequest
from nanoseek.engine.params import StreamEvent
from nanoseek.engine.params import TokenLogprob as EngineTokenLogprob
from nanoseek.engine.tool_grammar import ToolSchemaError, lazy_grammar_applies, tool_call_constraint
from nanoseek.tokenizer.output_parser import OutputParser, ParsedDelta, ToolCallPiece

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 402, 413, 422, 429, 500, 503)
}
# one Server-Sent Event: `data` is a JSON chunk (or `[DONE]`); Anthropic streams also name the `event`
SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
    "required": ["data"],
}
STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
        "description": "A chat.completion object, or with stream=true Server-Sent Events of "
        "chat.completion.chunk objects ended by `data: [DONE]`.",
    }
}

router = APIRouter()
log = logging.getLogger("nanoseek.api")
TOOL_GRAMMAR_HEADER = "X-Nanoseek-Tool-Grammar"  # auto's lazy tool grammar: "applied" or "skipped; reason=..."


@dataclass
class ChatPlan:
    """Everything decided before the engine sees the request."""

    served: ServedModel
    engine_request: EngineRequest
    thinking: bool
    start_in_reasoning: bool
    parse_tools: bool
    answer_prefix: str = ""  # chat prefix completion: the answer text the model continues
    grammar: GrammarBuild | None = None  # the request's grammar being built, awaited by start_chat
    tool_grammar: str | None = None  # what became of auto's lazy tool grammar: the TOOL_GRAMMAR_HEADER value

    @property
    def headers(self) -> dict[str, str]:
        return {TOOL_GRAMMAR_HEADER: self.tool_grammar} if self.tool_grammar else {}


def api_usage(usage: Any, reasoning_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        prompt_cache_hit_tokens=usage.cached_tokens,
        prompt_cache_miss_tokens=usage.prompt_tokens - usage.cached_tokens,
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning_tokens),
    )


def api_logprobs(entries: list[EngineTokenLogprob]) -> list[TokenLogprob]:
    return [
        TokenLogprob(
            token=e.token,
            logprob=e.logprob,
            bytes=list(e.bytes),
            top_logprobs=[TopLogprob(token=t.token, logprob=t.logprob, bytes=list(t.bytes)) for t in e.top_logprobs],
        )
        for e in entries
    ]


def tool_call_deltas(pieces: list[ToolCallPiece]) -> list[ToolCallDelta]:
    return [
        ToolCallDelta(
            index=p.index,
            id=p.id,
            type="function" if p.id else None,
            function=ToolCallDeltaFunction(name=p.name, arguments=p.arguments),
        )
        for p in pieces
    ]


def mentions_json(body: ChatCompletionRequest) -> bool:
    return any("json" in m.text().lower() for m in body.messages if m.role in ("system", "user"))


def json_schema_constraint(response_format: ResponseFormat) -> Constraint:
    """OpenAI's structured outputs: the answer is JSON that matches the schema, grammar-enforced whether or not
    `strict` is set; strict schemas must also be in DeepSeek's strict subset (as strict tools), else 400."""
    spec = response_format.json_schema
    if spec is None:
        raise APIError(
            400, "response_format of type 'json_schema' needs a `json_schema` object.", param="response_format"
        )
    if spec.strict:
        check_strict_schema(spec.schema_, "response_format.json_schema.schema")
    try:
        return Constraint.json_schema(spec.schema_)
    except ValueError as exc:
        raise APIError(
            400, f"response_format.json_schema.schema is not a usable JSON schema: {exc}", param="response_format"
        ) from None


def plan_chat(
    body: ChatCompletionRequest,
    served: ServedModel,
    choice: ThinkingChoice,
    settings: Settings,
    planner: Planner,
    client: str,
) -> ChatPlan:
    """Everything about a chat request that is decided before the engine sees it. Runs in a planning thread
    (`Planner.run`): rendering and tokenizing never hold up the event loop; the grammar is started in a grammar
    thread (`Planner.start_grammar`, on `client`'s share of them) and awaited by `start_chat`."""
    thinking = choice.enabled
    check_messages(body.messages, thinking)
    if thinking and (body.logprobs or body.top_logprobs):
        raise APIError(
            400, "logprobs and top_logprobs are not supported in thinking mode (deepseek-reasoner).", param="logprobs"
        )
    if body.top_logprobs and not body.logprobs:
        raise APIError(422, "top_logprobs requires logprobs to be true.", param="top_logprobs")
    json_output = body.response_format is not None and body.response_format.type == "json_object"
    if json_output and not mentions_json(body):
        raise APIError(
            400,
            "Prompt must contain the word 'json' in some form to use 'response_format' of type 'json_object'.",
            param="response_format",
        )

    tools = body.tools or []
    tool_choice = body.tool_choice if body.tool_choice is not None else ("auto" if tools else "none")
    if tool_choice != "none" and not tools:
        raise APIError(400, "tool_choice needs `tools`: no functions were given to call.", param="tool_choice")
    if tools:
        check_tools(tools)
    rendered_tools = tools if tool_choice != "none" else None
    check_prompt_size(chat_input_chars(body.messages, rendered_tools), served.tokenizer, served.context_length)
    grammar = None
    response_format = body.response_format if body.response_format and body.response_format.type != "text" else None
    if tool_choice != "none" or response_format is not None:
        named_choice = tool_choice if isinstance(tool_choice, str) else tool_choice.model_dump()
        formats = response_format.model_dump() if response_format is not None else None
        # the model too: a grammar's markers are its tokenizer's ids
        key = json.dumps([served.fingerprint, [t.model_dump() for t in tools], named_choice, formats], sort_keys=True)

        def build() -> Constraint | None:
            return chat_constraint(served, tools, tool_choice, response_format)

        # auto's lazy grammar over non-strict functions is one the request can do without
        lazy = tool_choice == "auto" and response_format is None and not any(t.function.strict for t in tools)
        grammar = planner.start_grammar(key, build, required=not lazy, client=client)  # awaited in start_chat

    prompt_ids, start_in_reasoning = encode_chat_prompt(served.tokenizer, body.messages, rendered_tools, thinking)
    max_tokens = choose_max_tokens(body.max_tokens, len(prompt_ids), served, settings)
    sampling: dict[str, Any] = dict(served.thinking_sampling)
    if not thinking:  # thinking mode accepts these and ignores them, as DeepSeek documents
        sampling = {
            "temperature": 1.0 if body.temperature is None else body.temperature,
            "top_p": engine_top_p(body.top_p),
            "frequency_penalty": body.frequency_penalty or 0.0,
            "presence_penalty": body.presence_penalty or 0.0,
        }
    params = make_sampling_params(
        max_tokens=max_tokens,
        stop=stop_list(body.stop),
        stop_token_ids=served.eos_ids,
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs or 0,
        seed=body.seed,
        **budget_params(choice, served.tokenizer, served.think_end_id, start_in_reasoning),
        **non_thinking_bans(choice, served.think_token_ids),
        **sampling,
    )
    last = body.messages[-1]
    answer_prefix = last.text() if last.prefix and not start_in_reasoning else ""
    return ChatPlan(
        served=served,
        engine_request=EngineRequest(prompt_ids=prompt_ids, params=params),
        thinking=thinking,
        start_in_reasoning=start_in_reasoning,
        parse_tools=tool_choice != "none",
        answer_prefix=answer_prefix,
        grammar=grammar,
    )


def chat_constraint(
    served: ServedModel, tools: list[Tool], tool_choice: Any, response_format: ResponseFormat | None
) -> Constraint | None:
    """The grammar a request's tools and response format call for, compiled for the engine (the slow part of
    planning: a schema's `pattern` can take xgrammar minutes, which is why it runs in the Planner's grammar threads
    and is waited for only up to `grammar_seconds`)."""
    constraint = None
    tool_format, tokenizer = served.tool_format, served.tokenizer
    functions = [tool.model_dump() for tool in tools]
    try:
        if tool_choice == "required":
            constraint = tool_call_constraint(tool_format, functions, "required", tokenizer)
        elif not isinstance(tool_choice, str):
            named = [f for f in functions if f["function"]["name"] == tool_choice.function.name]
            if not named:
                raise APIError(
                    400,
                    f"tool_choice names function {tool_choice.function.name!r}, which is not in `tools`.",
                    param="tool_choice",
                )
            constraint = tool_call_constraint(tool_format, named, "named", tokenizer)
        elif tool_choice == "auto" and lazy_grammar_applies(functions, response_format is not None):
            # lazily, as llama.cpp does: free text until the model opens a call, then a well-formed call (vLLM
            # leaves non-strict calls free, and a small model's then often fail to parse). A JSON response format
            # keeps its own grammar unless a function is strict, as before.
            constraint = tool_call_constraint(tool_format, functions, "auto", tokenizer)
        elif response_format is not None and response_format.type == "json_object":
            constraint = Constraint.json_object()
        elif response_format is not None and response_format.type == "json_schema":
            constraint = json_schema_constraint(response_format)
    except ToolSchemaError as error:
        raise APIError(400, str(error), param="tools", code="invalid_tool_schema") from None
    if constraint is not None:
        try:
            served.engine.prepare_constraint(constraint)
        except Exception as exc:  # noqa: BLE001 - xgrammar raises several types; the request is at fault
            raise APIError(400, f"The engine cannot compile this request's grammar: {exc}", param="tools") from None
    return constraint


@dataclass
class ChatAccumulator:
    """Feeds engine events through the parsers and keeps what the response needs."""

    plan: ChatPlan
    parser: OutputParser
    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    reasoning_tokens: int = 0
    finish_reason: str | None = None
    stop_string: str | None = None  # the request's stop string that ended the answer, if one did
    usage: Any = None
    prefix_pieces: list[ToolCallPiece] = field(default_factory=list)

    @classmethod
    def for_plan(cls, plan: ChatPlan) -> ChatAccumulator:
        parser = OutputParser(
            plan.served.tool_format,
            thinking=plan.thinking,
            tools_enabled=plan.parse_tools,
            start_in_reasoning=plan.start_in_reasoning,
            parse_reasoning=plan.served.parse_reasoning,
        )
        acc = cls(plan=plan, parser=parser)
        if plan.answer_prefix and plan.parse_tools:
            # a prefix may open a tool call that the model is to finish: the parser reads the prefix first,
            # so the call is reported whole; the prefix's plain text is the client's own and is not echoed
            primed = parser.feed(plan.answer_prefix)
            acc.add_calls(primed)
            acc.prefix_pieces = primed.tool_call_pieces
        return acc

    def add_calls(self, piece: ParsedDelta) -> None:
        self.tool_calls += [
            ToolCall(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments))
            for call in piece.tool_calls
        ]

    def feed(self, event: StreamEvent) -> tuple[ParsedDelta, list[TokenLogprob]]:
        if self.parser.in_reasoning:
            self.reasoning_tokens += len(event.token_ids)
        piece = self.parser.feed(event.text)
        if event.finish_reason is not None:
            tail = self.parser.finish()
            piece.reasoning += tail.reasoning
            piece.content += tail.content
            piece.tool_calls += tail.tool_calls
            piece.tool_call_pieces += tail.tool_call_pieces
            self.finish_reason = self.api_finish_reason(event.finish_reason, piece)
            self.stop_string = event.stop_string
        if event.usage is not None:
            self.usage = event.usage
        # a special token the parsers did not consume (a turn marker, a stray tool-call marker) is format, not
        # answer text: sampled at temperature 1, about 1 reply in 30 of the default model held one
        special = self.plan.served.tokenizer.special_token_pattern
        piece.reasoning, piece.content = special.sub("", piece.reasoning), special.sub("", piece.content)
        self.reasoning += piece.reasoning
        self.content += piece.content
        self.add_calls(piece)
        logprobs = api_logprobs(event.logprobs or [])
        self.logprobs += logprobs
        return piece, logprobs

    def api_finish_reason(self, engine_reason: str, last_piece: ParsedDelta) -> str:
        if engine_reason == "cancelled":
            return "insufficient_system_resource"  # only on shutdown: a disconnected client gets nothing
        if engine_reason == "stop" and (self.tool_calls or last_piece.tool_calls):
            return "tool_calls"
        return engine_reason

    def api_usage(self) -> Usage:
        return api_usage(self.usage, self.reasoning_tokens)


def thinking_choice(body: ChatCompletionRequest, default: bool) -> ThinkingChoice:
    switch = body.thinking
    return choose_thinking(
        default,
        switch.type if switch else None,
        body.reasoning_effort,
        switch.budget_tokens if switch else None,
        switch.min_tokens if switch else None,
    )


async def start_chat(body: ChatCompletionRequest, request: Request, policy: KeyPolicy) -> tuple[ChatPlan, EventSource]:
    """Plan a chat request (off the event loop) and start it in its engine: what the chat, Anthropic and Responses
    endpoints all do before writing the answer in their own shapes."""
    state = request.app.state
    served, default = state.registry.resolve(body.model)
    choice = thinking_choice(body, default)
    # whose share of the grammar threads the request builds on: its key, or without keys its address
    client = policy.owner or (request.client.host if request.client else "")
    plan = await state.planner.run(lambda: plan_chat(body, served, choice, state.settings, state.planner, client))
    if plan.grammar is not None:
        await apply_grammar(plan, body, request)
    source = await start_generation(request, policy, served, plan.engine_request)
    state.metrics.requests_started(body.model)
    return plan, source


async def apply_grammar(plan: ChatPlan, body: ChatCompletionRequest, request: Request) -> None:
    """Wait (on the event loop) for the request's grammar and put it on the engine request: a required one that
    cannot be had is a 400 (Planner.await_grammar); without auto's lazy tool grammar the request is served, saying
    so: the response header, a warning and the /metrics counter."""
    state = request.app.state
    try:
        constraint = await state.planner.await_grammar(plan.grammar)
    except GrammarUnavailable as skipped:
        plan.tool_grammar = f"skipped; reason={skipped.reason}"
        state.metrics.tool_grammar(f"skipped_{skipped.reason}")
        functions = ", ".join(tool.function.name for tool in body.tools or [])
        log.warning("tool grammar skipped (%s), served without it: functions %s", skipped, functions)
        return
    params = plan.engine_request.params
    params.constraint = constraint
    params.constraint_after_token = (
        plan.served.think_end_id if constraint is not None and plan.start_in_reasoning else None
    )
    if not plan.grammar.required:
        plan.tool_grammar = "applied"
        state.metrics.tool_grammar("applied")


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={**ERROR_RESPONSES, **STREAM_RESPONSE},
    summary="Create a chat completion (DeepSeek-compatible)",
)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, policy: KeyPolicy = Depends(require_key)
) -> ClosingStreamingResponse:
    plan, source = await start_chat(body, request, policy)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return ClosingStreamingResponse(
            stream_chat(body, plan, source, request, include_usage),
            source,
            media_type="text/event-stream",
            headers={**SSE_HEADERS, **plan.headers},
        )
    return ClosingStreamingResponse(
        collect_chat(body, plan, source, request), source, media_type="application/json", headers=plan.headers
    )


async def collect_chat(body: ChatCompletionRequest, plan: ChatPlan, source: EventSource, request: Request):
    acc = ChatAccumulator.for_plan(plan)
    async for line in source.collect_into(acc):
        yield line
    if source.error is not None:
        return
    message = ResponseMessage(
        content=acc.content,
        tool_calls=acc.tool_calls or None,
        reasoning_content=acc.reasoning if plan.thinking else None,
    )
    logprobs = ChoiceLogprobs(content=acc.logprobs) if body.logprobs else None
    response = ChatCompletion(
        id=completion_id("chatcmpl"),
        created=now(),
        model=body.model,
        system_fingerprint=plan.served.fingerprint,
        choices=[ChatChoice(index=0, message=message, logprobs=logprobs, finish_reason=acc.finish_reason or "stop")],
        usage=acc.api_usage(),
    )
    finish(request, body.model, response.usage)
    yield response.model_dump_json()


def finish(request: Request, model: str, usage: Usage) -> None:
    """Count a finished request in the metrics and the access log (its quota is settled when its EventSource
    closes)."""
    request.state.usage = usage  # for the access log line (access_log.py)
    request.app.state.metrics.request_finished(
        model, usage.prompt_tokens, usage.completion_tokens, usage.prompt_cache_hit_tokens
    )


async def stream_chat(
    body: ChatCompletionRequest,
    plan: ChatPlan,
    source: EventSource,
    request: Request,
    include_usage: bool,
):
    acc = ChatAccumulator.for_plan(plan)
    chunk_id, created = completion_id("chatcmpl"), now()
    exclude = None if include_usage else {"usage"}  # documented: the usage field only with include_usage

    def chunk(delta: Delta, finish_reason: str | None = None, logprobs: list[TokenLogprob] | None = None) -> str:
        choice = ChunkChoice(
            index=0,
            delta=delta,
            finish_reason=finish_reason,
            logprobs=ChoiceLogprobs(content=logprobs) if logprobs is not None else None,
        )
        return sse(
            ChatCompletionChunk(
                id=chunk_id,
                created=created,
                model=body.model,
                system_fingerprint=plan.served.fingerprint,
                choices=[choice],
            ),
            exclude,
        )

    try:
        yield chunk(Delta(role="assistant", content=""))
        if acc.prefix_pieces:
            yield chunk(Delta(tool_calls=tool_call_deltas(acc.prefix_pieces)))
        pending_logprobs: list[TokenLogprob] = []
        async for event in source:
            if event is KEEPALIVE or event.queued:
                yield SSE_KEEPALIVE
                continue
            piece, logprobs = acc.feed(event)
            pending_logprobs += logprobs
            # attach token logprobs to the next chunk that carries text (held-back text waits a step)
            if piece.reasoning:
                yield chunk(Delta(reasoning_content=piece.reasoning))
            if piece.content:
                yield chunk(Delta(content=piece.content), logprobs=pending_logprobs if body.logprobs else None)
                pending_logprobs = []
            if piece.tool_call_pieces:
                yield chunk(Delta(tool_calls=tool_call_deltas(piece.tool_call_pieces)))
        yield chunk(
            Delta(content=""),
            finish_reason=acc.finish_reason or "stop",
            logprobs=pending_logprobs if body.logprobs and pending_logprobs else None,
        )
        usage = acc.api_usage()
        if include_usage:
            yield sse(
                ChatCompletionChunk(
                    id=chunk_id,
                    created=created,
                    model=body.model,
                    system_fingerprint=plan.served.fingerprint,
                    choices=[],
                    usage=usage,
                )
            )
        finish(request, body.model, usage)
        yield SSE_DONE
    except APIError as exc:
        yield f"data: {error_json(exc)}\n\n{SSE_DONE}"
    finally:
        source.close()
