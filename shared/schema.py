"""The API's request and response models (pydantic v2), in the Base/Create/Update/Public pattern.

They double as the OpenAPI schema at /docs, so each carries an example.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from parley.shared.shapes import check_json, check_shape, json_depth

NAME_MAX = 100
TEXT_MAX = 100_000
TOOLS_MAX = 128
TOOL_NAME_MAX = 200
METADATA_MAX_BYTES = 16 * 1024
JSON_MAX_DEPTH = 32
SERVABLE_DEPTH = 100
"""Deeper than this, pydantic cannot serialize a value (its limit is a little over 250 levels)."""
SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
IMAGE_PATTERN = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,([A-Za-z0-9+/=\s]+)$")
MAX_IMAGES = 5

MAX_TOOL_STEPS = 100
"""The most model steps with tool calls an agent's `max_tool_steps` may allow: PARLEY_MAX_TOOL_STEPS's own bound."""
MAX_TURN_TOKENS = 1_000_000_000
"""The largest per-turn token cap an agent may set."""

OnBusy = Literal["enqueue", "reject", "interrupt", "steer"]
"""A chat request's `on_busy`: what happens while a turn of its session is queued, running or waiting."""
JobStatusName = Literal["queued", "started", "waiting", "finished", "failed", "canceled"]
"""A turn's status: `queued`, `started`, then one of the final three."""
FINAL_STATUSES = ("finished", "failed", "canceled")


def _check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    return check_json(value, max_depth=JSON_MAX_DEPTH, max_bytes=METADATA_MAX_BYTES, what="metadata")


ResponseShape = Annotated[dict[str, Any] | str | None, AfterValidator(check_shape)]
"""A response shape as the API takes it: data within bounds, checked by shared/shapes.py (a ValueError → 422)."""
ToolNames = Annotated[list[Annotated[str, Field(max_length=TOOL_NAME_MAX)]], Field(max_length=TOOLS_MAX)]
Metadata = Annotated[dict[str, Any], AfterValidator(_check_metadata)]
"""Free-form session metadata: at most METADATA_MAX_BYTES as JSON, JSON_MAX_DEPTH levels deep."""
FALLBACK_MODELS_MAX = 4
MODEL_NAME_MAX = 200


def _check_fallback_models(value: list[str]) -> list[str]:
    if any(not name.strip() for name in value):
        raise ValueError("a fallback model name must not be blank")
    if len(set(value)) != len(value):
        raise ValueError("fallback_models must not name a model twice")
    return value


FallbackModels = Annotated[list[Annotated[str, Field(min_length=1, max_length=MODEL_NAME_MAX)]],
                           Field(max_length=FALLBACK_MODELS_MAX), AfterValidator(_check_fallback_models)]  # fmt: skip
"""Models tried in order when the agent's model fails with 429, 5xx or a timeout (worker/providers/fallback.py)."""


class AgentBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field("", max_length=2_000)
    type: str = Field("conversational", max_length=50)
    model: str | None = Field(None, max_length=200, description="Model name; PARLEY_MODEL when omitted.")
    context: str = Field("", max_length=TEXT_MAX, description="The system prompt.")
    first_message: str = Field("", max_length=TEXT_MAX, description="Opening line, the first assistant message.")
    instructions: str = Field("", max_length=TEXT_MAX, description="How to run the conversation.")
    response_shape: ResponseShape = Field(None, description=(
        "Shape every answer should follow: a JSON Schema, an object of field descriptions, or words. Data only: "
        "at most 64 KiB and 32 levels, `$ref` inside the shape only, patterns in RE2 syntax."))  # fmt: skip
    tools: ToolNames = Field(default_factory=list, description="Names of registered tools.")
    approval: ToolNames = Field(default_factory=list, description=(
        "Tool names or patterns (`http_get`, `mcp:github/*`, `*`) whose calls wait for a person's decision."))
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    max_turns: int | None = Field(None, ge=1, description="Exchanges after which the agent closes politely.")
    context_budget: int | None = Field(None, ge=256, le=10_000_000, description=(
        "Tokens of context a turn may use (system, summary, newest turns); PARLEY_CONTEXT_TOKENS when omitted. "
        "Older turns are folded into a rolling summary."))  # fmt: skip
    session_ttl_s: int | None = Field(None, ge=1, le=10 * 365 * 86_400, description=(
        "Seconds a session may go without a turn before it is deleted with its messages, notes and images "
        "(at least PARLEY_SESSION_TTL_MIN_S, 60 by default); null: sessions are kept."))  # fmt: skip
    max_tool_steps: int | None = Field(None, ge=1, le=MAX_TOOL_STEPS, description=(
        "Model steps that end in tool calls one turn may take before it answers that it stopped; "
        "PARLEY_MAX_TOOL_STEPS when omitted."))  # fmt: skip
    max_turn_tokens: int | None = Field(None, ge=1, le=MAX_TURN_TOKENS, description=(
        "Tokens (prompt + completion over every model call) one turn may use: past them it stops before its next "
        "model call with an answer saying so. PARLEY_MAX_TURN_TOKENS, when set, is the most it may be."))  # fmt: skip
    fallback_models: FallbackModels = Field(default_factory=list, description=(
        f"At most {FALLBACK_MODELS_MAX} models tried in order when the agent's model still fails (429, 5xx or a "
        "timeout) after its retries, before any of the answer was sent."))  # fmt: skip


