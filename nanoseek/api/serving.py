"""What every generating endpoint shares: the served models, the engine event loop with keep-alives and
cancellation, SSE framing, and the mapping of API sampling fields onto the engine's SamplingParams.

    served = registry.resolve("deepseek-chat")                  # 400 for a model that does not exist
    source = await start_generation(http_request, policy, served, request)   # 402 no quota, 503 queue full
    try:
        async for event in source:                              # StreamEvent, or KEEPALIVE while waiting
            ...
    finally:
        source.close()                                          # cancels the engine request if unfinished
                                                                # and settles the key's quota reservation
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from fastapi import Request as HTTPRequest
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from nanoseek import DEFAULT_MODEL_DIR
from nanoseek.api.auth import Reservation
from nanoseek.api.errors import APIError, error_body
from nanoseek.api.settings import SERVED_MODEL_NAMES, KeyPolicy, Settings
from nanoseek.engine import Engine
from nanoseek.engine.params import EngineOverloaded, Request, SamplingParams, StreamEvent
from nanoseek.model.checkpoint import read_generation_config
from nanoseek.tokenizer.output_parser import ToolCallFormat, think_end_id, think_token_ids, tool_format_for_template
from nanoseek.tokenizer.tokenizer import Tokenizer

KEEPALIVE = None  # what EventSource yields while the request waits with nothing to say
log = logging.getLogger("nanoseek.api")


@dataclass
class ServedModel:
    """One engine behind one or more public model names."""

    engine: Engine
    tokenizer: Tokenizer
    tool_format: ToolCallFormat
    parse_reasoning: bool
    context_length: int
    fingerprint: str
    # sampling in thinking mode, where the request's temperature/top_p are ignored (as DeepSeek does): the
    # checkpoint's generation_config.json recommendation, else DeepSeek's defaults
    thinking_sampling: dict[str, float] = field(default_factory=lambda: {"temperature": 1.0, "top_p": 1.0})

    @property
    def think_end_id(self) -> int | None:
        return think_end_id(self.tokenizer)

    @property
    def think_token_ids(self) -> list[int]:
        return think_token_ids(self.tokenizer)

    @property
    def eos_ids(self) -> list[int]:
        return sorted(self.engine.eos_token_ids)


def serve_model(engine: Engine, settings: Settings, label: str, checkpoint: Path | None = None) -> ServedModel:
    tokenizer = engine.tokenizer
    generation_config = read_generation_config(checkpoint) if checkpoint is not None else {}
    thinking_sampling = {name: float(generation_config.get(name, 1.0)) for name in ("temperature", "top_p")}
    return ServedModel(
        engine=engine,
        tokenizer=tokenizer,
        thinking_sampling=thinking_sampling,
        tool_format=tool_format_for_template(tokenizer.chat_template, settings.tool_parser),
        parse_reasoning=settings.reasoning_parser != "none",
        context_length=engine.cache.slot_capacity,
        fingerprint="fp_" + hashlib.sha256(label.encode()).hexdigest()[:10],
    )


def checkpoint_names(path: Path | None) -> list[str]:
    """The names a checkpoint answers to besides DeepSeek's: its folder's name, and the path as given (what
    vLLM serves a model as, so vLLM clients send it). The embedded default model is `nanoseek`."""
    if path is None:
        return []
    from nanoseek.model.default import DEFAULT_ADAPTER_DIR

    if path.resolve() in (DEFAULT_MODEL_DIR.resolve(), DEFAULT_ADAPTER_DIR):
        return ["nanoseek"]
    return list(dict.fromkeys([path.name, str(path)]))


class ModelRegistry:
    """Public model names -> (served model, whether the name thinks by default). One checkpoint serves every
    name unless the configuration puts other checkpoints behind some names; the checkpoint's own names
    (`checkpoint_names`) do not think by default, as in vLLM."""

    def __init__(
        self, default: ServedModel, others: dict[str, ServedModel] | None = None, own_names: list[str] | None = None
    ) -> None:
        self.default = default
        own = {name: default for name in own_names or [] if name not in SERVED_MODEL_NAMES}
        self.names = {name: default for name in SERVED_MODEL_NAMES} | own | (others or {})
        # /models lists each name once, not a path spelled out
        self.listed = [name for name in self.names if "/" not in name]

    def resolve(self, name: str) -> tuple[ServedModel, bool]:
        if name not in self.names:
            raise APIError(
                400,
                f"Model Not Exist: {name!r}; available models: {', '.join(self.listed)}.",
                param="model",
                code="model_not_found",
            )
        return self.names[name], SERVED_MODEL_NAMES.get(name, False)

    def all_engines(self) -> list[Engine]:
        return list({id(s.engine): s.engine for s in self.names.values()}.values())


def completion_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if any(not s for s in stops):
        raise APIError(422, "stop sequences must be non-empty strings.", param="stop")
    return stops


def choose_max_tokens(requested: int | None, prompt_tokens: int, served: ServedModel, settings: Settings) -> int:
    room = served.context_length - prompt_tokens
    if room < 1:
        raise APIError(
            400,
            f"This model's maximum context length is {served.context_length} tokens; the prompt "
            f"has {prompt_tokens} tokens, leaving no room for an answer. Shorten the messages.",
            param="messages",
            code="context_length_exceeded",
        )
    if requested is not None and requested > settings.max_tokens_limit:
        raise APIError(
            422, f"max_tokens must be at most {settings.max_tokens_limit}, got {requested}.", param="max_tokens"
        )
    return min(requested or settings.max_tokens_default, room)


def engine_top_p(top_p: float | None) -> float:
    # DeepSeek accepts top_p in [0, 1]; 0 keeps only the most likely token, which the engine's (0, 1] range
    # expresses as any tiny positive value
    if top_p is None:
        return 1.0
    return max(top_p, 1e-9)


def make_sampling_params(**fields: Any) -> SamplingParams:
    try:
        return SamplingParams(**fields)
    except ValueError as exc:  # the engine's own check names the field
        raise APIError(422, str(exc)) from None


async def start_generation(
    http_request: HTTPRequest, policy: KeyPolicy, served: ServedModel, request: Request
) -> EventSource:
    """Admit a planned request: salt its prefix-cache lookups with the key's owner id, reserve its tokens from
    the key's quota (max_tokens clamped to what remains) and submit it to the engine."""
    state = http_request.app.state
    request.cache_salt = state.gate.cache_salt(policy)
    reservation, request.params.max_tokens = state.gate.reserve(
        policy, len(request.prompt_ids), request.params.max_tokens
    )
    try:
        return await EventSource.open(served.engine, request, state.settings.keepalive_seconds, reservation)
    except BaseException:
        reservation.settle(0)
        raise


