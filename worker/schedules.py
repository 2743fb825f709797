"""The firing loop: every worker process fires the schedules that are due, each firing exactly once.

Why not rq's own scheduling: rq's `CronScheduler` keeps its jobs in the process that registered them (every
scheduler running the same list enqueues its own copy), reads cron in the host's local time, and its
`RQScheduler` elects one process per queue with a lock that, when that process dies, leaves every schedule
waiting until the lock expires. Schedules here are the tenants' data in Redis, and any worker may fire any one:
the lease is per schedule and per firing (shared/store/schedules.py says how CLAIM_SCHEDULE, the turn's
Idempotency-Key and ADVANCE_SCHEDULE make each firing one turn, across SIGKILL and restarts).

A firing is a normal turn accepted through `TurnStore.accept` (its job, its events, the tenant's limits);
a turn the tenant's limits refuse is recorded on the schedule (`last_error`) and the schedule moves on to its
next run: a refused firing is skipped, never retried in a loop. A schedule whose agent was deleted stops
(`stopped_reason`). The blocking Redis work runs in a thread beside the event loop (one firing at a time per
process; the processes share the due schedules between them).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass

import redis

from parley.shared.clock import iso, now_ms
from parley.shared.errors import ParleyError
from parley.shared.recurrence import InvalidRecurrence, next_run_ms
from parley.shared.store.agents import AgentStore
from parley.shared.store.schedules import Schedule, ScheduleStore, parse_member
from parley.shared.store.turns import TurnStore

log = logging.getLogger("parley.schedules")

LEASE_MS = 3_000
"""How long a claimed firing is this process's alone, in ms. A firing takes a few ms; a process that dies
holding one delays it by at most this long (then another process fires it, once)."""
POLL_INTERVAL_S = 0.5
"""Longest wait between two looks at the due schedules (a firing is at most this late, plus its own time)."""
BATCH = 50
"""Due schedules read per look; more are read at once on the next one."""
ERROR_BACKOFF_S = 1.0
"""Wait after Redis failed before looking again."""


def idempotency_key(schedule_id: str, scheduled_ms: int) -> str:
    """The firing's Idempotency-Key: the same for every process that fires this scheduled time. A newline,
    which no HTTP header may carry, keeps it apart from every key a client can send."""
    return f"schedule\n{schedule_id}\n{scheduled_ms}"


def request_hash(schedule: Schedule, scheduled_ms: int) -> str:
    """What the firing's Idempotency-Key is bound to (the same in every process that fires it)."""
    material = "\n".join([schedule.id, str(scheduled_ms), schedule.agent_id, schedule.session_id, schedule.message])
    return hashlib.sha256(material.encode()).hexdigest()


@dataclass(frozen=True)
class Fired:
    """What one firing did: `outcome` ran, refused or stopped; the turn's job id when one ran."""

    outcome: str
    job_id: str | None = None
    error: str | None = None


class ScheduleFiring:
    """One process's share of the firings (its `run` is a side task of worker/engine.py)."""

    def __init__(self, schedules: ScheduleStore, agents: AgentStore, turns: TurnStore) -> None:
        self.schedules = schedules
        self.agents = agents
        self.turns = turns

    async def run(self) -> None:
        """Fire what is due, then wait (until the earliest next run, at most POLL_INTERVAL_S); until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                wait_s = await loop.run_in_executor(None, self.fire_due)
            except redis.RedisError:
                log.warning("could not fire the due schedules; trying again", exc_info=True)
                wait_s = ERROR_BACKOFF_S
            except Exception:
                log.exception("the firing loop failed; trying again")
                wait_s = ERROR_BACKOFF_S
            await asyncio.sleep(wait_s)

    def fire_due(self) -> float:
        """Claim and fire each due schedule another process has not claimed; the seconds to wait before the
        next look (0 when more may be due)."""
        members = self.schedules.due(now_ms(), BATCH)
        for due_member in members:
            try:
                claimed = self.schedules.claim(due_member, now_ms(), LEASE_MS)
                if isinstance(claimed, int):
                    self.fire(due_member, claimed)
            except (redis.ConnectionError, redis.TimeoutError):
                raise  # Redis is away: the loop waits and looks again
            except Exception:  # this one is tried again when its lease ends; the others go on now
                log.warning("could not fire the schedule %s; it is tried again in %d ms", due_member, LEASE_MS,
                            exc_info=True)  # fmt: skip
        if len(members) >= BATCH:
            return 0.0
        earliest = self.schedules.next_due_ms()
        if earliest is None:
            return POLL_INTERVAL_S
        return min(POLL_INTERVAL_S, max(0.0, (earliest - now_ms()) / 1000))

    def fire(self, due_member: str, scheduled_ms: int) -> str:
        """Fire one claimed scheduled time and move the schedule on: ADVANCE_SCHEDULE's answer."""
        tenant, schedule_id = parse_member(due_member)
        schedule = self.schedules.find(tenant, schedule_id)
        if schedule is None:
            return "gone"  # deleted after the claim: the lease runs out and the next claim takes it out of due
        fired = self._turn(schedule, scheduled_ms)
        now = now_ms()
        following: int | None = None
        error = fired.error
        if fired.outcome != "stopped":
            try:
                following = next_run_ms(cron=schedule.cron, interval_s=schedule.interval_s,
                                        timezone=schedule.timezone, anchor_ms=schedule.created_at, now_ms=now)
            except InvalidRecurrence as invalid:  # the tz database changed under it: it cannot run again
                error = f"stopped: its recurrence no longer has a next run ({invalid})"
        answer = self.schedules.advance(schedule, scheduled_ms=scheduled_ms, next_run_ms=following, now_ms=now,
                                        job_id=fired.job_id, error=error, outcome=fired.outcome)  # fmt: skip
        log.info("schedule %s of %s, due %s: %s%s (%s)", schedule.id, tenant, iso(scheduled_ms), fired.outcome,
                 f" job {fired.job_id}" if fired.job_id else f": {error}", answer)  # fmt: skip
        return answer

    def _turn(self, schedule: Schedule, scheduled_ms: int) -> Fired:
        """Accept the firing's turn (or find the one accepted already for this scheduled time)."""
        agent = self.agents.get_by_id(schedule.tenant, schedule.agent_id)
        if agent is None:
            return Fired("stopped", error=f"stopped: its agent {schedule.agent_id} was deleted")
        try:
            accepted = self.turns.accept(
                tenant=schedule.tenant, agent=agent, session_id=schedule.session_id, message=schedule.message,
                images=[], idempotency_key=idempotency_key(schedule.id, scheduled_ms),
                request_hash=request_hash(schedule, scheduled_ms),
                annotations={"schedule": {"id": schedule.id, "scheduled_at": iso(scheduled_ms)}},
            )  # fmt: skip
        except ParleyError as refused:
            return Fired("refused", error=f"{refused.code}: {refused.message}")
        return Fired("ran", job_id=accepted.job_id)
