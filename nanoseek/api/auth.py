"""API keys, per-key token quotas and request-rate limits, as one FastAPI dependency.

With keys configured, every API request needs one (`Authorization: Bearer KEY` for OpenAI-style clients,
`x-api-key: KEY` for Anthropic-style ones) or gets 401. A key with a token quota gets 402 once its quota
is spent; a key (or, with no keys configured, a client address) over its requests-per-minute gets 429
with `Retry-After`. Quota use is kept in memory for the life of the process.

Quotas cannot be overrun by concurrency or dodged by disconnecting: a generating request reserves
prompt + max_tokens at admission, with max_tokens clamped to what the key has left (`reserve`), and the
reservation is settled with what was really used when the request ends, however it ends (the EventSource's
close, which runs on completion, error, client disconnect and shutdown alike).

    gate = Gatekeeper(settings)
    app.post("/chat/completions", dependencies=[Depends(gate.require_key)])
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections import deque
from dataclasses import dataclass

from fastapi import Request

from nanoseek.api.errors import APIError
from nanoseek.api.settings import KeyPolicy, Settings

ANONYMOUS = KeyPolicy(key="")


class Gatekeeper:
    def __init__(self, settings: Settings) -> None:
        self.policies = settings.keys_by_value
        self.default_rpm = settings.requests_per_minute
        self.tokens_used: dict[str, int] = {}
        self.tokens_reserved: dict[str, int] = {}  # by requests still running
        self.share_prefix_cache = settings.share_prefix_cache
        self.store_rpm = settings.store_requests_per_minute
        self.recent_requests: dict[str, deque[float]] = {}
        self.lock = threading.Lock()

    @property
    def keys_required(self) -> bool:
        return bool(self.policies)

    def identify(self, request: Request) -> KeyPolicy:
        if not self.policies:
            return ANONYMOUS
        presented = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if presented is None and authorization.lower().startswith("bearer "):
            presented = authorization[7:].strip()
        if not presented:
            raise APIError(
                401,
                "Authentication Fails: no API key was given (send 'Authorization: Bearer KEY' or 'x-api-key: KEY').",
                code="invalid_api_key",
            )
        for key, policy in self.policies.items():
            if hmac.compare_digest(key.encode(), presented.encode()):  # constant time: no key guessing by timing
                return policy
        raise APIError(401, "Authentication Fails: the API key is not valid.", code="invalid_api_key")

    def check_rate(self, identity: str, limit: int | None) -> None:
        if not limit:
            return
        now = time.monotonic()
        with self.lock:
            window = self.recent_requests.setdefault(identity, deque())
            while window and now - window[0] >= 60.0:
                window.popleft()
            if len(window) >= limit:
                retry_after = max(1, math.ceil(60.0 - (now - window[0])))
                raise APIError(
                    429,
                    f"Rate Limit Reached: at most {limit} requests per minute; retry in {retry_after} s.",
                    code="rate_limit_exceeded",
                    headers={"Retry-After": str(retry_after)},
                )
            window.append(now)

    def remaining_tokens(self, policy: KeyPolicy) -> int | None:
        if policy.quota_tokens is None:
            return None
        used = self.tokens_used.get(policy.key, 0) + self.tokens_reserved.get(policy.key, 0)
        return max(0, policy.quota_tokens - used)

    def reserve(self, policy: KeyPolicy, prompt_tokens: int, max_tokens: int) -> tuple[Reservation, int]:
        """Reserve prompt + max_tokens of the key's quota; returns the reservation and max_tokens clamped to
        what remains. 402 when the prompt alone leaves no room for one answer token."""
        with self.lock:
            remaining = self.remaining_tokens(policy)
            if remaining is None:
                return Reservation(self, policy.key, 0), max_tokens
            if remaining <= prompt_tokens:
                raise APIError(
                    402,
                    f"Insufficient Balance: this API key has {remaining} tokens of its quota left, and the prompt "
                    f"alone has {prompt_tokens}.",
                    code="insufficient_balance",
                )
            max_tokens = min(max_tokens, remaining - prompt_tokens)
            tokens = prompt_tokens + max_tokens
            self.tokens_reserved[policy.key] = self.tokens_reserved.get(policy.key, 0) + tokens
        return Reservation(self, policy.key, tokens), max_tokens

    def cache_salt(self, policy: KeyPolicy) -> str:
        """The engine's prefix-cache salt for this key's requests: its owner id, unless sharing was asked for."""
        return "" if self.share_prefix_cache else policy.owner

    async def identify_only(self, request: Request) -> KeyPolicy:
        """Dependency for read-only routes (/models, /user/balance): a valid key, no quota or rate check."""
        policy = self.identify(request)
        request.state.key_policy = policy
        return policy

    async def require_key(self, request: Request) -> KeyPolicy:
        """Dependency for generating routes: a valid key, within its rate and with quota left."""
        policy = self.identify(request)
        identity = policy.key or (request.client.host if request.client else "unknown")
        self.check_rate(identity, policy.requests_per_minute or self.default_rpm)
        if self.remaining_tokens(policy) == 0:
            raise APIError(
                402, "Insufficient Balance: this API key has used all of its token quota.", code="insufficient_balance"
            )
        request.state.key_policy = policy
        return policy


@dataclass
class Reservation:
    """Quota held by one running request; `settle(used)` (once; later calls do nothing) charges what it used."""

    gate: Gatekeeper
    key: str
    tokens: int
    settled: bool = False

    def settle(self, used_tokens: int) -> None:
        if self.settled:
            return
        self.settled = True
        if not self.tokens:
            return
        with self.gate.lock:
            self.gate.tokens_reserved[self.key] -= self.tokens
            # a finished request never uses more than it reserved (max_tokens was clamped to the reservation)
            self.gate.tokens_used[self.key] = self.gate.tokens_used.get(self.key, 0) + min(used_tokens, self.tokens)


async def require_key(request: Request) -> KeyPolicy:
    """Route dependency: the app's Gatekeeper checks key, rate and quota (see Gatekeeper.require_key)."""
    return await request.app.state.gate.require_key(request)


async def identify_key(request: Request) -> KeyPolicy:
    """Route dependency for read-only routes: a valid key only."""
    return await request.app.state.gate.identify_only(request)


async def store_key(request: Request) -> KeyPolicy:
    """Route dependency for the web chat's conversation store: a valid key (the anonymous owner without keys),
    within the store's own request rate per key (the page saves a streaming answer several times a second,
    so the key's generation rate would not fit)."""
    gate: Gatekeeper = request.app.state.gate
    policy = gate.identify(request)
    gate.check_rate("store:" + (policy.key or (request.client.host if request.client else "unknown")), gate.store_rpm)
    return policy
