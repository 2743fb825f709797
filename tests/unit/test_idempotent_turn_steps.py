"""The turn steps run twice by the Redis client's retry change nothing the second time.

shared/store/connection.py retries a command (or a whole pipeline) once when its connection drops. If the
drop loses the *reply*, the first run already happened and the retry runs the same script again
with the same arguments. Here the reply is really lost: the fake connection reads it, then drops
and raises ConnectionError, and redis-py's retry (the production policy, `retry_options()`) sends
it again. The whole fake Redis must then look as after one run, and the caller get the first
run's answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis
from fakeredis._clients._sync import FakeBaseConnection, FakeRedisConnection

from parley.shared import events, telemetry
from parley.shared.events import EventType
from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store import turns as turns_module
from parley.shared.store.connection import RedisClients, retry_options
from parley.shared.store.turns import TurnStore

from .test_turn_scripts import T, accept, event_list, finish_ok, snapshot


class LostReplies:
    """Arm it, and the reply to the next script run (EVALSHA) is lost: read, then the connection drops."""

    def __init__(self) -> None:
        self.armed = False
        self.script_sent = False
        self.lost = 0

    def arm(self) -> None:
        self.armed = True


@pytest.fixture
def lost(monkeypatch: pytest.MonkeyPatch) -> LostReplies:
    replies = LostReplies()
    send, read = FakeRedisConnection.send_packed_command, FakeBaseConnection.read_response

    def send_and_note(self: FakeRedisConnection, command: Any, *args: Any, **kwargs: Any) -> Any:
        parts = [command] if isinstance(command, bytes | str) else command
        replies.script_sent = any(b"EVALSHA" in (part.encode() if isinstance(part, str) else part) for part in parts)
        return send(self, command, *args, **kwargs)

    def read_then_maybe_drop(self: FakeRedisConnection, **kwargs: Any) -> Any:
        reply = read(self, **kwargs)  # the command ran; its reply arrived
        if replies.armed and replies.script_sent:
            replies.armed = False
            replies.lost += 1
            self.disconnect()
            raise redis.ConnectionError("connection dropped (test): the reply is lost")
        return reply

    monkeypatch.setattr(FakeRedisConnection, "send_packed_command", send_and_note)
    monkeypatch.setattr(FakeBaseConnection, "read_response", read_then_maybe_drop)
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
def store(retrying: RedisClients, settings: Settings) -> TurnStore:
    store = TurnStore(retrying, settings)
    for script in (store._start, store._emit, store._finish):  # loaded: the lost reply is the step's own
        retrying.text.script_load(script.script)
    telemetry.PENDING.take()
    return store


def twice(lost: LostReplies, step: Callable[[], Any]) -> Any:
    """Run `step` with its (first) reply lost, so the client's retry runs it a second time."""
    lost.arm()
    answer = step()
    assert lost.lost == 1, "the reply was not lost: the test did not test a retry"
    lost.lost = 0
    return answer


def test_a_retried_start_returns_the_same_attempt_and_writes_nothing_more(
    store: TurnStore, retrying: RedisClients, chef: dict, lost: LostReplies
) -> None:
    accepted = accept(store, chef)
    state, attempt, record = twice(lost, lambda: store.start(T, accepted.job_id))
    assert (state, attempt) == ("started", 1)  # not 2: the retry counted no second attempt
    assert record == store.job(T, accepted.job_id)
    assert [e.get("message") for e in event_list(retrying, accepted.job_id)] == [None, "queued", "started"]
    assert store.is_running(T, accepted.job_id, 1)


def test_a_retried_start_records_no_second_queue_wait(
    store: TurnStore, retrying: RedisClients, chef: dict, lost: LostReplies
) -> None:
    accepted = accept(store, chef)
    before = snapshot(retrying.raw)
    twice(lost, lambda: store.start(T, accepted.job_id))
    after_retry = snapshot(retrying.raw)
    wait_key = telemetry.QUEUE_WAIT.key.encode()
    count = sum(int(v) for f, v in after_retry[wait_key][1].items() if not f.endswith(b"|sum"))
    assert count == 1, after_retry[wait_key]
    assert wait_key not in before