class AgentCreate(AgentBase):
    name: str = Field(..., min_length=1, max_length=NAME_MAX)

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must not be blank")
        return value.strip()

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Chef",
                    "description": "Mediterranean recipes",
                    "context": "You are a chef specialising in Mediterranean food.",
                    "first_message": "Hello! What shall we cook today?",
                    "instructions": "Keep recipes to at most 10 simple ingredients.",
                    "response_shape": {"answer": "string", "recipes": "list of strings"},
                }
            ]
        },
    )


class AgentUpdate(BaseModel):
    """Any subset of an agent's fields; omitted fields keep their value."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"description": "Now vegetarian"}]})

    name: str | None = Field(None, min_length=1, max_length=NAME_MAX)
    description: str | None = Field(None, max_length=2_000)
    type: str | None = Field(None, max_length=50)
    model: str | None = Field(None, max_length=200)
    context: str | None = Field(None, max_length=TEXT_MAX)
    first_message: str | None = Field(None, max_length=TEXT_MAX)
    instructions: str | None = Field(None, max_length=TEXT_MAX)
    response_shape: ResponseShape = None
    tools: ToolNames | None = None
    approval: ToolNames | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    max_turns: int | None = Field(None, ge=1)
    context_budget: int | None = Field(None, ge=256, le=10_000_000)
    session_ttl_s: int | None = Field(None, ge=1, le=10 * 365 * 86_400)
    max_tool_steps: int | None = Field(None, ge=1, le=MAX_TOOL_STEPS)
    max_turn_tokens: int | None = Field(None, ge=1, le=MAX_TURN_TOKENS)
    fallback_models: FallbackModels | None = None

    @model_validator(mode="after")
    def _no_null_text(self) -> AgentUpdate:
        """`null` clears the optional settings (model, response_shape, ...); text fields take a string."""
        for name in ("name", "description", "type", "context", "first_message", "instructions", "tools", "approval",
                     "fallback_models"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class AgentPublic(AgentBase):
    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    model: str  # type: ignore[assignment]
    response_shape: dict[str, Any] | str | None = None  # type: ignore[assignment]  # what was stored is served back
    tools: list[str] = Field(default_factory=list)  # type: ignore[assignment]
    approval: list[str] = Field(default_factory=list)  # type: ignore[assignment]
    fallback_models: list[str] = Field(default_factory=list)  # served as stored: no check on the way out
    created_at: str
    updated_at: str | None = None
    source: Literal["api", "file"] = "api"

    @field_validator("response_shape", mode="before")
    @classmethod
    def _servable_shape(cls, value: Any) -> Any:
        """A shape stored before the limits and nested too deep to serialize is named instead, so that
        every list of the tenant's agents does not fail on it."""
        if isinstance(value, dict | list) and json_depth(value, SERVABLE_DEPTH) > SERVABLE_DEPTH:
            return f"(a response_shape nested deeper than {SERVABLE_DEPTH} levels, stored before the limits)"
        return value


class SessionCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"agent": "Chef", "session_id": "my-session", "metadata": {"user": "ana"}}]},
    )

    agent: str | None = Field(None, description="Agent id or name; the tenant's first agent when omitted.")
    session_id: str | None = Field(None, pattern=SESSION_ID_PATTERN)
    metadata: Metadata = Field(default_factory=dict, description="Free-form JSON: at most 16 KiB, 32 levels.")


class SessionPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "session_id": "my-session",
                    "agent_id": "agent-1a2b3c4d5e6f",
                    "agent_name": "Chef",
                    "created_at": "2026-11-25T14:00:00.000Z",
                    "metadata": {},
                    "message_count": 3,
                }
            ]
        }
    )

    session_id: str
    agent_id: str
    agent_name: str | None
    created_at: str
    metadata: dict[str, Any]
    message_count: int
    active_jobs: list[str] = Field(
        default_factory=list, description="The session's accepted, unfinished turns (queued, running or waiting)."
    )


class SessionPage(BaseModel):
    data: list[SessionPublic]
    next_cursor: str | None


