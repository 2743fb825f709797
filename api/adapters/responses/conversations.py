"""OpenAI's Conversations API over Parley's sessions: a conversation is a session and its id is the session id
(one created here is a session under /api/v1/sessions; any session can be named as a conversation), its items
are the session's messages (items.py). A session is bound to one agent: `agent` (a Parley field beside `items` and
`metadata`) names it, else it is the tenant's first agent."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from parley.shared.errors import InvalidInput, NotFound, TooLarge
from parley.shared.schema import SESSION_ID_PATTERN, Metadata, SessionPublic
from parley.shared.settings import Settings

from ...deps import Runtime, Tenant
from ...runtime import WebRuntime
from ...service import sessions
from . import items as item_views
from .errors import OpenAIErrorRoute
from .translate import refused

router = APIRouter(route_class=OpenAIErrorRoute)
Pair = tuple[tuple[int, int], dict[str, Any]]
"""An item with its position in the conversation (message index, place within the message)."""
ITEM_ROLES = ("user", "assistant")


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Any] | None = Field(None, description="Messages to start with (user or assistant, text).")
    metadata: Metadata | None = None
    agent: str | None = Field(None, description="Parley: the agent (id or name); the tenant's first when omitted.")


class ConversationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metadata: Metadata


class ItemsCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Any] = Field(..., min_length=1)


def _session_id(conversation_id: str) -> str:
    if not re.fullmatch(SESSION_ID_PATTERN, conversation_id):
        raise NotFound(f"conversation {conversation_id[:80]!r} not found")
    return conversation_id


def _created_at(session: SessionPublic) -> int:
    try:
        return int(datetime.fromisoformat(session.created_at.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def conversation(session: SessionPublic) -> dict[str, Any]:
    return {"id": session.session_id, "object": "conversation", "created_at": _created_at(session),
            "metadata": session.metadata}  # fmt: skip


def _text(item: dict[str, Any], field: str) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else None
    if parts is None or not all(isinstance(p, dict) and p.get("type") in ("input_text", "output_text", "text")
                                and isinstance(p.get("text"), str) for p in parts):  # fmt: skip
        raise refused(f"{field}.content must be text: a string or input_text / output_text parts", f"{field}.content")
    return "".join(part["text"] for part in parts)


def new_messages(raw: list[Any], settings: Settings) -> list[tuple[str, str]]:
    """Items to add as (role, text): user or assistant text messages only, within the history's bounds."""
    if len(raw) > settings.max_history_messages:
        raise TooLarge(f"items holds {len(raw)} items; at most {settings.max_history_messages} are taken",
                       field="items")  # fmt: skip
    out = []
    for index, item in enumerate(raw):
        field = f"items.{index}"
        if not isinstance(item, dict) or item.get("type", "message") != "message" or item.get("role") not in ITEM_ROLES:
            raise refused(f"{field} must be a user or assistant message: other items cannot be added to a conversation",
                          field)  # fmt: skip
        text = _text(item, field)
        if len(text) > settings.max_message_chars:
            raise TooLarge(f"{field} is longer than {settings.max_message_chars} characters", field=field)
        out.append((item["role"], text))
    if sum(len(text) for _, text in out) > settings.max_history_chars:
        raise TooLarge(f"the items' text is over {settings.max_history_chars} characters in all", field="items")
    return out


def _index(message_id: str) -> int:
    return int(message_id.removeprefix("msg_"))


def _agent_model(rt: WebRuntime, tenant: str, session_id: str) -> str:
    agent_id = rt.sessions.bound_agent(tenant, session_id)
    agent = rt.agents.get_by_id(tenant, agent_id) if agent_id else None
    return str((agent or {}).get("model") or rt.settings.default_model)


def _append(rt: WebRuntime, tenant: str, session_id: str, messages: list[tuple[str, str]]) -> list[dict[str, Any]]:
    stored = rt.sessions.append(tenant, session_id, messages, _agent_model(rt, tenant, session_id))
    return [
        item for message in stored for _, item in item_views.session_items(_index(message.id), message.model_dump())
    ]


def _get(rt: WebRuntime, tenant: str, session_id: str) -> SessionPublic:
    try:
        return rt.sessions.get(tenant, session_id, {})
    except NotFound:
        raise NotFound(f"conversation {session_id!r} not found") from None


def _create(rt: WebRuntime, tenant: str, body: ConversationCreate) -> dict[str, Any]:
    messages = new_messages(body.items or [], rt.settings)
    session = sessions.start(rt, tenant, body.agent, None, body.metadata or {})
    if messages:
        _append(rt, tenant, session.session_id, messages)
    return conversation(session)


