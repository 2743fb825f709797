"""Sessions as every protocol sees them: starting one, checking one exists, and its summary (a job a
worker runs, admitted and waited for like a turn)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from parley.shared.errors import NotFound, turn_error
from parley.shared.events import EventType
from parley.shared.schema import SessionPublic, SessionSummary
from parley.shared.store import memory
from parley.shared.store.turns import new_job_id

from ..runtime import WebRuntime
from .turns import last_events


def start(rt: WebRuntime, tenant: str, agent: str | None, session_id: str | None,
          metadata: dict[str, Any]) -> SessionPublic:  # fmt: skip
    """A new session with `agent` (id or name, 404 when unknown; the tenant's first agent when None), its
    first message stored as message 0 (blocking: call it from a sync route or a thread)."""
    found = rt.agents.get(tenant, agent) if agent is not None else rt.agents.first(tenant)
    if found is None:
        raise NotFound("no agent exists yet: create one with POST /api/v1/agents")
    created = rt.sessions.create(tenant, found, session_id, metadata)
    return rt.sessions.get(tenant, created, {found["id"]: found["name"]})


async def agent_of(rt: WebRuntime, tenant: str, session_id: str, missing: str) -> str:
    """The id of the agent `session_id` belongs to; NotFound(`missing`) when there is no such session."""
    agent_id = await run_in_threadpool(rt.sessions.bound_agent, tenant, session_id)
    if agent_id is None:
        raise NotFound(missing)
    return agent_id


async def summarise(rt: WebRuntime, tenant: str, session_id: str, api_key: str) -> SessionSummary:
    """Admit a summary job (a turn for the chat limits: 429; one per session at a time: 409), wait for it
    up to PARLEY_SUMMARY_TIMEOUT_S (504 with its job id beyond) and answer with its structured result."""
    agent_id = await agent_of(rt, tenant, session_id, f"session {session_id!r} not found")
    job_id = new_job_id()
    await run_in_threadpool(memory.admit_report, rt.turns.queue, rt.settings, tenant, session_id, job_id, api_key)
    seen = await last_events(rt, tenant, job_id, rt.settings.summary_timeout_s,
                             too_long="the summary is taking too long",
                             stopping="this server is shutting down; ask again")  # fmt: skip
    response, error = seen.get(EventType.RESPONSE), seen.get(EventType.ERROR, {})
    if response is not None:
        return SessionSummary(session_id=session_id, agent_id=agent_id, summary=response["structured"], job_id=job_id)
    raise turn_error(error.get("code"), error.get("message") or "the summary failed", job_id=job_id)


def fork(rt: WebRuntime, tenant: str, session_id: str, at: str, new_id: str | None) -> SessionPublic:
    """A new session of the source's agent holding its messages up to `at` (FORK_SESSION: 404 for an unknown
    session or message, 409 for a taken `new_id`, 413 past PARLEY_FORK_MAX_MESSAGES); blocking."""
    agent_id = rt.sessions.bound_agent(tenant, session_id)
    if agent_id is None:
        raise NotFound(f"session {session_id!r} not found")
    # The agent (its session_ttl_s) may be gone: the fork is still the session's, kept like one without a ttl.
    agent = rt.agents.get_by_id(tenant, agent_id) or {"id": agent_id, "name": None}
    created = rt.sessions.fork(tenant, session_id, at, new_id, agent, rt.settings.fork_max_messages)
    return rt.sessions.get(tenant, created, rt.agent_names(tenant))
