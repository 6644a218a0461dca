"""POST /anthropic/v1/messages: the Anthropic Messages API over the same plan and parsers as chat.

A request is translated into the DeepSeek chat request it means (system, text, thinking, tool_use and
tool_result blocks -> messages with reasoning_content, tool_calls and tool messages; tool_choice any -> required,
tool -> named), run through chat.plan_chat, and the result is written back as Anthropic content blocks or
Anthropic's streaming events (message_start, content_block_*, message_delta, message_stop; `ping` while
waiting). Model names as DeepSeek's Anthropic endpoint maps them (checked 2026-12-06): the served names pass,
`claude-opus*` -> deepseek-v4-pro, any other `claude*` -> deepseek-flash (both think by default), any other
name is a 400. `thinking` and `output_config.effort` choose the mode and effort (api/thinking.py); unlike
DeepSeek, nanoseek honours `thinking.budget_tokens` as the cap on the thought.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from nanoseek.api.auth import require_key
from nanoseek.api.chat import (
    ERROR_RESPONSES,
    STREAM_RESPONSE,
    ChatAccumulator,
    ChatPlan,
    finish,
    start_chat,
)
from nanoseek.api.errors import APIError, describe_validation_errors, error_body
from nanoseek.api.protocol import (
    AnthropicResponse,
    AnthropicTextBlock,
    AnthropicThinkingBlock,
    AnthropicToolResultBlock,
    AnthropicToolUseBlock,
    AnthropicUsage,
    ChatCompletionRequest,
    ChatMessage,
    FunctionCall,
    MessagesRequest,
    ToolCall,
)
from nanoseek.api.serving import (
    KEEPALIVE,
    SSE_HEADERS,
    ClosingStreamingResponse,
    EventSource,
    completion_id,
)
from nanoseek.api.settings import KeyPolicy

router = APIRouter()
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "insufficient_system_resource": "end_turn",
    "content_filter": "end_turn",
}


def block_text(content: str | list[AnthropicTextBlock] | None) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else "".join(block.text for block in content)


def to_chat_messages(body: MessagesRequest) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    if body.system:
        messages.append(ChatMessage(role="system", content=block_text(body.system)))
    for turn in body.messages:
        blocks = [AnthropicTextBlock(type="text", text=turn.content)] if isinstance(turn.content, str) else turn.content
        if turn.role == "user":
            texts = []
            for block in blocks:
                if isinstance(block, AnthropicToolResultBlock):
                    messages.append(
                        ChatMessage(role="tool", tool_call_id=block.tool_use_id, content=block_text(block.content))
                    )
                elif isinstance(block, AnthropicTextBlock):
                    texts.append(block.text)
                else:
                    raise APIError(400, f"a user message cannot hold a {block.type} block.", param="messages")
            if texts:
                messages.append(ChatMessage(role="user", content="".join(texts)))
            continue
        text, reasoning, calls = "", None, []
        for block in blocks:
            if isinstance(block, AnthropicTextBlock):
                text += block.text
            elif isinstance(block, AnthropicThinkingBlock):
                reasoning = (reasoning or "") + block.thinking
            elif isinstance(block, AnthropicToolUseBlock):
                calls.append(
                    ToolCall(id=block.id, function=FunctionCall(name=block.name, arguments=json.dumps(block.input)))
                )
            else:
                raise APIError(400, "an assistant message cannot hold a tool_result block.", param="messages")
        messages.append(
            ChatMessage(role="assistant", content=text, reasoning_content=reasoning, tool_calls=calls or None)
        )
    return messages


def chat_model_name(name: str, served_names: Iterable[str]) -> str:
    """The model an Anthropic-format name reaches; unknown names are left for the registry to refuse."""
    if name in served_names:
        return name
    if name.startswith("claude-opus"):
        return "deepseek-v4-pro"
    if name.startswith("claude"):
        return "deepseek-flash"
    return name


def to_chat_request(body: MessagesRequest, served_names: Iterable[str]) -> ChatCompletionRequest:
    thinking = None
    if body.thinking is not None:
        thinking = {
            "type": "disabled" if body.thinking.type == "disabled" else "enabled",
            "budget_tokens": body.thinking.budget_tokens,
            "min_tokens": body.thinking.min_tokens,
        }
    tool_choice: Any = None
    if body.tool_choice is not None:
        kind = body.tool_choice.type
        if kind == "tool":
            if not body.tool_choice.name:
                raise APIError(400, "tool_choice of type 'tool' needs a `name`.", param="tool_choice")
            tool_choice = {"type": "function", "function": {"name": body.tool_choice.name}}
        else:
            tool_choice = {"any": "required"}.get(kind, kind)
    tools = [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}
        for t in body.tools or []
    ]
    try:
        request = ChatCompletionRequest(
            model=chat_model_name(body.model, served_names),
            thinking=thinking,
            reasoning_effort=body.output_config.effort if body.output_config else None,
            messages=to_chat_messages(body),
            max_tokens=body.max_tokens,
            stop=body.stop_sequences,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            tools=tools or None,
            tool_choice=tool_choice,
        )
    except ValidationError as exc:
        status, message, param = describe_validation_errors(list(exc.errors()))
        raise APIError(status, message, param=param) from None
    return request


def content_blocks(acc: ChatAccumulator, thinking: bool) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    # With thinking on, Anthropic's messages always open with a thinking block, even when the model
    # closed its thought at once (an empty thought), so clients can rely on content[0].
    if thinking:
        blocks.append({"type": "thinking", "thinking": acc.reasoning, "signature": ""})
    if acc.content or not acc.tool_calls:
        blocks.append({"type": "text", "text": acc.content})
    for call in acc.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": parse_arguments(call.function.arguments),
            }
        )
    return blocks


def parse_arguments(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments)
    except ValueError:
        return {"_raw": arguments}  # the model wrote invalid JSON: keep it visible rather than drop it
    return value if isinstance(value, dict) else {"value": value}


def stop_reason(acc: ChatAccumulator) -> str:
    if acc.finish_reason == "stop" and acc.stop_string is not None:
        return "stop_sequence"
    return STOP_REASONS.get(acc.finish_reason or "stop", "end_turn")


def anthropic_usage(acc: ChatAccumulator) -> AnthropicUsage:
    usage = acc.api_usage()
    return AnthropicUsage(
        input_tokens=usage.prompt_cache_miss_tokens,
        output_tokens=usage.completion_tokens,
        cache_read_input_tokens=usage.prompt_cache_hit_tokens,
    )


def event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


@router.post(
    "/v1/messages",
    response_model=AnthropicResponse,
    responses={**ERROR_RESPONSES, **STREAM_RESPONSE},
    summary="Create a message (Anthropic-compatible)",
)
async def create_message(
    body: MessagesRequest, request: Request, policy: KeyPolicy = Depends(require_key)
) -> ClosingStreamingResponse:
    chat_request = to_chat_request(body, request.app.state.registry.names)
    plan, source = await start_chat(chat_request, request, policy)
    message_id = completion_id("msg")
    if body.stream:
        return ClosingStreamingResponse(
            stream_message(body, chat_request.model, plan, source, request, message_id),
            source,
            media_type="text/event-stream",
            headers={**SSE_HEADERS, **plan.headers},
        )

    async def collect():
        acc = ChatAccumulator.for_plan(plan)
        async for line in source.collect_into(acc):
            yield line
        if source.error is not None:
            return
        finish(request, chat_request.model, acc.api_usage())
        response = AnthropicResponse(
            id=message_id,
            model=body.model,
            content=content_blocks(acc, plan.thinking),
            stop_reason=stop_reason(acc),
            stop_sequence=acc.stop_string,
            usage=anthropic_usage(acc),
        )
        yield response.model_dump_json()

    return ClosingStreamingResponse(collect(), source, media_type="application/json", headers=plan.headers)


async def stream_message(
    body: MessagesRequest,
    chat_model: str,
    plan: ChatPlan,
    source: EventSource,
    request: Request,
    message_id: str,
):
    acc = ChatAccumulator.for_plan(plan)
    open_block: str | None = None
    index = -1

    def switch_to(kind: str, start: dict[str, Any]) -> list[str]:
        nonlocal open_block, index
        out = [event("content_block_stop", {"type": "content_block_stop", "index": index})] if open_block else []
        index += 1
        open_block = kind
        out.append(
            event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
        )
        return out

    try:
        yield event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": body.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": len(plan.engine_request.prompt_ids), "output_tokens": 0},
                },
            },
        )
        async for item in source:
            if item is KEEPALIVE or item.queued:
                yield event("ping", {"type": "ping"})
                continue
            piece, _ = acc.feed(item)
            if (
                open_block is None
                and plan.thinking
                and not piece.reasoning
                and (piece.content or piece.tool_call_pieces)
            ):
                for line in switch_to("thinking", {"type": "thinking", "thinking": ""}):  # as content_blocks does
                    yield line
            if piece.reasoning:
                if open_block != "thinking":
                    for line in switch_to("thinking", {"type": "thinking", "thinking": ""}):
                        yield line
                yield event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "thinking_delta", "thinking": piece.reasoning},
                    },
                )
            if piece.content:
                if open_block != "text":
                    for line in switch_to("text", {"type": "text", "text": ""}):
                        yield line
                yield event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece.content},
                    },
                )
            for part in piece.tool_call_pieces:
                if part.id is not None:
                    for line in switch_to(
                        "tool_use", {"type": "tool_use", "id": part.id, "name": part.name, "input": {}}
                    ):
                        yield line
                if part.arguments:
                    yield event(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": part.arguments},
                        },
                    )
        if open_block is None:  # nothing was written: the message still holds its (empty) blocks
            if plan.thinking:
                for line in switch_to("thinking", {"type": "thinking", "thinking": ""}):
                    yield line
            for line in switch_to("text", {"type": "text", "text": ""}):
                yield line
        yield event("content_block_stop", {"type": "content_block_stop", "index": index})
        finish(request, chat_model, acc.api_usage())
        yield event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(acc), "stop_sequence": acc.stop_string},
                "usage": anthropic_usage(acc).model_dump(),
            },
        )
        yield event("message_stop", {"type": "message_stop"})
    except APIError as exc:
        yield event("error", error_body(exc.status, exc.message, exc.param, exc.code, anthropic=True))
    finally:
        source.close()
