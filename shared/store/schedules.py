"""Schedules in Redis: a tenant's messages sent to an agent on a cron expression or an interval.

`keys.schedule(tenant, id)` is one hash (every field a string, '' for none): `agent_id`, `message`,
`session_id`, `cron` or `interval_s`, `timezone`, `created_at`, `next_run_at` (ms; '' once stopped),
`last_run_at`, `last_job_id`, `runs`, `last_error` (why the last firing ran no turn), `stopped_reason`.
`keys.schedules(tenant)` lists a tenant's ids by creation; `keys.schedules_due()` holds every schedule that
still runs, deployment-wide, as `"<tenant> <id>"` scored by its next run.

Firing exactly once, whatever the number of processes (worker/schedules.py runs it): a process reads the due
members, leases one with CLAIM_SCHEDULE (its score moves to the lease's end, so no other process takes it
meanwhile), accepts the turn through `TurnStore.accept` under an Idempotency-Key made of the schedule id and
the scheduled time, then moves the schedule on with ADVANCE_SCHEDULE, only if its next run is still that
scheduled time. A process that dies after accepting and before advancing leaves the lease to run out; the
next process to claim fires the same scheduled time, and the Idempotency-Key gives it the turn already
accepted instead of a second one. Every step is one script or one idempotent command: any may be retried.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from parley.shared import telemetry
from parley.shared.clock import iso
from parley.shared.errors import NotFound, TooManySchedules
from parley.shared.store import keys, scripts
from parley.shared.store.scripts.calls import AdvanceScheduleCall, CreateScheduleCall

ID_PREFIX = "sch_"
MAX_ID_CHARS = 64
FIELDS = ("agent_id", "message", "session_id", "cron", "interval_s", "timezone", "created_at", "next_run_at",
          "last_run_at", "last_job_id", "runs", "last_error", "stopped_reason")  # fmt: skip


def new_schedule_id() -> str:
    return f"{ID_PREFIX}{uuid.uuid4().hex}"


def member(tenant: str, schedule_id: str) -> str:
    """A schedule's entry in `keys.schedules_due()` (tenant names hold no space)."""
    return f"{tenant} {schedule_id}"


def parse_member(value: str) -> tuple[str, str]:
    tenant, _, schedule_id = value.partition(" ")
    return tenant, schedule_id


@dataclass(frozen=True)
class Schedule:
    """One schedule as stored. Times are ms since the epoch; `next_run_at` None once it stopped."""

    id: str
    tenant: str
    agent_id: str
    message: str
    session_id: str
    cron: str | None
    interval_s: int | None
    timezone: str
    created_at: int
    next_run_at: int | None
    last_run_at: int | None = None
    last_job_id: str | None = None
    runs: int = 0
    last_error: str | None = None
    stopped_reason: str | None = None

    def fields(self) -> dict[str, str]:
        """The hash's fields ('' for none)."""
        return {"agent_id": self.agent_id, "message": self.message, "session_id": self.session_id,
                "cron": self.cron or "", "interval_s": "" if self.interval_s is None else str(self.interval_s),
                "timezone": self.timezone, "created_at": str(self.created_at),
                "next_run_at": "" if self.next_run_at is None else str(self.next_run_at),
                "last_run_at": "" if self.last_run_at is None else str(self.last_run_at),
                "last_job_id": self.last_job_id or "", "runs": str(self.runs), "last_error": self.last_error or "",
                "stopped_reason": self.stopped_reason or ""}  # fmt: skip

    def public(self) -> dict[str, Any]:
        """As the API shows it (times in ISO 8601, UTC)."""
        return {"id": self.id, "agent_id": self.agent_id, "message": self.message, "session_id": self.session_id,
                "cron": self.cron, "interval_s": self.interval_s, "timezone": self.timezone,
                "next_run_at": iso(self.next_run_at), "created_at": iso(self.created_at),
                "last_run_at": iso(self.last_run_at), "last_job_id": self.last_job_id, "runs": self.runs,
                "last_error": self.last_error, "stopped_reason": self.stopped_reason}  # fmt: skip


def _int(value: str | None) -> int | None:
    return int(value) if value else None


def decode(tenant: str, schedule_id: str, raw: dict[str, str]) -> Schedule | None:
    """The hash as a Schedule; None when there is none."""
    if not raw or "agent_id" not in raw:
        return None
    return Schedule(
        id=schedule_id, tenant=tenant, agent_id=raw["agent_id"], message=raw.get("message", ""),
        session_id=raw.get("session_id", ""), cron=raw.get("cron") or None, interval_s=_int(raw.get("interval_s")),
        timezone=raw.get("timezone") or "UTC", created_at=_int(raw.get("created_at")) or 0,
        next_run_at=_int(raw.get("next_run_at")), last_run_at=_int(raw.get("last_run_at")),
        last_job_id=raw.get("last_job_id") or None, runs=_int(raw.get("runs")) or 0,
        last_error=raw.get("last_error") or None, stopped_reason=raw.get("stopped_reason") or None,
    )  # fmt: skip


