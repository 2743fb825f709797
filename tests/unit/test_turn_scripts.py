"""The turn lifecycle scripts (shared/store/scripts/*.lua via TurnStore, and via WorkerTurns for a worker's
start, emit and finish), and the session and agent stores, on fakeredis with its Lua runtime (`fakeredis[lua]`).

`text` and `raw` are two clients of ONE fake server, as in production; RQ's own view of a job is
checked with RQ's classes (Job.fetch, Queue.job_ids), not by reading its hash by hand.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import ValidationError
from rq.job import Job, JobStatus

from parley.shared import events, telemetry
from parley.shared.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from parley.shared.events import EventType
from parley.shared.schema import AgentCreate, AgentUpdate
from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store.agents import AgentStore, public
from parley.shared.store.connection import RedisClients
from parley.shared.store.sessions import SessionStore, message_json
from parley.shared.store.turns import TURN_FUNCTION, Accepted, TurnStore
from parley.shared.store.worker_turns import Attempt, WorkerTurns

T = "acme"


# --- helpers --------------------------------------------------------------------------------


def accept(turns: TurnStore, agent: dict[str, Any], session_id: str | None = "s1", message: str = "hi", *,
           tenant: str = T, idempotency_key: str | None = None, request_hash: str = "hash-1") -> Accepted:  # fmt: skip
    return turns.accept(tenant=tenant, agent=agent, session_id=session_id, message=message, images=[],
                        idempotency_key=idempotency_key, request_hash=request_hash)  # fmt: skip


def event_list(clients: RedisClients, job_id: str, tenant: str = T) -> list[dict[str, Any]]:
    return [json.loads(payload) for _, payload in events.from_entries(clients.text.xrange(keys.events(tenant, job_id)))]


def event_types(clients: RedisClients, job_id: str) -> list[str]:
    return [event["type"] for event in event_list(clients, job_id)]


def rq_status(clients: RedisClients, job_id: str) -> JobStatus:
    return Job.fetch(job_id, connection=clients.raw).get_status()  # type: ignore[return-value]


def take_from_queue(turns: TurnStore, job_id: str) -> None:
    """What a worker's dequeue does to RQ's queue list (the job is then the worker's)."""
    assert turns.raw.lrem(keys.rq_queue(turns.settings.queue_name), 0, job_id) == 1


def snapshot(r: redis.Redis) -> dict[bytes, Any]:
    """Every key with its type, whole value and whether it expires (TTLs tick, so not their value)."""
    out: dict[bytes, Any] = {}
    for key in sorted(r.keys("*")):  # type: ignore[union-attr]
        kind = r.type(key)
        value: Any
        if kind == b"string":
            value = r.get(key)
        elif kind == b"hash":
            value = r.hgetall(key)
        elif kind == b"list":
            value = r.lrange(key, 0, -1)
        elif kind == b"zset":
            value = r.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            value = r.smembers(key)
        elif kind == b"stream":
            value = r.xrange(key)
        else:
            raise AssertionError(f"unexpected type {kind!r} of {key!r}")
        out[key] = (kind, value, r.pttl(key) > 0)
    return out


def start(worker: WorkerTurns, job_id: str, tenant: str = T) -> tuple[str, int, dict[str, str]]:
    """START_TURN as a worker runs it (WorkerTurns.start), on an event loop of its own."""
    return asyncio.run(worker.start(tenant, job_id))


def emit(worker: WorkerTurns, job_id: str, attempt: int, payloads: list[str], tenant: str = T) -> bool:
    """A batch of events of one attempt, as a worker's outbox sends it (WorkerTurns.emit)."""
    return asyncio.run(worker.emit(Attempt(tenant, job_id, attempt), payloads))


def running(worker: WorkerTurns, job_id: str, attempt: int, tenant: str = T) -> bool:
    """Whether the attempt still runs, as the engine's watch asks (WorkerTurns.running)."""
    return asyncio.run(worker.running([Attempt(tenant, job_id, attempt)])) == [True]


def finish_ok(worker: WorkerTurns, job_id: str, attempt: int | None, answer: str = "an answer",
              session_id: str = "s1") -> bool:  # fmt: skip
    """Finish a turn the way worker/turn/run.py's _commit does (WorkerTurns.finish, with the session id of
    the job record START_TURN handed it). `attempt=None` ends it whatever attempt runs, through
    TurnStore.finish, as rq's failure callback does."""
    record = worker.store.job(T, job_id) or {}
    messages = [
        message_json("user", record.get("message", "?"), job_id=job_id, created_at=1),
        message_json("assistant", answer, job_id=job_id, created_at=2),
    ]
    result = {"response": answer, "agent_id": "agent-chef", "agent_name": "Chef", "session_id": session_id,
              "job_id": job_id}  # fmt: skip
    values: dict[str, Any] = dict(
        status="finished", result=result, messages=messages,
        events_out=[events.encode(EventType.RESPONSE, content=answer, intent=None, session_id=session_id),
                    events.encode(EventType.DONE)],
    )  # fmt: skip
    if attempt is None:
        return worker.store.finish(T, job_id, attempt=None, **values)
    return asyncio.run(worker.finish(Attempt(T, job_id, attempt), session_id, **values))


def stored_messages(clients: RedisClients, session_id: str = "s1") -> list[dict[str, Any]]:
    return [json.loads(m) for m in clients.text.lrange(keys.messages(T, session_id), 0, -1)]  # type: ignore[union-attr]


# --- accept ---------------------------------------------------------------------------------


def test_accept_creates_session_with_first_message(turns: TurnStore, clients: RedisClients, chef: dict) -> None:
    accepted = accept(turns, chef)
    assert accepted == Accepted(accepted.job_id, "s1", "agent-chef", replayed=False)
    assert accepted.job_id.startswith("job_")
    session = clients.text.hgetall(keys.session(T, "s1"))
    assert session["agent_id"] == "agent-chef"
    assert session["exchanges"] == "0"
    assert session["metadata"] == "{}"
    assert session["created_at"].isdigit()
    assert clients.text.zscore(keys.sessions(T), "s1") == int(session["created_at"])
    assert clients.text.zscore(keys.agent_sessions(T, "agent-chef"), "s1") == int(session["created_at"])
    messages = stored_messages(clients)
    assert len(messages) == 1
    assert messages[0]["role"] == "assistant"
    assert messages[0]["content"] == chef["first_message"]
    assert messages[0]["job_id"] is None


def test_accept_records_the_job(turns: TurnStore, clients: RedisClients, chef: dict, settings: Settings) -> None:
    accepted = accept(turns, chef, message="Pasta tonight?", request_hash="h-42")
    record = turns.job(T, accepted.job_id)
    assert record is not None
    assert record["status"] == "queued"
    assert record["attempt"] == "0"
    assert record["tenant"] == T
    assert record["session_id"] == "s1"
    assert record["agent_id"] == "agent-chef"
    assert record["agent_name"] == "Chef"
    assert record["message"] == "Pasta tonight?"
    assert record["images"] == "[]"
    assert record["request_hash"] == "h-42"
    assert record["enqueued_at"].isdigit()
    assert 0 < clients.text.pttl(keys.job(T, accepted.job_id)) <= settings.retention_s * 1000
    assert clients.text.lrange(keys.lane(T, "s1"), 0, -1) == [accepted.job_id]
    shown = TurnStore.public(accepted.job_id, record)
    assert (shown.status, shown.session_id, shown.result, shown.started_at) == ("queued", "s1", None, None)


def test_accept_emits_session_then_queued(turns: TurnStore, clients: RedisClients, chef: dict) -> None:
    accepted = accept(turns, chef)
    assert event_list(clients, accepted.job_id) == [
        {"type": "session", "session_id": "s1", "agent_id": "agent-chef", "agent_name": "Chef",
         "job_id": accepted.job_id},
        {"type": "status", "message": "queued"},
    ]  # fmt: skip
    assert clients.text.pttl(keys.events(T, accepted.job_id)) > 0


def test_accept_creates_a_queued_rq_job(turns: TurnStore, clients: RedisClients, chef: dict,
                                        settings: Settings) -> None:  # fmt: skip
    accepted = accept(turns, chef)
    job = Job.fetch(accepted.job_id, connection=clients.raw)
    assert job.get_status() == JobStatus.QUEUED
    assert job.func_name == TURN_FUNCTION
    assert job.args == (T, accepted.job_id)
    assert job.timeout == settings.turn_timeout_s
    assert job.enqueued_at is not None
    assert turns.queue.job_ids == [accepted.job_id]
    assert turns.queue_depth() == 1


def test_accept_without_session_id_makes_one(turns: TurnStore, clients: RedisClients, chef: dict) -> None:
    accepted = accept(turns, chef, session_id=None)
    assert accepted.session_id.startswith("sess_")
    assert clients.text.hget(keys.session(T, accepted.session_id), "agent_id") == "agent-chef"


def test_agent_without_first_message_starts_an_empty_history(turns: TurnStore, clients: RedisClients) -> None:
    accept(turns, {"id": "agent-q", "name": "Quiet", "first_message": ""})
    assert stored_messages(clients) == []


def test_second_turn_of_a_session_is_deferred(turns: TurnStore, clients: RedisClients, chef: dict) -> None:
    first, second = accept(turns, chef), accept(turns, chef, message="and then?")
    assert second.session_id == first.session_id
    assert rq_status(clients, first.job_id) == JobStatus.QUEUED
    assert rq_status(clients, second.job_id) == JobStatus.DEFERRED
    assert turns.queue.job_ids == [first.job_id]
    assert clients.text.lrange(keys.lane(T, "s1"), 0, -1) == [first.job_id, second.job_id]
    assert len(stored_messages(clients)) == 1  # the first message is not added again
    assert turns.job(T, second.job_id)["status"] == "queued"  # type: ignore[index]


def test_other_sessions_have_their_own_lanes(turns: TurnStore, chef: dict) -> None:
    a, b = accept(turns, chef, "s1"), accept(turns, chef, "s2")
    assert turns.queue.job_ids == [a.job_id, b.job_id]


def test_same_session_id_in_two_tenants_is_two_sessions(turns: TurnStore, clients: RedisClients,
                                                        chef: dict) -> None:  # fmt: skip
    mine = accept(turns, chef, "shared-id", tenant="alice")
    other = {"id": "agent-other", "name": "Other"}
    theirs = accept(turns, other, "shared-id", tenant="bob")  # no Conflict: bob's session is another
    assert turns.queue.job_ids == [mine.job_id, theirs.job_id]
    assert clients.text.hget(keys.session("alice", "shared-id"), "agent_id") == "agent-chef"
    assert clients.text.hget(keys.session("bob", "shared-id"), "agent_id") == "agent-other"
    assert turns.job("bob", mine.job_id) is None


# --- start, emit, finish ----------------------------------------------------------------------


def test_start_counts_attempts_and_emits_started(turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients,
                                                 chef: dict) -> None:  # fmt: skip
    accepted = accept(turns, chef)
    assert start(worker_turns, accepted.job_id)[:2] == ("started", 1)
    record = turns.job(T, accepted.job_id)
    assert record["status"] == "started" and record["attempt"] == "1"  # type: ignore[index]
    assert record["started_at"].isdigit()  # type: ignore[index]
    assert event_list(clients, accepted.job_id)[-1] == {"type": "status", "message": "started"}


def test_start_of_unknown_or_ended_turns(turns: TurnStore, worker_turns: WorkerTurns, chef: dict) -> None:
    assert start(worker_turns, "job_nope") == ("missing", 0, {})
    accepted = accept(turns, chef)
    turns.cancel(T, accepted.job_id)
    assert start(worker_turns, accepted.job_id) == ("final", 0, {})


def test_finish_commits_messages_and_queues_the_next_turn(turns: TurnStore, worker_turns: WorkerTurns,
                                                          clients: RedisClients, chef: dict) -> None:  # fmt: skip
    first, second = accept(turns, chef, message="one"), accept(turns, chef, message="two")
    take_from_queue(turns, first.job_id)
    assert start(worker_turns, first.job_id)[:2] == ("started", 1)
    assert emit(worker_turns, first.job_id, 1, [events.encode(EventType.DELTA, content="an ")])
    assert finish_ok(worker_turns, first.job_id, attempt=1, answer="an answer")

    messages = stored_messages(clients)
    assert [(m["role"], m["content"]) for m in messages] == [
        ("assistant", chef["first_message"]), ("user", "one"), ("assistant", "an answer"),
    ]  # fmt: skip
    assert clients.text.hget(keys.session(T, "s1"), "exchanges") == "1"
    record = turns.job(T, first.job_id)
    assert record["status"] == "finished" and record["ended_at"].isdigit()  # type: ignore[index]
    shown = TurnStore.public(first.job_id, record)  # type: ignore[arg-type]
    assert shown.result is not None and shown.result.response == "an answer"
    assert event_types(clients, first.job_id) == ["session", "status", "status", "delta", "response", "done"]
    assert event_list(clients, first.job_id)[-2]["content"] == "an answer"

    assert clients.text.lrange(keys.lane(T, "s1"), 0, -1) == [second.job_id]
    assert rq_status(clients, second.job_id) == JobStatus.QUEUED
    assert turns.queue.job_ids == [second.job_id]


def test_finish_is_at_most_once(turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients, chef: dict) -> None:
    accepted = accept(turns, chef)
    take_from_queue(turns, accepted.job_id)
    start(worker_turns, accepted.job_id)
    assert finish_ok(worker_turns, accepted.job_id, attempt=1) is True
    before = snapshot(clients.raw)
    assert finish_ok(worker_turns, accepted.job_id, attempt=1) is False
    assert finish_ok(worker_turns, accepted.job_id, attempt=None) is False
    assert turns.cancel(T, accepted.job_id) is False
    assert snapshot(clients.raw) == before
    assert len(stored_messages(clients)) == 3


def test_failed_turn_commits_nothing_and_frees_the_lane(turns: TurnStore, worker_turns: WorkerTurns,
                                                        clients: RedisClients, chef: dict) -> None:  # fmt: skip
    first, second = accept(turns, chef), accept(turns, chef)
    take_from_queue(turns, first.job_id)
    start(worker_turns, first.job_id)
    assert asyncio.run(worker_turns.finish(  # as worker/turn/run.py's _fail does
        Attempt(T, first.job_id, 1), "s1", status="failed", error="boom", error_code="model_failed",
        events_out=[events.encode(EventType.ERROR, message="boom"), events.encode(EventType.DONE)],
    ))  # fmt: skip
    assert len(stored_messages(clients)) == 1
    assert clients.text.hget(keys.session(T, "s1"), "exchanges") == "0"
    record = turns.job(T, first.job_id)
    assert (record["status"], record["error"], record["error_code"]) == ("failed", "boom", "model_failed")  # type: ignore[index]
    assert turns.queue.job_ids == [second.job_id]


def test_finish_of_an_unknown_job_is_false(turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients) -> None:
    assert finish_ok(worker_turns, "job_nope", attempt=None) is False
    assert finish_ok(worker_turns, "job_nope", attempt=1) is False  # a worker's finish names its session: still no
    assert clients.text.dbsize() == 0


def test_a_superseded_attempt_can_neither_emit_nor_commit(turns: TurnStore, worker_turns: WorkerTurns,
                                                          clients: RedisClients, chef: dict) -> None:  # fmt: skip
    accepted = accept(turns, chef)
    take_from_queue(turns, accepted.job_id)
    assert start(worker_turns, accepted.job_id)[:2] == ("started", 1)
    assert start(worker_turns, accepted.job_id)[:2] == ("started", 2)  # RQ retried it: the first worker presumed dead
    assert event_list(clients, accepted.job_id)[-1] == {"type": "status", "message": "retrying", "attempt": 2}
    assert (running(worker_turns, accepted.job_id, 1), running(worker_turns, accepted.job_id, 2)) == (False, True)
    before = snapshot(clients.raw)

    assert emit(worker_turns, accepted.job_id, 1, [events.encode(EventType.DELTA, content="stale")]) is False
    assert finish_ok(worker_turns, accepted.job_id, attempt=1, answer="stale") is False
    assert snapshot(clients.raw) == before  # no event, no message, no status change

    assert emit(worker_turns, accepted.job_id, 2, [events.encode(EventType.DELTA, content="fresh")]) is True
    assert finish_ok(worker_turns, accepted.job_id, attempt=2, answer="fresh") is True
    assert [m["content"] for m in stored_messages(clients)][-1] == "fresh"
    assert "stale" not in json.dumps(event_list(clients, accepted.job_id))


def test_a_queued_turn_cannot_emit_or_be_finished_by_an_attempt(turns: TurnStore, worker_turns: WorkerTurns,
                                                                 chef: dict) -> None:  # fmt: skip
    accepted = accept(turns, chef)
    assert emit(worker_turns, accepted.job_id, 0, [events.encode(EventType.DELTA, content="x")]) is False
    assert finish_ok(worker_turns, accepted.job_id, attempt=0) is False
    assert turns.job(T, accepted.job_id)["status"] == "queued"  # type: ignore[index]


# --- cancel ---------------------------------------------------------------------------------


def test_cancel_a_queued_turn(turns: TurnStore, clients: RedisClients, chef: dict) -> None:
    first, second = accept(turns, chef), accept(turns, chef)
    assert turns.queue.job_ids == [first.job_id]
    assert turns.cancel(T, first.job_id) is True
    assert first.job_id not in turns.queue.job_ids
    assert rq_status(clients, first.job_id) == JobStatus.CANCELED
    canceled = {"type": "error", "message": "canceled", "code": "canceled"}
    assert event_list(clients, first.job_id)[-2:] == [canceled, {"type": "done"}]
    record = turns.job(T, first.job_id)
    assert (record["status"], record["error_code"]) == ("canceled", "canceled")  # type: ignore[index]
    assert len(stored_messages(clients)) == 1
    # The lane moves on: the next turn is queued.
    assert turns.queue.job_ids == [second.job_id]
    assert rq_status(clients, second.job_id) == JobStatus.QUEUED


def test_cancel_a_deferred_turn_leaves_the_head_alone(turns: TurnStore, clients: RedisClients,
                                                      chef: dict) -> None:  # fmt: skip
    first, second = accept(turns, chef), accept(turns, chef)
    assert turns.cancel(T, second.job_id) is True
    assert turns.queue.job_ids == [first.job_id]  # not pushed twice
    assert rq_status(clients, second.job_id) == JobStatus.CANCELED
    assert clients.text.lrange(keys.lane(T, "s1"), 0, -1) == [first.job_id]


def test_cancel_a_running_turn_stops_its_worker(turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients,
                                                chef: dict) -> None:  # fmt: skip
    accepted = accept(turns, chef)
    take_from_queue(turns, accepted.job_id)
    start(worker_turns, accepted.job_id)
    assert running(worker_turns, accepted.job_id, 1)
    assert turns.cancel(T, accepted.job_id) is True
    assert not running(worker_turns, accepted.job_id, 1)  # the engine's watch stops the turn's task
    assert emit(worker_turns, accepted.job_id, 1, [events.encode(EventType.DELTA, content="late")]) is False
    assert finish_ok(worker_turns, accepted.job_id, attempt=1) is False
    assert len(stored_messages(clients)) == 1
    assert event_types(clients, accepted.job_id)[-2:] == ["error", "done"]


def test_cancel_a_finished_turn_is_false(turns: TurnStore, worker_turns: WorkerTurns, chef: dict) -> None:
    accepted = accept(turns, chef)
    take_from_queue(turns, accepted.job_id)
    start(worker_turns, accepted.job_id)
    finish_ok(worker_turns, accepted.job_id, attempt=1)
    assert turns.cancel(T, accepted.job_id) is False
    assert turns.job(T, accepted.job_id)["status"] == "finished"  # type: ignore[index]


def test_cancel_twice_and_unknown(turns: TurnStore, chef: dict) -> None:
    accepted = accept(turns, chef)
    assert turns.cancel(T, accepted.job_id) is True
    assert turns.cancel(T, accepted.job_id) is False
    assert turns.cancel(T, "job_nope") is False


# --- refusals create nothing ------------------------------------------------------------------


def test_conflicting_agent_raises_and_creates_nothing(turns: TurnStore, clients: RedisClients, chef: dict) -> None:
    accept(turns, chef)
    before = snapshot(clients.raw)
    with pytest.raises(Conflict, match="another agent"):
        accept(turns, {"id": "agent-other", "name": "Other"}, idempotency_key="idem-1")
    assert snapshot(clients.raw) == before
    assert clients.text.dbsize() == len(before)


def test_full_queue_raises_and_creates_nothing(clients: RedisClients, make_settings: Callable[..., Settings],
                                               chef: dict) -> None:  # fmt: skip
    turns = TurnStore(clients, make_settings(PARLEY_MAX_QUEUE_DEPTH="1"))
    accept(turns, chef, "s1")
    before = snapshot(clients.raw)
    with pytest.raises(TooManyRequests) as caught:
        accept(turns, chef, "s2", idempotency_key="idem-1")
    assert caught.value.retry_after_s >= 1
    assert snapshot(clients.raw) == before
    assert clients.text.dbsize() == len(before)


# --- Idempotency-Key --------------------------------------------------------------------------


def test_idempotency_key_replays_the_same_job(turns: TurnStore, clients: RedisClients, chef: dict,
                                              settings: Settings) -> None:  # fmt: skip
    first = accept(turns, chef, session_id=None, idempotency_key="idem-1", request_hash="h1")
    stored = clients.text.get(keys.idempotency(T, "idem-1"))
    assert stored == f"{first.job_id} h1"
    assert 0 < clients.text.pttl(keys.idempotency(T, "idem-1")) <= settings.idempotency_ttl_s * 1000
    before = snapshot(clients.raw)

    again = accept(turns, chef, session_id=None, idempotency_key="idem-1", request_hash="h1")
    assert again == Accepted(first.job_id, first.session_id, "agent-chef", replayed=True)
    assert turns.replay(T, "idem-1", "h1") == again
    assert snapshot(clients.raw) == before


def test_idempotency_key_with_another_body_conflicts(turns: TurnStore, clients: RedisClients, chef: dict) -> None:
    accept(turns, chef, idempotency_key="idem-1", request_hash="h1")
    before = snapshot(clients.raw)
    with pytest.raises(Conflict, match="Idempotency-Key"):
        accept(turns, chef, idempotency_key="idem-1", request_hash="h2")
    with pytest.raises(Conflict, match="Idempotency-Key"):
        turns.replay(T, "idem-1", "h2")
    assert snapshot(clients.raw) == before


def test_idempotency_keys_are_per_tenant(turns: TurnStore, chef: dict) -> None:
    mine = accept(turns, chef, idempotency_key="idem-1", request_hash="h1", tenant="alice")
    theirs = accept(turns, chef, idempotency_key="idem-1", request_hash="h1", tenant="bob")
    assert theirs.job_id != mine.job_id and not theirs.replayed
    assert turns.replay("carol", "idem-1", "h1") is None


def test_replay_still_answers_when_the_queue_is_full(clients: RedisClients, make_settings: Callable[..., Settings],
                                                     chef: dict) -> None:  # fmt: skip
    turns = TurnStore(clients, make_settings(PARLEY_MAX_QUEUE_DEPTH="1"))
    first = accept(turns, chef, idempotency_key="idem-1", request_hash="h1")
    assert accept(turns, chef, idempotency_key="idem-1", request_hash="h1").job_id == first.job_id


# --- SessionStore -----------------------------------------------------------------------------

LISTED = {"s-a": 1000, "s-b": 2000, "s-c": 2000, "s-d": 2000, "s-e": 2000, "s-f": 3000, "s-g": 1000}
NEWEST_FIRST = ["s-f", "s-e", "s-d", "s-c", "s-b", "s-g", "s-a"]  # same ms: Redis orders ids high to low


@pytest.fixture
def listed(sessions: SessionStore, clients: RedisClients, chef: dict) -> SessionStore:
    """Seven sessions; four created in the same millisecond, two in another."""
    for session_id, created in LISTED.items():
        sessions.create(T, chef, session_id, {"n": session_id})
        clients.text.zadd(keys.sessions(T), {session_id: created})
        clients.text.zadd(keys.agent_sessions(T, chef["id"]), {session_id: created})
    return sessions


def _all_pages(store: SessionStore, limit: int, agent_id: str | None = None) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page, cursor = store.page(T, agent_id=agent_id, limit=limit, cursor=cursor, agent_names={})
        pages.append([s.session_id for s in page])
        if cursor is None:
            return pages
        assert len(pages) < 20, "paging does not end"


def test_sessions_list_newest_first_in_pages_of_two(listed: SessionStore) -> None:
    assert _all_pages(listed, 2) == [["s-f", "s-e"], ["s-d", "s-c"], ["s-b", "s-g"], ["s-a"]]


@pytest.mark.parametrize("limit", [1, 3, 4, 6, 7, 8])
def test_sessions_pages_cover_everything_once(listed: SessionStore, limit: int) -> None:
    pages = _all_pages(listed, limit)
    assert [sid for page in pages for sid in page] == NEWEST_FIRST
    assert all(len(page) == limit for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= limit


def test_sessions_cursor_format_and_agent_filter(listed: SessionStore, chef: dict) -> None:
    page, cursor = listed.page(T, agent_id=None, limit=2, cursor=None, agent_names={chef["id"]: "Chef"})
    assert cursor == "2000:s-e"
    assert page[0].agent_name == "Chef" and page[0].metadata == {"n": "s-f"} and page[0].message_count == 1
    assert _all_pages(listed, 3, agent_id=chef["id"]) == [NEWEST_FIRST[:3], NEWEST_FIRST[3:6], NEWEST_FIRST[6:]]
    assert listed.page(T, agent_id="agent-none", limit=5, cursor=None, agent_names={}) == ([], None)


@pytest.mark.parametrize("cursor", ["nonsense", "12:", ":s-a", "x1:s-a", "-5:s-a"])
def test_sessions_bad_cursor(listed: SessionStore, cursor: str) -> None:
    with pytest.raises(InvalidInput):
        listed.page(T, agent_id=None, limit=2, cursor=cursor, agent_names={})


def test_sessions_are_per_tenant(listed: SessionStore) -> None:
    assert listed.page("bob", agent_id=None, limit=10, cursor=None, agent_names={}) == ([], None)
    with pytest.raises(NotFound):
        listed.get("bob", "s-a", {})


def test_session_create_twice_conflicts(sessions: SessionStore, chef: dict) -> None:
    assert sessions.create(T, chef, "mine", {}) == "mine"
    with pytest.raises(Conflict):
        sessions.create(T, chef, "mine", {})
    assert sessions.get(T, "mine", {}).message_count == 1


@pytest.fixture
def chatty(sessions: SessionStore, clients: RedisClients, chef: dict) -> SessionStore:
    """Session s1 with five messages: msg_0 (the first message) to msg_4."""
    sessions.create(T, chef, "s1", {})
    for n in range(1, 5):
        role = "user" if n % 2 else "assistant"
        clients.text.rpush(keys.messages(T, "s1"), message_json(role, f"m{n}", job_id=f"job_{n}", created_at=n))
    return sessions


def _ids(page: list[Any]) -> list[str]:
    return [message.id for message in page]


def test_messages_newest_page_oldest_first(chatty: SessionStore) -> None:
    page = chatty.messages(T, "s1", limit=2, before=None)
    assert _ids(page) == ["msg_3", "msg_4"]
    assert [m.content for m in page] == ["m3", "m4"]
    assert page[0].job_id == "job_3" and page[0].created_at == "1970-01-01T00:00:00.003Z"


def test_messages_paging_with_before(chatty: SessionStore, chef: dict) -> None:
    assert _ids(chatty.messages(T, "s1", limit=2, before="msg_3")) == ["msg_1", "msg_2"]
    first_page = chatty.messages(T, "s1", limit=2, before="msg_1")
    assert _ids(first_page) == ["msg_0"]
    assert first_page[0].content == chef["first_message"] and first_page[0].job_id is None
    assert chatty.messages(T, "s1", limit=2, before="msg_0") == []
    assert _ids(chatty.messages(T, "s1", limit=100, before=None)) == [f"msg_{n}" for n in range(5)]


@pytest.mark.parametrize("before", ["3", "msg_", "msg_x", "msg_-1", "message_3"])
def test_messages_bad_before(chatty: SessionStore, before: str) -> None:
    with pytest.raises(InvalidInput):
        chatty.messages(T, "s1", limit=2, before=before)


def test_messages_of_unknown_session(chatty: SessionStore) -> None:
    with pytest.raises(NotFound):
        chatty.messages(T, "nope", limit=2, before=None)
    with pytest.raises(NotFound):
        chatty.messages("bob", "s1", limit=2, before=None)


def test_session_delete(chatty: SessionStore, clients: RedisClients, chef: dict) -> None:
    chatty.delete(T, "s1")
    assert chatty.bound_agent(T, "s1") is None
    assert clients.text.exists(keys.messages(T, "s1")) == 0
    assert clients.text.zscore(keys.sessions(T), "s1") is None
    assert clients.text.zscore(keys.agent_sessions(T, chef["id"]), "s1") is None
    with pytest.raises(NotFound):
        chatty.delete(T, "s1")


# --- AgentStore -------------------------------------------------------------------------------


def _spec(name: str, **fields: Any) -> AgentCreate:
    return AgentCreate(name=name, **fields)


def test_agent_create_and_get_by_id_and_name(agents: AgentStore) -> None:
    made = agents.create("alice", _spec("Chef", context="You cook.", response_shape={"a": "string"}))
    assert made["id"].startswith("agent-")
    assert made["source"] == "api"
    assert agents.get("alice", made["id"]) == made
    assert agents.get("alice", "Chef") == made
    assert agents.get_by_id("alice", made["id"]) == made
    assert agents.get_by_id("alice", "Chef") is None  # by id only
    assert agents.visible("alice") == [made]
    assert agents.first("alice") == made
    shown = public(made, "gpt-test")
    assert shown.model == "gpt-test" and shown.response_shape == {"a": "string"} and shown.created_at.endswith("Z")


def test_agent_names_are_unique_per_tenant(agents: AgentStore, clients: RedisClients) -> None:
    agents.create("alice", _spec("Chef"))
    before = snapshot(clients.raw)
    with pytest.raises(Conflict):
        agents.create("alice", _spec("Chef", description="another"))
    assert snapshot(clients.raw) == before
    agents.create("bob", _spec("Chef"))  # another tenant may use the name


def test_agent_tenant_isolation(agents: AgentStore) -> None:
    mine = agents.create("alice", _spec("Secret"))
    assert agents.find("bob", mine["id"]) is None
    assert agents.find("bob", "Secret") is None
    assert agents.get_by_id("bob", mine["id"]) is None
    assert agents.visible("bob") == [] and agents.first("bob") is None
    with pytest.raises(NotFound):
        agents.get("bob", mine["id"])
    with pytest.raises(NotFound):
        agents.update("bob", mine["id"], AgentUpdate(description="mine now"))
    with pytest.raises(NotFound):
        agents.delete("bob", "Secret")
    assert agents.get("alice", "Secret")["description"] == ""


@pytest.fixture
def file_agents(agents: AgentStore, tmp_path: Path) -> AgentStore:
    path = tmp_path / "agents.yaml"
    path.write_text(
        "agents:\n"
        "  - name: Helper Bot\n    context: You help.\n"
        "  - id: fixed-id\n    name: Second\n    first_message: Hi!\n",
        encoding="utf-8",
    )
    assert agents.load_file(str(path)) == 2
    return agents


def test_file_agents_are_visible_to_every_tenant(file_agents: AgentStore) -> None:
    for tenant in ("alice", "bob"):
        assert file_agents.get(tenant, "Helper Bot")["id"] == "agent-helper-bot"
        assert file_agents.get(tenant, "fixed-id")["name"] == "Second"
        assert file_agents.get_by_id(tenant, "fixed-id")["source"] == "file"  # type: ignore[index]
        assert file_agents.first(tenant)["name"] == "Helper Bot"  # type: ignore[index]
    own = file_agents.create("alice", _spec("Own"))
    assert [a["name"] for a in file_agents.visible("alice")] == ["Helper Bot", "Second", "Own"]
    assert [a["name"] for a in file_agents.visible("bob")] == ["Helper Bot", "Second"]
    assert file_agents.first("alice")["id"] != own["id"]  # type: ignore[index]


def test_file_agents_are_read_only(file_agents: AgentStore, clients: RedisClients) -> None:
    before = snapshot(clients.raw)
    with pytest.raises(Conflict, match="PARLEY_AGENTS_FILE"):
        file_agents.update("alice", "Helper Bot", AgentUpdate(description="changed"))
    with pytest.raises(Conflict, match="PARLEY_AGENTS_FILE"):
        file_agents.update("alice", "fixed-id", AgentUpdate(name="Renamed"))
    with pytest.raises(Conflict, match="PARLEY_AGENTS_FILE"):
        file_agents.delete("bob", "fixed-id")
    assert snapshot(clients.raw) == before


def test_unknown_tools_are_refused(agents: AgentStore, clients: RedisClients) -> None:
    with pytest.raises(InvalidInput, match="web_search"):
        agents.create("alice", _spec("Tooly", tools=["web_search"]))
    assert clients.text.dbsize() == 0
    made = agents.create("alice", _spec("Plain"))
    with pytest.raises(InvalidInput, match="no_such_tool"):
        agents.update("alice", made["id"], AgentUpdate(tools=["no_such_tool"]))
    assert agents.get("alice", "Plain")["tools"] == []


def test_agent_rename_moves_the_name(agents: AgentStore) -> None:
    made = agents.create("alice", _spec("Old"))
    agents.create("alice", _spec("Taken"))
    with pytest.raises(Conflict):
        agents.update("alice", "Old", AgentUpdate(name="Taken"))
    changed = agents.update("alice", "Old", AgentUpdate(name="  New  ", description="d"))
    assert changed["name"] == "New" and changed["updated_at"] is not None
    assert agents.find("alice", "Old") is None
    assert agents.get("alice", "New")["id"] == made["id"]
    agents.create("alice", _spec("Old"))  # the old name is free again


def test_agent_delete_frees_the_name(agents: AgentStore) -> None:
    made = agents.create("alice", _spec("Gone"))
    agents.delete("alice", "Gone")
    assert agents.find("alice", made["id"]) is None and agents.visible("alice") == []
    agents.create("alice", _spec("Gone"))


@pytest.mark.parametrize("field", ["description", "type", "context", "first_message", "instructions"])
def test_agent_update_with_null_keeps_the_agent_showable(agents: AgentStore, field: str) -> None:
    """PATCH /api/v1/agents/{a} with `{"<field>": null}`: AgentUpdate accepts null for these
    fields, but AgentPublic requires a string. Either refuse the change (InvalidInput) or store
    something showable; the agent must not become impossible to show (GET and the whole
    agent list would answer 500 from then on)."""
    made = agents.create("alice", _spec("Nullable"))
    try:
        agents.update("alice", made["id"], AgentUpdate.model_validate({field: None}))
    except (InvalidInput, ValidationError):  # ValidationError: the API answers 422
        return
    public(agents.get("alice", made["id"]), "gpt-test")  # must not raise


def test_start_returns_the_job_record_it_wrote(turns: TurnStore, worker_turns: WorkerTurns, chef: dict) -> None:
    """START_TURN hands the worker the job record, saving a read: it must be the stored one."""
    accepted = accept(turns, chef)
    state, attempt, record = start(worker_turns, accepted.job_id)
    assert (state, attempt) == ("started", 1)
    assert record == turns.job(T, accepted.job_id)
    assert record["agent_id"] == chef["id"] and record["status"] == "started"


def test_emit_sends_a_batch_in_order_and_stops_at_the_fence(
    turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients, chef: dict
) -> None:
    accepted = accept(turns, chef)
    start(worker_turns, accepted.job_id)
    batch = [events.encode(EventType.DELTA, content=str(i)) for i in range(5)]
    assert emit(worker_turns, accepted.job_id, 1, batch) is True
    deltas = [e["content"] for e in event_list(clients, accepted.job_id) if e["type"] == "delta"]
    assert deltas == ["0", "1", "2", "3", "4"]
    turns.cancel(T, accepted.job_id)
    assert emit(worker_turns, accepted.job_id, 1, batch) is False
    assert [e["content"] for e in event_list(clients, accepted.job_id) if e["type"] == "delta"] == deltas


def test_the_stream_outlives_the_longest_attempt_without_emit_extending_it(
    turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients, chef: dict
) -> None:
    """START_TURN gives the events stream the retention plus the turn timeout, so a batch of events
    need not extend it (EMIT writes no PEXPIRE); FINISH_TURN's last events give it the retention."""
    accepted = accept(turns, chef)
    stream = keys.events(T, accepted.job_id)
    retention_ms, timeout_ms = turns.settings.retention_s * 1000, turns.settings.turn_timeout_s * 1000
    assert clients.text.pttl(stream) <= retention_ms
    start(worker_turns, accepted.job_id)
    assert clients.text.pttl(stream) > retention_ms + timeout_ms - 5_000
    clients.text.pexpire(stream, 1_000_000)
    assert emit(worker_turns, accepted.job_id, 1, [events.encode(EventType.DELTA, content="a")]) is True
    assert 990_000 < clients.text.pttl(stream) <= 1_000_000  # left as it was
    finish_ok(worker_turns, accepted.job_id, 1)
    assert retention_ms - 5_000 < clients.text.pttl(stream) <= retention_ms


def test_emit_loads_its_script_again_after_a_flush(turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients,
                                                   chef: dict) -> None:  # fmt: skip
    """Deltas go out as EVALSHA (no SCRIPT EXISTS per batch); a Redis that lost its scripts gets
    the script loaded again and the batch sent again, once."""
    accepted = accept(turns, chef)
    start(worker_turns, accepted.job_id)
    clients.text.script_flush()
    assert emit(worker_turns, accepted.job_id, 1, [events.encode(EventType.DELTA, content="a")]) is True
    assert emit(worker_turns, accepted.job_id, 1, [events.encode(EventType.DELTA, content="b")]) is True
    assert [e["content"] for e in event_list(clients, accepted.job_id) if e["type"] == "delta"] == ["a", "b"]


def test_emit_with_telemetry_riding_along_loads_its_script_again_after_a_flush(
    turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients, chef: dict
) -> None:
    """With telemetry deltas pending, the batch goes out in a pipeline with them: a Redis that lost its
    scripts still gets the script loaded again and the batch written once, the deltas counted once."""
    accepted = accept(turns, chef)
    start(worker_turns, accepted.job_id)
    clients.text.script_flush()
    telemetry.PENDING.take()  # only this test's delta rides along
    telemetry.tool_call("calculator", ok=True)
    assert emit(worker_turns, accepted.job_id, 1, [events.encode(EventType.DELTA, content="a")]) is True
    assert not telemetry.PENDING
    assert [e["content"] for e in event_list(clients, accepted.job_id) if e["type"] == "delta"] == ["a"]
    assert clients.text.hgetall(telemetry.TOOL_CALLS.key) == {'["calculator","ok"]': "1"}
