"""A turn's life in Redis as a worker lives it, on the worker's event loop (`redis.asyncio`): start
the turn, emit its events, ask whether its attempts still run, finish it. The scripts and their
calls are turns.py's and scripts/': this module only runs them without blocking the loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import NoScriptError
from rq.job import Job

from parley.shared import telemetry
from parley.shared.clock import now_ms
from parley.shared.store import keys, memory, scripts
from parley.shared.store.agents import decode_agent
from parley.shared.store.scripts.calls import EmitTurnEventCall, PauseTurnCall, StartTurnCall
from parley.shared.store.turns import TurnStore, approval_member, new_call_id, rq_now
from parley.shared.store.usage import UsageDay


@dataclass(frozen=True)
class Attempt:
    """One attempt of one turn, as the worker running it names it."""

    tenant: str
    job_id: str
    attempt: int


@dataclass(frozen=True)
class ContextRead:
    """What READ_CONTEXT read for a turn: its agent (None: gone) and its session's memory, raw."""

    agent: dict[str, Any] | None
    total: int
    first: str | None
    fields: list[str | None]
    tail: list[str]

    def prefetched(self, model: str) -> memory.Prefetched:
        """The session's memory for `model`'s token counts, as `memory.read_window` takes it."""
        return memory.Prefetched(snapshot=memory.snapshot_of(self.total, self.first, self.fields, model),
                                 tail_start=self.total - len(self.tail), tail=self.tail)  # fmt: skip


