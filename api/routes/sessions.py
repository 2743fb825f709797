"""`/api/v1/sessions`: conversations and their messages."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from parley.shared.schema import ForkRequest, MessagePage, SessionCreate, SessionPage, SessionPublic, SessionSummary
from parley.shared.store.sessions import MAX_PAGE, MESSAGE_ID_PREFIX

from ..deps import ApiKey, Runtime, Tenant
from ..errors import documented
from ..service import sessions

router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"], responses=documented(401, 404, 422, 503, 409))


@router.post("", status_code=201, response_model=SessionPublic)
def create_session(body: SessionCreate, rt: Runtime, tenant: Tenant) -> SessionPublic:
    """Start a conversation with an agent (its first message becomes message 0)."""
    return sessions.start(rt, tenant, body.agent or None, body.session_id, body.metadata)


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
    include: Annotated[Literal["replaced"] | None, Query(description="`replaced`: also the answers a regenerate "
                                                         "replaced (each with `replaced: true`).")] = None,
) -> MessagePage:
    """The newest `limit` messages (before `before`), oldest first; the first is the agent's first message.
    Answers a regenerate replaced are left out (their ids too) unless `include=replaced`."""
    data, start = rt.sessions.messages_page(tenant, session_id, limit=limit, before=before,
                                            include_replaced=include == "replaced")  # fmt: skip
    return MessagePage(data=data, next_before=f"{MESSAGE_ID_PREFIX}{start}" if start > 0 else None)


@router.post("/{session_id}/fork", status_code=201, response_model=SessionPublic, responses=documented(413))
def fork_session(session_id: str, body: ForkRequest, rt: Runtime, tenant: Tenant) -> SessionPublic:
    """A new session of the same agent holding copies of the messages up to `at`, with the memory of those only."""
    return sessions.fork(rt, tenant, session_id, body.at, body.session_id)


@router.post("/{session_id}/summary", response_model=SessionSummary, responses=documented(429, 502, 504))
async def summarise_session(session_id: str, rt: Runtime, tenant: Tenant, api_key: ApiKey) -> SessionSummary:
    """Summarise the conversation as the agent's instructions and response shape say (the seed's goal check).

    A worker runs it as a job; this waits for it up to PARLEY_SUMMARY_TIMEOUT_S (504 with the job id beyond).
    It counts as a turn against the chat routes' limits (429), and one runs per session at a time (409)."""
    return await sessions.summarise(rt, tenant, session_id, api_key)
