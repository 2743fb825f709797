"""The turn scripts under hostile or unlucky input (issue 11): whole or not at all, no key left
without a lifetime, and a per-tenant cap on turns admitted to RQ's queue (the tenant line).

On fakeredis with its Lua runtime, as tests/unit/test_turn_scripts.py; RQ's view of a job is
read with RQ's classes.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
import redis
from rq.job import Job, JobStatus

from parley.shared import events, telemetry
from parley.shared.events import EventType
from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store.connection import RedisClients
from parley.shared.store.sessions import message_json
from parley.shared.store.turns import Accepted, TurnStore
from parley.shared.store.worker_turns import Attempt, WorkerTurns
from parley.tools.notes import MAX_NOTES, note_text
from tests.unit.test_turn_scripts import event_types, snapshot, stored_messages

T, OTHER = "acme", "globex"
SURROGATE = "\udc80"
"""A lone UTF-16 surrogate: JSON can escape it (json.dumps does), Redis's cjson refuses to decode it."""


def accept(turns: TurnStore, agent: dict[str, Any], session_id: str = "s1", tenant: str = T,
           message: str = "hi", history: list[dict[str, Any]] | None = None) -> Accepted:  # fmt: skip
    return turns.accept(tenant=tenant, agent=agent, session_id=session_id, message=message, images=[],
                        idempotency_key=None, request_hash="h", history=history)  # fmt: skip


def dequeue(turns: TurnStore, job_id: str) -> None:
    """What a worker's dequeue does to RQ's queue (the job is then the worker's)."""
    assert turns.raw.lrem(keys.rq_queue(turns.settings.queue_name), 0, job_id) == 1


def run(worker: WorkerTurns, job_id: str, tenant: str = T) -> int:
    """A worker takes the turn from RQ's queue and starts it (WorkerTurns.start); returns the attempt."""
    dequeue(worker.store, job_id)
    state, attempt, _ = asyncio.run(worker.start(tenant, job_id))
    assert state == "started"
    return attempt


def finish(worker: WorkerTurns, job_id: str, attempt: int, tenant: str = T, **overrides: Any) -> bool:
    """Finish a turn as worker/turn/run.py's _commit does, with the session id of the job record START_TURN
    handed it (each argument can be replaced)."""
    session_id = (worker.store.job(tenant, job_id) or {})["session_id"]
    arguments: dict[str, Any] = {
        "status": "finished", "result": {"response": "ok"},
        "messages": [message_json("user", "hi", job_id=job_id, created_at=1),
                     message_json("assistant", "ok", job_id=job_id, created_at=2)],
        "events_out": [events.encode(EventType.RESPONSE, content="ok"), events.encode(EventType.DONE)],
    }  # fmt: skip
    return asyncio.run(worker.finish(Attempt(tenant, job_id, attempt), session_id, **{**arguments, **overrides}))


def fail(turns: TurnStore, job_id: str, tenant: str = T) -> bool:
    """RQ's failure callback (worker/turn/run.py on_turn_failure): ends the turn whatever attempt runs."""
    return turns.finish(tenant, job_id, status="failed", attempt=None, error="the worker stopped",
                        error_code="turn_failed", events_out=[events.encode(EventType.DONE)])  # fmt: skip


def queued(turns: TurnStore) -> list[str]:
    return turns.queue.job_ids


def line(clients: RedisClients, tenant: str = T) -> list[str]:
    return clients.text.lrange(keys.tenant_line(tenant), 0, -1)  # type: ignore[return-value]


def admitted(clients: RedisClients, tenant: str = T) -> int:
    return int(clients.text.get(keys.tenant_admitted(tenant)) or 0)  # type: ignore[arg-type]


def rq_status(clients: RedisClients, job_id: str) -> JobStatus:
    return Job.fetch(job_id, connection=clients.raw).get_status()  # type: ignore[return-value]


@pytest.fixture
def capped(clients: RedisClients, make_settings: Callable[..., Settings]) -> TurnStore:
    """A TurnStore whose tenants may have 2 turns admitted (in RQ's queue or running) at once."""
    return TurnStore(clients, make_settings(PARLEY_TENANT_CONCURRENCY="2"))


