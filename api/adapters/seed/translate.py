"""The seed article's request bodies and shapes (see the package's docstring), to and from Parley's
agents, sessions and messages. No I/O here: `routes.py` calls the stores and the service."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from parley.shared.schema import AgentCreate, ChatRequest, MessagePublic, SessionPublic
from parley.shared.store.agents import public

from ...errors import client_input


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


def agent_create(body: CompatAgentCreate) -> tuple[str, AgentCreate]:
    """A new agent's id and spec, named after its id unless a name is given; the /api/v1 rules for every
    field apply (422, like FastAPI's own validation)."""
    agent_id = f"agent-{uuid.uuid4().hex[:12]}"
    with client_input():
        spec = AgentCreate(name=agent_id if body.name is None else body.name, context=body.context,
                           first_message=body.first_message, response_shape=body.response_shape,
                           instructions=body.instructions)  # fmt: skip
    return agent_id, spec


def agent_view(agent: dict[str, Any]) -> dict[str, Any]:
    """An agent as the article shows it (its conversations are listed by `/agents/get-conversations`)."""
    shown = public(agent, "")
    return {"id": shown.id, "context": shown.context, "first_message": shown.first_message,
            "response_shape": shown.response_shape, "instructions": shown.instructions,
            "timestamp": shown.created_at, "conversations": []}  # fmt: skip


def conversation_view(session: SessionPublic) -> dict[str, Any]:
    return {"id": session.session_id, "agent_id": session.agent_id, "timestamp": session.created_at}


def chat_request(body: CompatUserMessage) -> ChatRequest:
    """The turn one exchange asks for, in the conversation's session (422 by the /api/v1 rules)."""
    with client_input():
        return ChatRequest(message=body.message, session_id=body.conversation_id)


def exchanges(messages: list[MessagePublic], conversation_id: str) -> list[dict[str, Any]]:
    """A conversation's messages as exchanges, oldest first: each user message with the answer of the same
    job (the agent's first message is not an exchange; an unanswered message has `agent_message` "")."""
    shown: list[dict[str, Any]] = []
    pending: dict[str, Any] | None = None
    for message in messages:
        if message.role == "user":
            pending = {"id": message.job_id, "user_message": message.content, "agent_message": "",
                       "timestamp": message.created_at, "conversation_id": conversation_id}  # fmt: skip
            shown.append(pending)
        elif message.role == "assistant" and pending is not None and message.job_id == pending["id"]:
            pending["agent_message"] = message.content
    return shown
