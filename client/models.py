"""Typed models of what the API takes and returns.

The response models are the service's own (`parley.shared.schema`), so there is one definition
of each shape; the short names (`Agent`, `Session`, `Message`, `Job`) are aliases of them.
What the service has no model for is defined here: `AgentFields` (the keyword arguments of
`agents.create`/`agents.update`), `CancelResult`, `ApprovalResult`, `McpServer`, `Webhook`,
`WebhookDelivery`, `Schedule` (lenient: fields the service adds arrive as extras) and `Event`.

Events are one model, not a union: `Event(id, type, data)` where `data` is the event's whole JSON
object (with its `type`), plus properties for the common fields. New event types the service may
add later arrive as `Event`s too, so a client written today never breaks on them. `EventType`, the
enumeration of the types this version knows, and the parsing of an event's JSON are the service's own
(`parley.shared.events`), so the SDK and the service cannot disagree on them.
"""

from __future__ import annotations

from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from parley.shared.events import BadEvent, EventType, decode
from parley.shared.schema import (
    FINAL_STATUSES,
    AgentCreate,
    AgentPublic,
    AgentUpdate,
    ApprovalDecision,
    ChatResponse,
    Feedback,
    FeedbackItem,
    FeedbackPage,
    JobAccepted,
    JobPublic,
    JobStatusName,
    MessagePage,
    MessagePublic,
    OnBusy,
    PendingCall,
    Rating,
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
    "ApprovalDecision",
    "ApprovalResult",
    "CancelResult",
    "ChatResponse",
    "Event",
    "EventType",
    "Feedback",
    "FeedbackItem",
    "FeedbackPage",
    "Job",
    "JobAccepted",
    "JobPublic",
    "JobStatusName",
    "McpServer",
    "McpServerFields",
    "McpServerOptions",
    "McpTool",
    "Message",
    "MessagePage",
    "MessagePublic",
    "OnBusy",
    "PendingCall",
    "Rating",
    "Schedule",
    "Session",
    "SessionPage",
    "SessionPublic",
    "Webhook",
    "WebhookDelivery",
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
    session_ttl_s: int | None
    max_tool_steps: int | None
    max_turn_tokens: int | None
    fallback_models: list[str]


class AgentFields(AgentOptions, total=False):
    """Keyword arguments of `agents.update`: any subset of an agent's fields. `None` clears `model`,
    `response_shape`, `temperature`, `max_tokens` and `max_turns`; an omitted field keeps its value."""

    name: str


class CancelResult(BaseModel):
    """The answer of `POST /api/v1/jobs/{id}/cancel`; `canceled` is False when the turn had already ended."""

    job_id: str
    status: JobStatusName
    canceled: bool


class ApprovalResult(BaseModel):
    """The answer of `POST /api/v1/jobs/{id}/approvals` (202): the decision was recorded and the turn goes on."""

    job_id: str
    call_id: str
    approve: bool
    status: str


class McpTool(BaseModel):
    """One tool a remote MCP server offers (agents name it `mcp:<server>/<name>`)."""

    model_config = ConfigDict(extra="allow")

    name: str
    description: str | None = None


class McpServer(BaseModel):
    """A tenant's MCP server as the API shows it: `header_names` only, the header values are never shown again."""

    model_config = ConfigDict(extra="allow")

    name: str
    url: str
    header_names: list[str] = Field(default_factory=list)
    allowed_tools: list[str] | None = None
    tools: list[McpTool] = Field(default_factory=list)


class McpServerOptions(TypedDict, total=False):
    """An MCP server's settable fields besides its name and URL: keyword arguments of `mcp_servers.create`."""

    headers: dict[str, str]
    allowed_tools: list[str] | None


class McpServerFields(McpServerOptions, total=False):
    """Keyword arguments of `mcp_servers.update`: any subset; an omitted field keeps its value."""

    url: str


class Webhook(BaseModel):
    """A tenant's webhook (`POST /api/v1/webhooks`): `secret` signs each delivery and is shown once, by `create`
    (None in lists and reads)."""

    model_config = ConfigDict(extra="allow")

    id: str
    url: str
    events: list[str] = Field(default_factory=list)
    created_at: str | None = None
    secret: str | None = None


class WebhookDelivery(BaseModel):
    """One delivery of a webhook event (its attempts and outcome, as the API shows them)."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    """Sent as the `Parley-Delivery-Id` header, the same on every attempt."""
    type: str | None = None
    job_id: str | None = None
    status: str | None = None
    """`pending`, `delivered` or `failed`."""
    attempt_count: int | None = None
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    """Each attempt's `at`, `status_code` or `error`, `duration_ms`, oldest first."""
    created_at: str | None = None
    next_attempt_at: str | None = None


class Schedule(BaseModel):
    """A tenant's schedule (`POST /api/v1/schedules`): each firing runs one turn of `agent` with `message`,
    by `cron` (5 fields, in `timezone`) or every `interval_s` seconds."""

    model_config = ConfigDict(extra="allow")

    id: str
    agent_id: str | None = None
    message: str | None = None
    session_id: str | None = None
    cron: str | None = None
    interval_s: int | None = None
    timezone: str | None = None
    next_run_at: str | None = None
    """When it fires next; None once it stopped (`stopped_reason`)."""
    created_at: str | None = None
    last_run_at: str | None = None
    last_job_id: str | None = None
    runs: int | None = None
    last_error: str | None = None
    stopped_reason: str | None = None


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

    @property
    def call_id(self) -> str | None:
        """The tool call of a `tool_execution`, `tool_result` or `approval_required` event."""
        value = self._field("call_id", *_CALL_EVENTS)
        return value if isinstance(value, str) else None

    @property
    def tool_name(self) -> str | None:
        """The tool of a `tool_execution`, `tool_result` or `approval_required` event (`mcp:<server>/<tool>`: MCP)."""
        value = self._field("tool_name", *_CALL_EVENTS)
        return value if isinstance(value, str) else None

    @property
    def args(self) -> Any:
        """The arguments of a `tool_execution` or `approval_required` event, as the API sent them."""
        return self._field("args", EventType.TOOL_EXECUTION, EventType.APPROVAL_REQUIRED)

    @property
    def pending_call(self) -> PendingCall | None:
        """An `approval_required` event as the call that waits (`client.approve(job_id, event.call_id)`)."""
        if self.type != EventType.APPROVAL_REQUIRED or self.call_id is None or self.tool_name is None:
            return None
        return PendingCall(call_id=self.call_id, tool_name=self.tool_name, args=self.data.get("args"))


_CALL_EVENTS = (EventType.TOOL_EXECUTION, EventType.TOOL_RESULT, EventType.APPROVAL_REQUIRED)


def event_id_key(event_id: str) -> tuple[int, int] | None:
    """Sort key of an event id (`<ms>-<seq>`, ordered as the API orders them); None for another shape."""
    ms, sep, seq = event_id.partition("-")
    if not (sep and ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit()):
        return None
    return int(ms), int(seq)