@pytest.fixture
def worker(server: fakeredis.FakeServer, capped: TurnStore) -> WorkerTurns:
    """The worker's side of `capped`, on the same fake Redis."""
    return WorkerTurns(capped, fakeredis.FakeAsyncRedis(server=server, decode_responses=True))


# --- whole or not at all -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"events_out": [events.encode(EventType.RESPONSE, content="ok" + SURROGATE), events.encode(EventType.DONE)]},
    {"messages": ['{"role": "assistant", "content": "ok' + SURROGATE + '"}']},
    {"images": {"img_1": "data:image/png;base64," + SURROGATE}},
    {"events_out": [{"type": "done"}]},  # an event that is not a JSON string
], ids=["surrogate-in-event", "surrogate-in-message", "surrogate-in-image", "event-not-a-string"])  # fmt: skip
def test_finish_with_an_undecodable_argument_writes_nothing(turns: TurnStore, worker_turns: WorkerTurns,
                                                            clients: RedisClients, chef: dict,
                                                            bad: dict[str, Any]) -> None:  # fmt: skip
    job_id = accept(turns, chef).job_id
    accept(turns, chef)  # a second turn waits in the lane: ending the first would queue it
    attempt = run(worker_turns, job_id)
    clients.text.rpush(keys.pending_notes(T, job_id), "a pending note")
    before = snapshot(clients.raw)
    with pytest.raises(redis.ResponseError, match="bad argument"):
        finish(worker_turns, job_id, attempt, **bad)
    assert snapshot(clients.raw) == before
    # Not wedged: the failure callback can still end the turn, and the lane moves on.
    assert fail(turns, job_id) is True
    assert event_types(clients, job_id)[-1] == "done"
    assert clients.text.get(keys.inflight(T)) == "1"
    assert len(queued(turns)) == 1


def test_finish_with_undecodable_telemetry_deltas_writes_nothing(turns: TurnStore, worker_turns: WorkerTurns,
                                                                 clients: RedisClients,
                                                                 chef: dict) -> None:  # fmt: skip
    """finish_turn.lua decodes its deltas (its last ARGV) before the step writes."""
    job_id = accept(turns, chef).job_id
    attempt = run(worker_turns, job_id)
    before = snapshot(clients.raw)
    telemetry.PENDING.add(telemetry.JOBS, '["x' + SURROGATE + '"]', 1)
    with pytest.raises((redis.ResponseError, UnicodeEncodeError)):  # Redis's cjson, or fakeredis's stand-in
        finish(worker_turns, job_id, attempt)
    assert snapshot(clients.raw) == before
    telemetry.PENDING.take()


def test_accept_with_an_undecodable_message_creates_nothing(turns: TurnStore, clients: RedisClients,
                                                            chef: dict) -> None:  # fmt: skip
    before = snapshot(clients.raw)
    with pytest.raises(redis.ResponseError, match="bad argument"):
        accept(turns, chef, message="hi" + SURROGATE)
    assert snapshot(clients.raw) == before  # no session, no job, and no RQ job left behind


# --- no key without a lifetime ------------------------------------------------------------------


def test_a_canceled_queued_head_leaves_an_expiring_rq_job(turns: TurnStore, clients: RedisClients,
                                                          chef: dict) -> None:  # fmt: skip
    job_id = accept(turns, chef).job_id
    assert clients.raw.pttl(keys.rq_job(job_id)) == -1  # kept while the turn waits
    assert turns.cancel(T, job_id) is True
    assert rq_status(clients, job_id) == JobStatus.CANCELED
    assert 0 < clients.raw.pttl(keys.rq_job(job_id)) <= turns.retention_ms


def test_a_canceled_turn_deferred_in_its_lane_leaves_an_expiring_rq_job(turns: TurnStore, clients: RedisClients,
                                                                        chef: dict) -> None:  # fmt: skip
    accept(turns, chef)
    behind = accept(turns, chef).job_id
    assert rq_status(clients, behind) == JobStatus.DEFERRED
    assert turns.cancel(T, behind) is True
    assert 0 < clients.raw.pttl(keys.rq_job(behind)) <= turns.retention_ms


