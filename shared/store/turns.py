"""A turn's life in Redis: accepted by `web`, started, streamed and finished by a `worker`.

Each step is one Lua script of `scripts/` (its __init__ says why; each .lua file's header says its KEYS
and ARGV, which the builders of `scripts/calls.py` name). A turn is also an RQ job with
the same id: RQ delivers it to a worker, heartbeats it and retries it when its worker dies; this
module owns what RQ does not: the session lane (order), the tenant line (fairness between
tenants), the job record the API shows, the event stream, and the single atomic commit.
"""

from __future__ import annotations

import json
import uuid
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError, ResponseError
from rq import Callback, Queue, Retry
from rq.job import Job, JobStatus
from rq.utils import utcformat

from parley.shared import budgets, events, telemetry
from parley.shared.clock import iso, now_ms
from parley.shared.errors import BudgetExceeded, Conflict, NotFound, SessionBusy, limit_refusal
from parley.shared.events import ErrorCode, EventType
from parley.shared.schema import FINAL_STATUSES, ChatResponse, JobPublic, PendingCall
from parley.shared.settings import Settings
from parley.shared.store import keys, scripts
from parley.shared.store.connection import RedisClients
from parley.shared.store.scripts.calls import AcceptTurnCall, DecideApprovalCall, FinishTurnCall
from parley.shared.store.sessions import first_message_json, new_session_id
from parley.shared.store.usage import UsageDay
from parley.tools.notes import MAX_NOTES

TURN_FUNCTION = "parley.worker.turn.run_turn"
"""The RQ job function, named by path: `shared` never imports `worker`."""
TURN_FAILURE_CALLBACK = "parley.worker.turn.on_turn_failure"
UNACCEPTED_JOB_TTL_S = 3600
"""Lifetime of an RQ job saved by a web process that died before accepting it."""


@dataclass(frozen=True)
class Accepted:
    job_id: str
    session_id: str
    agent_id: str
    replayed: bool
    """True when an Idempotency-Key matched an earlier request: nothing new was created."""
    status: str = "queued"
    """The job's status when this answer was made (a replayed job may have ended)."""
    steering: str | None = None
    """With `on_busy: steer` while a turn of the session was under way: that turn's job id. This job waits to
    join it before its next model call (then ends, its events saying so), or runs as the next turn."""


@dataclass(frozen=True)
class ClientTools:
    """What a `/v1/chat/completions` request brings of its own tools, as the job record keeps it for the worker.

    `tools`: OpenAI function tools the model may call beside the agent's; a call of one ends the turn with
    `tool_calls` (the client runs it). `tool_choice`: OpenAI's, for the turn's first model step. `results`:
    the `role: "tool"` messages answering the previous turn's calls (`{"tool_call_id", "content"}`): the
    turn goes on from them instead of from a user message (its `message` is then empty)."""

    tools: list[dict[str, Any]]
    tool_choice: Any = None
    results: list[dict[str, str]] | None = None

    def job_fields(self) -> dict[str, str]:
        fields = {"client_tools": json.dumps(self.tools)}
        if self.tool_choice is not None:
            fields["tool_choice"] = json.dumps(self.tool_choice)
        if self.results is not None:
            fields["tool_results"] = json.dumps(self.results)
        return fields


def approval_member(tenant: str, job_id: str) -> str:
    """A waiting turn in `keys.approval_deadlines()` (tenant names hold no space)."""
    return f"{tenant} {job_id}"


def session_ttl_ms(agent: dict[str, Any]) -> int:
    """The agent's `session_ttl_s` in ms, 0 when its sessions are kept."""
    return int(agent.get("session_ttl_s") or 0) * 1000


