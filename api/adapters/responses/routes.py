"""The protocol's routes: parse, call the turn service (api/service/), shape the answer (translate.py, fold.py).
A response is a turn: `resp_<hex>` is job `job_<hex>`; its stream, object and input items are read from the job's
record and event log, so any web serves any response."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, StreamingResponse
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from parley.shared.errors import NotFound, NotReady, ParleyError
from parley.shared.events import EventType, decode
from parley.shared.store.turns import Accepted

from ...deps import ApiKey, Runtime, Tenant
from ...errors import documented
from ...runtime import WebRuntime
from ...service import turns
from ...streams import SSE_HEADERS, Draining, PlacedStreamingResponse, chat_events, stream_place
from . import conversations, items, translate
from .errors import OpenAIErrorRoute
from .fold import Fold, fold
from .translate import ResponseCreate

ENDED = ("completed", "failed", "cancelled", "incomplete")
"""A response's statuses once it ended: its stream closes with `data: [DONE]` (a stream cut short does not)."""

router = APIRouter(prefix="/v1", tags=["OpenAI Responses"], route_class=OpenAIErrorRoute,
                   responses=documented(400, 401, 404, 409, 413, 422, 429, 503, 504))  # fmt: skip
router.include_router(conversations.router)


async def _record(rt: WebRuntime, tenant: str, job_id: str) -> dict[str, str]:
    record = await run_in_threadpool(rt.turns.job, tenant, job_id)
    if record is None:
        raise NotFound(f"response {translate.response_id(job_id)!r} not found")
    return record


async def _previous_session(rt: WebRuntime, tenant: str, previous: str) -> str:
    """The session a previous response belongs to: 404 when it is unknown, 400 when it kept no session."""
    try:
        record = await _record(rt, tenant, translate.job_id_of(previous))
    except NotFound:
        raise NotFound(f"previous response {previous[:80]!r} not found", field="previous_response_id") from None
    if "history" in record:
        raise ParleyError("the previous response was not stored in a conversation (store false, or its input "
                          "brought the whole conversation): send the whole conversation as input",
                          field="previous_response_id")  # fmt: skip
    return record["session_id"]


async def _folded(rt: WebRuntime, tenant: str, job_id: str, record: dict[str, str] | None = None) -> Fold:
    record = record or await _record(rt, tenant, job_id)
    log = await rt.hub.backlog(tenant, job_id, None)
    joined = _joined(log)
    if joined is not None:  # its message joined a running turn: that turn's events from there answer it
        log = [*log[:-1], *await rt.hub.backlog(tenant, joined[0], joined[1])]
    return fold(job_id, record, log)


def _joined(log: list[tuple[str, str]]) -> tuple[str, str] | None:
    """(job id, event id) where the turn a steer joined goes on, when this log is a steer's that did."""
    if len(log) < 2:
        return None
    event = decode(log[-2][1])
    if event["type"] == EventType.STEERED and event.get("job_id") and event.get("at"):
        return str(event["job_id"]), str(event["at"])
    return None


async def _sse(rt: WebRuntime, tenant: str, job_id: str, record: dict[str, str],
               starting_after: int) -> AsyncIterator[str]:  # fmt: skip
    """The response's streaming events after `starting_after`, folded from the job's whole log, until it ends."""
    folded = Fold(job_id, record)
    events = chat_events(rt.hub, tenant, job_id, rt.settings.sse_ping_s, stop_on_drain=False)
    try:
        async for event_id, payload in events:
            if not payload:
                yield ": ping\n\n"
                continue
            for out in folded.feed(event_id, decode(payload)):
                if out["sequence_number"] > starting_after:
                    yield f"event: {out['type']}\ndata: {json.dumps(out, ensure_ascii=False)}\n\n"
        if folded.response["status"] in ENDED:
            yield "data: [DONE]\n\n"  # Open Responses' terminal event (the OpenAI SDK stops at it too)
    except (RedisError, NotReady, Draining):
        yield ": the event store is unavailable; resume with starting_after\n\n"
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def _stream(rt: WebRuntime, tenant: str, job_id: str, record: dict[str, str], starting_after: int,
            place: Any) -> StreamingResponse:  # fmt: skip
    headers = {**SSE_HEADERS, "X-Parley-Job": job_id, "X-Parley-Session": record.get("session_id", "")}
    return PlacedStreamingResponse(place, _sse(rt, tenant, job_id, record, starting_after),
                                   media_type="text/event-stream", headers=headers)  # fmt: skip


