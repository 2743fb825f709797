"""Named builders for the scripts with wide positional interfaces: one frozen dataclass per script whose
fields are its KEYS then its ARGV, named and ordered as the script's header says (`-- KEYS:` and `-- ARGV:`
in the .lua file; tests/unit/test_script_headers.py fails when they drift). A caller names every value;
`keys()` and `args()` give them back in the script's positions.

A field made with `key()` is a Redis key, with `arg()` an argument; `rest=True` marks the last one as
variadic (`4.. metrics` in a header): a tuple whose items take that position and every later one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

Value = str | int | float


def key(*, rest: bool = False) -> Any:
    return field(metadata={"kind": "key", "rest": rest})


def arg(*, rest: bool = False) -> Any:
    return field(metadata={"kind": "arg", "rest": rest})


@dataclass(frozen=True)
class ScriptCall:
    """A call of the script `SCRIPT` (shared/store/scripts/<SCRIPT>.lua)."""

    SCRIPT: ClassVar[str]

    @classmethod
    def header(cls, kind: str) -> list[str]:
        """The header's items for `kind` ('key' or 'arg'), as this builder orders them: '1 job', '4.. metrics'."""
        named = [item for item in fields(cls) if item.metadata["kind"] == kind]
        return [f"{position}{'..' if item.metadata['rest'] else ''} {item.name}"
                for position, item in enumerate(named, start=1)]  # fmt: skip

    def _values(self, kind: str) -> list[Any]:
        out: list[Any] = []
        for item in fields(self):
            if item.metadata["kind"] == kind:
                value = getattr(self, item.name)
                out.extend(value) if item.metadata["rest"] else out.append(value)
        return out

    def keys(self) -> list[str]:
        return self._values("key")

    def args(self) -> list[Value]:
        return self._values("arg")


@dataclass(frozen=True)
class AcceptTurnCall(ScriptCall):
    """ACCEPT_TURN (accept_turn.lua): what each value holds is said there."""

    SCRIPT: ClassVar[str] = "accept_turn"
    session: str = key()
    sessions: str = key()
    agent_sessions: str = key()
    messages: str = key()
    lane: str = key()
    job: str = key()
    events: str = key()
    live_channel: str = key()
    idempotency: str = key()
    rq_job: str = key()
    rq_queue: str = key()
    inflight: str = key()
    rate: str = key()
    tenant_admitted: str = key()
    tenant_line: str = key()
    notes: str = key()
    session_images: str = key()
    session_expiries: str = key()
    budget_spent: str = key()
    job_id: str = arg()
    session_id: str = arg()
    agent_id: str = arg()
    now_ms: int = arg()
    metadata: str = arg()
    first_message: str = arg()
    job_fields: str = arg()
    session_event: str = arg()
    queued_event: str = arg()
    retention_ms: int = arg()
    idempotency_value: str = arg()
    idempotency_ttl_ms: int = arg()
    max_queue_depth: int = arg()
    enqueued_at: str = arg()
    max_inflight: int = arg()
    max_rate: int = arg()
    rate_window_ms: int = arg()
    create_session: str = arg()
    tenant_cap: int = arg()
    job_prefix: str = arg()
    rq_prefix: str = arg()
    on_busy: str = arg()
    steers_prefix: str = arg()
    budget: str = arg()


@dataclass(frozen=True)
class StartTurnCall(ScriptCall):
    """START_TURN (start_turn.lua)."""

    SCRIPT: ClassVar[str] = "start_turn"
    job: str = key()
    events: str = key()
    live_channel: str = key()
    metrics: tuple[str, ...] = key(rest=True)
    now_ms: int = arg()
    stream_ttl_ms: int = arg()
    call_id: str = arg()
    deltas: str = arg()


@dataclass(frozen=True)
class EmitTurnEventCall(ScriptCall):
    """EMIT_TURN_EVENT (emit_turn_event.lua): one batch of events."""

    SCRIPT: ClassVar[str] = "emit_turn_event"
    job: str = key()
    events: str = key()
    live_channel: str = key()
    attempt: int = arg()
    call_id: str = arg()
    payloads: tuple[str, ...] = arg(rest=True)


