"""`/api/v1/chat`, `/chat/stream` and `/chat/jobs`: one turn, waited for, streamed, or queued."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, StreamingResponse

from parley.shared.schema import ChatRequest, ChatResponse, JobAccepted

from ..deps import ApiKey, Runtime, Tenant
from ..errors import documented
from ..service import turns
from ..streams import chat_events, sse_response, stream_place

router = APIRouter(
    prefix="/api/v1/chat", tags=["chat"], responses=documented(400, 401, 404, 409, 413, 422, 429, 502, 503, 504)
)

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="Retry-safe key: the same key within a day returns the first job."),
]
SSE_EXAMPLE = 'id: 1732540000000-0\ndata: {"type": "session", ...}\n\n'
SSE_DOC: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {"example": SSE_EXAMPLE}},
                 "description": "The turn's events, ending with `done`."}}  # fmt: skip


@router.post("", response_model=ChatResponse)
async def chat(body: ChatRequest, rt: Runtime, tenant: Tenant, key: ApiKey,
               idempotency_key: IdempotencyKey = None) -> ChatResponse:  # fmt: skip
    """Send a message and wait for the answer (504 with `job_id` if it takes too long)."""
    accepted = await turns.accept(rt, tenant, body, idempotency_key, key)
    return await turns.wait_for_result(rt, tenant, accepted)


@router.post("/stream", response_class=StreamingResponse, responses=SSE_DOC)
async def chat_stream(body: ChatRequest, rt: Runtime, tenant: Tenant, key: ApiKey,
                      idempotency_key: IdempotencyKey = None) -> StreamingResponse:  # fmt: skip
    """Send a message and receive the turn's events as Server-Sent Events (a steer that joined a running turn:
    that turn's events from where it joined)."""
    with stream_place(rt.hub, tenant) as place:  # a tenant past its stream limit gets 429, and nothing is queued
        accepted = await turns.accept(rt, tenant, body, idempotency_key, key)
        return sse_response(place, chat_events(rt.hub, tenant, accepted.job_id, rt.settings.sse_ping_s),
                            accepted.job_id, accepted.session_id)  # fmt: skip


@router.post("/jobs", status_code=202, response_model=JobAccepted)
async def chat_job(body: ChatRequest, rt: Runtime, tenant: Tenant, key: ApiKey,
                   idempotency_key: IdempotencyKey = None) -> JSONResponse:  # fmt: skip
    """Queue a turn and return at once; poll `status_url` or stream `events_url`."""
    accepted = await turns.accept(rt, tenant, body, idempotency_key, key)
    payload = JobAccepted(
        job_id=accepted.job_id, session_id=accepted.session_id, agent_id=accepted.agent_id,
        status=accepted.status,  # type: ignore[arg-type]
        status_url=f"/api/v1/jobs/{accepted.job_id}", events_url=f"/api/v1/jobs/{accepted.job_id}/events",
        steering=accepted.steering,
    )  # fmt: skip
    return JSONResponse(payload.model_dump(), status_code=202)
