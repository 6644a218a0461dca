"""Request and response schemas of the DeepSeek (OpenAI-shaped) and Anthropic-shaped APIs, as pydantic models.

Kept apart from the serving logic so that the OpenAPI document, validation and the handlers share one
source of truth. Field limits follow the DeepSeek API reference; a value of the right type but outside
its range is a 422, a wrong shape is a 400 (see errors.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class Lenient(BaseModel):
    """Request objects ignore fields they do not know, as DeepSeek does (SDKs send a few extra ones)."""

    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------- chat requests


class TextPart(Lenient):
    type: Literal["text"] = "text"
    text: str


class FunctionCall(Lenient):
    name: str
    arguments: str = Field(description="The arguments as a JSON string.")


class ToolCall(Lenient):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Lenient):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    prefix: bool = Field(False, description="(beta) continue this last assistant message")
    reasoning_content: str | None = Field(None, description="(beta) thought of an assistant turn")

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionDefinition(Lenient):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool = False


class Tool(Lenient):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(Lenient):
    name: str = Field(pattern=TOOL_NAME_PATTERN)


class NamedToolChoice(Lenient):
    type: Literal["function"] = "function"
    function: NamedFunction


class JSONSchemaFormat(Lenient):
    name: str = Field("response", pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = False


class ResponseFormat(Lenient):
    """DeepSeek's text / json_object, and OpenAI's structured outputs (json_schema), which nanoseek adds."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(Lenient):
    include_usage: bool = False


class Thinking(Lenient):
    type: Literal["enabled", "disabled"]
    budget_tokens: int | None = Field(None, ge=0, description="(nanoseek) at most this many thought tokens")
    min_tokens: int | None = Field(None, ge=0, description="(nanoseek) a shorter thought is extended with 'Wait'")


StopField = str | list[str] | None


class SamplingFields(Lenient):
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    stop: StopField = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, description="(nanoseek) makes sampling repeatable; honoured in every mode")

    @field_validator("stop")
    @classmethod
    def _at_most_16_stops(cls, value: StopField) -> StopField:
        if isinstance(value, list) and len(value) > 16:
            raise ValueError("stop accepts at most 16 sequences")
        return value


class ChatCompletionRequest(SamplingFields):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    thinking: Thinking | None = None
    reasoning_effort: str | None = Field(
        None, description="low | high | max (minimal, medium, xhigh, ultra mapped as DeepSeek does); none: no thinking"
    )


class CompletionRequest(SamplingFields):
    model: str
    prompt: str
    suffix: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=4096)
    echo: bool | None = False
    logprobs: int | None = Field(None, ge=0, le=20)
    thinking: Thinking | None = None


# ---------------------------------------------------------------- chat responses


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_cache_hit_tokens: int
    prompt_cache_miss_tokens: int
    completion_tokens_details: CompletionTokensDetails | None = None


FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "insufficient_system_resource"]


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(BaseModel):
    index: int
    message: ResponseMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class ToolCallDeltaFunction(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ToolCallDeltaFunction


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "nanoseek"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class BalanceInfo(BaseModel):
    currency: str
    total_balance: str
    granted_balance: str
    topped_up_balance: str


class Balance(BaseModel):
    is_available: bool
    balance_infos: list[BalanceInfo]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    queue: int
    running: int
    decode: str  # the default model's decode step (Engine.decode_path): "native C step, fp32", "PyTorch model", ...
    grammars_ready: bool  # the grammar tables are built (Engine.prepare_grammars), not left to a first JSON request


# ---------------------------------------------------------------- Anthropic messages


class AnthropicTextBlock(Lenient):
    type: Literal["text"]
    text: str


class AnthropicThinkingBlock(Lenient):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class AnthropicToolUseBlock(Lenient):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class AnthropicToolResultBlock(Lenient):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[AnthropicTextBlock] | None = None
    is_error: bool | None = None


AnthropicBlock = AnthropicTextBlock | AnthropicThinkingBlock | AnthropicToolUseBlock | AnthropicToolResultBlock


class AnthropicMessage(Lenient):
    role: Literal["user", "assistant"]
    content: str | list[AnthropicBlock]


class AnthropicTool(Lenient):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class AnthropicToolChoice(Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None


class AnthropicThinking(Lenient):
    type: Literal["enabled", "disabled", "adaptive", "between_tools"]  # all but "disabled" turn thinking on
    budget_tokens: int | None = Field(None, ge=0)
    min_tokens: int | None = Field(None, ge=0)


class AnthropicOutputConfig(Lenient):
    effort: str | None = None


class MessagesRequest(Lenient):
    model: str
    max_tokens: int = Field(ge=1)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[AnthropicTextBlock] | None = None
    stop_sequences: list[str] | None = Field(None, max_length=16)
    stream: bool | None = False
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    seed: int | None = Field(None, description="(nanoseek) makes sampling repeatable, as in chat")
    thinking: AnthropicThinking | None = None
    output_config: AnthropicOutputConfig | None = None
    tools: list[AnthropicTool] | None = Field(None, max_length=128)
    tool_choice: AnthropicToolChoice | None = None


class AnthropicUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


class AnthropicResponse(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[dict[str, Any]]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None = None
    usage: AnthropicUsage


# ---------------------------------------------------------------- Responses API


class ResponsesContentPart(Lenient):
    type: str = "input_text"  # input_text | output_text | text | reasoning_text
    text: str = ""


class ResponsesInputItem(Lenient):
    """One input item: a message (`role`, `content`), a function call the model made, its output, or reasoning."""

    type: Literal["message", "function_call", "function_call_output", "reasoning"] = "message"
    role: Literal["user", "system", "developer", "assistant"] | None = None
    content: str | list[ResponsesContentPart] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[ResponsesContentPart] | None = None
    summary: list[ResponsesContentPart] | None = None


class ResponsesTool(Lenient):
    type: str
    name: str | None = Field(None, pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = False


class ResponsesNamedTool(Lenient):
    type: Literal["function"]
    name: str = Field(pattern=TOOL_NAME_PATTERN)


class ResponsesTextFormat(Lenient):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str = Field("response", pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = False


class ResponsesText(Lenient):
    format: ResponsesTextFormat | None = None


class ResponsesReasoning(Lenient):
    effort: str | None = None
    summary: str | None = None


class ResponsesRequest(Lenient):
    model: str
    input: str | list[ResponsesInputItem]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stream: bool | None = False
    reasoning: ResponsesReasoning | None = None
    tools: list[ResponsesTool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | ResponsesNamedTool | None = None
    text: ResponsesText | None = None
    previous_response_id: str | None = None
    seed: int | None = Field(None, description="(nanoseek) makes sampling repeatable")


class ResponseObject(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["completed", "incomplete", "failed"]
    model: str
    output: list[dict[str, Any]]
    incomplete_details: dict[str, str] | None = None
    error: dict[str, Any] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    parallel_tool_calls: bool = True
    tool_choice: Any = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    reasoning: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
