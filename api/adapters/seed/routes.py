"""The seed article's `/agents/...` routes (see the package's docstring): parse, call a store or the
service, shape the answer with `translate.py`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from ...deps import ApiKey, CompatTenant, Runtime
from ...errors import documented
from ...service import sessions, turns
from . import translate
from .translate import CompatAgentCreate, CompatConversationCreate, CompatUserMessage

router = APIRouter(
    prefix="/agents", tags=["seed article (compatibility)"], responses=documented(401, 404, 409, 422, 503)
)

UNKNOWN_CONVERSATION = "Conversation not found. Please create conversation first."


@router.post("/create-agent")
def create_agent(body: CompatAgentCreate, rt: Runtime, tenant: CompatTenant) -> dict[str, Any]:
    """Create an agent (named after its id unless a name is given)."""
    agent_id, spec = translate.agent_create(body)
    return translate.agent_view(rt.agents.create(tenant, spec, agent_id=agent_id))


@router.post("/create-conversation")
def create_conversation(body: CompatConversationCreate, rt: Runtime, tenant: CompatTenant) -> dict[str, Any]:
    """Start a conversation with an agent."""
    return translate.conversation_view(sessions.start(rt, tenant, body.agent_id, None, {}))


@router.post("/chat-agent")
async def chat_agent(body: CompatUserMessage, rt: Runtime, tenant: CompatTenant, key: ApiKey) -> dict[str, Any]:
    """One exchange in an existing conversation (404 for an unknown one)."""
    await sessions.agent_of(rt, tenant, body.conversation_id, missing=UNKNOWN_CONVERSATION)
    accepted = await turns.accept(rt, tenant, translate.chat_request(body), None, key)
    result = await turns.wait_for_result(rt, tenant, accepted)
    return {"conversation_id": body.conversation_id, "response": result.response}


@router.get("/get-agents")
def get_agents(rt: Runtime, tenant: CompatTenant) -> list[dict[str, Any]]:
    """Every agent the caller sees."""
    return [translate.agent_view(agent) for agent in rt.agents.visible(tenant)]


@router.get("/get-conversations")
def get_conversations(rt: Runtime, tenant: CompatTenant, agent_id: str = Query(...)) -> list[dict[str, Any]]:
    """An agent's conversations, newest first."""
    agent = rt.agents.get(tenant, agent_id)
    conversations, _ = rt.sessions.page(tenant, agent_id=agent["id"], limit=1000, cursor=None, agent_names={})
    return [translate.conversation_view(session) for session in conversations]


@router.get("/get-messages")
def get_messages(rt: Runtime, tenant: CompatTenant, conversation_id: str = Query(...)) -> list[dict[str, Any]]:
    """A conversation's exchanges, oldest first (the agent's first message is not an exchange)."""
    messages = rt.sessions.messages(tenant, conversation_id, limit=1_000_000, before=None)
    return translate.exchanges(messages, conversation_id)
