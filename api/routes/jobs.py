"""`/api/v1/jobs`: a turn's status, its event stream (replayable, resumable), cancel, and decisions on the tool
calls a waiting turn holds for a person (approvals)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from parley.shared import events
from parley.shared.errors import InvalidInput, NotFound
from parley.shared.schema import ApprovalDecision, JobPublic

from ..deps import Runtime, Tenant
from ..errors import documented
from ..runtime import WebRuntime
from ..streams import job_events, sse_response, stream_place
from .chat import SSE_DOC

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], responses=documented(401, 404, 422, 503))


def _record(rt: WebRuntime, tenant: str, job_id: str) -> dict[str, str]:
    record = rt.turns.job(tenant, job_id)
    if record is None:
        raise NotFound(f"job {job_id!r} not found")
    return record


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, rt: Runtime, tenant: Tenant) -> JobPublic:
    """A turn's status; `result` holds the `/chat` response once it finished."""
    return rt.turns.public(job_id, _record(rt, tenant, job_id))


@router.get("/{job_id}/events", response_class=StreamingResponse, responses={**SSE_DOC, **documented(429)})
async def job_event_stream(
    job_id: str,
    rt: Runtime,
    tenant: Tenant,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """The turn's whole event stream from its first event, or after `Last-Event-ID`."""
    if last_event_id is not None and not events.valid_id(last_event_id):
        raise InvalidInput("Last-Event-ID is not an event id of this API", field="Last-Event-ID")
    record = await run_in_threadpool(_record, rt, tenant, job_id)
    with stream_place(rt.hub, tenant) as place:  # a tenant past its stream limit gets 429
        return sse_response(place, job_events(rt.hub, tenant, job_id, last_event_id, rt.settings.sse_ping_s),
                            job_id, record["session_id"])  # fmt: skip


@router.post("/{job_id}/cancel", status_code=202)
def cancel_job(job_id: str, rt: Runtime, tenant: Tenant) -> JSONResponse:
    """Cancel a queued or running turn; its stream ends with `error` then `done`."""
    _record(rt, tenant, job_id)
    canceled = rt.turns.cancel(tenant, job_id)
    record = _record(rt, tenant, job_id)
    return JSONResponse({"job_id": job_id, "status": record["status"], "canceled": canceled}, status_code=202)


@router.post("/{job_id}/approvals", status_code=202, responses=documented(409))
def decide(job_id: str, body: ApprovalDecision, rt: Runtime, tenant: Tenant) -> JSONResponse:
    """Approve or deny a call the turn waits on (its `pending`); once every pending call is decided the turn
    goes on, on any worker: approved, the tool runs; denied, the model is told so, with `reason`.
    404 for an unknown job or call, 409 when the call was decided already or the turn does not wait."""
    outcome = rt.turns.decide(tenant, job_id, body.call_id, body.approve, body.reason or "")
    status = "queued" if outcome == "resumed" else "waiting"
    return JSONResponse({"job_id": job_id, "call_id": body.call_id, "approve": body.approve, "status": status},
                        status_code=202)  # fmt: skip