class MessagePublic(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [{"id": "msg_1", "role": "user", "content": "Something with basil?",
                                         "created_at": "2026-11-25T14:00:00.000Z", "job_id": "job_0f1e2d3c"}]},
    )  # fmt: skip

    id: str
    role: Literal["user", "assistant", "system", "tool"]
    content: str
    created_at: str
    job_id: str | None

    @property
    def feedback(self) -> Feedback | None:
        """The rating a person gave this answer (`PUT .../feedback`); None when it has none (the JSON has no
        `feedback` then)."""
        raw = (self.model_extra or {}).get("feedback")
        return Feedback.model_validate(raw) if isinstance(raw, dict) else None


class ForkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"at": "msg_4"}]})

    at: str = Field(..., max_length=40, description="The last message the fork holds (a message id, `msg_<n>`).")
    session_id: str | None = Field(None, pattern=SESSION_ID_PATTERN, description="The new session's id; generated "
                                   "when omitted (409 when it exists).")  # fmt: skip


class MessagePage(BaseModel):
    data: list[MessagePublic]
    next_before: str | None = Field(None, description="Pass as `before` for the older page; null at the start.")


class ChatRequest(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [{"message": "What is 15% of $2,340?", "agent": "Chef", "session_id": "my-session"}]
        },
    )

    regenerate: bool = Field(False, description="Answer the session's last user message again (no `message`): the "
                             "new answer replaces the old one in the history.")  # fmt: skip
    message: str = Field("", validate_default=True,  # left out, it is checked too: blank unless regenerate
                         description="The user's message; not blank (left out only with `regenerate`).")
    agent: str | None = Field(None, description="Agent id or name; the first agent the tenant sees when omitted.")
    session_id: str | None = Field(None, pattern=SESSION_ID_PATTERN)
    images: list[str] = Field(default_factory=list, max_length=MAX_IMAGES)
    on_busy: OnBusy = Field("enqueue", description="What to do while a turn of the session is queued, running or "
                            "waiting: `enqueue` (run after it), `reject` (409 session_busy), `interrupt` (cancel the "
                            "running turn, run this one next), `steer` (join the running turn before its next model "
                            "call).")  # fmt: skip

    @field_validator("message")
    @classmethod
    def _message_not_blank(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("regenerate"):
            if value:
                raise ValueError("a regenerate request brings no message: it answers the session's last one again")
        elif not value.strip():
            raise ValueError("message must not be blank")
        return value

    @model_validator(mode="after")
    def _regenerate_needs_a_session(self) -> ChatRequest:
        if self.regenerate and (self.images or not self.session_id):
            raise ValueError("regenerate needs a session_id and brings no images: it answers the session's last "
                             "user message again")  # fmt: skip
        return self

    @field_validator("images")
    @classmethod
    def _images_are_data_uris(cls, value: list[str]) -> list[str]:
        for index, image in enumerate(value):
            if not isinstance(image, str) or not IMAGE_PATTERN.match(image[:64] + image[64:].replace("\n", "")):
                raise ValueError(f"images[{index}] is not a data:image/(png|jpeg|gif|webp);base64 URI")
        return value


class ClientToolCall(BaseModel):
    """A call of a tool the client brought (/v1/chat/completions `tools`): the client runs it."""

    id: str
    name: str
    arguments: str


class ChatResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "response": "Try a tomato and basil pasta.",
                    "agent_id": "agent-1a2b3c4d5e6f",
                    "agent_name": "Chef",
                    "session_id": "my-session",
                    "job_id": "job_0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                }
            ]
        }
    )

    response: str
    agent_id: str
    agent_name: str
    session_id: str
    job_id: str
    usage: dict[str, int] | None = Field(None, description="Token counts as the model reported them.")
    structured: Any = Field(None, description="The answer as JSON, for agents with a response_shape.")
    tool_calls: list[ClientToolCall] | None = Field(
        None, description="Calls of the client's own tools (/v1/chat/completions `tools`) the answer ends with."
    )


class JobAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "job_0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                    "session_id": "my-session",
                    "agent_id": "agent-1a2b3c4d5e6f",
                    "status": "queued",
                    "status_url": "/api/v1/jobs/job_0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                    "events_url": "/api/v1/jobs/job_0f1e2d3c4b5a69788796a5b4c3d2e1f0/events",
                }
            ]
        }
    )

    job_id: str
    session_id: str
    agent_id: str
    status: JobStatusName
    status_url: str
    events_url: str
    steering: str | None = Field(
        None, description="With `on_busy: steer` while a turn was under way: that turn's job id. This job's message "
        "joins it before its next model call (this job then ends with a `steered` event naming it), or becomes "
        "the session's next turn.")  # fmt: skip