@dataclass(frozen=True)
class FinishTurnCall(ScriptCall):
    """FINISH_TURN (finish_turn.lua)."""

    SCRIPT: ClassVar[str] = "finish_turn"
    job: str = key()
    events: str = key()
    live_channel: str = key()
    lane: str = key()
    messages: str = key()
    session: str = key()
    rq_queue: str = key()
    rq_job: str = key()
    inflight: str = key()
    session_images: str = key()
    tenant_admitted: str = key()
    tenant_line: str = key()
    tool_runs: str = key()
    pending_notes: str = key()
    notes: str = key()
    steers: str = key()
    webhooks: str = key()
    turn_ends: str = key()
    session_expiries: str = key()
    usage_day: str = key()
    usage_agents: str = key()
    usage_sessions: str = key()
    metrics: tuple[str, ...] = key(rest=True)
    job_id: str = arg()
    status: str = arg()
    now_ms: int = arg()
    attempt: int | str = arg()
    result: str = arg()
    error: str = arg()
    error_code: str = arg()
    new_messages: str = arg()
    last_events: str = arg()
    retention_ms: int = arg()
    rq_prefix: str = arg()
    enqueued_at: str = arg()
    images: str = arg()
    tokens: int = arg()
    tenant_cap: int = arg()
    job_prefix: str = arg()
    max_notes: int = arg()
    call_id: str = arg()
    deltas: str = arg()
    usage: str = arg()
    usage_cap: int = arg()
    usage_expire_at: int = arg()


@dataclass(frozen=True)
class AdmitReportCall(ScriptCall):
    """ADMIT_REPORT (admit_report.lua)."""

    SCRIPT: ClassVar[str] = "admit_report"
    rq_queue: str = key()
    inflight: str = key()
    rate: str = key()
    summary_report: str = key()
    rq_job: str = key()
    budget_spent: str = key()
    max_queue_depth: int = arg()
    max_inflight: int = arg()
    max_rate: int = arg()
    rate_window_ms: int = arg()
    job_id: str = arg()
    lock_ttl_ms: int = arg()
    enqueued_at: str = arg()
    budget: str = arg()


@dataclass(frozen=True)
class ForkSessionCall(ScriptCall):
    """FORK_SESSION (fork_session.lua): a new session holding a copy of another's messages up to one."""

    SCRIPT: ClassVar[str] = "fork_session"
    source: str = key()
    source_messages: str = key()
    source_notes: str = key()
    source_images: str = key()
    session: str = key()
    sessions: str = key()
    agent_sessions: str = key()
    messages: str = key()
    notes: str = key()
    session_images: str = key()
    lane: str = key()
    session_expiries: str = key()
    session_id: str = arg()
    at: int = arg()
    now_ms: int = arg()
    max_messages: int = arg()
    session_ttl_ms: int = arg()
    expiry_member: str = arg()


@dataclass(frozen=True)
class SweepSessionCall(ScriptCall):
    """SWEEP_SESSION (sweep_session.lua): delete what is left of one expired session."""

    SCRIPT: ClassVar[str] = "sweep_session"
    session_expiries: str = key()
    session: str = key()
    messages: str = key()
    notes: str = key()
    session_images: str = key()
    summary_lock: str = key()
    lane: str = key()
    sessions: str = key()
    agent_sessions: str = key()
    member: str = arg()
    session_id: str = arg()
    now_ms: int = arg()
    busy_retry_ms: int = arg()
    agent_id: str = arg()


BUILDERS: tuple[type[ScriptCall], ...] = (AcceptTurnCall, StartTurnCall, EmitTurnEventCall, FinishTurnCall,
                                          AdmitReportCall, ForkSessionCall, SweepSessionCall)  # fmt: skip


@dataclass(frozen=True)
class PauseTurnCall(ScriptCall):
    """PAUSE_TURN (pause_turn.lua): a running attempt waits for decisions on tool calls."""

    SCRIPT: ClassVar[str] = "pause_turn"
    job: str = key()
    events: str = key()
    live_channel: str = key()
    tool_runs: str = key()
    tenant_admitted: str = key()
    tenant_line: str = key()
    rq_queue: str = key()
    deadlines: str = key()
    webhooks: str = key()
    turn_ends: str = key()
    job_id: str = arg()
    attempt: int = arg()
    call_id: str = arg()
    paused: str = arg()
    pending: str = arg()
    events_out: str = arg()
    keep_ms: int = arg()
    deadline_ms: int = arg()
    member: str = arg()
    job_prefix: str = arg()
    rq_prefix: str = arg()
    tenant_cap: int = arg()
    enqueued_at: str = arg()


