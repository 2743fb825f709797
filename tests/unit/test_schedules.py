"""Schedules on fakeredis's Lua: CREATE_SCHEDULE within the tenant's most, CLAIM_SCHEDULE leasing a firing to
one process, ADVANCE_SCHEDULE moving on once, and the firing loop (worker/schedules.py) turning each scheduled
time into exactly one turn, also when the process that fired it died before it could advance."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from parley.shared import telemetry
from parley.shared.errors import TooManySchedules
from parley.shared.schema import AgentCreate
from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store.agents import AgentStore
from parley.shared.store.connection import RedisClients
from parley.shared.store.schedules import Schedule, ScheduleStore, member, new_schedule_id
from parley.shared.store.turns import TurnStore
from parley.worker import schedules as firing_module
from parley.worker.schedules import LEASE_MS, ScheduleFiring

T = "acme"
START = 1_800_000_000_000


class Clock:
    """The firing loop's `now_ms`, moved by the test."""

    def __init__(self, start: int) -> None:
        self.ms = start

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    ticking = Clock(START)
    monkeypatch.setattr(firing_module, "now_ms", ticking)
    return ticking


@pytest.fixture
def store(clients: RedisClients) -> ScheduleStore:
    return ScheduleStore(clients.text, max_schedules=3)


@pytest.fixture
def chef_agent(clients: RedisClients) -> dict[str, Any]:
    return AgentStore(clients.text).create(T, AgentCreate(name="Chef", first_message="Hello."))  # type: ignore[call-arg]


def new_schedule(agent_id: str = "agent-chef", *, interval_s: int | None = 10, cron: str | None = None,
                 session_id: str = "s-sched", tenant: str = T) -> Schedule:  # fmt: skip
    return Schedule(id=new_schedule_id(), tenant=tenant, agent_id=agent_id, message="Daily report, please.",
                    session_id=session_id, cron=cron, interval_s=None if cron else interval_s, timezone="UTC",
                    created_at=START, next_run_at=START + 10_000)  # fmt: skip


def firing(clients: RedisClients, settings: Settings, store: ScheduleStore) -> ScheduleFiring:
    """One process's firing loop (each call: another process, sharing the one Redis)."""
    return ScheduleFiring(store, AgentStore(clients.text), TurnStore(clients, settings))


def job_ids(clients: RedisClients, tenant: str = T) -> list[str]:
    return sorted(key.rsplit(":", 1)[1] for key in clients.text.scan_iter(keys.job(tenant, "*")))


def firings_counted(clients: RedisClients) -> dict[str, int]:
    raw: dict[str, str] = clients.text.hgetall(telemetry.SCHEDULE_FIRINGS.key)  # type: ignore[assignment]
    return {json.loads(field)[0]: int(count) for field, count in raw.items()}


# --- CREATE_SCHEDULE -----------------------------------------------------------------------------


def test_create_stores_the_schedule_due_at_its_next_run(store: ScheduleStore, clients: RedisClients) -> None:
    schedule = store.create(new_schedule())
    assert store.get(T, schedule.id) == schedule
    assert clients.text.zscore(keys.schedules_due(), member(T, schedule.id)) == START + 10_000
    assert store.of_tenant(T) == [schedule]
    assert store.of_tenant("other") == [] and store.find("other", schedule.id) is None


def test_create_past_the_tenants_most_is_refused_and_writes_nothing(store: ScheduleStore,
                                                                    clients: RedisClients) -> None:  # fmt: skip
    for _ in range(3):
        store.create(new_schedule())
    before = clients.text.zcard(keys.schedules_due())
    with pytest.raises(TooManySchedules):
        store.create(new_schedule())
    assert store.count(T) == 3 and clients.text.zcard(keys.schedules_due()) == before
    store.create(new_schedule(tenant="other"))  # another tenant's most is its own


def test_create_run_twice_writes_once(store: ScheduleStore, clients: RedisClients) -> None:
    schedule = new_schedule()
    store.create(schedule)
    store.create(schedule)
    assert store.count(T) == 1 and clients.text.zcard(keys.schedules_due()) == 1


# --- CLAIM_SCHEDULE and ADVANCE_SCHEDULE ---------------------------------------------------------------


def test_a_due_schedule_is_claimed_by_one_process_until_its_lease_ends(store: ScheduleStore) -> None:
    schedule = store.create(new_schedule())
    due = member(T, schedule.id)
    assert store.claim(due, START + 9_999, LEASE_MS) == "not_due"
    assert store.due(START + 9_999, 10) == []
    assert store.due(START + 10_000, 10) == [due]
    assert store.claim(due, START + 10_000, LEASE_MS) == START + 10_000
    assert store.claim(due, START + 10_001, LEASE_MS) == "not_due"  # another process, during the lease
    assert store.due(START + 10_001, 10) == []
    # the holder died: once the lease ends, another process claims the same scheduled time
    assert store.claim(due, START + 10_000 + LEASE_MS, LEASE_MS) == START + 10_000


