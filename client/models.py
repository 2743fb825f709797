"""Typed models of what the API takes and returns.

The response models are the service's own (`parley.shared.schema`), so there is one definition
of each shape; the short names (`Agent`, `Session`, `Message`, `Job`) are aliases of them.
What the service has no model for is defined here: `AgentFields` (the keyword arguments of
`agents.create`/`agents.update`), `CancelResult` and `Event`.

Events are one model, not a union: `Event(id, type, data)` where `data` is the event's whole JSON
object (with its `type`), plus properties for the common fields. New event types the service may
add later arrive as `Event`s too, so a client written today never breaks on them. `EventType`, the
enumeration of the types this version knows, and the parsing of an event's JSON are the service's own
(`parley.shared.events`), so the SDK and the service cannot disagree on them.
"""

from __future__ import annotations

from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict

from parley.shared.events import BadEvent, EventType, decode
from parley.shared.schema import (
    FINAL_STATUSES,
    AgentCreate,
    AgentPublic,
    AgentUpdate,
    ChatResponse,
    JobAccepted,
    JobPublic,
    JobStatusName,
    MessagePage,
    MessagePublic,
    SessionPage,
    SessionPublic,
)

from .errors import StreamError
from .sse import ServerSentEvent

__all__ = [
    "FINAL_STATUSES",
    "Agent",
    "AgentCreate",
    "AgentFields",
    "AgentOptions",
    "AgentPublic",
    "AgentUpdate",
    "CancelResult",
    "ChatResponse",
    "Event",
    "EventType",
    "Job",
    "JobAccepted",
    "JobPublic",
    "JobStatusName",
    "Message",
    "MessagePage",
    "MessagePublic",
    "Session",
    "SessionPage",
    "SessionPublic",
    "event_id_key",
]

Agent = AgentPublic
Session = SessionPublic
Message = MessagePublic
Job = JobPublic


class AgentOptions(TypedDict, total=False):
    """An agent's settable fields besides its name (see `AgentCreate`): keyword arguments of
    `agents.create(name, ...)`."""

    description: str
    type: str
    model: str | None
    context: str
    first_message: str
    instructions: str
    response_shape: dict[str, Any] | str | None
    tools: list[str]
    approval: list[str]
    temperature: float | None
    max_tokens: int | None
    max_turns: int | None
    context_budget: int | None


class AgentFields(AgentOptions, total=False):
    """Keyword arguments of `agents.update`: any subset of an agent's fields. `None` clears `model`,
    `response_shape`, `temperature`, `max_tokens` and `max_turns`; an omitted field keeps its value."""

    name: str


class CancelResult(BaseModel):
    """The answer of `POST /api/v1/jobs/{id}/cancel`; `canceled` is False when the turn had already ended."""

    job_id: str
    status: JobStatusName
    canceled: bool


class Event(BaseModel):
    """One event of a turn's stream: `id` (its SSE id, `<ms>-<seq>`), `type`, and `data`, the whole JSON
    object the API sent (including `type`)."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    data: dict[str, Any]

    @classmethod
    def from_sse(cls, sse: ServerSentEvent) -> Event:
        """The event of one SSE message; StreamError when its data is not a JSON object with a `type`."""
        try:
            data = decode(sse.data)
        except BadEvent as error:
            raise StreamError(f"event {sse.id!r} is {error}: {sse.data[:200]!r}") from None
        return cls(id=sse.id, type=data["type"], data=data)

    def _field(self, name: str, *types: str) -> Any:
        return self.data.get(name) if not types or self.type in types else None

    @property
    def content(self) -> str | None:
        """The text of a `delta` (a piece) or a `response` (the whole answer); None for other types."""
        value = self._field("content", EventType.DELTA, EventType.RESPONSE)
        return value if isinstance(value, str) else None

    @property
    def message(self) -> str | None:
        """The message of a `status` (`queued`, `started`, `retrying`), `thinking` or `error` event."""
        value = self._field("message", EventType.STATUS, EventType.THINKING, EventType.ERROR)
        return value if isinstance(value, str) else None

    @property
    def code(self) -> str | None:
        """The code of an `error` event: one of `parley.shared.events.ErrorCode` (`canceled`, `model_failed`, ...)."""
        value = self._field("code", EventType.ERROR)
        return value if isinstance(value, str) else None

    @property
    def job_id(self) -> str | None:
        """The turn's job id, named by the `session` event."""
        value = self._field("job_id")
        return value if isinstance(value, str) else None

    @property
    def session_id(self) -> str | None:
        """The session id, named by the `session` and `response` events."""
        value = self._field("session_id")
        return value if isinstance(value, str) else None


def event_id_key(event_id: str) -> tuple[int, int] | None:
    """Sort key of an event id (`<ms>-<seq>`, ordered as the API orders them); None for another shape."""
    ms, sep, seq = event_id.partition("-")
    if not (sep and ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit()):
        return None
    return int(ms), int(seq)
