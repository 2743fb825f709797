"""Operations: `/healthz`, `/readyz` (public), `/metrics` (public unless PARLEY_METRICS_TOKEN is set)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from parley.shared.errors import Unauthorized

from .. import metrics
from ..deps import Credentials, Runtime
from ..errors import documented

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


def check_metrics_token(expected: str | None, credentials: Credentials) -> None:
    """With PARLEY_METRICS_TOKEN set, 401 unless the request sends it as a Bearer token (constant time)."""
    if expected is None:
        return
    sent = credentials.credentials if credentials else ""
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Unauthorized("/metrics needs `Authorization: Bearer <PARLEY_METRICS_TOKEN>`")


@router.get("/metrics", response_class=PlainTextResponse, responses=documented(401))
async def get_metrics(rt: Runtime, credentials: Credentials) -> PlainTextResponse:
    """Prometheus text format: the whole deployment's metrics (docs/observability.md lists them); with
    PARLEY_METRICS_TOKEN set, only for `Authorization: Bearer <that token>`."""
    check_metrics_token(rt.settings.metrics_token, credentials)
    body, content_type = await run_in_threadpool(metrics.render, rt, rt.hub.stream_count)
    return PlainTextResponse(body, media_type=content_type)