class PendingCall(BaseModel):
    """A tool call that waits for a decision (`POST /api/v1/jobs/{job_id}/approvals`)."""

    call_id: str
    kind: Literal["approval"] = "approval"
    tool_name: str
    args: Any


class JobPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "job_0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                    "status": "finished",
                    "session_id": "my-session",
                    "agent_id": "agent-1a2b3c4d5e6f",
                    "enqueued_at": "2026-11-25T14:00:00.000Z",
                    "started_at": "2026-11-25T14:00:00.004Z",
                    "ended_at": "2026-11-25T14:00:01.250Z",
                    "result": {
                        "response": "Try a tomato and basil pasta.",
                        "agent_id": "agent-1a2b3c4d5e6f",
                        "agent_name": "Chef",
                        "session_id": "my-session",
                        "job_id": "job_0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                    },
                    "error": None,
                }
            ]
        }
    )

    job_id: str
    status: JobStatusName
    session_id: str
    agent_id: str
    enqueued_at: str | None
    started_at: str | None
    ended_at: str | None
    result: ChatResponse | None
    error: str | None
    pending: list[PendingCall] | None = Field(
        None, description="While `status` is `waiting`: the tool calls that wait for a person's decision."
    )
    steered_into: str | None = Field(
        None, description="A job made by `on_busy: steer` whose message joined a running turn: that turn's job "
        "id (this job is then `finished` with no result of its own; the answer is that job's).")  # fmt: skip
    model: str | None = Field(
        None, description="Once the turn finished: the model that answered (the agent's `model`, or one of its "
        "`fallback_models` when that failed); null while it runs, when it failed, and when no model was asked.")


class ApprovalDecision(BaseModel):
    """`POST /api/v1/jobs/{job_id}/approvals`: a person's decision on one pending call."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"call_id": "call_1", "approve": True}]})
    call_id: str = Field(..., min_length=1, max_length=200)
    approve: bool
    reason: str | None = Field(None, max_length=2000, description="Told to the model with a denial.")


class ErrorDetail(BaseModel):
    code: str = Field(..., examples=["not_found"])
    message: str = Field(..., examples=["session 'my-session' not found"])


class ErrorResponse(BaseModel):
    """Every error's body: `{"error": {"code", "message", ...}}` (some add `job_id` or `details`)."""

    error: ErrorDetail


class SessionSummary(BaseModel):
    """`POST /api/v1/sessions/{id}/summary`: the conversation summarised as the agent's instructions say."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "session_id": "my-session",
                    "agent_id": "agent-1a2b3c4d5e6f",
                    "summary": {"recipes": ["Pesto"], "summary": "The user wanted a basil recipe."},
                    "job_id": "job_0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                }
            ]
        }
    )

    session_id: str
    agent_id: str
    summary: dict[str, Any] = Field(..., description=(
        "The JSON object the agent's response_shape asks for; `{\"text\": ...}` when it has none."))  # fmt: skip
    job_id: str


Rating = Literal["up", "down"]
"""A person's rating of an agent's answer."""
FEEDBACK_COMMENT_MAX = 2000
"""The longest feedback comment, in characters."""


class FeedbackSet(BaseModel):
    """`PUT /api/v1/sessions/{id}/messages/{message_id}/feedback`: rate an answer, or clear its rating (null)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"rating": "up", "comment": "Exactly what I needed."}, {"rating": None}]},
    )

    rating: Rating | None = Field(..., description="`up`, `down`, or null to clear the message's feedback.")
    comment: str | None = Field(None, max_length=FEEDBACK_COMMENT_MAX,
                                description="Why (at most 2000 characters); only with a rating.")  # fmt: skip

    @model_validator(mode="after")
    def _comment_needs_rating(self) -> FeedbackSet:
        if self.rating is None and self.comment:
            raise ValueError("a comment goes with a rating: null clears the feedback, comment included")
        return self


class Feedback(BaseModel):
    """A message's `feedback`: the rating a person gave the answer, their comment, when (ISO 8601)."""

    rating: Rating
    comment: str | None = None
    updated_at: str


class FeedbackItem(BaseModel):
    """One item of `GET /api/v1/feedback`: a rated answer, where it is, and (the start of) its text."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"session_id": "my-session", "message_id": "msg_2",
                                         "agent_id": "agent-1a2b3c4d5e6f", "rating": "down", "comment": "Too long",
                                         "updated_at": "2026-11-25T14:00:00.000Z", "content": "Pesto needs..."}]},
    )  # fmt: skip

    session_id: str
    message_id: str
    agent_id: str
    rating: Rating
    comment: str | None
    updated_at: str
    content: str = Field(..., description="The rated answer's text (its first 1000 characters).")


class FeedbackPage(BaseModel):
    data: list[FeedbackItem]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next (older) page; null at the end.")
