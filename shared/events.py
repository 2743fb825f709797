"""A turn's events: their types, how they are written, ordered and read back. The one owner of the
event wire format: the worker and the web build events with `encode` and read them with `decode`,
the web frames them with `sse_frame`, and the SDK takes its `EventType` and `decode` from here.

Each event is one JSON object with a `type` (the contract's table). It lives in the job's Redis
stream; the stream entry id (`<ms>-<seq>`) is its SSE id, so ids increase within a job and a
client's `Last-Event-ID` says exactly where to resume. Live copies go out on the job's pub/sub
channel as `"<id> <json>"`.

Pure Python on purpose (no server dependency): the SDK imports this module.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    """Every event type a turn's stream carries; each member's docstring names its fields (the contract's
    table, then Parley's extras). A member equals its string (`EventType.DELTA == "delta"`).

    Besides `encode`'s callers, shared/store/scripts/start_turn.lua writes `status` events itself
    (`started`; `retrying` with `attempt`), and the web UI (api/ui/app/*.js) keeps its own list."""

    SESSION = "session"
    """`session_id, agent_id, agent_name, job_id`: always first."""
    STATUS = "status"
    """`message` (`queued`, `started`, `retrying` with `attempt`, `repairing` with `reason`, `waiting` when the
    turn pauses for approvals, `resumed` when it goes on after them)."""
    THINKING = "thinking"
    """`message`: the model's reasoning, where the model gives it."""
    DELTA = "delta"
    """`content`: a piece of the answer as the model streams it (those after a `retrying` replace those before)."""
    LLM_THOUGHT = "llm_thought"
    """`thought, turn`: the model's text between tool calls."""
    TOOL_EXECUTION = "tool_execution"
    """`tool_name, args`, plus `call_id`: a tool is called."""
    TOOL_RESULT = "tool_result"
    """`tool_name, preview`, plus `call_id, ok`: a tool returned."""
    APPROVAL_REQUIRED = "approval_required"
    """`call_id, tool_name, args`: the call waits for a person's decision (`POST /api/v1/jobs/{id}/approvals`);
    its `tool_result` follows once it was decided and, approved, run."""
    STEERED = "steered"
    """`message`: a message sent with `on_busy: steer` joined the turn before this model call (and is stored in
    the history where it joined). In the steer request's own job it comes with `job_id`, the turn it joined, and
    `at`, the id of that turn's `steered` event, just before `done`: that job's events after `at` carry the answer
    (`/api/v1/chat/stream` goes on with them)."""
    RESPONSE = "response"
    """`content, intent, session_id`, plus `usage`, `structured`, and `tool_calls` (`[{id, name, arguments}]`)
    when the answer calls tools of the client (/v1/chat/completions `tools`), and `model` (the model that
    answered: the agent's or one of its fallback_models) when a model did (the summary: only `content,
    structured, session_id`): the final answer."""
    ERROR = "error"
    """`message`, plus `code` (an ErrorCode): the turn failed or was canceled."""
    DONE = "done"
    """No field: always last; then the stream closes."""


class ErrorCode(StrEnum):
    """The `code` of an `error` event (also the job record's `error_code`). shared/errors.TURN_ERRORS maps
    each to the HTTP error a waiting request gets; the SDK's `Event.code` is one of these."""

    CANCELED = "canceled"
    MODEL_TIMEOUT = "model_timeout"
    MODEL_FAILED = "model_failed"
    INVALID_ANSWER = "invalid_answer"
    TURN_FAILED = "turn_failed"
    """The turn's run failed outside the model: its worker stopped, or an unexpected exception."""
    AGENT_MISSING = "agent_missing"
    """The session's agent was deleted before the turn ran."""
    SUMMARY_FAILED = "summary_failed"
    """A session summary failed other than by its model."""
    NOTHING_TO_REGENERATE = "nothing_to_regenerate"
    """A regenerate turn found no user message in its session to answer again."""
    BUDGET_EXCEEDED = "budget_exceeded"
    """The tenant's daily token budget (PARLEY_TENANT_BUDGETS) was spent before the turn's next model call."""


TERMINAL_TYPE = EventType.DONE


class WebhookEvent(StrEnum):
    """What a webhook is sent (`{"type": ..., "job": ...}`): a turn's end, or its pause for approvals. Written by
    shared/store/scripts/lib_turn_end.lua as `turn.<final status>` and `turn.waiting`."""

    FINISHED = "turn.finished"
    FAILED = "turn.failed"
    CANCELED = "turn.canceled"
    WAITING = "turn.waiting"


EVENT_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
MAX_PART = 2**64 - 1
"""Each part of a Redis stream id is an unsigned 64-bit number."""


class BadEvent(ValueError):
    """An event's data that is not a JSON object with a string `type` (`not_json` when it is not JSON at all)."""

    def __init__(self, message: str, not_json: bool) -> None:
        super().__init__(message)
        self.not_json = not_json


def encode(event_type: EventType, **fields: Any) -> str:
    """The event's JSON, compact, as stored and sent. An unknown type is a ValueError: every type is in EventType."""
    return json.dumps({"type": EventType(event_type).value, **fields}, separators=(",", ":"), ensure_ascii=False)


def decode(payload: str) -> dict[str, Any]:
    """An event's JSON as a dict: BadEvent unless it is a JSON object with a string `type`. Its type may be one
    EventType does not know (a newer server's): readers skip what they do not know."""
    try:
        event = json.loads(payload)
    except json.JSONDecodeError:
        raise BadEvent("not JSON", not_json=True) from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise BadEvent("not a JSON object with a type", not_json=False)
    return event


def sse_frame(event_id: str, payload: str) -> str:
    """One event as the contract's SSE message: its `id: ` line and one `data: ` line with the whole JSON."""
    return f"id: {event_id}\ndata: {payload}\n\n"


def id_key(event_id: str) -> tuple[int, int]:
    """Sort key of a stream entry id, so ids compare as Redis orders them."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


def valid_id(event_id: str) -> bool:
    """True for `<ms>-<seq>` in ASCII digits (str.isdigit would also take '²' from a header), each part an
    unsigned 64-bit number, below the largest id (Redis refuses to read after that one: the stream could only
    say "store unavailable", and its client would reconnect for ever)."""
    if EVENT_ID.fullmatch(event_id) is None:
        return False
    ms, seq = id_key(event_id)
    return ms <= MAX_PART and seq <= MAX_PART and (ms, seq) != (MAX_PART, MAX_PART)


def parse_live(message: str) -> tuple[str, str]:
    """Split a pub/sub message into (event id, event JSON)."""
    event_id, _, payload = message.partition(" ")
    return event_id, payload


def from_entries(entries: list[tuple[str, dict[str, str]]]) -> list[tuple[str, str]]:
    """(id, JSON) pairs from XRANGE output."""
    return [(entry_id, fields["e"]) for entry_id, fields in entries]


def is_terminal(payload: str) -> bool:
    return decode(payload)["type"] == TERMINAL_TYPE