@dataclass(frozen=True)
class DecideApprovalCall(ScriptCall):
    """DECIDE_APPROVAL (decide_approval.lua): a decision on a waiting turn's call; the last one resumes it."""

    SCRIPT: ClassVar[str] = "decide_approval"
    job: str = key()
    events: str = key()
    live_channel: str = key()
    rq_job: str = key()
    rq_queue: str = key()
    tenant_admitted: str = key()
    tenant_line: str = key()
    deadlines: str = key()
    rq_finished: str = key()
    job_id: str = arg()
    call_id: str = arg()
    approve: str = arg()
    reason: str = arg()
    member: str = arg()
    tenant_cap: int = arg()
    enqueued_at: str = arg()
    keep_ms: int = arg()
    now_ms: int = arg()
    rq_fields: tuple[Any, ...] = arg(rest=True)


@dataclass(frozen=True)
class SetFeedbackCall(ScriptCall):
    """SET_FEEDBACK (set_feedback.lua): a message's new feedback, compare-and-set, with the feedback indexes."""

    SCRIPT: ClassVar[str] = "set_feedback"
    session: str = key()
    messages: str = key()
    feedback: str = key()
    agent_feedback: str = key()
    agent_id: str = arg()
    index: int = arg()
    expected: str = arg()
    replacement: str = arg()
    member: str = arg()
    rated_ms: int | str = arg()


@dataclass(frozen=True)
class CreateScheduleCall(ScriptCall):
    """CREATE_SCHEDULE (create_schedule.lua): a new schedule, within the tenant's most."""

    SCRIPT: ClassVar[str] = "create_schedule"
    schedule: str = key()
    schedules: str = key()
    due: str = key()
    schedule_id: str = arg()
    member: str = arg()
    created_ms: int = arg()
    next_run_ms: int = arg()
    max_schedules: int = arg()
    fields: str = arg()


@dataclass(frozen=True)
class AdvanceScheduleCall(ScriptCall):
    """ADVANCE_SCHEDULE (advance_schedule.lua): a firing recorded, the schedule moved to its next run."""

    SCRIPT: ClassVar[str] = "advance_schedule"
    schedule: str = key()
    due: str = key()
    firings: str = key()
    member: str = arg()
    scheduled_ms: int = arg()
    next_run_ms: int | str = arg()
    now_ms: int = arg()
    job_id: str = arg()
    error: str = arg()
    outcome: str = arg()



@dataclass(frozen=True)
class CreateDeliveryCall(ScriptCall):
    """CREATE_DELIVERY (create_delivery.lua): one delivery of a turn end to one webhook, made once."""

    SCRIPT: ClassVar[str] = "create_delivery"
    delivery: str = key()
    index: str = key()
    due: str = key()
    delivery_id: str = arg()
    member: str = arg()
    now_ms: int = arg()
    keep_ms: int = arg()
    max_listed: int = arg()
    fields: tuple[str, ...] = arg(rest=True)


@dataclass(frozen=True)
class ClaimDeliveriesCall(ScriptCall):
    """CLAIM_DELIVERIES (claim_deliveries.lua): lease due deliveries, each tenant up to its cap of attempts."""

    SCRIPT: ClassVar[str] = "claim_deliveries"
    due: str = key()
    parked_tenants: str = key()
    now_ms: int = arg()
    lease_ms: int = arg()
    limit: int = arg()
    token: str = arg()
    delivery_prefix: str = arg()
    webhooks_prefix: str = arg()
    tenant_cap: int = arg()
    leases_prefix: str = arg()
    parked_prefix: str = arg()
    max_examined: int = arg()


@dataclass(frozen=True)
class RecordAttemptCall(ScriptCall):
    """RECORD_ATTEMPT (record_attempt.lua): one attempt of a delivery and what follows it."""

    SCRIPT: ClassVar[str] = "record_attempt"
    delivery: str = key()
    due: str = key()
    leases: str = key()
    member: str = arg()
    token: str = arg()
    call_id: str = arg()
    attempt: str = arg()
    outcome: str = arg()
    next_ms: int = arg()
    keep_ms: int = arg()
    max_attempts: int = arg()



BUILDERS = (*BUILDERS, SetFeedbackCall, CreateScheduleCall, AdvanceScheduleCall, PauseTurnCall, CreateDeliveryCall,
            ClaimDeliveriesCall, RecordAttemptCall)  # fmt: skip
