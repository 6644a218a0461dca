"""POST /responses: OpenAI's Responses API (as DeepSeek's V4.1, vLLM and llama.cpp serve it) over the chat plan.

A request becomes the chat request it means (input items -> messages: reasoning items become the next assistant
turn's reasoning_content, function_call items its tool_calls, function_call_output items tool messages;
`instructions` the system message; `text.format` the response_format; `reasoning.effort` the effort, "none"
turning thinking off; function tools and tool_choice as in chat), runs through chat.plan_chat and the same
engine stream, and is written back as output items: `reasoning` (the thought as reasoning_text content),
`function_call` and `message` (output_text), or, with stream=true, as the Responses event stream
(response.created, output_item.added, reasoning_text / output_text / function_call_arguments deltas and
dones, output_item.done, response.completed). Nothing is stored: `previous_response_id` is a 400 (send the
conversation in `input`), as with `store: false`.
"""

from __future__ import annotations

import json
import uuid
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
from nanoseek.api.errors import APIError, describe_validation_errors
from nanoseek.api.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    FunctionCall,
    ResponseObject,
    ResponsesContentPart,
    ResponsesRequest,
    ToolCall,
)
from nanoseek.api.serving import KEEPALIVE, SSE_HEADERS, ClosingStreamingResponse, EventSource, now
from nanoseek.api.settings import KeyPolicy

router = APIRouter()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def part_text(content: str | list[ResponsesContentPart] | None) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else "".join(part.text for part in content)


def to_chat_messages(body: ResponsesRequest) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    if body.instructions:
        messages.append(ChatMessage(role="system", content=body.instructions))
    items = body.input if isinstance(body.input, list) else []
    if isinstance(body.input, str):
        messages.append(ChatMessage(role="user", content=body.input))
    # an assistant turn is spread over several items (reasoning, function calls, a message): gather them
    turn: ChatMessage | None = None

    def assistant_turn() -> ChatMessage:
        nonlocal turn
        if turn is None:
            turn = ChatMessage(role="assistant", content="")
            messages.append(turn)
        return turn

    for i, item in enumerate(items):
        if item.type == "reasoning":
            if turn is not None and (turn.content or turn.tool_calls):
                turn = None  # reasoning opens the next assistant turn
            current = assistant_turn()
            current.reasoning_content = (current.reasoning_content or "") + part_text(item.content or item.summary)
        elif item.type == "function_call":
            if not item.call_id or not item.name:
                raise APIError(400, f"input[{i}]: a function_call item needs call_id and name.", param=f"input[{i}]")
            call = ToolCall(id=item.call_id, function=FunctionCall(name=item.name, arguments=item.arguments or "{}"))
            current = assistant_turn()
            current.tool_calls = (current.tool_calls or []) + [call]
        elif item.type == "function_call_output":
            if not item.call_id:
                raise APIError(400, f"input[{i}]: a function_call_output item needs call_id.", param=f"input[{i}]")
            turn = None
            messages.append(ChatMessage(role="tool", tool_call_id=item.call_id, content=part_text(item.output)))
        elif item.role == "assistant":
            current = assistant_turn()
            current.content = (current.content or "") + part_text(item.content)
        elif item.role is None:
            raise APIError(400, f"input[{i}]: a message item needs a role.", param=f"input[{i}].role")
        else:
            turn = None
            role = "system" if item.role == "developer" else item.role
            messages.append(ChatMessage(role=role, content=part_text(item.content)))
    return messages


