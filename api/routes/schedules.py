"""`/api/v1/schedules`: messages sent to an agent on a cron expression or every so many seconds.

Each firing is one turn of the schedule's session, accepted as a chat turn is (its job, events and limits),
exactly once however many processes run (worker/schedules.py fires them). A schedule created without a
`session_id` gets a session of its own at creation, which every firing continues: its turns share memory.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from parley.shared.clock import now_ms
from parley.shared.errors import Conflict, TooLarge
from parley.shared.recurrence import MAX_INTERVAL_S, check_cron, next_run_ms, zone
from parley.shared.schema import SESSION_ID_PATTERN
from parley.shared.store.schedules import Schedule, ScheduleStore, new_schedule_id
from parley.shared.store.sessions import new_session_id

from ..deps import Runtime, Tenant
from ..errors import documented
from ..runtime import WebRuntime

router = APIRouter(prefix="/api/v1/schedules", tags=["schedules"],
                   responses=documented(401, 404, 409, 413, 422, 503))  # fmt: skip


class ScheduleCreate(BaseModel):
    """A schedule to create: exactly one of `cron` and `interval_s`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"agent": "Chef", "message": "Suggest today's soup.", "cron": "0 9 * * MON-FRI",
                                         "timezone": "Europe/Paris"}]},
    )  # fmt: skip

    agent: str = Field(..., min_length=1, max_length=200, description="Agent id or name.")
    message: str = Field(..., description="The user message each firing sends; not blank, within the chat limits.")
    session_id: str | None = Field(None, pattern=SESSION_ID_PATTERN, description="The session every firing "
                                   "continues (created when unknown); omitted: the schedule gets its own.")  # fmt: skip
    cron: str | None = Field(None, description="Five fields: minute hour day-of-month month day-of-week, with "
                             "ranges, steps, lists and names (`*/15 9-17 * * MON-FRI`).")  # fmt: skip
    interval_s: int | None = Field(None, strict=True, ge=1, le=MAX_INTERVAL_S,
                                   description="Fire every this many seconds, counted from the creation.")
    timezone: str = Field("UTC", description="IANA time zone the cron expression is read in (DST included).")

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be blank")
        return value

    @model_validator(mode="after")
    def _one_recurrence(self) -> ScheduleCreate:
        if (self.cron is None) == (self.interval_s is None):
            raise ValueError("give exactly one of `cron` and `interval_s`")
        zone(self.timezone)
        if self.cron is not None:
            self.cron = check_cron(self.cron, self.timezone)
        return self


class SchedulePublic(BaseModel):
    """A schedule as the API shows it; times in ISO 8601, UTC."""

    id: str
    agent_id: str
    message: str
    session_id: str = Field(..., description="The session whose turns the firings are.")
    cron: str | None
    interval_s: int | None
    timezone: str
    next_run_at: str | None = Field(..., description="When it fires next; null once it stopped.")
    created_at: str
    last_run_at: str | None = Field(..., description="When it last fired (a turn, or a firing the limits refused).")
    last_job_id: str | None = Field(..., description="The turn of the last firing that ran one.")
    runs: int = Field(..., description="Firings that ran a turn.")
    last_error: str | None = Field(None, description="Why the last firing ran no turn (e.g. the tenant's limits).")
    stopped_reason: str | None = Field(None, description="Why it fires no more (its agent was deleted).")


def _store(rt: WebRuntime) -> ScheduleStore:
    return ScheduleStore(rt.clients.text, rt.settings.max_schedules)


def _shown(schedule: Schedule) -> SchedulePublic:
    public: dict[str, Any] = schedule.public()
    return SchedulePublic(**public)


@router.post("", status_code=201, response_model=SchedulePublic)
def create_schedule(body: ScheduleCreate, rt: Runtime, tenant: Tenant) -> SchedulePublic:
    """Create a schedule; its first run is the first cron time or interval step after now."""
    if len(body.message) > rt.settings.max_message_chars:
        raise TooLarge(f"message is longer than {rt.settings.max_message_chars} characters")
    agent = rt.agents.get(tenant, body.agent)
    session_id = body.session_id or new_session_id()
    bound = rt.sessions.bound_agent(tenant, session_id) if body.session_id else None
    if bound is not None and bound != agent["id"]:
        raise Conflict(f"session {session_id!r} belongs to another agent ({bound})")
    created = now_ms()
    schedule = Schedule(
        id=new_schedule_id(), tenant=tenant, agent_id=agent["id"], message=body.message, session_id=session_id,
        cron=body.cron, interval_s=body.interval_s, timezone=body.timezone, created_at=created,
        next_run_at=next_run_ms(cron=body.cron, interval_s=body.interval_s, timezone=body.timezone,
                                anchor_ms=created, now_ms=created),
    )  # fmt: skip
    _store(rt).create(schedule)
    if bound is None:  # the schedule's session, from now on (a firing would create it too: accept does)
        with suppress(Conflict):
            rt.sessions.create(tenant, agent, session_id, {} if body.session_id else {"schedule_id": schedule.id})
    return _shown(schedule)


@router.get("", response_model=list[SchedulePublic])
def list_schedules(rt: Runtime, tenant: Tenant) -> list[SchedulePublic]:
    """The tenant's schedules, oldest first."""
    return [_shown(schedule) for schedule in _store(rt).of_tenant(tenant)]


@router.get("/{schedule_id}", response_model=SchedulePublic)
def get_schedule(schedule_id: str, rt: Runtime, tenant: Tenant) -> SchedulePublic:
    """One schedule, with its last firing."""
    return _shown(_store(rt).get(tenant, schedule_id))


@router.delete("/{schedule_id}", status_code=204)
def delete_schedule(schedule_id: str, rt: Runtime, tenant: Tenant) -> Response:
    """Delete a schedule: it fires no more. Its session and the turns it ran stay."""
    _store(rt).delete(tenant, schedule_id)
    return Response(status_code=204)
