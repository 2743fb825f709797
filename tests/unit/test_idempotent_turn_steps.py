"""The turn steps run twice by the Redis client's retry change nothing the second time.

shared/store/connection.py retries a command (or a whole pipeline) once when its connection drops. If the
drop loses the *reply*, the first run already happened and the retry runs the same script again
with the same arguments. Here the reply is really lost: the fake connection reads it, then drops
and raises ConnectionError, and redis-py's retry sends it again: the production policy of the sync
clients (`retry_options()`: the web's cancel) and of the worker's asyncio client (`connect_async`: a
worker's start, emit and finish, through WorkerTurns). The whole fake Redis must then look as after one
run, and the caller get the first run's answer.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio as aredis
from fakeredis._clients._async import FakeAsyncRedisConnection, FakeBaseAsyncConnection
from fakeredis._clients._sync import FakeBaseConnection, FakeRedisConnection

from parley.shared import events, telemetry
from parley.shared.events import EventType
from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store import turns as turns_module
from parley.shared.store import worker_turns as worker_turns_module
from parley.shared.store.connection import RedisClients, connect_async, retry_options
from parley.shared.store.turns import TurnStore
from parley.shared.store.worker_turns import Attempt, WorkerTurns

from .test_turn_scripts import T, accept, event_list, finish_ok, running, snapshot, start


class LostReplies:
    """Arm it, and the reply to the next script run (EVALSHA) is lost: read, then the connection drops."""

    def __init__(self) -> None:
        self.armed = False
        self.script_sent = False
        self.lost = 0

    def arm(self) -> None:
        self.armed = True


    def note_sent(self, command: Any) -> None:
        parts = [command] if isinstance(command, bytes | str) else command
        self.script_sent = any(b"EVALSHA" in (part.encode() if isinstance(part, str) else part) for part in parts)

    def drops_now(self) -> bool:
        """True (once armed) when the reply just read is a script's: the caller drops the connection."""
        if self.armed and self.script_sent:
            self.armed = False
            self.lost += 1
            return True
        return False


LOST = "connection dropped (test): the reply is lost"


@pytest.fixture
def lost(monkeypatch: pytest.MonkeyPatch) -> LostReplies:
    """Lost replies on fakeredis's sync connections and on its asyncio ones alike."""
    replies = LostReplies()
    send, read = FakeRedisConnection.send_packed_command, FakeBaseConnection.read_response
    async_send, async_read = FakeAsyncRedisConnection.send_packed_command, FakeBaseAsyncConnection.read_response

    def send_and_note(self: FakeRedisConnection, command: Any, *args: Any, **kwargs: Any) -> Any:
        replies.note_sent(command)
        return send(self, command, *args, **kwargs)

    def read_then_maybe_drop(self: FakeRedisConnection, **kwargs: Any) -> Any:
        reply = read(self, **kwargs)  # the command ran; its reply arrived
        if replies.drops_now():
            self.disconnect()
            raise redis.ConnectionError(LOST)
        return reply

    async def async_send_and_note(self: FakeAsyncRedisConnection, command: Any, *args: Any, **kwargs: Any) -> Any:
        replies.note_sent(command)
        return await async_send(self, command, *args, **kwargs)

    async def async_read_then_maybe_drop(self: FakeAsyncRedisConnection, **kwargs: Any) -> Any:
        reply = await async_read(self, **kwargs)  # the command ran; its reply arrived
        if replies.drops_now():
            await self.disconnect()
            raise redis.ConnectionError(LOST)
        return reply

    monkeypatch.setattr(FakeRedisConnection, "send_packed_command", send_and_note)
    monkeypatch.setattr(FakeBaseConnection, "read_response", read_then_maybe_drop)
    monkeypatch.setattr(FakeAsyncRedisConnection, "send_packed_command", async_send_and_note)
    monkeypatch.setattr(FakeBaseAsyncConnection, "read_response", async_read_then_maybe_drop)
    return replies


@pytest.fixture
def retrying(server: fakeredis.FakeServer) -> Iterator[RedisClients]:
    """Clients with the production retry policy on the shared fake server (FakeRedis drops `retry`
    from its arguments, so it is set afterwards)."""
    text = fakeredis.FakeRedis(server=server, decode_responses=True)
    raw = fakeredis.FakeRedis(server=server, decode_responses=False)
    for client in (text, raw):
        options = retry_options()
        options["retry"].update_supported_errors(options["retry_on_error"])
        client.set_retry(options["retry"])
    yield RedisClients(text=text, raw=raw)
    text.close()
    raw.close()


