"""GET /health (liveness, queue depth, the decode step, whether the grammar tables are built) and GET /metrics
(Prometheus text format).

Metrics live in a registry of their own per app, so several apps in one process (tests) do not collide.
Engine gauges (queue length, running requests, KV-cache use) are read from `Engine.stats()` at scrape time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Receive, Scope, Send

from nanoseek.api.protocol import Health

router = APIRouter()


class EngineStatsCollector:
    """Exposes every numeric field of Engine.stats() as a gauge `nanoseek_engine_<field>`."""

    def __init__(self, engines: list[Any]) -> None:
        self.engines = engines

    def collect(self):
        values: dict[str, float] = {}
        for engine in self.engines:
            for name, value in engine.stats().items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    values[name] = values.get(name, 0.0) + float(value)
        for name, value in sorted(values.items()):
            yield GaugeMetricFamily(
                f"nanoseek_engine_{name}", f"Engine.stats()['{name}'] summed over engines", value=value
            )


class Metrics:
    def __init__(self, engines: list[Any]) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "nanoseek_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "nanoseek_http_request_seconds", "Time to the response headers", ["route"], registry=self.registry
        )
        self.generations = Counter(
            "nanoseek_generations", "Generation requests accepted by the engine", ["model"], registry=self.registry
        )
        self.prompt_tokens = Counter(
            "nanoseek_prompt_tokens", "Prompt tokens of finished requests", registry=self.registry
        )
        self.cached_tokens = Counter(
            "nanoseek_prompt_cache_hit_tokens", "Prompt tokens served from the cache", registry=self.registry
        )
        self.completion_tokens = Counter(
            "nanoseek_completion_tokens", "Generated tokens of finished requests", registry=self.registry
        )
        self.tool_grammars = Counter(
            "nanoseek_tool_grammar",
            "tool_choice auto requests by what became of their lazy tool-call grammar: applied or skipped_<reason>",
            ["outcome"],
            registry=self.registry,
        )
        self.registry.register(EngineStatsCollector(engines))

    def requests_started(self, model: str) -> None:
        self.generations.labels(model).inc()

    def tool_grammar(self, outcome: str) -> None:
        self.tool_grammars.labels(outcome).inc()

    def request_finished(self, model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> None:
        self.prompt_tokens.inc(prompt_tokens)
        self.completion_tokens.inc(completion_tokens)
        self.cached_tokens.inc(cached_tokens)


class MetricsMiddleware:
    """Counts every response by route template (not raw path, which would explode label cardinality)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_and_count(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                path = getattr(route, "path", "unmatched")
                self.metrics.http_requests.labels(scope["method"], path, str(message["status"])).inc()
                self.metrics.http_latency.labels(path).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, send_and_count)


@router.get("/health", response_model=Health, summary="Liveness and queue depth")
async def health(request: Request) -> Health:
    engine = request.app.state.registry.default.engine
    stats = engine.stats()
    # the checkpoint's folder name only: /health needs no key, and the server's file layout is nobody's business
    # (nor the reason a native step is unavailable, which may quote compiler output naming paths)
    model = Path(request.app.state.model_label).name
    return Health(
        model=model,
        queue=stats["waiting"],
        running=stats["running"],
        decode=engine.decode_path,
        grammars_ready=engine.grammars_ready,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