@router.post("/conversations")
def create_conversation(body: ConversationCreate, rt: Runtime, tenant: Tenant) -> dict[str, Any]:
    """A new conversation (a session of `agent`, or of the tenant's first agent), with its first items."""
    return _create(rt, tenant, body)


@router.get("/conversations/{conversation_id}")
def get_conversation(conversation_id: str, rt: Runtime, tenant: Tenant) -> dict[str, Any]:
    return conversation(_get(rt, tenant, _session_id(conversation_id)))


@router.post("/conversations/{conversation_id}")
def update_conversation(conversation_id: str, body: ConversationUpdate, rt: Runtime, tenant: Tenant) -> dict[str, Any]:
    """Replace the conversation's metadata."""
    session_id = _session_id(conversation_id)
    try:
        rt.sessions.set_metadata(tenant, session_id, body.metadata)
    except NotFound:
        raise NotFound(f"conversation {session_id!r} not found") from None
    return conversation(_get(rt, tenant, session_id))


@router.delete("/conversations/{conversation_id}")
def delete_conversation(conversation_id: str, rt: Runtime, tenant: Tenant) -> dict[str, Any]:
    """Delete the conversation: the session and its messages (as DELETE /api/v1/sessions/{id})."""
    session_id = _session_id(conversation_id)
    try:
        rt.sessions.delete(tenant, session_id)
    except NotFound:
        raise NotFound(f"conversation {session_id!r} not found") from None
    return {"id": session_id, "object": "conversation.deleted", "deleted": True}


def _window(rt: WebRuntime, tenant: str, session_id: str, start: int, count: int) -> list[Pair]:
    """Messages start .. start+count-1 (those that exist), as (position, item) pairs, oldest first."""
    if start < 0:
        count, start = count + start, 0
    if count <= 0:
        return []
    stored = rt.sessions.messages(tenant, session_id, limit=count, before=f"msg_{start + count}")
    return [pair for message in stored for pair in item_views.session_items(_index(message.id), message.model_dump())]


@router.get("/conversations/{conversation_id}/items")
def list_items(
    conversation_id: str, rt: Runtime, tenant: Tenant, limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc", after: str | None = None,
    include: Annotated[list[str] | None, Query()] = None,
) -> dict[str, Any]:  # fmt: skip
    """The conversation's items, a page at a time (`after` an item id), newest first unless `order=asc`."""
    session_id = _session_id(conversation_id)
    _get(rt, tenant, session_id)
    cursor = item_views.position(after) if after is not None else None
    span = limit + 1 + (cursor is not None)  # every message has an item: one more than a page tells has_more
    total = _get(rt, tenant, session_id).message_count
    pairs: list[Pair] = []
    # An answer a regenerate replaced has no item: read on past such messages until the page is full.
    if order == "asc":
        start = cursor[0] if cursor else 0
        while len(pairs) <= limit and start < total:
            pairs += [p for p in _window(rt, tenant, session_id, start, span) if cursor is None or p[0] > cursor]
            start += span
    else:
        end = (cursor[0] if cursor else total - 1) + 1
        while len(pairs) <= limit and end > 0:
            pairs += [p for p in _window(rt, tenant, session_id, end - span, span)[::-1]
                      if cursor is None or p[0] < cursor]  # fmt: skip
            end -= span
    data = [item for _, item in pairs]
    return item_views.listing(data[:limit], has_more=len(data) > limit)


@router.get("/conversations/{conversation_id}/items/{item_id}")
def get_item(conversation_id: str, item_id: str, rt: Runtime, tenant: Tenant) -> dict[str, Any]:
    session_id = _session_id(conversation_id)
    _get(rt, tenant, session_id)
    try:
        where = item_views.position(item_id)
    except InvalidInput:
        raise NotFound(f"item {item_id[:80]!r} not found") from None
    for found, item in _window(rt, tenant, session_id, where[0], 1):
        if found == where and item["id"] == item_id:
            return item
    raise NotFound(f"item {item_id[:80]!r} not found")


@router.post("/conversations/{conversation_id}/items")
def create_items(conversation_id: str, body: ItemsCreate, rt: Runtime, tenant: Tenant) -> dict[str, Any]:
    """Add user or assistant messages to an idle conversation (409 while one of its turns is in flight)."""
    session_id = _session_id(conversation_id)
    messages = new_messages(body.items, rt.settings)
    try:
        return item_views.listing(_append(rt, tenant, session_id, messages))
    except NotFound:
        raise NotFound(f"conversation {session_id!r} not found") from None
