"""The FastAPI application: DeepSeek-compatible routes at `/`, `/v1` and `/beta`, the Anthropic-compatible
`/anthropic/v1/messages`, health and metrics, and the web chat.

    from nanoseek.api.app import create_app
    from nanoseek.api.settings import Settings
    app = create_app(Settings(model=Path("ckpt")))          # loads the engine from settings.model
    app = create_app(settings, engine=my_engine)             # or serves an engine built elsewhere (tests, eval)

The app owns an engine it built (shut down with the app) but not one it was given.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import nanoseek
from nanoseek import DEFAULT_MODEL_DIR
from nanoseek.api import anthropic, balance, chat, completions, health, models, responses
from nanoseek.api.access_log import AccessLogMiddleware
from nanoseek.api.auth import Gatekeeper, identify_key
from nanoseek.api.errors import error_body, install_error_handlers
from nanoseek.api.health import Metrics, MetricsMiddleware
from nanoseek.api.serving import ModelRegistry, checkpoint_names, serve_model
from nanoseek.api.settings import Settings, SettingsError
from nanoseek.engine import Engine
from nanoseek.model.checkpoint import CheckpointError

log = logging.getLogger("nanoseek.api")
OPENAI_PREFIXES = ("", "/v1", "/beta")


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for a body over the limit, checked on Content-Length and again while the body streams in
    (chunked uploads carry no length), so a huge body is never held in memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.reject(scope, send)
            return
        received = 0
        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise BodyTooLarge()
            return message

        async def replacing_send(message: Message) -> None:
            # the framework answers a failed body read itself (as a 400); say what really happened instead
            if not too_large:
                await send(message)
            elif message["type"] == "http.response.start":
                await self.reject(scope, send)

        try:
            await self.app(scope, counting_receive, replacing_send)
        except BodyTooLarge:
            await self.reject(scope, send)

    async def reject(self, scope: Scope, send: Send) -> None:
        body = json.dumps(
            error_body(
                413,
                f"Request body is larger than the server's limit of {self.max_bytes} bytes.",
                anthropic=scope["path"].startswith("/anthropic"),
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def resolve_model_path(settings: Settings) -> Path:
    if settings.model is not None:
        return settings.model
    from nanoseek.model.default import default_adapter_path

    adapter = default_adapter_path()
    if adapter is not None:
        return adapter
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        raise SettingsError(
            f"the embedded default model is missing ({DEFAULT_MODEL_DIR}/config.json not found): "
            "this install ships no trained model yet, so pass --model PATH (or NANOSEEK_MODEL) "
            "with a checkpoint directory"
        )
    return DEFAULT_MODEL_DIR


def load_engine(settings: Settings, path: Path) -> Engine:
    try:
        dtype = None if settings.dtype == "auto" else settings.dtype
        engine = Engine.from_checkpoint(
            str(path),
            dtype=dtype,
            kv_budget_tokens=settings.kv_budget_tokens,
            max_batch=settings.max_batch,
            max_queue=settings.max_queue,
            prefill_chunk=settings.prefill_chunk,
            keepalive_interval=settings.keepalive_seconds,
            compile_decode=settings.compile_decode,
            native_decode=settings.native_decode,
            cache_dir=settings.cache_dir,
            disk_cache_bytes=int(settings.disk_cache_gb * 2**30),
        )
        if settings.compile_decode:  # compile before serving, not inside the first request
            log.info("compiled the decode step of %s in %.0f s", path, engine.warm_up())
        return engine
    except CheckpointError as exc:
        raise SettingsError(f"cannot load the model at {path}: {exc}") from None


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    owned_engines: list[Engine] = []  # engines this app loaded (and so shuts down); a given engine stays the caller's
    if engine is None:
        path = resolve_model_path(settings)
        engine = load_engine(settings, path)
        owned_engines.append(engine)
        label, checkpoint = str(path), path
    else:
        label, checkpoint = str(settings.model or "engine"), settings.model
    engines_by_path: dict[Path, Engine] = {}
    for path in settings.model_map.values():
        if path not in engines_by_path:
            engines_by_path[path] = load_engine(settings, path)
            owned_engines.append(engines_by_path[path])
    others = {
        name: serve_model(engines_by_path[path], settings, str(path), path) for name, path in settings.model_map.items()
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for owned in owned_engines:  # uvicorn has already drained in-flight requests when this runs
            owned.shutdown()

    app = FastAPI(
        title="nanoseek",
        version=nanoseek.__version__,
        lifespan=lifespan,
        description="DeepSeek-compatible API (chat, reasoner, FIM, JSON Output, tool calls) and an "
        "Anthropic-compatible messages endpoint, served by the nanoseek engine.",
    )
    app.state.settings = settings
    app.state.registry = ModelRegistry(
        serve_model(engine, settings, label, checkpoint), others, checkpoint_names(checkpoint)
    )
    app.state.gate = Gatekeeper(settings)
    app.state.metrics = Metrics(app.state.registry.all_engines())
    app.state.model_label = label
    install_error_handlers(app)
    for prefix in OPENAI_PREFIXES:
        for module in (chat, completions, responses, models, balance):
            app.include_router(module.router, prefix=prefix, include_in_schema=prefix == "")
    app.include_router(anthropic.router, prefix="/anthropic")
    app.include_router(health.router)
    if settings.web:
        from nanoseek.web.routes import mount

        mount(app, db_path=settings.db_path, auth=identify_key if app.state.gate.keys_required else None)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLogMiddleware)  # outermost: a refused body is logged too
    return app