class WorkerTurns:
    def __init__(self, store: TurnStore, aio: aredis.Redis) -> None:
        """`store` builds the calls (and keeps the settings); `aio` runs them."""
        self.store = store
        self.aio = aio
        # START and FINISH also record telemetry in the same step (their .lua files say how); a second run
        # of the same call is answered before that, so it records nothing again.
        self._start = aio.register_script(scripts.START_TURN)
        self._emit = aio.register_script(scripts.EMIT_TURN_EVENT)
        self._finish = aio.register_script(scripts.FINISH_TURN)
        self._read_context = aio.register_script(scripts.READ_CONTEXT)
        self._pause = aio.register_script(scripts.PAUSE_TURN)
        self._decide = aio.register_script(scripts.DECIDE_APPROVAL)
        self._take_steers = aio.register_script(scripts.TAKE_STEERS)
        self._count_canceled = aio.register_script(scripts.COUNT_CANCELED)

    async def start(self, tenant: str, job_id: str) -> tuple[str, int, dict[str, str]]:
        """('started', attempt, job record) when this worker may run the turn, else ('final', 'waiting' or
        'missing', 0, {})."""
        settings = self.store.settings
        call = StartTurnCall(
            job=keys.job(tenant, job_id), events=keys.events(tenant, job_id),
            live_channel=keys.live_channel(tenant, job_id), metrics=telemetry.script_keys(),
            now_ms=now_ms(), stream_ttl_ms=self.store.retention_ms + settings.turn_timeout_s * 1000,
            call_id=new_call_id(), deltas=telemetry.script_arg(telemetry.PENDING.take()),
        )  # fmt: skip
        state, attempt, *rest = await self._start(keys=call.keys(), args=call.args())
        flat = rest[0] if rest else []
        return state, int(attempt), dict(zip(flat[::2], flat[1::2], strict=True))

    async def read_context(self, tenant: str, agent_id: str, session_id: str) -> ContextRead:
        """The turn's agent and its session's memory snapshot with its newest messages, in one round trip
        (most turns need no other read before the model call)."""
        script_keys = [keys.agent(tenant, agent_id), keys.agent(keys.FILE_SCOPE, agent_id),
                       keys.messages(tenant, session_id), keys.session(tenant, session_id)]  # fmt: skip
        agent, total, first, fields, tail = await self._read_context(keys=script_keys, args=[memory.FIRST_CHUNK])
        decoded = decode_agent(dict(zip(agent[::2], agent[1::2], strict=True))) if agent else None
        return ContextRead(agent=decoded, total=int(total), first=first or None, fields=list(fields), tail=list(tail))

    async def emit(self, turn: Attempt, payloads: list[str]) -> bool:
        """Emit events of a running attempt, in order, in one round trip and one script run; False means
        stop: the turn was canceled, ended or superseded (and the batch was dropped)."""
        if not payloads:
            return True  # nothing to write (and nothing learnt: the next batch finds out)
        call = EmitTurnEventCall(job=keys.job(turn.tenant, turn.job_id), events=keys.events(turn.tenant, turn.job_id),
                                 live_channel=keys.live_channel(turn.tenant, turn.job_id), attempt=turn.attempt,
                                 call_id=new_call_id(), payloads=tuple(payloads))  # fmt: skip
        try:
            return await self._emit_batch(call)
        except NoScriptError:  # Redis restarted or its scripts were flushed: load it, send again
            await self.aio.script_load(scripts.EMIT_TURN_EVENT)
            return await self._emit_batch(call)

    async def _emit_batch(self, call: EmitTurnEventCall) -> bool:
        # EVALSHA straight on the pipeline: a Script object on a pipeline costs a SCRIPT EXISTS round
        # trip at every execute. Sending the call again (after a NOSCRIPT reply, or the client's retry
        # after a lost reply) writes nothing twice: the script names its call in the job hash.
        # The telemetry deltas riding along are plain increments: a retried pipeline may count them twice.
        deltas = telemetry.PENDING.take()
        if not deltas:
            script_keys = call.keys()
            return bool(await self.aio.evalsha(self._emit.sha, len(script_keys), *script_keys, *call.args()))
        async with self.aio.pipeline(transaction=False) as pipe:
            script_keys = call.keys()
            pipe.evalsha(self._emit.sha, len(script_keys), *script_keys, *call.args())
            telemetry.write(pipe, deltas)  # rides along: no round trip of its own
            written = (await pipe.execute())[0]
        return bool(written)

    async def take_steers(self, turn: Attempt) -> list[str] | None:
        """Move the steer requests waiting for the attempt's turn into it (TAKE_STEERS); every message the turn
        has taken so far, in order (this call's last), or None when the attempt no longer runs the turn."""
        tenant, job_id = turn.tenant, turn.job_id
        script_keys = [keys.job(tenant, job_id), keys.events(tenant, job_id), keys.live_channel(tenant, job_id),
                       keys.steers(tenant, job_id), keys.inflight(tenant), keys.webhooks(tenant),
                       keys.turn_ends()]  # fmt: skip
        args = [job_id, turn.attempt, now_ms(), self.store.retention_ms, keys.job(tenant, ""), keys.events(tenant, ""),
                keys.live_channel(tenant, ""), Job.redis_job_namespace_prefix]  # fmt: skip
        taken = await self._take_steers(keys=script_keys, args=args)
        return None if taken is None else list(json.loads(taken))

    async def running(self, attempts: list[Attempt]) -> list[bool]:
        """For each attempt, whether it is still its turn's running attempt (not canceled, ended or
        superseded): one round trip for all of them."""
        if not attempts:
            return []
        async with self.aio.pipeline(transaction=False) as pipe:
            for turn in attempts:
                pipe.hmget(keys.job(turn.tenant, turn.job_id), "status", "attempt")
            replies = await pipe.execute()
        return [status == "started" and current == str(turn.attempt)
                for (status, current), turn in zip(replies, attempts, strict=True)]  # fmt: skip

    async def finish(self, turn: Attempt, session_id: str, **values: Any) -> bool:
        """End the attempt's turn once (TurnStore.finish says what `values` may hold). False when it had
        already ended or was taken over."""
        call = self.store.finish_call(turn.tenant, turn.job_id, session_id, attempt=turn.attempt, **values)
        return bool(await self._finish(keys=call.keys(), args=call.args()))

    async def count_canceled(self, turn: Attempt, usage: dict[str, int]) -> bool:
        """Count what the attempt spent (shared/usage.py turn_counts) in its tenant's usage of today, if its turn
        was canceled while it ran (COUNT_CANCELED): once per job. True when counted."""
        settings = self.store.settings
        where = UsageDay.of(turn.tenant, now_ms(), settings.usage_retention_days)
        counted = await self._count_canceled(keys=[keys.job(turn.tenant, turn.job_id), *where.hashes()],
                                             args=[turn.attempt, json.dumps(usage), settings.usage_max_groups,
                                                   where.expire_at])  # fmt: skip
        return bool(counted)

    async def pause(self, turn: Attempt, *, paused: str, pending: str, events_out: list[str]) -> bool:
        """The attempt's turn waits for decisions on `pending` calls (PAUSE_TURN), keeping `paused`, the state
        it goes on from. False when the attempt no longer runs the turn."""
        settings, tenant = self.store.settings, turn.tenant
        call = PauseTurnCall(
            job=keys.job(tenant, turn.job_id), events=keys.events(tenant, turn.job_id),
            live_channel=keys.live_channel(tenant, turn.job_id), tool_runs=keys.tool_runs(tenant, turn.job_id),
            tenant_admitted=keys.tenant_admitted(tenant), tenant_line=keys.tenant_line(tenant),
            rq_queue=keys.rq_queue(settings.queue_name), deadlines=keys.approval_deadlines(),
            webhooks=keys.webhooks(tenant), turn_ends=keys.turn_ends(), job_id=turn.job_id,
            attempt=turn.attempt, call_id=new_call_id(), paused=paused, pending=pending,
            events_out=json.dumps(events_out), keep_ms=self.store.waiting_keep_ms,
            deadline_ms=now_ms() + settings.approval_timeout_s * 1000, member=approval_member(tenant, turn.job_id),
            job_prefix=keys.job(tenant, ""), rq_prefix=Job.redis_job_namespace_prefix,
            tenant_cap=settings.tenant_concurrency, enqueued_at=rq_now(),
        )  # fmt: skip
        return bool(await self._pause(keys=call.keys(), args=call.args()))

    async def expire_approvals(self, limit: int = 100) -> int:
        """Deny, as timed out, every call of the turns whose wait passed its deadline, which resumes them (at
        most `limit` turns a call); how many turns were resumed. Any worker may run this; a turn decided
        meanwhile is left as it is."""
        due = await self.aio.zrangebyscore(keys.approval_deadlines(), "-inf", now_ms(), start=0, num=limit)
        resumed = 0
        for member in due:
            tenant, _, job_id = member.partition(" ")
            session_id = await self.aio.hget(keys.job(tenant, job_id), "session_id")
            # DECIDE_APPROVAL checks the deadline again and drops the deadline of a turn that no longer waits,
            # in one step: a turn resumed and waiting again meanwhile keeps its new deadline.
            call = self.store.decide_call(tenant, job_id, session_id or "", "", False, "timed out")
            outcome, _ = await self._decide(keys=call.keys(), args=call.args())
            resumed += outcome == "resumed"
        return resumed
