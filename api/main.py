"""The FastAPI app: `uvicorn parley.api.main:app`: Parley's own routes (`routes/`) and the protocol
adapters (`adapters/`), on one runtime (`runtime.py`), one error mapping (`errors.py`) and the middleware."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.exceptions import RedisError

from parley.shared import tracing
from parley.shared.logs import configure_logging
from parley.shared.settings import Settings, get_settings

from . import errors
from .adapters.a2a import routes as a2a_routes
from .adapters.mcp_server import routes as mcp_server_routes
from .adapters.openai import routes as openai_routes
from .adapters.responses import routes as responses_routes
from .adapters.seed import routes as seed_routes
from .metrics import Reporter
from .middleware import BodyGuard, HttpMetrics, RequestContext, TraceRequests
from .routes import agents, chat, feedback, jobs, mcp_servers, ops, sessions, tools, ui, webhooks
from .routes import schedules as schedule_routes
from .routes import usage as usage_routes
from .runtime import WebRuntime
from .shutdown import on_stop_signal

log = logging.getLogger("parley.api")

DESCRIPTION = """Parley hosts conversational agents with durable memory in Redis.

Send `Authorization: Bearer <key>` (a key from `PARLEY_API_KEYS`) on every `/api/v1/` route.
Errors are JSON: `{"error": {"code": "...", "message": "..."}}`."""


NATIVE_TELEMETRY_OFF = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
"""FastAPI's own OpenTelemetry (newer versions trace every request, its dependencies and endpoint, once a global
tracer provider exists): off, so the web's spans are the ones docs/observability.md lists (TraceRequests)."""


def _load_file_agents(rt: WebRuntime) -> None:
    if not rt.settings.agents_file:
        return
    try:
        count = rt.agents.load_file(rt.settings.agents_file)
        log.info("loaded %d agents from %s", count, rt.settings.agents_file)
    except RedisError as error:
        log.warning("could not load %s yet (Redis: %s); workers load it too", rt.settings.agents_file, error)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = WebRuntime.build(settings)
        app.state.rt = rt
        _load_file_agents(rt)
        await rt.hub.start()
        reporter = Reporter(rt)
        await reporter.start()
        on_stop_signal(rt.hub.drain)
        yield
        await reporter.stop()
        await rt.hub.stop()
        tracing.shutdown()  # the spans still buffered go out before the process ends

    native: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI).parameters:
        native["telemetry"] = NATIVE_TELEMETRY_OFF
    app = FastAPI(title="Parley", version="0.1.0", description=DESCRIPTION, lifespan=lifespan, **native)
    errors.install(app)

    # Added innermost first: the request id, then metrics, then the body guard, all before routing and auth.
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(HttpMetrics)
    app.add_middleware(RequestContext)
    if tracing.setup("parley-web"):  # OTEL_EXPORTER_OTLP_ENDPOINT set: a span per POST request, outermost
        app.add_middleware(TraceRequests)
    origins = [origin.strip() for origin in settings.cors_origins.split(",") if origin.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID", "X-Request-ID"],
            expose_headers=["Retry-After", "X-Request-ID"], max_age=600,
        )  # fmt: skip

    for module in (ops, agents, sessions, chat, jobs, seed_routes, openai_routes, responses_routes, mcp_server_routes,
                   a2a_routes, tools, mcp_servers, webhooks, feedback, ui):  # fmt: skip
        app.include_router(module.router)
    app.include_router(schedule_routes.router)
    app.include_router(usage_routes.router)
    return app


app = create_app()