@pytest.mark.parametrize("ending", ["finished", "failed", "canceled"])
def test_every_ending_gives_tool_runs_a_lifetime_and_drops_pending_notes(turns: TurnStore, worker_turns: WorkerTurns,
                                                                         clients: RedisClients, chef: dict,
                                                                         ending: str) -> None:  # fmt: skip
    job_id = accept(turns, chef).job_id
    attempt = run(worker_turns, job_id)
    clients.text.hset(keys.tool_runs(T, job_id), "remember:abc:0", "noted")
    clients.text.rpush(keys.pending_notes(T, job_id), "likes basil")
    if ending == "finished":
        assert finish(worker_turns, job_id, attempt) is True
    elif ending == "failed":
        assert fail(turns, job_id) is True
    else:
        assert turns.cancel(T, job_id) is True
    assert 0 < clients.text.pttl(keys.tool_runs(T, job_id)) <= turns.retention_ms
    assert clients.text.exists(keys.pending_notes(T, job_id)) == 0
    kept = ["likes basil"] if ending == "finished" else []
    assert [note_text(note) for note in clients.text.lrange(keys.notes(T, "s1"), 0, -1)] == kept


def test_finished_turn_commits_its_pending_notes_keeping_the_newest(turns: TurnStore, worker_turns: WorkerTurns,
                                                                    clients: RedisClients,
                                                                    chef: dict) -> None:  # fmt: skip
    clients.text.rpush(keys.notes(T, "s1"), *[f"old {i}" for i in range(MAX_NOTES)])
    job_id = accept(turns, chef).job_id
    attempt = run(worker_turns, job_id)
    clients.text.rpush(keys.pending_notes(T, job_id), "new 1", "new 2")
    assert finish(worker_turns, job_id, attempt) is True
    notes = [note_text(note) for note in clients.text.lrange(keys.notes(T, "s1"), 0, -1)]
    assert len(notes) == MAX_NOTES
    assert notes[:1] == ["old 2"] and notes[-2:] == ["new 1", "new 2"]


def test_a_turn_without_session_memory_commits_no_notes(turns: TurnStore, worker_turns: WorkerTurns,
                                                        clients: RedisClients, chef: dict) -> None:  # fmt: skip
    job_id = accept(turns, chef, session_id="v1", history=[{"role": "user", "content": "hi"}]).job_id
    attempt = run(worker_turns, job_id)
    clients.text.rpush(keys.pending_notes(T, job_id), "stateless")
    assert finish(worker_turns, job_id, attempt) is True
    assert clients.text.exists(keys.notes(T, "v1"), keys.pending_notes(T, job_id)) == 0
    assert stored_messages(clients, "v1") == []


# --- the tenant line ----------------------------------------------------------------------------


def test_past_its_cap_a_tenants_ready_turns_wait_in_its_line(capped: TurnStore, worker: WorkerTurns,
                                                             clients: RedisClients, chef: dict) -> None:  # fmt: skip
    a, b, c = (accept(capped, chef, session_id=f"s{i}").job_id for i in range(3))
    assert queued(capped) == [a, b]
    assert line(clients) == [c]
    assert rq_status(clients, c) == JobStatus.DEFERRED
    assert admitted(clients) == 2
    other = accept(capped, chef, tenant=OTHER).job_id
    assert queued(capped) == [a, b, other]  # not behind the first tenant's line
    # A running turn ends: its place goes to the head of the line.
    finish(worker, a, run(worker, a))
    assert queued(capped) == [b, other, c]
    assert rq_status(clients, c) == JobStatus.QUEUED
    assert (line(clients), admitted(clients)) == ([], 2)