def test_a_second_run_of_the_same_start_call_changes_nothing(
    store: TurnStore, retrying: RedisClients, chef: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script itself, run twice with the same arguments: the second run is answered, not run."""
    accepted = accept(store, chef)
    monkeypatch.setattr(turns_module, "new_call_id", lambda: "call-1")
    first = store.start(T, accepted.job_id)
    after_one = snapshot(retrying.raw)
    assert store.start(T, accepted.job_id) == first
    assert snapshot(retrying.raw) == after_one
    monkeypatch.setattr(turns_module, "new_call_id", lambda: "call-2")  # a new call is a new attempt
    assert store.start(T, accepted.job_id)[:2] == ("started", 2)


def test_a_retried_emit_batch_writes_each_event_once(
    store: TurnStore, retrying: RedisClients, chef: dict, lost: LostReplies
) -> None:
    accepted = accept(store, chef)
    store.start(T, accepted.job_id)
    batch = [events.encode(EventType.DELTA, content=str(i)) for i in range(5)]
    assert twice(lost, lambda: store.emit(T, accepted.job_id, 1, batch)) is True
    deltas = [e["content"] for e in event_list(retrying, accepted.job_id) if e["type"] == "delta"]
    assert deltas == ["0", "1", "2", "3", "4"]


def test_a_batch_sent_again_by_the_same_call_writes_nothing_and_the_next_call_writes(
    store: TurnStore, retrying: RedisClients, chef: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is one script run, so it is written whole or not at all; the same call sent again (its
    reply lost) writes nothing, and the next call (a new call id) writes its batch."""
    accepted = accept(store, chef)
    store.start(T, accepted.job_id)
    monkeypatch.setattr(turns_module, "new_call_id", lambda: "batch-1")
    batch = [events.encode(EventType.DELTA, content=str(i)) for i in range(5)]
    assert store.emit(T, accepted.job_id, 1, batch) is True
    after = snapshot(retrying.raw)
    assert store.emit(T, accepted.job_id, 1, batch) is True
    assert snapshot(retrying.raw) == after
    deltas = [e["content"] for e in event_list(retrying, accepted.job_id) if e["type"] == "delta"]
    assert deltas == ["0", "1", "2", "3", "4"]
    monkeypatch.setattr(turns_module, "new_call_id", lambda: "batch-2")  # the next batch is written
    assert store.emit(T, accepted.job_id, 1, batch[:1]) is True
    assert len([e for e in event_list(retrying, accepted.job_id) if e["type"] == "delta"]) == 6


def test_a_retried_emit_still_stops_at_the_fence(
    store: TurnStore, retrying: RedisClients, chef: dict, lost: LostReplies
) -> None:
    accepted = accept(store, chef)
    store.start(T, accepted.job_id)
    store.cancel(T, accepted.job_id)
    delta = events.encode(EventType.DELTA, content="x")
    assert twice(lost, lambda: store.emit(T, accepted.job_id, 1, [delta])) is False
    assert not [e for e in event_list(retrying, accepted.job_id) if e["type"] == "delta"]


def test_a_retried_finish_reports_it_ended_the_turn_and_commits_once(
    store: TurnStore, retrying: RedisClients, chef: dict, lost: LostReplies
) -> None:
    accepted = accept(store, chef)
    store.start(T, accepted.job_id)
    telemetry.PENDING.add(telemetry.TOOL_CALLS, telemetry.labels_field(("calculator", "ok")), 1)
    assert twice(lost, lambda: finish_ok(store, accepted.job_id, 1)) is True  # the worker then commits its summary
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
    store: TurnStore, retrying: RedisClients, chef: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    accepted = accept(store, chef)
    store.start(T, accepted.job_id)
    monkeypatch.setattr(turns_module, "new_call_id", lambda: "finish-1")
    assert finish_ok(store, accepted.job_id, 1) is True
    after_one = snapshot(retrying.raw)
    assert finish_ok(store, accepted.job_id, 1) is True
    assert snapshot(retrying.raw) == after_one
    monkeypatch.setattr(turns_module, "new_call_id", lambda: "finish-2")  # another call: already ended
    assert finish_ok(store, accepted.job_id, 1) is False


def test_a_second_run_of_the_same_call_writes_none_of_its_deltas(
    store: TurnStore, retrying: RedisClients, chef: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """start_turn.lua and finish_turn.lua answer a call that already ran before their step and before their
    metrics: run again with the same arguments, deltas included, it writes nothing, metrics neither."""
    accepted = accept(store, chef)

    def carrying_deltas(step: Callable[[], Any]) -> Any:
        telemetry.PENDING.add(telemetry.TOOL_CALLS, telemetry.labels_field(("calculator", "ok")), 1)
        return step()

    monkeypatch.setattr(turns_module, "new_call_id", lambda: "start-1")
    first = carrying_deltas(lambda: store.start(T, accepted.job_id))
    after_one = snapshot(retrying.raw)
    assert carrying_deltas(lambda: store.start(T, accepted.job_id)) == first
    assert snapshot(retrying.raw) == after_one
    monkeypatch.setattr(turns_module, "new_call_id", lambda: "finish-1")
    assert carrying_deltas(lambda: finish_ok(store, accepted.job_id, 1)) is True
    after_one = snapshot(retrying.raw)
    assert carrying_deltas(lambda: finish_ok(store, accepted.job_id, 1)) is True
    assert snapshot(retrying.raw) == after_one
    assert retrying.text.hgetall(telemetry.TOOL_CALLS.key) == {'["calculator","ok"]': "2"}  # one per first run
