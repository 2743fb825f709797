"""The seed article's `/agents/...` routes, as views over the same agents, sessions and memory.

Shapes follow the article: an agent is `{id, context, first_message, response_shape, instructions,
timestamp, conversations}`, a conversation `{id, agent_id, timestamp}`, and a message one
exchange `{id, user_message, agent_message, timestamp, conversation_id}`.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from parley.shared.agents import public
from parley.shared.errors import NotFound
from parley.shared.models import AgentCreate, ChatRequest

from .. import chatting
from ..deps import ApiKey, CompatTenant, Runtime
from ..errors import client_input, documented

router = APIRouter(
    prefix="/agents", tags=["seed article (compatibility)"], responses=documented(401, 404, 409, 422, 503)
)


class CompatAgentCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    context: str = ""
    first_message: str = ""
    response_shape: dict[str, Any] | str | None = None
    instructions: str = ""
    name: str | None = Field(None, description="Defaults to the agent's id; when given, not blank.")


class CompatConversationCreate(BaseModel):
    agent_id: str


class CompatUserMessage(BaseModel):
    conversation_id: str
    message: str = Field(..., min_length=1, description="Not blank.")

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be blank")
        return value


def _agent_view(agent: dict[str, Any], conversations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    shown = public(agent, "")
    return {"id": shown.id, "context": shown.context, "first_message": shown.first_message,
            "response_shape": shown.response_shape, "instructions": shown.instructions,
            "timestamp": shown.created_at, "conversations": conversations or []}  # fmt: skip


@router.post("/create-agent")
def create_agent(body: CompatAgentCreate, rt: Runtime, tenant: CompatTenant) -> dict[str, Any]:
    """Create an agent (named after its id unless a name is given)."""
    agent_id = f"agent-{uuid.uuid4().hex[:12]}"
    with client_input():  # the /api/v1 rules for every field: 422, like FastAPI's own validation
        spec = AgentCreate(name=agent_id if body.name is None else body.name, context=body.context,
                           first_message=body.first_message, response_shape=body.response_shape,
                           instructions=body.instructions)  # fmt: skip
    return _agent_view(rt.agents.create(tenant, spec, agent_id=agent_id))


@router.post("/create-conversation")
def create_conversation(body: CompatConversationCreate, rt: Runtime, tenant: CompatTenant) -> dict[str, Any]:
    """Start a conversation with an agent."""
    agent = rt.agents.get(tenant, body.agent_id)
    session_id = rt.sessions.create(tenant, agent, None, {})
    session = rt.sessions.get(tenant, session_id, {})
    return {"id": session_id, "agent_id": agent["id"], "timestamp": session.created_at}


@router.post("/chat-agent")
async def chat_agent(body: CompatUserMessage, rt: Runtime, tenant: CompatTenant, key: ApiKey) -> dict[str, Any]:
    """One exchange in an existing conversation (404 for an unknown one)."""
    if rt.sessions.bound_agent(tenant, body.conversation_id) is None:
        raise NotFound("Conversation not found. Please create conversation first.")
    with client_input():
        request = ChatRequest(message=body.message, session_id=body.conversation_id)
    accepted = await chatting.accept(rt, tenant, request, None, key)
    result = await chatting.wait_for_result(rt, tenant, accepted)
    return {"conversation_id": body.conversation_id, "response": result.response}


@router.get("/get-agents")
def get_agents(rt: Runtime, tenant: CompatTenant) -> list[dict[str, Any]]:
    """Every agent the caller sees."""
    return [_agent_view(agent) for agent in rt.agents.visible(tenant)]


@router.get("/get-conversations")
def get_conversations(rt: Runtime, tenant: CompatTenant, agent_id: str = Query(...)) -> list[dict[str, Any]]:
    """An agent's conversations, newest first."""
    agent = rt.agents.get(tenant, agent_id)
    sessions, _ = rt.sessions.page(tenant, agent_id=agent["id"], limit=1000, cursor=None, agent_names={})
    return [{"id": s.session_id, "agent_id": s.agent_id, "timestamp": s.created_at} for s in sessions]


@router.get("/get-messages")
def get_messages(rt: Runtime, tenant: CompatTenant, conversation_id: str = Query(...)) -> list[dict[str, Any]]:
    """A conversation's exchanges, oldest first (the agent's first message is not an exchange)."""
    messages = rt.sessions.messages(tenant, conversation_id, limit=1_000_000, before=None)
    exchanges: list[dict[str, Any]] = []
    pending: dict[str, Any] | None = None
    for message in messages:
        if message.role == "user":
            pending = {"id": message.job_id, "user_message": message.content, "agent_message": "",
                       "timestamp": message.created_at, "conversation_id": conversation_id}  # fmt: skip
            exchanges.append(pending)
        elif message.role == "assistant" and pending is not None and message.job_id == pending["id"]:
            pending["agent_message"] = message.content
    return exchanges