def test_a_lane_head_made_ready_at_the_cap_joins_the_end_of_the_line(capped: TurnStore, worker: WorkerTurns,
                                                                     clients: RedisClients,
                                                                     chef: dict) -> None:  # fmt: skip
    first = accept(capped, chef, session_id="s1").job_id
    second = accept(capped, chef, session_id="s1").job_id  # behind `first` in its lane: not ready
    others = [accept(capped, chef, session_id=f"o{i}").job_id for i in range(2)]
    assert queued(capped) == [first, others[0]]
    assert line(clients) == [others[1]]
    finish(worker, first, run(worker, first))
    # `second` became ready as a place freed: the line's older turn takes the place, `second` waits behind.
    assert queued(capped) == [others[0], others[1]]
    assert line(clients) == [second]
    assert rq_status(clients, second) == JobStatus.DEFERRED


def test_cancel_in_the_line_frees_its_spot_and_no_place(capped: TurnStore, worker: WorkerTurns, clients: RedisClients,
                                                        chef: dict) -> None:  # fmt: skip
    a, b, c = (accept(capped, chef, session_id=f"s{i}").job_id for i in range(3))
    assert capped.cancel(T, c) is True
    assert (line(clients), admitted(clients), queued(capped)) == ([], 2, [a, b])
    assert rq_status(clients, c) == JobStatus.CANCELED
    assert 0 < clients.raw.pttl(keys.rq_job(c)) <= capped.retention_ms
    finish(worker, a, run(worker, a))
    run(worker, b)
    fail(capped, b)
    assert (line(clients), admitted(clients), queued(capped)) == ([], 0, [])


def test_cancel_in_rq_queue_gives_its_place_to_the_line(capped: TurnStore, clients: RedisClients,
                                                        chef: dict) -> None:  # fmt: skip
    a, b, c = (accept(capped, chef, session_id=f"s{i}").job_id for i in range(3))
    assert capped.cancel(T, b) is True
    assert queued(capped) == [a, c]
    assert (line(clients), admitted(clients)) == ([], 2)
    assert 0 < clients.raw.pttl(keys.rq_job(b)) <= capped.retention_ms


def test_cancel_of_a_turn_deferred_in_its_lane_holds_nothing(capped: TurnStore, clients: RedisClients,
                                                             chef: dict) -> None:  # fmt: skip
    head = accept(capped, chef).job_id
    behind = accept(capped, chef).job_id
    assert capped.cancel(T, behind) is True
    assert (queued(capped), line(clients), admitted(clients)) == ([head], [], 1)


def test_a_retried_or_handed_back_turn_keeps_its_place(capped: TurnStore, worker: WorkerTurns, clients: RedisClients,
                                                       chef: dict) -> None:  # fmt: skip
    a, b, c = (accept(capped, chef, session_id=f"s{i}").job_id for i in range(3))
    run(worker, a)
    # RQ's retry (and the worker's drain hand-back) queue the started job again themselves.
    capped.queue.enqueue_job(Job.fetch(a, connection=clients.raw), at_front=True)
    assert (queued(capped), line(clients), admitted(clients)) == ([a, b], [c], 2)
    assert finish(worker, a, run(worker, a)) is True  # attempt 2 commits
    assert (queued(capped), line(clients), admitted(clients)) == ([b, c], [], 2)


def test_a_failure_callback_ending_frees_the_place(capped: TurnStore, worker: WorkerTurns,
                                                   clients: RedisClients, chef: dict) -> None:  # fmt: skip
    a, b, c = (accept(capped, chef, session_id=f"s{i}").job_id for i in range(3))
    run(worker, a)
    assert fail(capped, a) is True
    assert fail(capped, a) is False  # ended once, released once
    assert (queued(capped), line(clients), admitted(clients)) == ([b, c], [], 2)


def test_no_cap_admits_every_ready_turn(turns: TurnStore, clients: RedisClients,
                                        make_settings: Callable[..., Settings], chef: dict) -> None:  # fmt: skip
    uncapped = TurnStore(clients, make_settings(PARLEY_TENANT_CONCURRENCY="0"))
    ids = [accept(uncapped, chef, session_id=f"s{i}").job_id for i in range(5)]
    assert (queued(uncapped), line(clients), admitted(clients)) == (ids, [], 5)


