"""The FastAPI application: DeepSeek-compatible routes at `/`, `/v1` and `/beta`, the Anthropic-compatible
`/anthropic/v1/messages`, health and metrics, and the web chat.

    from nanoseek.api.app import create_app
    from nanoseek.api.settings import Settings
    app = create_app(Settings(model=Path("ckpt")))          # loads the engine from settings.model
    app = create_app(settings, engine=my_engine)             # or serves an engine built elsewhere (tests, eval)

The app owns an engine it built (shut down with the app) but not one it was given.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

import nanoseek
from nanoseek import DEFAULT_MODEL_DIR
from nanoseek.api import anthropic, balance, chat, completions, health, models, responses
from nanoseek.api.access_log import AccessLogMiddleware
from nanoseek.api.auth import Gatekeeper, store_key
from nanoseek.api.errors import install_error_handlers
from nanoseek.api.guard import RequestGuardMiddleware
from nanoseek.api.health import Metrics, MetricsMiddleware
from nanoseek.api.planning import Planner
from nanoseek.api.serving import ModelRegistry, checkpoint_names, serve_model
from nanoseek.api.settings import Settings, SettingsError
from nanoseek.engine import Engine
from nanoseek.engine.native import NativeUnavailable
from nanoseek.model.checkpoint import CheckpointError

if TYPE_CHECKING:
    from nanoseek.engine.remote import RemoteEngine

log = logging.getLogger("nanoseek.api")
OPENAI_PREFIXES = ("", "/v1", "/beta")


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
    if settings.backend == "vllm":
        return load_remote_engine(settings, path)
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
            kv_cache_dtype=settings.kv_cache_dtype,
        )
        if settings.compile_decode:  # compile before serving, not inside the first request
            log.info("compiled the decode step of %s in %.0f s", path, engine.warm_up())
        log.info("built the grammar tables of %s in %.1f s", path, engine.prepare_grammars())
        return engine
    except CheckpointError as exc:
        raise SettingsError(f"cannot load the model at {path}: {exc}") from None
    except NativeUnavailable as exc:  # NANOSEEK_REQUIRE_NATIVE=1 and the native step does not apply
        raise SettingsError(f"cannot serve {path}: {exc}") from None


def load_remote_engine(settings: Settings, path: Path) -> RemoteEngine:
    """The vLLM backend: connect to `backend_url`, or start vLLM's server on the checkpoint's Hugging Face folder
    (a GGUF file or a named model is converted to one first, once, under the cache directory)."""
    from nanoseek.engine.remote import RemoteEngine, RemoteEngineError

    try:
        folder = hf_folder(path, settings.cache_dir.parent / "hf-folders")
        if settings.backend_url is not None:
            return RemoteEngine(settings.backend_url, folder, max_queue=settings.max_queue)
        extra = shlex.split(settings.vllm_args)
        if settings.dtype != "auto" and "--dtype" not in extra:
            extra += ["--dtype", settings.dtype]
        return RemoteEngine.launch_vllm(
            folder, python=settings.vllm_python, extra_args=extra, max_queue=settings.max_queue
        )
    except (CheckpointError, RemoteEngineError, OSError) as exc:
        raise SettingsError(f"cannot serve {path} through vLLM: {exc}") from None


def hf_folder(path: Path, cache: Path) -> Path:
    """`path` itself when it is a Hugging Face model folder (what vLLM loads), else its conversion under `cache`:
    a GGUF file or a named model, or a LoRA adapter folder (the default model is one), merged into its base.
    The conversion is keyed by the source's path and modification times, so a retrained adapter is converted
    again."""
    from nanoseek.model.named import resolve_model

    resolved = resolve_model(str(path))
    if (resolved / "config.json").is_file() and not (resolved / "adapter_config.json").is_file():
        return resolved
    sources = sorted(resolved.iterdir()) if resolved.is_dir() else [resolved]
    stamp = f"{resolved.resolve()}:" + ",".join(str(f.stat().st_mtime_ns) for f in sources if f.is_file())
    out = cache / f"{resolved.stem}-{hashlib.sha256(stamp.encode()).hexdigest()[:12]}"
    if not (out / "config.json").is_file():
        from nanoseek.model.convert import convert

        log.info("converting %s to a Hugging Face folder for vLLM: %s", resolved, out)
        convert(str(resolved), out, "bf16")
    return out


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
        app.state.planner.shutdown()
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
    app.state.planner = Planner(settings.plan_seconds, settings.grammar_seconds)
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

        mount(
            app,
            auth=store_key,
            db_path=settings.db_path,
            max_conversations=settings.store_conversations_per_key,
            max_chars=settings.store_chars_per_key,
        )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestGuardMiddleware, settings=settings)
    app.add_middleware(AccessLogMiddleware)  # outermost: a refused request is logged too
    return app