async def _accept(rt: WebRuntime, tenant: str, key: str, body: ResponseCreate,
                  idempotency_key: str | None) -> Accepted:  # fmt: skip
    session_id = translate.conversation_id(body)
    if body.previous_response_id is not None:
        session_id = await _previous_session(rt, tenant, body.previous_response_id)
    turn = translate.read(body, rt.settings, session_id)
    return await turns.accept(rt, tenant, turn.request, idempotency_key, key, history=turn.history,
                              client_tools=turn.client_tools, this_turn=turn.this_turn)  # fmt: skip


@router.post("/responses", response_model=None)
async def create_response(
    body: ResponseCreate, rt: Runtime, tenant: Tenant, key: ApiKey,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse | StreamingResponse:  # fmt: skip
    """Create a response: a turn of the agent `model` names (streamed, in the background, or waited for)."""
    if body.stream:
        with stream_place(rt.hub, tenant) as place:  # past the tenant's stream limit: 429, and nothing is queued
            accepted = await _accept(rt, tenant, key, body, idempotency_key)
            record = await _record(rt, tenant, accepted.job_id)
            return _stream(rt, tenant, accepted.job_id, record, -1, place)
    accepted = await _accept(rt, tenant, key, body, idempotency_key)
    if not body.background:
        await turns.answering_events(rt, tenant, accepted.job_id, rt.settings.chat_timeout_s,
                                     too_long="the response is taking too long; retrieve it later",
                                     stopping="this server is shutting down; the response goes on: retrieve it later",
                                     response_id=translate.response_id(accepted.job_id))  # fmt: skip
    folded = await _folded(rt, tenant, accepted.job_id)
    headers = {"X-Parley-Job": accepted.job_id, "X-Parley-Session": accepted.session_id}
    return JSONResponse(folded.snapshot(), headers=headers)


@router.get("/responses/{response_id}", response_model=None)
async def get_response(
    response_id: str, rt: Runtime, tenant: Tenant, stream: bool = False,
    starting_after: Annotated[int, Query(ge=-1, le=2**53)] = -1, include_obfuscation: bool | None = None,
) -> JSONResponse | StreamingResponse:  # fmt: skip
    """The response as it is now; with `stream=true`, its streaming events after `starting_after` (resumable)."""
    job_id = translate.job_id_of(response_id)
    if stream:
        with stream_place(rt.hub, tenant) as place:
            record = await _record(rt, tenant, job_id)
            return _stream(rt, tenant, job_id, record, starting_after, place)
    return JSONResponse((await _folded(rt, tenant, job_id)).snapshot())


@router.post("/responses/{response_id}/cancel")
async def cancel_response(response_id: str, rt: Runtime, tenant: Tenant) -> dict[str, Any]:
    """Cancel a queued, running or waiting response; one that has ended is answered as it is."""
    job_id = translate.job_id_of(response_id)
    record = await _record(rt, tenant, job_id)
    await run_in_threadpool(rt.turns.cancel, tenant, job_id)
    return (await _folded(rt, tenant, job_id, record)).snapshot()


@router.delete("/responses/{response_id}")
async def delete_response(response_id: str, rt: Runtime, tenant: Tenant) -> dict[str, Any]:
    """Forget an ended response (its job and events; what it added to its conversation stays). 409 while it runs."""
    job_id = translate.job_id_of(response_id)
    try:
        await run_in_threadpool(rt.turns.forget, tenant, job_id)
    except NotFound:
        raise NotFound(f"response {response_id!r} not found") from None
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.get("/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str, rt: Runtime, tenant: Tenant, limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc", after: str | None = None,
    include: Annotated[list[str] | None, Query()] = None,
) -> dict[str, Any]:  # fmt: skip
    """What the response was given: the conversation it brought, its user message, its tool results."""
    job_id = translate.job_id_of(response_id)
    record = await _record(rt, tenant, job_id)
    return items.page(items.input_items(job_id, record), limit=limit, order=order, after=after)
