"""Which mode a request runs in and how long it may think: DeepSeek's thinking-mode controls, plus budgets.

DeepSeek's thinking-mode guide (checked 2026-12-06, docs/API.md): `thinking: {"type": "enabled"|"disabled"}`
switches the mode, each model name has its own default (the V4 names think, deepseek-chat does not), and
`reasoning_effort` sets the effort, mapped as DeepSeek maps it: minimal and low -> low; medium, high and xhigh
-> high; max and ultra -> max; nanoseek also takes OpenAI's "none", which turns thinking off (as `reasoning.effort`
"none" does in DeepSeek's Responses format). The Anthropic format says `output_config.effort`, the Responses
format `reasoning.effort`; both arrive here as the same effort string.

What an effort means is nanoseek's own choice (DeepSeek does not publish one): a cap on the thought's tokens
(`EFFORT_BUDGETS`), after which the engine forces `</think>` and the model answers. `thinking.budget_tokens`
(Anthropic's name, also accepted in the OpenAI format) sets the cap directly, and nanoseek's
`thinking.min_tokens` sets a minimum: a thought that ends earlier is extended with "Wait" (s1's budget
forcing). Both count generated thought tokens only, not a prefix's `reasoning_content`.

With thinking off the prompt closes the thought (`<｜Assistant｜></think>`, DeepSeek-V3.1's non-thinking template),
and a model trained to think may still write one and close it with a literal `</think>` (the smol adapter did in
half of its no-thinking math replies). `non_thinking_bans` bans the think tokens from such a reply, so its content
never holds a think tag, as DeepSeek's never does. Thinking mode bans nothing: a template may leave the model to
open its own thought (Qwen3's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nanoseek.api.errors import APIError

EFFORT_LEVELS = {
    "minimal": "low",
    "low": "low",
    "medium": "high",
    "high": "high",
    "xhigh": "high",
    "max": "max",
    "ultra": "max",
}
DEFAULT_EFFORT = "high"  # DeepSeek's default in thinking mode
EFFORT_BUDGETS: dict[str, int | None] = {"low": 256, "high": 2048, "max": None}  # thought tokens; None: no cap
EXTENSION_TEXT = "\nWait"  # s1's word for "keep thinking"


@dataclass(frozen=True)
class ThinkingChoice:
    enabled: bool
    effort: str | None = None  # low | high | max, when enabled
    budget_tokens: int | None = None  # cap on the thought's tokens (None: only max_tokens bounds it)
    min_tokens: int = 0


def effort_level(effort: str | None, param: str) -> str | None:
    """DeepSeek's effort for a requested one ("none" stays "none"); 422 for a value it does not know."""
    if effort is None or effort == "none":
        return effort
    if effort not in EFFORT_LEVELS:
        raise APIError(
            422,
            f"{param} must be one of none, {', '.join(EFFORT_LEVELS)}; got {effort!r}.",
            param=param,
        )
    return EFFORT_LEVELS[effort]


def choose_thinking(
    default: bool,
    switch: str | None = None,
    effort: str | None = None,
    budget_tokens: int | None = None,
    min_tokens: int | None = None,
    effort_param: str = "reasoning_effort",
) -> ThinkingChoice:
    """The mode and bounds of one request: `default` is the model name's, `switch` the thinking object's type
    ("enabled" | "disabled" | None), `effort` the requested effort string."""
    level = effort_level(effort, effort_param)
    enabled = default if switch is None else switch == "enabled"
    if level == "none":
        enabled = False
    if not enabled:
        return ThinkingChoice(False)
    level = level or DEFAULT_EFFORT
    cap = EFFORT_BUDGETS[level] if budget_tokens is None else budget_tokens
    minimum = min_tokens or 0
    if cap is not None and minimum > cap:
        raise APIError(
            422,
            f"thinking.min_tokens ({minimum}) must not exceed the thinking budget ({cap} tokens).",
            param="thinking.min_tokens",
        )
    return ThinkingChoice(True, level, cap, minimum)


def budget_params(choice: ThinkingChoice, tokenizer: Any, think_end_id: int | None, in_thought: bool) -> dict:
    """SamplingParams fields that bound the thought the output starts with (none when it starts outside one)."""
    if not choice.enabled or not in_thought or think_end_id is None:
        return {}
    if choice.budget_tokens is None and not choice.min_tokens:
        return {}
    return {
        "think_end_token": think_end_id,
        "max_thinking_tokens": choice.budget_tokens,
        "min_thinking_tokens": choice.min_tokens,
        "thinking_extension_ids": tokenizer.encode(EXTENSION_TEXT) if choice.min_tokens else [],
    }


def non_thinking_bans(choice: ThinkingChoice, think_token_ids: list[int]) -> dict:
    """SamplingParams fields that keep the checkpoint's think tokens (output_parser.think_token_ids: none for a
    ChatML checkpoint) out of a reply with thinking off."""
    return {} if choice.enabled or not think_token_ids else {"banned_token_ids": list(think_token_ids)}
