"""Thinking budgets, s1's "budget forcing": a cap on the length of a thought and a minimum length for it.

A request whose output starts inside a thought (its prompt ends with `<think>`) names the token that ends the
thought, `SamplingParams.think_end_token`, and one or both bounds:

* `max_thinking_tokens`: once the thought holds that many tokens, the next token is the end token whatever
  the model would have drawn, so the model goes on to answer (DeepSeek's `reasoning_effort`, Anthropic's
  `budget_tokens`, the evaluator's accuracy-vs-thinking-length chart);
* `min_thinking_tokens`: an end token drawn before the thought is that long is replaced by
  `thinking_extension_ids` (s1 appends "Wait"), which the model then continues.

The engine asks `ThoughtBudget.steer` for every token a sequence emits while it thinks; the bounds count the
tokens of the thought, forced ones included, not the end token.
"""

from __future__ import annotations

from collections import deque

from nanoseek.engine.params import SamplingParams


class ThoughtBudget:
    """One sample's thought: how long it is so far, and which tokens the bounds force next."""

    def __init__(self, params: SamplingParams) -> None:
        assert params.think_end_token is not None
        self.end_token = params.think_end_token
        self.cap = params.max_thinking_tokens
        self.minimum = params.min_thinking_tokens
        self.extension = list(params.thinking_extension_ids)
        self.thinking = True
        self.length = 0
        self.forced: deque[int] = deque()  # the rest of an extension that is being written out

    @staticmethod
    def applies(params: SamplingParams) -> bool:
        return params.think_end_token is not None and (
            params.max_thinking_tokens is not None or params.min_thinking_tokens > 0
        )

    def steer(self, drawn: int) -> int:
        """The token the sample emits, given the one drawn for it."""
        if not self.thinking:
            return drawn
        token = drawn
        if self.cap is not None and self.length >= self.cap:
            token = self.end_token
        elif self.forced:
            token = self.forced.popleft()
        elif drawn == self.end_token and self.length < self.minimum:
            token, *rest = self.extension
            self.forced.extend(rest)
        if token == self.end_token:
            self.thinking = False
            self.forced.clear()
        else:
            self.length += 1
        return token