@pytest.fixture
def aio(server: fakeredis.FakeServer, settings: Settings) -> Iterator[aredis.Redis]:
    """The worker's asyncio client as `connect_async` builds it (its pool, timeouts and retry policy), its
    connections fakeredis's on the shared fake server. Without health checks: fakeredis's asyncio connection
    hands the health check's PONG to the connection handshake's HELLO (redis-py 8.1), and hangs."""
    client = connect_async(settings, max_connections=4)
    client.connection_pool.connection_class = FakeAsyncRedisConnection
    client.connection_pool.connection_kwargs.update(server=server, health_check_interval=0)
    yield client
    asyncio.run(client.aclose())


@pytest.fixture
def store(retrying: RedisClients, settings: Settings) -> TurnStore:
    store = TurnStore(retrying, settings)
    retrying.text.script_load(store._finish.script)  # loaded: the lost reply is the step's own
    telemetry.PENDING.take()
    return store


@pytest.fixture
def worker(store: TurnStore, aio: aredis.Redis, retrying: RedisClients) -> WorkerTurns:
    """The worker's side of `store`, over the worker's client."""
    worker = WorkerTurns(store, aio)
    for script in (worker._start, worker._emit, worker._finish):  # loaded: the lost reply is the step's own
        retrying.text.script_load(script.script)
    return worker


def twice(lost: LostReplies, step: Callable[[], Any]) -> Any:
    """Run `step` (a coroutine runs on an event loop of its own) with its (first) reply lost, so the
    client's retry runs it a second time."""
    lost.arm()
    answer = step()
    if inspect.iscoroutine(answer):
        answer = asyncio.run(answer)
    assert lost.lost == 1, "the reply was not lost: the test did not test a retry"
    lost.lost = 0
    return answer


def same_call_id(monkeypatch: pytest.MonkeyPatch, call_id: str) -> None:
    """Every step names its call `call_id` (START and EMIT are built in worker_turns.py, FINISH in turns.py)."""
    for module in (turns_module, worker_turns_module):
        monkeypatch.setattr(module, "new_call_id", lambda: call_id)


def test_a_retried_start_returns_the_same_attempt_and_writes_nothing_more(
    store: TurnStore, worker: WorkerTurns, retrying: RedisClients, chef: dict, lost: LostReplies
) -> None:
    accepted = accept(store, chef)
    state, attempt, record = twice(lost, lambda: worker.start(T, accepted.job_id))
    assert (state, attempt) == ("started", 1)  # not 2: the retry counted no second attempt
    assert record == store.job(T, accepted.job_id)
    assert [e.get("message") for e in event_list(retrying, accepted.job_id)] == [None, "queued", "started"]
    assert running(worker, accepted.job_id, 1)


def test_a_retried_start_records_no_second_queue_wait(
    store: TurnStore, worker: WorkerTurns, retrying: RedisClients, chef: dict, lost: LostReplies
) -> None:
    accepted = accept(store, chef)
    before = snapshot(retrying.raw)
    twice(lost, lambda: worker.start(T, accepted.job_id))
    after_retry = snapshot(retrying.raw)
    wait_key = telemetry.QUEUE_WAIT.key.encode()
    count = sum(int(v) for f, v in after_retry[wait_key][1].items() if not f.endswith(b"|sum"))
    assert count == 1, after_retry[wait_key]
    assert wait_key not in before


