"""The approval steps of a turn's life (PAUSE_TURN, DECIDE_APPROVAL, START_TURN on a waiting turn, the
timeout sweep) on fakeredis's Lua: fenced, run twice without writing twice, and leaving RQ's records so
that any worker resumes the turn."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from rq.job import Job, JobStatus

from parley.shared import events
from parley.shared.errors import Conflict, NotFound
from parley.shared.events import EventType
from parley.shared.store import keys
from parley.shared.store import worker_turns as worker_turns_module
from parley.shared.store.connection import RedisClients
from parley.shared.store.turns import TurnStore
from parley.shared.store.worker_turns import Attempt, WorkerTurns

from .test_turn_scripts import T, accept, event_list, snapshot, start, take_from_queue

PENDING = [{"call_id": "call_1", "kind": "approval", "tool_name": "bump", "args": {}},
           {"call_id": "call_2", "kind": "approval", "tool_name": "mcp:gh/issue", "args": {"title": "x"}}]  # fmt: skip


def _pause(worker: WorkerTurns, job_id: str, attempt: int, pending: list[dict[str, Any]] = PENDING) -> bool:
    shown = [events.encode(EventType.APPROVAL_REQUIRED, call_id=c["call_id"], tool_name=c["tool_name"], args=c["args"])
             for c in pending]  # fmt: skip
    waiting = events.encode(EventType.STATUS, message="waiting")
    return asyncio.run(worker.pause(Attempt(T, job_id, attempt), paused=json.dumps({"step": 1}),
                                    pending=json.dumps(pending), events_out=[*shown, waiting]))  # fmt: skip


def _waiting(turns: TurnStore, worker: WorkerTurns, chef: dict[str, Any]) -> str:
    job_id = accept(turns, chef).job_id
    take_from_queue(turns, job_id)
    state, attempt, _ = start(worker, job_id)
    assert state == "started"
    assert _pause(worker, job_id, attempt)
    return job_id


def test_a_pause_frees_the_tenants_place_keeps_the_lane_and_shows_pending(
        turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients, chef: dict) -> None:  # fmt: skip
    job_id = accept(turns, chef).job_id
    take_from_queue(turns, job_id)
    _, attempt, _ = start(worker_turns, job_id)
    assert clients.text.get(keys.tenant_admitted(T)) == "1"
    assert not _pause(worker_turns, job_id, attempt + 1)  # another attempt's pause: fenced
    assert _pause(worker_turns, job_id, attempt)
    record = turns.job(T, job_id)
    assert record is not None and record["status"] == "waiting"
    assert turns.public(job_id, record).pending is not None
    assert [call.call_id for call in turns.public(job_id, record).pending or []] == ["call_1", "call_2"]
    assert clients.text.get(keys.tenant_admitted(T)) == "0"
    assert clients.text.lrange(keys.lane(T, "s1"), 0, -1) == [job_id]
    assert clients.text.zscore(keys.approval_deadlines(), f"{T} {job_id}") is not None
    assert [e["type"] for e in event_list(clients, job_id)][-3:] == ["approval_required", "approval_required", "status"]
    assert start(worker_turns, job_id)[0] == "waiting"  # a stale run of the job starts nothing


def test_decisions_404_409_and_the_last_one_requeues_a_fresh_rq_job(
        turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients, chef: dict) -> None:  # fmt: skip
    job_id = _waiting(turns, worker_turns, chef)
    clients.raw.delete(keys.rq_job(job_id))  # RQ's record of the paused run expired during a long wait
    with pytest.raises(NotFound):
        turns.decide(T, job_id, "call_9", True, "")
    with pytest.raises(NotFound):
        turns.decide(T, "job_none", "call_1", True, "")
    assert turns.decide(T, job_id, "call_1", True, "") == "recorded"
    with pytest.raises(Conflict):
        turns.decide(T, job_id, "call_1", False, "")
    assert turns.job(T, job_id)["status"] == "waiting"  # type: ignore[index]
    assert turns.decide(T, job_id, "call_2", False, "not that repo") == "resumed"
    record = turns.job(T, job_id) or {}
    assert record["status"] == "queued"
    assert json.loads(record["decisions"]) == {"call_1": {"approve": True, "reason": ""},
                                               "call_2": {"approve": False, "reason": "not that repo"}}  # fmt: skip
    rq_job = Job.fetch(job_id, connection=clients.raw)
    assert rq_job.get_status() == JobStatus.QUEUED and rq_job.args == (T, job_id)
    assert job_id in turns.queue.job_ids
    assert clients.text.zscore(keys.approval_deadlines(), f"{T} {job_id}") is None
    with pytest.raises(Conflict):
        turns.decide(T, job_id, "call_2", True, "")
    take_from_queue(turns, job_id)
    state, _, started = start(worker_turns, job_id)
    assert state == "started" and "resume" not in started
    assert event_list(clients, job_id)[-1] == {"type": "status", "message": "resumed"}


def test_a_decision_run_twice_writes_once(turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients,
                                          chef: dict) -> None:  # fmt: skip
    job_id = _waiting(turns, worker_turns, chef)
    turns.decide(T, job_id, "call_1", True, "")
    before = snapshot(clients.raw)
    with pytest.raises(Conflict):
        turns.decide(T, job_id, "call_1", True, "")
    assert snapshot(clients.raw) == before


def test_a_pause_run_twice_answers_the_same_and_writes_once(
        turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients, chef: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The same call sent again (the client's retry after a lost reply) finds its own pause and writes nothing."""
    monkeypatch.setattr(worker_turns_module, "new_call_id", lambda: "pause-call-1")
    job_id = accept(turns, chef).job_id
    take_from_queue(turns, job_id)
    _, attempt, _ = start(worker_turns, job_id)
    assert _pause(worker_turns, job_id, attempt)
    before = snapshot(clients.raw)
    assert _pause(worker_turns, job_id, attempt)
    assert snapshot(clients.raw) == before