class EventSource:
    """The engine's event stream for one request, with keep-alives while it waits and cancellation when
    the consumer goes away (client disconnect, shutdown): closing it cancels the request in the engine and
    charges the key for the tokens used so far."""

    def __init__(
        self,
        engine: Engine,
        request: Request,
        iterator: AsyncIterator[StreamEvent],
        first: StreamEvent,
        keepalive_seconds: float,
        reservation: Reservation,
    ) -> None:
        self.engine, self.request, self.iterator = engine, request, iterator
        self.first: StreamEvent | None = first
        self.keepalive_seconds = keepalive_seconds
        self.reservation = reservation
        self.tokens_used = len(request.prompt_ids)  # prompt + generated so far, until the usage says exactly
        self.pending: asyncio.Future[StreamEvent] | None = None
        self.finished = False
        self.error: APIError | None = None  # set by collect_into when the request failed mid-way

    @classmethod
    async def open(
        cls, engine: Engine, request: Request, keepalive_seconds: float, reservation: Reservation
    ) -> EventSource:
        if request.request_id is None:
            request.request_id = uuid.uuid4().hex
        try:
            iterator = engine.stream(request).__aiter__()
            first = await iterator.__anext__()
        except EngineOverloaded:
            raise APIError(
                503,
                "Server Overloaded: the request queue is full; retry after a brief wait.",
                headers={"Retry-After": "1"},
            ) from None
        except ValueError as exc:  # the engine refused the request itself (too long for its KV budget, ...)
            raise APIError(400, f"The engine cannot run this request: {exc}") from None
        source = cls(engine, request, iterator, first, keepalive_seconds, reservation)
        source.count(first)
        return source

    def count(self, event: StreamEvent) -> None:
        self.tokens_used += len(event.token_ids)
        if event.usage is not None:
            self.tokens_used = event.usage.prompt_tokens + event.usage.completion_tokens

    async def __aiter__(self) -> AsyncIterator[StreamEvent | None]:
        if self.first is not None:
            first, self.first = self.first, None
            yield first
            if first.usage is not None:  # the request's last event
                self.finished = True
                return
        while True:
            if self.pending is None:
                self.pending = asyncio.ensure_future(self.iterator.__anext__())
            done, _ = await asyncio.wait({self.pending}, timeout=self.keepalive_seconds)
            if not done:
                yield KEEPALIVE
                continue
            pending, self.pending = self.pending, None
            try:
                event = pending.result()
            except StopAsyncIteration:
                self.finished = True
                return
            except ValueError as exc:  # refused after it was queued (e.g. a grammar that does not compile)
                self.finished = True
                raise APIError(400, f"The engine cannot run this request: {exc}") from None
            except Exception:  # the engine failed while running it: the response has begun, so say so in it
                self.finished = True
                log.exception("engine failure on request %s", self.request.request_id)
                raise APIError(500, "The model failed while generating; the details are in the server log.") from None
            self.count(event)
            yield event
            if event.usage is not None:
                self.finished = True
                return

    async def collect_into(self, accumulator: Any) -> AsyncIterator[str]:
        """For non-streaming responses: feed every event to `accumulator.feed`, yielding the lines to send
        meanwhile — DeepSeek's blank-line keep-alive while the request waits (JSON parsers skip blank lines),
        or the JSON error body if it fails (then `self.error` is set). Always closes the source."""
        try:
            async for event in self:
                if event is KEEPALIVE or event.queued:
                    yield "\n"
                    continue
                accumulator.feed(event)
        except APIError as exc:
            self.error = exc
            yield error_json(exc)
        finally:
            self.close()

    def close(self) -> None:
        """Cancel the request in the engine unless it finished, and settle the key's reservation with the
        tokens used. Synchronous on purpose: it runs in the cleanup of a cancelled task (client gone), where
        any await would be cancelled as well."""
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
        if not self.finished:
            self.finished = True
            self.engine.cancel(self.request.request_id)
        self.reservation.settle(self.tokens_used)


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that always closes its body generator and its EventSource, so an abandoned stream
    cancels the engine request and settles its quota right away (also when the body never started),
    instead of at garbage collection."""

    def __init__(self, content: Any, source: EventSource, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.source = source

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[union-attr]
            self.source.close()


def sse(payload: BaseModel | dict[str, Any], exclude: set[str] | None = None) -> str:
    data = payload.model_dump(mode="json", exclude=exclude) if isinstance(payload, BaseModel) else payload
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def error_json(exc: APIError) -> str:
    """An error that happens after the 200 headers went out: the body says what went wrong."""
    return json.dumps(error_body(exc.status, exc.message, exc.param, exc.code))


SSE_KEEPALIVE = ": keep-alive\n\n"
SSE_DONE = "data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