def test_a_second_run_of_the_same_start_call_changes_nothing(
    store: TurnStore, worker: WorkerTurns, retrying: RedisClients, chef: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script itself, run twice with the same arguments: the second run is answered, not run."""
    accepted = accept(store, chef)
    same_call_id(monkeypatch, "call-1")
    first = start(worker, accepted.job_id)
    after_one = snapshot(retrying.raw)
    assert start(worker, accepted.job_id) == first
    assert snapshot(retrying.raw) == after_one
    same_call_id(monkeypatch, "call-2")  # a new call is a new attempt
    assert start(worker, accepted.job_id)[:2] == ("started", 2)


def test_a_retried_emit_batch_writes_each_event_once(
    store: TurnStore, worker: WorkerTurns, retrying: RedisClients, chef: dict, lost: LostReplies
) -> None:
    accepted = accept(store, chef)
    start(worker, accepted.job_id)
    batch = [events.encode(EventType.DELTA, content=str(i)) for i in range(5)]
    assert twice(lost, lambda: worker.emit(Attempt(T, accepted.job_id, 1), batch)) is True
    deltas = [e["content"] for e in event_list(retrying, accepted.job_id) if e["type"] == "delta"]
    assert deltas == ["0", "1", "2", "3", "4"]


def test_a_batch_sent_again_by_the_same_call_writes_nothing_and_the_next_call_writes(
    store: TurnStore, worker: WorkerTurns, retrying: RedisClients, chef: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is one script run, so it is written whole or not at all; the same call sent again (its
    reply lost) writes nothing, and the next call (a new call id) writes its batch."""
    accepted = accept(store, chef)
    start(worker, accepted.job_id)
    turn = Attempt(T, accepted.job_id, 1)
    same_call_id(monkeypatch, "batch-1")
    batch = [events.encode(EventType.DELTA, content=str(i)) for i in range(5)]
    assert asyncio.run(worker.emit(turn, batch)) is True
    after = snapshot(retrying.raw)
    assert asyncio.run(worker.emit(turn, batch)) is True
    assert snapshot(retrying.raw) == after
    deltas = [e["content"] for e in event_list(retrying, accepted.job_id) if e["type"] == "delta"]
    assert deltas == ["0", "1", "2", "3", "4"]
    same_call_id(monkeypatch, "batch-2")  # the next batch is written
    assert asyncio.run(worker.emit(turn, batch[:1])) is True
    assert len([e for e in event_list(retrying, accepted.job_id) if e["type"] == "delta"]) == 6


def test_a_retried_emit_still_stops_at_the_fence(
    store: TurnStore, worker: WorkerTurns, retrying: RedisClients, chef: dict, lost: LostReplies
) -> None:
    accepted = accept(store, chef)
    start(worker, accepted.job_id)
    store.cancel(T, accepted.job_id)
    delta = events.encode(EventType.DELTA, content="x")
    assert twice(lost, lambda: worker.emit(Attempt(T, accepted.job_id, 1), [delta])) is False
    assert not [e for e in event_list(retrying, accepted.job_id) if e["type"] == "delta"]


def test_a_retried_finish_reports_it_ended_the_turn_and_commits_once(
    store: TurnStore, worker: WorkerTurns, retrying: RedisClients, chef: dict, lost: LostReplies
) -> None:
    accepted = accept(store, chef)
    start(worker, accepted.job_id)
    telemetry.PENDING.add(telemetry.TOOL_CALLS, telemetry.labels_field(("calculator", "ok")), 1)
    assert twice(lost, lambda: finish_ok(worker, accepted.job_id, 1)) is True  # the worker then commits its summary
    assert [e["type"] for e in event_list(retrying, accepted.job_id)][-2:] == ["response", "done"]
    assert len(retrying.text.lrange(keys.messages(T, "s1"), 0, -1)) == 3  # first message, question, answer
    jobs = retrying.text.hgetall(telemetry.JOBS.key)
    assert jobs == {'["finished"]': "1"}  # the outcome counted once
    assert retrying.text.hgetall(telemetry.TOOL_CALLS.key) == {'["calculator","ok"]': "1"}  # deltas applied once


def test_a_retried_cancel_reports_it_canceled(
    store: TurnStore, retrying: RedisClients, chef: dict, lost: LostReplies
) -> None:
    accepted = accept(store, chef)
    assert twice(lost, lambda: store.cancel(T, accepted.job_id)) is True
    assert [e["type"] for e in event_list(retrying, accepted.job_id)][-2:] == ["error", "done"]


def test_a_second_run_of_the_same_finish_call_changes_nothing(
    store: TurnStore, worker: WorkerTurns, retrying: RedisClients, chef: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    accepted = accept(store, chef)
    start(worker, accepted.job_id)
    same_call_id(monkeypatch, "finish-1")
    assert finish_ok(worker, accepted.job_id, 1) is True
    after_one = snapshot(retrying.raw)
    assert finish_ok(worker, accepted.job_id, 1) is True
    assert snapshot(retrying.raw) == after_one
    same_call_id(monkeypatch, "finish-2")  # another call: already ended
    assert finish_ok(worker, accepted.job_id, 1) is False


def test_a_second_run_of_the_same_call_writes_none_of_its_deltas(
    store: TurnStore, worker: WorkerTurns, retrying: RedisClients, chef: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """start_turn.lua and finish_turn.lua answer a call that already ran before their step and before their
    metrics: run again with the same arguments, deltas included, it writes nothing, metrics neither."""
    accepted = accept(store, chef)

    def carrying_deltas(step: Callable[[], Any]) -> Any:
        telemetry.PENDING.add(telemetry.TOOL_CALLS, telemetry.labels_field(("calculator", "ok")), 1)
        return step()

    same_call_id(monkeypatch, "start-1")
    first = carrying_deltas(lambda: start(worker, accepted.job_id))
    after_one = snapshot(retrying.raw)
    assert carrying_deltas(lambda: start(worker, accepted.job_id)) == first
    assert snapshot(retrying.raw) == after_one
    same_call_id(monkeypatch, "finish-1")
    assert carrying_deltas(lambda: finish_ok(worker, accepted.job_id, 1)) is True
    after_one = snapshot(retrying.raw)
    assert carrying_deltas(lambda: finish_ok(worker, accepted.job_id, 1)) is True
    assert snapshot(retrying.raw) == after_one
    assert retrying.text.hgetall(telemetry.TOOL_CALLS.key) == {'["calculator","ok"]': "2"}  # one per first run
