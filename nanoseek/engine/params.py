"""The engine's public data types: what a caller asks for and what it gets back.

    from nanoseek.engine import Request, SamplingParams
    request = Request(prompt_ids=tokenizer.encode("hello"), params=SamplingParams(max_tokens=32, temperature=0))

`SamplingParams` validates itself on construction (a `ValueError` names the bad field), so the server
can turn a mistake into a 422 before anything is queued. `banned_token_ids` are never sampled, whatever their
logits (vLLM's `bad_words` for single tokens, OpenAI's `logit_bias` of -100): a reply that starts outside a thought
never writes `<think>` or `</think>` (api/thinking.py `non_thinking_bans`). `StreamEvent` is what `Engine.stream` yields,
`Completion` what `Engine.generate` returns. Plain dataclasses: nothing here touches torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nanoseek.engine.constraint import Constraint

MAX_TOP_LOGPROBS = 20  # the DeepSeek/OpenAI API limit


class EngineOverloaded(RuntimeError):
    """The bounded waiting queue is full; the server answers 503 and the client retries later."""


@dataclass
class SamplingParams:
    """How to pick the tokens of one request. temperature == 0 means greedy (argmax)."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    constraint: Constraint | None = None
    constraint_after_token: int | None = None  # e.g. the id of `</think>`: the grammar applies after it
    ignore_eos: bool = False
    # never sampled: their logits are -inf before any draw (greedy, top-k/top-p, grammar-masked), so even the
    # argmax gives way to the next best token; the raw logprobs reported still include them
    banned_token_ids: list[int] = field(default_factory=list)
    # thinking budgets (engine/thinking.py): the output starts inside a thought that this token ends
    think_end_token: int | None = None
    max_thinking_tokens: int | None = None  # then the end token is forced
    min_thinking_tokens: int = 0  # an end token drawn earlier becomes thinking_extension_ids ("Wait")
    thinking_extension_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop)
        self.stop_token_ids = list(self.stop_token_ids)
        self.thinking_extension_ids = list(self.thinking_extension_ids)
        self.banned_token_ids = list(self.banned_token_ids)
        # tokens ThoughtBudget writes whatever was drawn: banning them would not keep them out
        forced = set(self.thinking_extension_ids) if self.min_thinking_tokens else set()
        if self.max_thinking_tokens is not None:
            forced.add(self.think_end_token)
        checks: list[tuple[bool, str]] = [
            (
                isinstance(self.max_tokens, int) and self.max_tokens >= 1,
                f"max_tokens must be an integer >= 1, got {self.max_tokens!r}",
            ),
            (
                _finite(self.temperature) and self.temperature >= 0,
                f"temperature must be >= 0, got {self.temperature!r}",
            ),
            (_finite(self.top_p) and 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p!r}"),
            (isinstance(self.top_k, int) and self.top_k >= 0, f"top_k must be an integer >= 0, got {self.top_k!r}"),
            (
                _finite(self.frequency_penalty) and -2 <= self.frequency_penalty <= 2,
                f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty!r}",
            ),
            (
                _finite(self.presence_penalty) and -2 <= self.presence_penalty <= 2,
                f"presence_penalty must be in [-2, 2], got {self.presence_penalty!r}",
            ),
            (self.seed is None or isinstance(self.seed, int), f"seed must be an integer, got {self.seed!r}"),
            (isinstance(self.n, int) and 1 <= self.n <= 128, f"n must be an integer in [1, 128], got {self.n!r}"),
            (
                isinstance(self.top_logprobs, int) and 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS,
                f"top_logprobs must be an integer in [0, {MAX_TOP_LOGPROBS}], got {self.top_logprobs!r}",
            ),
            (self.top_logprobs == 0 or self.logprobs, "top_logprobs needs logprobs=True"),
            (all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty strings"),
            (
                all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids),
                "stop_token_ids must be non-negative integers",
            ),
            (
                all(isinstance(t, int) and t >= 0 for t in self.banned_token_ids),
                "banned_token_ids must be non-negative integers",
            ),
            (
                not forced.intersection(t for t in self.banned_token_ids if isinstance(t, int)),
                "banned_token_ids must not hold a token the thinking budget forces (think_end_token, "
                "thinking_extension_ids)",
            ),
            (
                self.max_thinking_tokens is None
                or (isinstance(self.max_thinking_tokens, int) and self.max_thinking_tokens >= 0),
                f"max_thinking_tokens must be an integer >= 0, got {self.max_thinking_tokens!r}",
            ),
            (
                isinstance(self.min_thinking_tokens, int) and self.min_thinking_tokens >= 0,
                f"min_thinking_tokens must be an integer >= 0, got {self.min_thinking_tokens!r}",
            ),
            (
                self.think_end_token is not None
                or (self.max_thinking_tokens is None and self.min_thinking_tokens == 0),
                "max_thinking_tokens and min_thinking_tokens need think_end_token (the token that ends a thought)",
            ),
            (
                self.max_thinking_tokens is None or self.min_thinking_tokens <= self.max_thinking_tokens,
                f"min_thinking_tokens ({self.min_thinking_tokens}) exceeds max_thinking_tokens "
                f"({self.max_thinking_tokens})",
            ),
            (
                self.min_thinking_tokens == 0
                or (bool(self.thinking_extension_ids) and self.think_end_token not in self.thinking_extension_ids),
                "min_thinking_tokens needs thinking_extension_ids (the tokens that continue a thought, "
                "without the end token)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str | None = None  # the engine assigns a unique one when None
    # prompts share cached prefix blocks only with requests of the same salt (the server gives each API key
    # its own, so one key cannot learn from cache hits what another key's prompts begin with)
    cache_salt: str = ""


@dataclass
class TopLogprob:
    token: str
    token_id: int
    logprob: float
    bytes: list[int]


@dataclass
class TokenLogprob:
    """The model's log-probability of a chosen token (raw model distribution: before temperature,
    penalties and grammar masks, as the OpenAI/DeepSeek APIs report it) and its top alternatives."""

    token: str
    token_id: int
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob] = field(default_factory=list)


@dataclass
class Usage:
    prompt_tokens: int
    cached_tokens: int  # prompt tokens whose KV came from the prefix cache: a multiple of 64
    completion_tokens: int  # summed over the n samples

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class StreamEvent:
    """One step of one sample. `queued` events carry nothing but say "still waiting for a slot"."""

    index: int = 0
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | None while running
    stop_string: str | None = None  # with finish_reason "stop": the stop string that ended the sample, if any
    queued: bool = False
    usage: Usage | None = None  # set on the request's last event


@dataclass
class SampleOutput:
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None
    finish_reason: str


@dataclass
class Completion:
    """What `Engine.generate` returns for one request: its n samples and the shared usage."""

    request_id: str
    outputs: list[SampleOutput]
    usage: Usage

    # Shortcuts for the common n == 1 case.
    @property
    def text(self) -> str:
        return self.outputs[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids

    @property
    def finish_reason(self) -> str:
        return self.outputs[0].finish_reason

    @property
    def logprobs(self) -> list[TokenLogprob] | None:
        return self.outputs[0].logprobs