def to_chat_request(body: ResponsesRequest) -> ChatCompletionRequest:
    if body.previous_response_id is not None:
        raise APIError(
            400,
            "previous_response_id is not supported: this server stores no responses, so send the whole "
            "conversation in `input`.",
            param="previous_response_id",
        )
    tools = []
    for i, tool in enumerate(body.tools or []):
        if tool.type != "function" or not tool.name:
            raise APIError(
                400, f"tools[{i}]: only function tools (with a name) are supported, got {tool.type!r}.", param="tools"
            )
        function = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
        tools.append({"type": "function", "function": function | {"strict": bool(tool.strict)}})
    tool_choice: Any = body.tool_choice
    if tool_choice is not None and not isinstance(tool_choice, str):
        tool_choice = {"type": "function", "function": {"name": tool_choice.name}}
    response_format = None
    text_format = body.text.format if body.text else None
    if text_format is not None:
        response_format = {"type": text_format.type}
        if text_format.type == "json_schema":
            response_format["json_schema"] = {
                "name": text_format.name,
                "schema": text_format.schema_,
                "strict": text_format.strict,
            }
    try:
        return ChatCompletionRequest(
            model=body.model,
            messages=to_chat_messages(body),
            max_tokens=body.max_output_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            tools=tools or None,
            tool_choice=tool_choice,
            response_format=response_format,
            reasoning_effort=body.reasoning.effort if body.reasoning else None,
        )
    except ValidationError as exc:
        status, message, param = describe_validation_errors(list(exc.errors()))
        raise APIError(status, message, param=param) from None