def test_advance_moves_on_once_and_counts_the_firing_once(store: ScheduleStore, clients: RedisClients) -> None:
    schedule = store.create(new_schedule())
    scheduled = START + 10_000
    assert store.claim(member(T, schedule.id), scheduled, LEASE_MS) == scheduled
    advance = dict(scheduled_ms=scheduled, next_run_ms=scheduled + 10_000, now_ms=scheduled + 5, job_id="job_1",
                   error=None, outcome="ran")  # fmt: skip
    assert store.advance(schedule, **advance) == "advanced"  # type: ignore[arg-type]
    assert store.advance(schedule, **advance) == "moved"  # type: ignore[arg-type]  # run twice, or another process
    after = store.get(T, schedule.id)
    assert (after.next_run_at, after.last_run_at, after.last_job_id, after.runs) == (scheduled + 10_000,
                                                                                      scheduled + 5, "job_1", 1)
    assert clients.text.zscore(keys.schedules_due(), member(T, schedule.id)) == scheduled + 10_000
    assert firings_counted(clients) == {"ran": 1}


def test_advance_without_a_next_run_stops_the_schedule(store: ScheduleStore, clients: RedisClients) -> None:
    schedule = store.create(new_schedule())
    assert store.advance(schedule, scheduled_ms=START + 10_000, next_run_ms=None, now_ms=START + 10_000,
                         job_id=None, error="stopped: its agent was deleted", outcome="stopped") == "advanced"
    stopped = store.get(T, schedule.id)
    assert stopped.next_run_at is None and stopped.stopped_reason == "stopped: its agent was deleted"
    assert stopped.runs == 0 and stopped.last_job_id is None
    assert clients.text.zscore(keys.schedules_due(), member(T, schedule.id)) is None
    assert store.claim(member(T, schedule.id), START + 60_000, LEASE_MS) == "gone"


def test_a_deleted_schedule_is_never_claimed_again(store: ScheduleStore, clients: RedisClients) -> None:
    schedule = store.create(new_schedule())
    store.delete(T, schedule.id)
    assert store.due(START + 60_000, 10) == []
    assert store.claim(member(T, schedule.id), START + 60_000, LEASE_MS) == "gone"
    assert store.advance(schedule, scheduled_ms=START + 10_000, next_run_ms=START + 20_000, now_ms=START,
                         job_id="job_1", error=None, outcome="ran") == "gone"  # fmt: skip
    assert clients.text.exists(keys.schedule(T, schedule.id)) == 0
    assert clients.text.zcard(keys.schedules_due()) == 0


def test_a_deleted_schedule_claimed_before_its_delete_leaves_no_trace(store: ScheduleStore,
                                                                     clients: RedisClients) -> None:  # fmt: skip
    schedule = store.create(new_schedule())
    store.claim(member(T, schedule.id), START + 10_000, LEASE_MS)
    store.delete(T, schedule.id)
    assert store.advance(schedule, scheduled_ms=START + 10_000, next_run_ms=START + 20_000, now_ms=START,
                         job_id="", error=None, outcome="ran") == "gone"  # fmt: skip
    assert clients.text.exists(keys.schedule(T, schedule.id)) == 0
    assert clients.text.zcard(keys.schedules_due()) == 0


# --- the firing loop ------------------------------------------------------------------------------------


def test_each_due_time_fires_one_turn_in_the_schedules_session(
    clients: RedisClients, settings: Settings, store: ScheduleStore, chef_agent: dict[str, Any], clock: Clock
) -> None:
    schedule = store.create(new_schedule(chef_agent["id"]))
    one, two = firing(clients, settings, store), firing(clients, settings, store)
    clock.ms = START + 9_000
    one.fire_due()
    assert job_ids(clients) == []
    clock.ms = START + 10_050
    one.fire_due()
    two.fire_due()  # the other process finds nothing due
    fired = store.get(T, schedule.id)
    assert fired.runs == 1 and fired.last_job_id is not None and fired.next_run_at == START + 20_000
    job = clients.text.hgetall(keys.job(T, fired.last_job_id))
    assert job["session_id"] == "s-sched" and job["message"] == "Daily report, please."
    scheduled_at = "2027-01-15T08:00:10.000Z"
    assert json.loads(job["annotations"]) == {"schedule": {"id": schedule.id, "scheduled_at": scheduled_at}}
    clock.ms = START + 20_001
    two.fire_due()
    assert len(job_ids(clients)) == 2 and store.get(T, schedule.id).runs == 2
    assert firings_counted(clients) == {"ran": 2}


def test_a_process_that_died_after_accepting_leaves_no_second_turn(
    clients: RedisClients, settings: Settings, store: ScheduleStore, chef_agent: dict[str, Any], clock: Clock
) -> None:
    """The first process claims and accepts the turn, then dies before ADVANCE_SCHEDULE: the next process
    claims the same scheduled time once the lease ends and finds the turn already accepted."""
    schedule = store.create(new_schedule(chef_agent["id"]))
    scheduled = START + 10_000
    dying = firing(clients, settings, store)
    assert store.claim(member(T, schedule.id), scheduled, LEASE_MS) == scheduled
    first = dying._turn(store.get(T, schedule.id), scheduled)  # ... and the process is SIGKILLed here
    assert first.outcome == "ran" and job_ids(clients) == [first.job_id]
    survivor = firing(clients, settings, store)
    clock.ms = scheduled + LEASE_MS - 1
    survivor.fire_due()
    assert store.get(T, schedule.id).runs == 0  # still leased to the dead process
    clock.ms = scheduled + LEASE_MS
    survivor.fire_due()
    after = store.get(T, schedule.id)
    assert job_ids(clients) == [first.job_id]  # no second turn
    assert after.runs == 1 and after.last_job_id == first.job_id
    assert after.next_run_at == START + 20_000  # the first step strictly after now
    assert int(clients.text.get(keys.inflight(T)) or 0) == 1


