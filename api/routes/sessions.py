"""`/api/v1/sessions`: conversations and their messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from parley.shared import memory
from parley.shared.errors import ModelFailed, NotFound, TimedOut
from parley.shared.models import MessagePage, SessionCreate, SessionPage, SessionPublic, SessionSummary
from parley.shared.sessions import MAX_PAGE, MESSAGE_ID_PREFIX
from parley.shared.turns import new_job_id

from .. import chatting
from ..deps import ApiKey, Runtime, Tenant
from ..errors import documented

router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"], responses=documented(401, 404, 422, 503, 409))


@router.post("", status_code=201, response_model=SessionPublic)
def create_session(body: SessionCreate, rt: Runtime, tenant: Tenant) -> SessionPublic:
    """Start a conversation with an agent (its first message becomes message 0)."""
    agent = rt.agents.get(tenant, body.agent) if body.agent else rt.agents.first(tenant)
    if agent is None:
        raise NotFound("no agent exists yet: create one with POST /api/v1/agents")
    session_id = rt.sessions.create(tenant, agent, body.session_id, body.metadata)
    return rt.sessions.get(tenant, session_id, {agent["id"]: agent["name"]})


@router.get("", response_model=SessionPage)
def list_sessions(
    rt: Runtime,
    tenant: Tenant,
    agent: Annotated[str | None, Query(description="Only this agent's sessions (id or name).")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> SessionPage:
    """The tenant's sessions, newest first, a page at a time."""
    agent_id = rt.agents.get(tenant, agent)["id"] if agent else None
    data, next_cursor = rt.sessions.page(tenant, agent_id=agent_id, limit=limit, cursor=cursor,
                                         agent_names=rt.agent_names(tenant))  # fmt: skip
    return SessionPage(data=data, next_cursor=next_cursor)


@router.get("/{session_id}", response_model=SessionPublic)
def get_session(session_id: str, rt: Runtime, tenant: Tenant) -> SessionPublic:
    """One session."""
    return rt.sessions.get(tenant, session_id, rt.agent_names(tenant))


@router.delete("/{session_id}", status_code=204)
async def delete_session(session_id: str, rt: Runtime, tenant: Tenant) -> Response:
    """Delete a session with all its messages."""
    await run_in_threadpool(rt.sessions.delete, tenant, session_id)
    return Response(status_code=204)


@router.get("/{session_id}/messages", response_model=MessagePage, response_model_exclude_none=False)
def list_messages(
    session_id: str,
    rt: Runtime,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    before: Annotated[str | None, Query(description="A message id; only messages before it.")] = None,
) -> MessagePage:
    """The newest `limit` messages (before `before`), oldest first; the first is the agent's first message."""
    data = rt.sessions.messages(tenant, session_id, limit=limit, before=before)
    older = data and data[0].id != f"{MESSAGE_ID_PREFIX}0"
    return MessagePage(data=data, next_before=data[0].id if older else None)


@router.post("/{session_id}/summary", response_model=SessionSummary, responses=documented(429, 502, 504))
async def summarise_session(session_id: str, rt: Runtime, tenant: Tenant, api_key: ApiKey) -> SessionSummary:
    """Summarise the conversation as the agent's instructions and response shape say (the seed's goal check).

    A worker runs it as a job; this waits for it up to PARLEY_SUMMARY_TIMEOUT_S (504 with the job id beyond).
    It counts as a turn against the chat routes' limits (429), and one runs per session at a time (409)."""
    agent_id = await run_in_threadpool(rt.sessions.bound_agent, tenant, session_id)
    if agent_id is None:
        raise NotFound(f"session {session_id!r} not found")
    job_id = new_job_id()
    await run_in_threadpool(memory.admit_report, rt.turns.queue, rt.settings, tenant, session_id, job_id, api_key)
    seen = await chatting.last_events(rt, tenant, job_id, rt.settings.summary_timeout_s,
                                      too_long="the summary is taking too long",
                                      stopping="this server is shutting down; ask again")  # fmt: skip
    response, error = seen.get("response"), seen.get("error", {})
    if response is not None:
        return SessionSummary(session_id=session_id, agent_id=agent_id, summary=response["structured"], job_id=job_id)
    if error.get("code") == "model_timeout":
        raise TimedOut(error.get("message") or "the model timed out", job_id=job_id)
    raise ModelFailed(error.get("message") or "the summary failed", job_id=job_id)