def reasoning_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": item_id,
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": status,
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = (
        [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status == "completed" else []
    )
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def response_object(
    response_id: str,
    created: int,
    body: ResponsesRequest,
    output: list[dict[str, Any]],
    acc: ChatAccumulator | None,
) -> ResponseObject:
    status, incomplete, usage = "in_progress", None, None
    if acc is not None:
        status = "incomplete" if acc.finish_reason == "length" else "completed"
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        chat_usage = acc.api_usage()
        usage = {
            "input_tokens": chat_usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": chat_usage.prompt_cache_hit_tokens},
            "output_tokens": chat_usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": acc.reasoning_tokens},
            "total_tokens": chat_usage.total_tokens,
        }
    return ResponseObject.model_construct(
        id=response_id,
        object="response",
        created_at=created,
        status=status,
        model=body.model,
        output=output,
        incomplete_details=incomplete,
        error=None,
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        parallel_tool_calls=True,
        tool_choice=body.tool_choice if isinstance(body.tool_choice, str) else "auto",
        tools=[tool.model_dump(exclude_none=True) for tool in body.tools or []],
        reasoning=body.reasoning.model_dump() if body.reasoning else None,
        usage=usage,
    )


def output_items(acc: ChatAccumulator, plan: ChatPlan) -> list[dict[str, Any]]:
    items = []
    if plan.thinking and acc.reasoning:
        items.append(reasoning_item(new_id("rs"), acc.reasoning))
    if acc.content or not acc.tool_calls:
        items.append(message_item(new_id("msg"), acc.content))
    for call in acc.tool_calls:
        items.append(call_item(new_id("fc"), call.id, call.function.name, call.function.arguments))
    return items


@router.post(
    "/responses",
    response_model=ResponseObject,
    responses={**ERROR_RESPONSES, **STREAM_RESPONSE},
    summary="Create a model response (OpenAI Responses API)",
)
async def create_response(
    body: ResponsesRequest, request: Request, policy: KeyPolicy = Depends(require_key)
) -> ClosingStreamingResponse:
    plan, source = await start_chat(to_chat_request(body), request, policy)
    response_id, created = new_id("resp"), now()
    if body.stream:
        stream = ResponseStream(body, plan, response_id, created)
        return ClosingStreamingResponse(
            stream.run(source, request), source, media_type="text/event-stream", headers={**SSE_HEADERS, **plan.headers}
        )

    async def collect():
        acc = ChatAccumulator.for_plan(plan)
        async for line in source.collect_into(acc):
            yield line
        if source.error is not None:
            return
        finish(request, body.model, acc.api_usage())
        yield response_object(response_id, created, body, output_items(acc, plan), acc).model_dump_json()

    return ClosingStreamingResponse(collect(), source, media_type="application/json", headers=plan.headers)


class ResponseStream:
    """The Responses event stream of one request: one output item open at a time (reasoning, message or a
    function call), each opened, fed deltas and closed with its done events, numbered in sequence."""

    def __init__(self, body: ResponsesRequest, plan: ChatPlan, response_id: str, created: int) -> None:
        self.body, self.plan, self.response_id, self.created = body, plan, response_id, created
        self.sequence = 0
        self.output: list[dict[str, Any]] = []  # finished items
        self.open: dict[str, Any] | None = None  # the item being written
        self.text = ""  # the open item's text or arguments so far

    def event(self, kind: str, **data: Any) -> str:
        payload = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"

    def snapshot(self, acc: ChatAccumulator | None = None) -> dict[str, Any]:
        return response_object(self.response_id, self.created, self.body, self.output, acc).model_dump(mode="json")

    def start(self, item: dict[str, Any]) -> list[str]:
        lines = self.close()
        self.open, self.text = item, ""
        lines.append(self.event("response.output_item.added", output_index=len(self.output), item=item))
        if item["type"] == "message":
            part = {"type": "output_text", "text": "", "annotations": []}
            lines.append(self.event("response.content_part.added", part=part, **self.where(content=True)))
        return lines

    def where(self, content: bool = False) -> dict[str, Any]:
        place = {"item_id": self.open["id"], "output_index": len(self.output)}
        return place | {"content_index": 0} if content else place

    def delta(self, kind: str, text: str) -> list[str]:
        if self.open is None or self.open["type"] != kind:
            if kind == "reasoning":
                return self.start(reasoning_item(new_id("rs"), "", "in_progress")) + self.delta(kind, text)
            return self.start(message_item(new_id("msg"), "", "in_progress")) + self.delta(kind, text)
        self.text += text
        name = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
        extra = {} if kind == "reasoning" else {"logprobs": []}
        return [self.event(name, delta=text, **self.where(content=True), **extra)]

    def close(self) -> list[str]:
        item, lines = self.open, []
        if item is None:
            return lines
        if item["type"] == "reasoning":
            lines.append(self.event("response.reasoning_text.done", text=self.text, **self.where(content=True)))
            done = reasoning_item(item["id"], self.text)
        elif item["type"] == "message":
            part = {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}
            lines.append(
                self.event("response.output_text.done", text=self.text, logprobs=[], **self.where(content=True))
            )
            lines.append(self.event("response.content_part.done", part=part, **self.where(content=True)))
            done = message_item(item["id"], self.text)
        else:
            lines.append(self.event("response.function_call_arguments.done", arguments=self.text, **self.where()))
            done = call_item(item["id"], item["call_id"], item["name"], self.text)
        lines.append(self.event("response.output_item.done", output_index=len(self.output), item=done))
        self.output.append(done)
        self.open = None
        return lines

    async def run(self, source: EventSource, request: Request):
        acc = ChatAccumulator.for_plan(self.plan)
        try:
            yield self.event("response.created", response=self.snapshot())
            yield self.event("response.in_progress", response=self.snapshot())
            async for item in source:
                if item is KEEPALIVE or item.queued:
                    yield ": keep-alive\n\n"
                    continue
                piece, _ = acc.feed(item)
                lines: list[str] = []
                if piece.reasoning:
                    lines += self.delta("reasoning", piece.reasoning)
                if piece.content:
                    lines += self.delta("message", piece.content)
                for part in piece.tool_call_pieces:
                    if part.id is not None:
                        lines += self.start(call_item(new_id("fc"), part.id, part.name or "", "", "in_progress"))
                    if part.arguments:
                        self.text += part.arguments
                        lines.append(
                            self.event("response.function_call_arguments.delta", delta=part.arguments, **self.where())
                        )
                for line in lines:
                    yield line
            for line in self.close():
                yield line
            if all(item["type"] == "reasoning" for item in self.output):  # no answer is still an (empty) message
                for line in self.start(message_item(new_id("msg"), "", "in_progress")) + self.close():
                    yield line
            finish(request, self.body.model, acc.api_usage())
            final = "response.incomplete" if acc.finish_reason == "length" else "response.completed"
            yield self.event(final, response=self.snapshot(acc))
        except APIError as exc:
            yield self.event("error", code=exc.code or str(exc.status), message=exc.message, param=exc.param)
        finally:
            source.close()