class ScheduleStore:
    """Reads and writes of schedules (sync: the web's routes in a thread, the worker's firing loop in one)."""

    def __init__(self, r: redis.Redis, max_schedules: int) -> None:
        self.r = r
        self.max_schedules = max_schedules
        self._create = r.register_script(scripts.CREATE_SCHEDULE)
        self._claim = r.register_script(scripts.CLAIM_SCHEDULE)
        self._advance = r.register_script(scripts.ADVANCE_SCHEDULE)

    # --- the API's side ----------------------------------------------------------------------

    def create(self, schedule: Schedule) -> Schedule:
        """Store a new schedule, due at its `next_run_at`: 409 `too_many_schedules` past the tenant's most
        (checked and written in one script, so two requests at once cannot both pass)."""
        assert schedule.next_run_at is not None
        call = CreateScheduleCall(
            schedule=keys.schedule(schedule.tenant, schedule.id), schedules=keys.schedules(schedule.tenant),
            due=keys.schedules_due(), schedule_id=schedule.id, member=member(schedule.tenant, schedule.id),
            created_ms=schedule.created_at, next_run_ms=schedule.next_run_at, max_schedules=self.max_schedules,
            fields=json.dumps(schedule.fields(), ensure_ascii=False),
        )  # fmt: skip
        if self._create(keys=call.keys(), args=call.args()) == "full":
            raise TooManySchedules(f"this tenant has {self.max_schedules} schedules, the most it may hold "
                                   "(PARLEY_MAX_SCHEDULES): delete one first")  # fmt: skip
        return schedule

    def count(self, tenant: str) -> int:
        return int(self.r.zcard(keys.schedules(tenant)))  # type: ignore[arg-type]

    def find(self, tenant: str, schedule_id: str) -> Schedule | None:
        if not schedule_id or len(schedule_id) > MAX_ID_CHARS:
            return None
        raw: dict[str, str] = self.r.hgetall(keys.schedule(tenant, schedule_id))  # type: ignore[assignment]
        return decode(tenant, schedule_id, raw)

    def get(self, tenant: str, schedule_id: str) -> Schedule:
        found = self.find(tenant, schedule_id)
        if found is None:
            raise NotFound(f"schedule {schedule_id[:80]!r} not found")
        return found

    def of_tenant(self, tenant: str) -> list[Schedule]:
        """The tenant's schedules, oldest first (at most PARLEY_MAX_SCHEDULES of them: one page)."""
        ids: list[str] = self.r.zrange(keys.schedules(tenant), 0, -1)  # type: ignore[assignment]
        with self.r.pipeline(transaction=False) as pipe:
            for schedule_id in ids:
                pipe.hgetall(keys.schedule(tenant, schedule_id))
            raws = pipe.execute()
        found = [decode(tenant, schedule_id, raw) for schedule_id, raw in zip(ids, raws, strict=True)]
        return [schedule for schedule in found if schedule is not None]

    def delete(self, tenant: str, schedule_id: str) -> None:
        """Remove a schedule: from then on no process claims it (a firing claimed just before may still
        end in the turn it was accepting). 404 when there is none."""
        if not schedule_id or len(schedule_id) > MAX_ID_CHARS:
            raise NotFound(f"schedule {schedule_id[:80]!r} not found")
        with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(keys.schedule(tenant, schedule_id))
            pipe.zrem(keys.schedules(tenant), schedule_id)
            pipe.zrem(keys.schedules_due(), member(tenant, schedule_id))
            removed, _, _ = pipe.execute()
        if not removed:
            raise NotFound(f"schedule {schedule_id[:80]!r} not found")

    # --- the firing loop's side ----------------------------------------------------------------

    def due(self, now_ms: int, limit: int) -> list[str]:
        """Members due at `now_ms` (leased ones are not: their score is their lease's end), earliest first."""
        return self.r.zrangebyscore(keys.schedules_due(), "-inf", now_ms, start=0, num=limit)  # type: ignore[return-value]

    def next_due_ms(self) -> int | None:
        """The earliest score in the due set (a next run or a lease's end), None when it is empty."""
        first = self.r.zrange(keys.schedules_due(), 0, 0, withscores=True)
        return int(first[0][1]) if first else None  # type: ignore[index]

    def claim(self, due_member: str, now_ms: int, lease_ms: int) -> int | str:
        """Lease a due schedule (CLAIM_SCHEDULE): the scheduled time to fire (ms), or 'not_due' / 'gone'."""
        tenant, schedule_id = parse_member(due_member)
        answer = self._claim(keys=[keys.schedules_due(), keys.schedule(tenant, schedule_id)],
                             args=[due_member, now_ms, lease_ms])  # fmt: skip
        return int(answer[1]) if answer[0] == "claimed" else str(answer[0])

    def advance(self, schedule: Schedule, *, scheduled_ms: int, next_run_ms: int | None, now_ms: int,
                job_id: str | None, error: str | None, outcome: str) -> str:  # fmt: skip
        """Record the firing of `scheduled_ms` and move on (ADVANCE_SCHEDULE; `next_run_ms` None stops the
        schedule, `error` saying why): 'advanced', 'moved' (another process did it) or 'gone' (deleted)."""
        call = AdvanceScheduleCall(
            schedule=keys.schedule(schedule.tenant, schedule.id), due=keys.schedules_due(),
            firings=telemetry.SCHEDULE_FIRINGS.key, member=member(schedule.tenant, schedule.id),
            scheduled_ms=scheduled_ms, next_run_ms="" if next_run_ms is None else next_run_ms, now_ms=now_ms,
            job_id=job_id or "", error=error or "", outcome=telemetry.labels_field((outcome,)),
        )  # fmt: skip
        return str(self._advance(keys=call.keys(), args=call.args()))
