"""Feedback on agents' answers: `PUT /api/v1/sessions/{id}/messages/{message_id}/feedback` rates one answer,
`GET /api/v1/feedback` lists the tenant's ratings, newest first (shared/store/feedback.py keeps both)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from parley.shared import telemetry
from parley.shared.schema import FeedbackPage, FeedbackSet, MessagePublic
from parley.shared.store.feedback import MAX_PAGE, FeedbackStore

from ..deps import Runtime, Tenant
from ..errors import documented
from ..runtime import WebRuntime

router = APIRouter(prefix="/api/v1", tags=["feedback"], responses=documented(401, 404, 409, 422, 503))


def _store(rt: WebRuntime) -> FeedbackStore:
    return FeedbackStore(rt.clients.text)


@router.put("/sessions/{session_id}/messages/{message_id}/feedback", response_model=MessagePublic,
            response_model_exclude_none=False)  # fmt: skip
def set_feedback(session_id: str, message_id: str, body: FeedbackSet, rt: Runtime, tenant: Tenant) -> MessagePublic:
    """Rate one of the agent's answers `up` or `down` (with an optional comment), or clear its rating (null).

    Returns the message as `GET .../messages` shows it, with `feedback` (none when cleared). Only assistant
    messages take feedback (422 for others); setting the same rating and comment again changes nothing."""
    rated = _store(rt).set(tenant, session_id, message_id, body.rating, body.comment)
    if rated.counted:
        telemetry.feedback(rt.agent_names(tenant).get(rated.agent_id, ""), rated.counted)
    return rated.message


@router.get("/feedback", response_model=FeedbackPage)
def list_feedback(
    rt: Runtime,
    tenant: Tenant,
    agent: Annotated[str | None, Query(description="Only the feedback on this agent's answers (id or name).")] = None,
    since: Annotated[datetime | None, Query(description="Only feedback given at or after this time (ISO 8601; "
                                            "UTC when it names no zone).")] = None,  # fmt: skip
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> FeedbackPage:
    """The tenant's feedback, newest first (by when it was given or last changed), a page at a time."""
    agent_id = rt.agents.get(tenant, agent)["id"] if agent else None
    since_ms = None
    if since is not None:
        since_ms = max(0, int((since if since.tzinfo else since.replace(tzinfo=UTC)).timestamp() * 1000))
    data, next_cursor = _store(rt).page(tenant, agent_id=agent_id, since_ms=since_ms, limit=limit, cursor=cursor)
    return FeedbackPage(data=data, next_cursor=next_cursor)