def test_a_firing_missed_for_many_periods_runs_once(
    clients: RedisClients, settings: Settings, store: ScheduleStore, chef_agent: dict[str, Any], clock: Clock
) -> None:
    schedule = store.create(new_schedule(chef_agent["id"]))
    clock.ms = START + 3_600_000 + 2_500  # everything was down for an hour: 359 periods of 10 s missed
    process = firing(clients, settings, store)
    process.fire_due()
    process.fire_due()
    assert len(job_ids(clients)) == 1
    assert store.get(T, schedule.id).next_run_at == START + 3_610_000


def test_a_turn_the_limits_refuse_is_recorded_and_skipped_not_retried(
    clients: RedisClients, make_settings: Callable[..., Settings], store: ScheduleStore, chef_agent: dict[str, Any],
    clock: Clock,
) -> None:  # fmt: skip
    settings = make_settings(PARLEY_MAX_TURNS_IN_FLIGHT="1")
    TurnStore(clients, settings).accept(tenant=T, agent=chef_agent, session_id="busy", message="hi", images=[],
                                        idempotency_key=None, request_hash="h")  # the tenant's one turn in flight
    schedule = store.create(new_schedule(chef_agent["id"]))
    clock.ms = START + 10_000
    firing(clients, settings, store).fire_due()
    refused = store.get(T, schedule.id)
    assert refused.runs == 0 and refused.last_error is not None and "too_many_requests" in refused.last_error
    assert refused.next_run_at == START + 20_000  # moved on: no busy loop on the refusal
    assert len(job_ids(clients)) == 1
    assert firings_counted(clients) == {"refused": 1}


def test_a_schedule_whose_agent_was_deleted_stops(
    clients: RedisClients, settings: Settings, store: ScheduleStore, chef_agent: dict[str, Any], clock: Clock
) -> None:
    schedule = store.create(new_schedule(chef_agent["id"]))
    AgentStore(clients.text).delete(T, chef_agent["id"])
    clock.ms = START + 10_000
    firing(clients, settings, store).fire_due()
    stopped = store.get(T, schedule.id)
    assert stopped.next_run_at is None and stopped.stopped_reason and "was deleted" in stopped.stopped_reason
    assert job_ids(clients) == [] and store.due(START + 10**9, 10) == []
    assert firings_counted(clients) == {"stopped": 1}


def test_a_session_taken_by_another_agent_refuses_the_firing(
    clients: RedisClients, settings: Settings, store: ScheduleStore, chef_agent: dict[str, Any], clock: Clock
) -> None:
    other = AgentStore(clients.text).create(T, AgentCreate(name="Other"))  # type: ignore[call-arg]
    TurnStore(clients, settings).accept(tenant=T, agent=other, session_id="s-sched", message="hi", images=[],
                                        idempotency_key=None, request_hash="h")  # fmt: skip
    schedule = store.create(new_schedule(chef_agent["id"]))
    clock.ms = START + 10_000
    firing(clients, settings, store).fire_due()
    refused = store.get(T, schedule.id)
    assert refused.last_error is not None and refused.last_error.startswith("conflict")
    assert refused.next_run_at == START + 20_000


def test_the_wait_until_the_next_look_is_bounded(
    clients: RedisClients, settings: Settings, store: ScheduleStore, chef_agent: dict[str, Any], clock: Clock
) -> None:
    process = firing(clients, settings, store)
    assert process.fire_due() == firing_module.POLL_INTERVAL_S  # nothing at all
    store.create(new_schedule(chef_agent["id"]))
    clock.ms = START + 9_800
    assert process.fire_due() == pytest.approx(0.2)


def test_a_schedule_that_cannot_be_fired_does_not_hold_up_the_others(
    clients: RedisClients, settings: Settings, store: ScheduleStore, chef_agent: dict[str, Any], clock: Clock
) -> None:
    broken = store.create(replace(new_schedule(chef_agent["id"]), next_run_at=START + 9_000))  # first in line
    clients.text.hset(keys.schedule(T, broken.id), "interval_s", "not a number")  # a record no process can read
    healthy = store.create(new_schedule(chef_agent["id"], session_id="s-other"))
    clock.ms = START + 10_000
    firing(clients, settings, store).fire_due()
    assert store.get(T, healthy.id).runs == 1
    # the broken one is leased, not retried in a loop: due again only when its lease ends
    assert store.due(START + 10_000 + LEASE_MS - 1, 10) == []
    assert store.due(START + 10_000 + LEASE_MS, 10) == [member(T, broken.id)]
