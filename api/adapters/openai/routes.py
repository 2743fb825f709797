"""The OpenAI-compatible routes (see the package's docstring): parse, call the turn service, shape the
answer with `translate.py`."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from parley.shared.schema import SESSION_ID_PATTERN
from parley.shared.store.turns import Accepted

from ...deps import ApiKey, Runtime, Tenant
from ...errors import documented
from ...runtime import WebRuntime
from ...service import turns
from ...streams import SSE_HEADERS, PlacedStreamingResponse, chat_events, stream_place
from . import translate
from .translate import ChatCompletionRequest

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"],
                   responses=documented(400, 401, 404, 409, 413, 422, 429, 502, 503, 504))  # fmt: skip


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, rt: Runtime, tenant: Tenant, key: ApiKey,
    x_parley_session: Annotated[str | None, Header(alias="X-Parley-Session", pattern=SESSION_ID_PATTERN)] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse | StreamingResponse:  # fmt: skip
    """Chat with an agent in OpenAI's format (`model` = the agent's name or id)."""
    turn = translate.read(body, x_parley_session, rt.settings)
    if body.stream:
        with stream_place(rt.hub, tenant) as place:  # a tenant past its stream limit gets 429, and nothing is queued
            accepted = await _accept(rt, tenant, key, turn, idempotency_key)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            # OpenAI clients cannot resume a stream: it goes on through a drain while uvicorn lets it.
            events = chat_events(rt.hub, tenant, accepted.job_id, rt.settings.sse_ping_s, stop_on_drain=False)
            chunks = translate.chunks(events, accepted.job_id, int(time.time()), body.model, include_usage)
            headers = {**SSE_HEADERS, "X-Parley-Job": accepted.job_id, "X-Parley-Session": accepted.session_id}
            return PlacedStreamingResponse(place, chunks, media_type="text/event-stream", headers=headers)
    accepted = await _accept(rt, tenant, key, turn, idempotency_key)
    created = int(time.time())
    result = await turns.wait_for_result(rt, tenant, accepted)
    return JSONResponse(translate.completion(result, body.model, created),
                        headers={"X-Parley-Session": result.session_id, "X-Parley-Job": accepted.job_id})  # fmt: skip


async def _accept(rt: WebRuntime, tenant: str, key: str, turn: translate.Turn,
                  idempotency_key: str | None) -> Accepted:  # fmt: skip
    return await turns.accept(rt, tenant, turn.request, idempotency_key, key, history=turn.history,
                              client_tools=turn.client_tools)  # fmt: skip


@router.get("/models")
async def list_models(rt: Runtime, tenant: Tenant) -> dict[str, Any]:
    """The agents this key can see, as OpenAI models (`id` is the agent's name)."""
    return translate.models(await run_in_threadpool(rt.agents.visible, tenant))