def test_a_wait_past_its_deadline_is_denied_as_timed_out(
        turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients, chef: dict) -> None:  # fmt: skip
    job_id = _waiting(turns, worker_turns, chef)
    turns.decide(T, job_id, "call_1", True, "")
    assert asyncio.run(worker_turns.expire_approvals()) == 0  # not due yet
    clients.text.zadd(keys.approval_deadlines(), {f"{T} {job_id}": 1})
    # A sweep that read an old, due entry of a turn that waits again (with a later deadline) leaves it waiting.
    assert asyncio.run(worker_turns.expire_approvals()) == 0
    assert (turns.job(T, job_id) or {})["status"] == "waiting"
    assert clients.text.zscore(keys.approval_deadlines(), f"{T} {job_id}") == 1
    clients.text.hset(keys.job(T, job_id), "waiting_until", 1)
    assert asyncio.run(worker_turns.expire_approvals()) == 1
    decisions = json.loads((turns.job(T, job_id) or {})["decisions"])
    assert decisions == {"call_1": {"approve": True, "reason": ""}, "call_2": {"approve": False, "reason": "timed out"}}
    assert (turns.job(T, job_id) or {})["status"] == "queued"


def test_a_canceled_wait_leaves_the_sweep_nothing_to_do(
        turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients, chef: dict) -> None:  # fmt: skip
    job_id = _waiting(turns, worker_turns, chef)
    assert turns.cancel(T, job_id)
    assert (turns.job(T, job_id) or {})["status"] == "canceled"
    assert clients.text.lrange(keys.lane(T, "s1"), 0, -1) == []
    clients.text.zadd(keys.approval_deadlines(), {f"{T} {job_id}": 1})
    assert asyncio.run(worker_turns.expire_approvals()) == 0
    assert clients.text.zcard(keys.approval_deadlines()) == 0