def test_a_raised_cap_admits_the_line_at_the_next_accept(capped: TurnStore, clients: RedisClients,
                                                         make_settings: Callable[..., Settings],
                                                         chef: dict) -> None:  # fmt: skip
    ids = [accept(capped, chef, session_id=f"s{i}").job_id for i in range(4)]
    assert line(clients) == ids[2:]
    raised = TurnStore(clients, make_settings(PARLEY_TENANT_CONCURRENCY="10"))
    new = accept(raised, chef, session_id="new").job_id
    assert queued(raised) == [*ids, new]  # the line first, in its order
    assert (line(clients), admitted(clients)) == ([], 5)


def test_random_lives_keep_order_cap_and_counts(capped: TurnStore, worker: WorkerTurns,
                                                clients: RedisClients, chef: dict) -> None:  # fmt: skip
    """Many turns of two tenants over a few sessions, started, finished, failed and canceled in a
    random order: a session's turns run one at a time in order, a tenant never has more than its cap
    admitted, and once all ended every counter and line is back to zero."""
    rng = random.Random(11)
    tenant_of: dict[str, str] = {}
    order: dict[tuple[str, str], list[str]] = {}
    started: dict[str, int] = {}
    ran: dict[tuple[str, str], list[str]] = {}
    open_ids: set[str] = set()
    made: dict[str, int] = {}
    """Job ids are random: choices go by the order the jobs were made in, so every run is the same run."""
    longest_line = 0
    for step in range(400):
        choice = rng.random()
        if choice < 0.35 and step < 300:
            tenant, session = rng.choice([T, OTHER]), f"s{rng.randrange(4)}"
            job_id = accept(capped, chef, session_id=session, tenant=tenant).job_id
            tenant_of[job_id] = tenant
            made[job_id] = len(made)
            order.setdefault((tenant, session), []).append(job_id)
            open_ids.add(job_id)
        elif choice < 0.6 and queued(capped):
            job_id = rng.choice(queued(capped))
            attempt = run(worker, job_id, tenant_of[job_id])
            started[job_id] = attempt
            record = capped.job(tenant_of[job_id], job_id) or {}
            ran.setdefault((tenant_of[job_id], record["session_id"]), []).append(job_id)
        elif choice < 0.85 and started:
            job_id = rng.choice(sorted(started, key=made.__getitem__))
            attempt = started.pop(job_id)
            if rng.random() < 0.7:
                assert finish(worker, job_id, attempt, tenant=tenant_of[job_id]) is True
            else:
                assert fail(capped, job_id, tenant=tenant_of[job_id]) is True
            open_ids.discard(job_id)
        elif open_ids:
            job_id = rng.choice(sorted(open_ids, key=made.__getitem__))
            assert capped.cancel(tenant_of[job_id], job_id) is True
            started.pop(job_id, None)
            open_ids.discard(job_id)
        for tenant in (T, OTHER):
            in_queue = [j for j in queued(capped) if tenant_of[j] == tenant]
            assert admitted(clients, tenant) == len(in_queue) + sum(tenant_of[j] == tenant for j in started)
            assert admitted(clients, tenant) <= 2
            assert not (set(line(clients, tenant)) & set(in_queue))
        busy = [capped.job(tenant_of[j], j)["session_id"] + tenant_of[j]  # type: ignore[index]
                for j in [*queued(capped), *started, *line(clients, T), *line(clients, OTHER)]]
        assert len(busy) == len(set(busy)), "two turns of one session were ready at once"
        longest_line = max(longest_line, len(line(clients, T)), len(line(clients, OTHER)))
    assert longest_line >= 2  # the line was used
    while open_ids:  # end everything: whatever is queued runs, whatever waits is canceled
        job_id = sorted(open_ids)[0]
        assert capped.cancel(tenant_of[job_id], job_id) is True
        open_ids.discard(job_id)
    for (tenant, session), ids in ran.items():
        assert ids == [j for j in order[(tenant, session)] if j in ids], "a session's turns ran out of order"
    for tenant in (T, OTHER):
        assert (admitted(clients, tenant), line(clients, tenant)) == (0, [])
        assert clients.text.get(keys.inflight(tenant)) == "0"
    assert queued(capped) == []
