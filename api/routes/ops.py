"""Operations: `/healthz`, `/readyz`, `/metrics` (public, no key)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from .. import metrics
from ..deps import Runtime

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(rt: Runtime) -> JSONResponse:
    """200 when Redis answers, else 503."""
    try:
        rt.clients.text.ping()
    except RedisError as error:
        return JSONResponse({"error": {"code": "not_ready", "message": f"Redis does not answer: {error}"}},
                            status_code=503)  # fmt: skip
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=PlainTextResponse)
async def get_metrics(rt: Runtime) -> PlainTextResponse:
    """Prometheus text format: the whole deployment's metrics (docs/observability.md lists them)."""
    body, content_type = await run_in_threadpool(metrics.render, rt, rt.hub.stream_count)
    return PlainTextResponse(body, media_type=content_type)
