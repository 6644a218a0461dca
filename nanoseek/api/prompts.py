"""Turn API requests into prompt ids, applying DeepSeek's rules about what earlier turns the model sees.

Rendering itself belongs to the tokenizer (`Tokenizer.render_chat`: nanoseek's format in Python, any other
checkpoint's own Jinja `chat_template` the way transformers renders it). Here: the request's messages become
the plain dicts the renderer takes; reasoning of turns before the last user message is dropped; inside the
current tool loop it is kept, and in thinking mode it is required (else 400); and the prompt tells the
output parser whether the model starts inside a thought. All request text is encoded literally (special-token
strings in it stay text: only the format places special tokens), and input that cannot fit the context is
refused by its length before it is rendered or tokenized.
"""

from __future__ import annotations

import json
from typing import Any

from nanoseek.api.errors import APIError
from nanoseek.api.protocol import ChatMessage, Tool
from nanoseek.tokenizer import special_tokens as st
from nanoseek.tokenizer.chat_format import ChatFormatError
from nanoseek.tokenizer.tokenizer import Tokenizer, TokenizerError


def last_user_index(messages: list[ChatMessage]) -> int:
    return max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)


def check_messages(messages: list[ChatMessage], thinking: bool) -> None:
    """Structural rules the renderer cannot know about, each a 400 naming the message."""
    for i, message in enumerate(messages):
        if message.prefix and (message.role != "assistant" or i != len(messages) - 1):
            raise APIError(
                400,
                f"messages[{i}]: `prefix` is only allowed on the last message, which must be an "
                "assistant message (chat prefix completion).",
                param=f"messages[{i}].prefix",
            )
        if message.role == "tool" and not message.tool_call_id:
            raise APIError(
                400, f"messages[{i}]: a tool message needs `tool_call_id`.", param=f"messages[{i}].tool_call_id"
            )
        if message.role in ("user", "tool") and message.content is None:
            raise APIError(
                400, f"messages[{i}]: a {message.role} message needs `content`.", param=f"messages[{i}].content"
            )
    last = messages[-1]
    if thinking and last.role == "assistant" and not last.prefix:
        raise APIError(
            400,
            "The last message of a thinking-mode request (deepseek-reasoner) must be a user message, or an "
            "assistant message with prefix mode on.",
            param=f"messages[{len(messages) - 1}]",
        )
    if thinking:
        # the model continues the very thought that issued the calls, so it must be given back
        for i in range(last_user_index(messages) + 1, len(messages)):
            message = messages[i]
            if message.role == "assistant" and message.tool_calls and message.reasoning_content is None:
                raise APIError(
                    400,
                    f"Missing `reasoning_content` field in the assistant message at message "
                    f"index {i}: in thinking mode the reasoning_content of a tool-calling turn "
                    "must be passed back to the API.",
                    param=f"messages[{i}].reasoning_content",
                )


def messages_for_renderer(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    keep_reasoning_from = last_user_index(messages) + 1
    rendered = []
    for i, message in enumerate(messages):
        item: dict[str, Any] = {"role": message.role, "content": message.text()}
        if message.tool_calls:
            item["tool_calls"] = [call.model_dump() for call in message.tool_calls]
        if message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        if message.name:
            item["name"] = message.name
        if message.prefix:
            item["prefix"] = True
        # DeepSeek's multi-turn rule: earlier turns' reasoning is not fed back to the model
        if message.role == "assistant" and message.reasoning_content is not None and i >= keep_reasoning_from:
            item["reasoning_content"] = message.reasoning_content
        rendered.append(item)
    return rendered


def check_prompt_size(chars: int, tokenizer: Tokenizer, context_length: int) -> None:
    """400 for input too long to fit the context whatever its tokens, decided before it is rendered or tokenized
    (a 4 MB prompt would hold every client's planning for seconds): a token stands for at most
    `longest_token_bytes` bytes and a character is at least one byte."""
    limit = context_length * tokenizer.longest_token_bytes
    if chars > limit:
        raise APIError(
            400,
            f"This model's maximum context length is {context_length} tokens; the request's text has {chars} "
            f"characters, more than any {context_length}-token prompt can hold ({limit}). Shorten the messages.",
            param="messages",
            code="context_length_exceeded",
        )


def chat_input_chars(messages: list[ChatMessage], tools: list[Tool] | None) -> int:
    chars = 0
    for message in messages:
        chars += len(message.text()) + len(message.reasoning_content or "")
        chars += sum(len(call.function.name) + len(call.function.arguments) for call in message.tool_calls or [])
    for tool in tools or []:
        chars += len(tool.function.description or "") + len(json.dumps(tool.function.parameters or {}))
    return chars


def encode_chat_prompt(
    tokenizer: Tokenizer, messages: list[ChatMessage], tools: list[Tool] | None, thinking: bool
) -> tuple[list[int], bool]:
    """Return (prompt ids, whether the model's output starts inside a thought). Message and tool text is
    encoded literally (`Tokenizer.encode_chat`): a special-token string typed into it cannot forge a turn."""
    tool_dicts = [tool.model_dump(exclude_none=True) for tool in tools] if tools else None
    try:
        ids = tokenizer.encode_chat(messages_for_renderer(messages), tools=tool_dicts, thinking=thinking)
    except (ChatFormatError, TokenizerError) as exc:
        raise APIError(
            400, f"Cannot render these messages in the model's chat format: {exc}", param="messages"
        ) from None
    # a thought left open at the end of the prompt (generation prompt or a prefix's reasoning) is continued
    return ids, thinking and last_index(ids, tokenizer, st.THINK_BEGIN) > last_index(ids, tokenizer, st.THINK_END)


def last_index(ids: list[int], tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.backend.token_to_id(token)
    return next((i for i in range(len(ids) - 1, -1, -1) if ids[i] == token_id), -1) if token_id is not None else -1


def encode_fim_prompt(tokenizer: Tokenizer, prefix: str, suffix: str) -> list[int]:
    """FIM prompt ids (chat_format.render_fim's layout); the prefix and suffix are encoded literally."""
    missing = [t for t in (st.FIM_BEGIN, st.FIM_HOLE, st.FIM_END) if not tokenizer.has_token(t)]
    if missing:
        raise APIError(
            400,
            f"This model has no fill-in-the-middle tokens ({', '.join(missing)} missing), so FIM "
            "completion is not available for it.",
            param="suffix",
        )
    token = tokenizer.token_id
    prefix_ids, suffix_ids = (tokenizer.encode(text, parse_special=False) for text in (prefix, suffix))
    return [token(st.BOS), token(st.FIM_BEGIN), *prefix_ids, token(st.FIM_HOLE), *suffix_ids, token(st.FIM_END)]


def encode_text_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """A plain completion prompt: BOS (when the model has one), then the text, encoded literally."""
    return ([tokenizer.bos_id] if tokenizer.bos_id is not None else []) + tokenizer.encode(prompt, parse_special=False)