def _branch_fields(tenant: str, agent: dict[str, Any], session_id: str, stateless: bool,
                   regenerate: bool) -> dict[str, str]:  # fmt: skip
    """A session turn's job fields for regenerate and retention: the turn keeps its session alive (ACCEPT_TURN and
    FINISH_TURN push its expiry, lib_session_ttl.lua); a stateless turn (its own history) has no session."""
    if stateless:
        return {}
    fields = {"session_ttl_ms": str(session_ttl_ms(agent)),
              "expiry_member": keys.session_expiry_member(tenant, agent["id"], session_id)}  # fmt: skip
    if regenerate:
        fields["regenerate"] = "1"
    return fields


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex}"


def new_call_id() -> str:
    """Names one call of START_TURN, EMIT_TURN_EVENT or FINISH_TURN, so the same call run again by the
    client's retry (after a lost reply) is known and writes nothing twice (scripts/__init__.py, "Run twice")."""
    return uuid.uuid4().hex


def rq_now() -> str:
    """Now as RQ writes times in its job hashes."""
    return utcformat(datetime.now(UTC))


class TurnStore:
    def __init__(self, clients: RedisClients, settings: Settings) -> None:
        self.r = clients.text
        self.raw = clients.raw
        self.settings = settings
        self.queue = Queue(settings.queue_name, connection=clients.raw)
        self._accept = self.r.register_script(scripts.ACCEPT_TURN)
        self._finish = self.r.register_script(scripts.FINISH_TURN)
        self._decide = self.raw.register_script(scripts.DECIDE_APPROVAL)  # raw: RQ's job hash holds bytes

    @property
    def retention_ms(self) -> int:
        return self.settings.retention_s * 1000

    # --- web side -------------------------------------------------------------------------

    def replay(self, tenant: str, idempotency_key: str, request_hash: str) -> Accepted | None:
        """The job an earlier request with this Idempotency-Key created, if any."""
        value = self.r.get(keys.idempotency(tenant, idempotency_key))
        return self._replayed(tenant, value, request_hash) if value else None  # type: ignore[arg-type]

    def idempotent_job(self, tenant: str, idempotency_key: str) -> str | None:
        """The id of the job an Idempotency-Key created, whatever request it came with (a protocol adapter that
        names its own calls by key, to find one again: /mcp's cancel)."""
        value = self.r.get(keys.idempotency(tenant, idempotency_key))
        return str(value).partition(" ")[0] if value else None

    def _replayed(self, tenant: str, value: str, request_hash: str) -> Accepted:
        job_id, _, first_hash = value.partition(" ")
        if first_hash != request_hash:
            raise Conflict("this Idempotency-Key was already used for a different request")
        record = self.job(tenant, job_id)
        if record is None:
            raise Conflict("this Idempotency-Key's job is no longer kept")
        return Accepted(job_id, record["session_id"], record["agent_id"], replayed=True, status=record["status"],
                        steering=record.get("steer_of") if record["status"] == "queued" else None)  # fmt: skip

    def accept(self, *, tenant: str, agent: dict[str, Any], session_id: str | None, message: str,
               images: list[str], idempotency_key: str | None, request_hash: str,
               api_key: str = "", history: list[dict[str, Any]] | None = None,
               client_tools: ClientTools | None = None, instructions: str | None = None,
               response_shape: dict[str, Any] | str | None = None,
               annotations: dict[str, Any] | None = None, on_busy: str = "enqueue",
               job_id: str | None = None, regenerate: bool = False,
               trace: dict[str, str] | None = None) -> Accepted:  # fmt: skip
        """Queue a turn: create the session if needed, record the job, emit `session` and `queued`.

        With `history`, the turn brings its whole conversation (the OpenAI-compatible endpoint
        without a session): no session is created and nothing is committed to memory. With
        `client_tools`, the model may also call the client's own tools (see ClientTools). `instructions`
        (this turn's own, after the agent's) and `response_shape` (instead of the agent's) hold for this turn only
        (the Responses API's `instructions` and `text.format`); `annotations` are kept for the protocol that
        made the turn, to show again (`annotations` in the job record, JSON). `on_busy` says what happens while
        a turn of the session is queued, running or waiting (ACCEPT_TURN): `reject` raises SessionBusy,
        `interrupt` cancels that turn once this one is next in the lane, `steer` makes this one wait to join it.
        `job_id` names the turn (default: a new id), for a protocol that must know it before the turn is queued.
        `regenerate`: the turn answers the session's last user message again (its `message` is empty), its
        answer replacing the old one. `trace`: the request's trace context (`traceparent`, `tracestate`:
        shared/tracing.py), kept for the worker's spans of the turn.

        Raises Conflict (session bound to another agent, or a reused Idempotency-Key) and
        TooManyRequests (queue full, tenant busy, key over its rate; BudgetExceeded: the tenant's tokens for the
        UTC day are spent); in those cases nothing is created.
        """
        session_id = session_id or new_session_id()
        job_id = job_id or new_job_id()
        created = now_ms()
        rq_job = self.rq_job(tenant, job_id, session_id)
        with self.raw.pipeline() as pipe:
            rq_job.save(pipeline=pipe)
            # Until ACCEPT_TURN keeps it (PERSIST), the job expires: a web that dies in between leaves no litter.
            pipe.expire(keys.rq_job(job_id), UNACCEPTED_JOB_TTL_S)
            pipe.execute()
        fields = {
            "tenant": tenant, "session_id": session_id, "agent_id": agent["id"], "agent_name": agent["name"],
            "status": "queued", "enqueued_at": str(created), "attempt": "0", "message": message,
            "images": json.dumps(images), "request_hash": request_hash,
        }  # fmt: skip
        if history is not None:
            fields["history"] = json.dumps(history)
        if client_tools is not None:
            fields.update(client_tools.job_fields())
        if instructions:
            fields["instructions"] = instructions
        if response_shape is not None:
            fields["response_shape"] = json.dumps(response_shape)
        if annotations:
            fields["annotations"] = json.dumps(annotations)
        fields.update(_branch_fields(tenant, agent, session_id, history is not None, regenerate))
        fields.update(trace or {})
        session_event = events.encode(EventType.SESSION, session_id=session_id, agent_id=agent["id"],
                                      agent_name=agent["name"], job_id=job_id)  # fmt: skip
        queued_event = events.encode(EventType.STATUS, message="queued")
        idem_key = keys.idempotency(tenant, idempotency_key) if idempotency_key else keys.idempotency(tenant, "-")
        reply = self._run_accept(rq_job, AcceptTurnCall(
            session=keys.session(tenant, session_id), sessions=keys.sessions(tenant),
            agent_sessions=keys.agent_sessions(tenant, agent["id"]), messages=keys.messages(tenant, session_id),
            lane=keys.lane(tenant, session_id), job=keys.job(tenant, job_id), events=keys.events(tenant, job_id),
            live_channel=keys.live_channel(tenant, job_id), idempotency=idem_key, rq_job=keys.rq_job(job_id),
            rq_queue=keys.rq_queue(self.settings.queue_name), inflight=keys.inflight(tenant),
            rate=keys.rate(tenant, api_key), tenant_admitted=keys.tenant_admitted(tenant),
            tenant_line=keys.tenant_line(tenant), notes=keys.notes(tenant, session_id),
            session_images=keys.session_images(tenant, session_id), session_expiries=keys.session_expiries(),
            job_id=job_id, session_id=session_id, agent_id=agent["id"], now_ms=created, metadata="{}",
            first_message=first_message_json(agent, created), job_fields=json.dumps(fields),
            session_event=session_event, queued_event=queued_event, retention_ms=self.retention_ms,
            idempotency_value=f"{job_id} {request_hash}" if idempotency_key else "",
            idempotency_ttl_ms=self.settings.idempotency_ttl_s * 1000, max_queue_depth=self.settings.max_queue_depth,
            enqueued_at=rq_now(), max_inflight=self.settings.max_turns_in_flight,
            max_rate=self.settings.rate_limit_turns, rate_window_ms=self.settings.rate_window_s * 1000,
            create_session="0" if history is not None else "1", tenant_cap=self.settings.tenant_concurrency,
            job_prefix=keys.job(tenant, ""), rq_prefix=Job.redis_job_namespace_prefix, on_busy=on_busy,
            steers_prefix=keys.steers(tenant, ""), budget_spent=budgets.spent_key(tenant, created),
            budget=budgets.script_arg(self.settings.tenant_budget(tenant)),
        ))  # fmt: skip
        outcome, detail = reply[0], reply[1]
        if outcome == "accepted":
            acted, head = (reply[2], reply[3]) if len(reply) == 4 else (None, None)
            if acted == "interrupt" and head:
                self.cancel(tenant, head)  # already ended: nothing to do (this turn is next all the same)
            return Accepted(job_id, session_id, agent["id"], replayed=False,
                            steering=head if acted == "steer" else None)  # fmt: skip
        rq_job.delete()
        if outcome == "session_busy":
            raise SessionBusy(f"session {session_id!r} has a turn under way ({detail}); on_busy is \"reject\"",
                              job_id=detail)  # fmt: skip
        if outcome == "existing":
            return self._replayed(tenant, detail, request_hash)
        if outcome == "budget_exceeded":
            telemetry.budget_stop("refused")
            raise BudgetExceeded.at_accept(detail, self.settings.tenant_budget(tenant), now_ms())
        refused = limit_refusal(outcome, detail)
        if refused:
            raise refused
        raise Conflict(f"session {session_id!r} belongs to another agent ({detail})")

    def rq_job(self, tenant: str, job_id: str, session_id: str) -> Job:
        """The turn's RQ job as it is first saved (`deferred`; made ready by the lane): no I/O here."""
        return self.queue.create_job(
            TURN_FUNCTION, args=(tenant, job_id), job_id=job_id, status=JobStatus.DEFERRED,
            timeout=self.settings.turn_timeout_s, result_ttl=self.settings.retention_s,
            failure_ttl=self.settings.retention_s,
            retry=Retry(max=self.settings.turn_retries, enqueue_at_front=True) if self.settings.turn_retries else None,
            on_failure=Callback(TURN_FAILURE_CALLBACK), description=f"turn of {tenant}/{session_id}",
        )  # fmt: skip

    def decide_call(self, tenant: str, job_id: str, session_id: str, call_id: str, approve: bool,
                    reason: str) -> DecideApprovalCall:  # fmt: skip
        """DECIDE_APPROVAL's call (`call_id` '' decides every undecided call: a wait that timed out)."""
        rq_fields = self.rq_job(tenant, job_id, session_id).to_dict()
        return DecideApprovalCall(
            job=keys.job(tenant, job_id), events=keys.events(tenant, job_id),
            live_channel=keys.live_channel(tenant, job_id), rq_job=keys.rq_job(job_id),
            rq_queue=keys.rq_queue(self.settings.queue_name), tenant_admitted=keys.tenant_admitted(tenant),
            tenant_line=keys.tenant_line(tenant), deadlines=keys.approval_deadlines(),
            rq_finished=self.queue.finished_job_registry.key, job_id=job_id, call_id=call_id,
            approve="1" if approve else "0", reason=reason, member=approval_member(tenant, job_id),
            tenant_cap=self.settings.tenant_concurrency, enqueued_at=rq_now(), keep_ms=self.waiting_keep_ms,
            now_ms=now_ms(), rq_fields=tuple(item for pair in rq_fields.items() for item in pair),
        )  # fmt: skip

    @property
    def waiting_keep_ms(self) -> int:
        """How long a waiting turn's records are kept from now: its wait, then a run, then the retention."""
        return (self.settings.approval_timeout_s + self.settings.turn_timeout_s + self.settings.retention_s) * 1000

    def decide(self, tenant: str, job_id: str, call_id: str, approve: bool, reason: str) -> str:
        """Record a decision on a waiting turn's call (DECIDE_APPROVAL); 'resumed' when it was the last one.
        NotFound for an unknown job or call, Conflict when the call was decided already or the turn does not wait."""
        session_id = self.r.hget(keys.job(tenant, job_id), "session_id")
        if session_id is None:
            raise NotFound(f"job {job_id!r} not found")
        call = self.decide_call(tenant, job_id, session_id, call_id, approve, reason)  # type: ignore[arg-type]
        outcome, detail = self._decide(keys=call.keys(), args=call.args(), client=self.raw)
        outcome = outcome.decode() if isinstance(outcome, bytes) else outcome
        detail = detail.decode() if isinstance(detail, bytes) else detail
        if outcome == "missing":
            raise NotFound(f"job {job_id!r} not found")
        if outcome == "unknown":
            raise NotFound(f"job {job_id!r} has no call {call_id!r} waiting for a decision")
        if outcome == "decided":
            raise Conflict(f"call {call_id!r} was decided already")
        if outcome == "not_waiting":
            raise Conflict(f"job {job_id!r} is not waiting for decisions (it is {detail})")
        return str(outcome)

    def _run_accept(self, rq_job: Job, call: AcceptTurnCall) -> list[str]:
        """ACCEPT_TURN. A script error wrote nothing (it checks everything before its first write),
        so the RQ job saved for it goes too; a timeout may hide an accepted turn, so it stays (and expires)."""
        try:
            return self._accept(keys=call.keys(), args=call.args())  # type: ignore[no-any-return]
        except ResponseError:
            with suppress(RedisError):
                rq_job.delete()
            raise

    def cancel(self, tenant: str, job_id: str) -> bool:
        """End a queued or running turn as canceled. False when it had already ended."""
        return self.finish(
            tenant, job_id, status="canceled", attempt=None, error="canceled", error_code=ErrorCode.CANCELED,
            events_out=[events.encode(EventType.ERROR, message="canceled", code=ErrorCode.CANCELED),
                        events.encode(EventType.DONE)],
        )  # fmt: skip

    def forget(self, tenant: str, job_id: str) -> None:
        """Delete an ended turn's record, events and tool runs (the Responses API's DELETE); what it committed
        to its session stays. NotFound when there is none, Conflict while it has not ended."""
        key = keys.job(tenant, job_id)
        status = self.r.hget(key, "status")
        if status is None:
            raise NotFound(f"job {job_id!r} not found")
        if status not in FINAL_STATUSES:
            raise Conflict(f"job {job_id!r} has not ended (it is {status}): cancel it first")
        self.r.delete(key, keys.events(tenant, job_id), keys.tool_runs(tenant, job_id))

    def queue_depth(self) -> int:
        return int(self.r.llen(keys.rq_queue(self.settings.queue_name)))  # type: ignore[arg-type]

    # --- reading a job --------------------------------------------------------------------

    def job(self, tenant: str, job_id: str) -> dict[str, str] | None:
        record = self.r.hgetall(keys.job(tenant, job_id))
        return record or None  # type: ignore[return-value]

    @staticmethod
    def public(job_id: str, record: dict[str, str]) -> JobPublic:
        result = json.loads(record["result"]) if record.get("result") else None
        return JobPublic(
            job_id=job_id, status=record["status"], session_id=record["session_id"],  # type: ignore[arg-type]
            agent_id=record["agent_id"], enqueued_at=iso(record.get("enqueued_at")),
            started_at=iso(record.get("started_at")), ended_at=iso(record.get("ended_at")),
            result=ChatResponse.model_validate(result) if result else None, error=record.get("error") or None,
            pending=[PendingCall.model_validate(call) for call in json.loads(record["pending"])]
            if record.get("status") == "waiting" and record.get("pending") else None,
            steered_into=record.get("steered_into") or None,
            model=result.get("model") if isinstance(result, dict) else None,
        )  # fmt: skip

    def finish(self, tenant: str, job_id: str, *, status: str, attempt: int | None, events_out: list[str],
               result: dict[str, Any] | None = None, error: str = "", error_code: str = "",
               messages: list[str] | None = None, session_id: str | None = None,
               images: dict[str, str] | None = None, tokens: int = 0) -> bool:  # fmt: skip
        """End the turn once (see FINISH_TURN): commit, give back its place, ready what waits behind it.
        False when it had already ended. The web's cancel and rq's failure callback call this; a
        worker's turn ends through WorkerTurns.finish (worker_turns.py), with the same call.

        `session_id` saves a read when the caller has the job record; `images` (ref -> data URI) and
        `tokens` are committed with `messages`."""
        if session_id is None:
            session_id = self.r.hget(keys.job(tenant, job_id), "session_id")
            if session_id is None:
                return False
        call = self.finish_call(tenant, job_id, session_id, status=status, attempt=attempt, events_out=events_out,
                                result=result, error=error, error_code=error_code, messages=messages, images=images,
                                tokens=tokens)  # fmt: skip
        return bool(self._finish(keys=call.keys(), args=call.args()))

    def finish_call(self, tenant: str, job_id: str, session_id: str, *, status: str, attempt: int | None,
                    events_out: list[str], result: dict[str, Any] | None = None, error: str = "",
                    error_code: str = "", messages: list[str] | None = None, images: dict[str, str] | None = None,
                    tokens: int = 0, usage: dict[str, int] | None = None) -> FinishTurnCall:  # fmt: skip
        """FINISH_TURN's call for these values (`finish` says what they are); takes the pending telemetry.
        `usage`: what the turn adds to its tenant's usage of today (shared/usage.py turn_counts; None: not
        counted)."""
        now = now_ms()
        usage_day = UsageDay.of(tenant, now, self.settings.usage_retention_days)
        return FinishTurnCall(
            job=keys.job(tenant, job_id), events=keys.events(tenant, job_id),
            live_channel=keys.live_channel(tenant, job_id), lane=keys.lane(tenant, session_id),
            messages=keys.messages(tenant, session_id), session=keys.session(tenant, session_id),
            rq_queue=keys.rq_queue(self.settings.queue_name), rq_job=keys.rq_job(job_id),
            inflight=keys.inflight(tenant), session_images=keys.session_images(tenant, session_id),
            tenant_admitted=keys.tenant_admitted(tenant), tenant_line=keys.tenant_line(tenant),
            tool_runs=keys.tool_runs(tenant, job_id), pending_notes=keys.pending_notes(tenant, job_id),
            notes=keys.notes(tenant, session_id), steers=keys.steers(tenant, job_id), webhooks=keys.webhooks(tenant),
            turn_ends=keys.turn_ends(), session_expiries=keys.session_expiries(),
            usage_day=usage_day.day, usage_agents=usage_day.agents, usage_sessions=usage_day.sessions,
            metrics=telemetry.script_keys(),
            job_id=job_id, status=status, now_ms=now, attempt="" if attempt is None else attempt,
            result=json.dumps(result) if result is not None else "", error=error, error_code=error_code,
            new_messages=json.dumps(messages or []), last_events=json.dumps(events_out),
            retention_ms=self.retention_ms, rq_prefix=Job.redis_job_namespace_prefix, enqueued_at=rq_now(),
            images=json.dumps(images) if images else "", tokens=tokens, tenant_cap=self.settings.tenant_concurrency,
            job_prefix=keys.job(tenant, ""), max_notes=MAX_NOTES, call_id=new_call_id(),
            deltas=telemetry.script_arg(telemetry.PENDING.take()),
            usage=json.dumps(usage) if usage is not None else "", usage_cap=self.settings.usage_max_groups,
            usage_expire_at=usage_day.expire_at,
        )  # fmt: skip
