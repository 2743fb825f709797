"""worker/turn/emitter.py: batches in order, stops when the turn is no longer ours, surfaces Redis errors."""

from __future__ import annotations

import threading

import pytest
import redis

from parley.worker.turn.emitter import Emitter


def test_every_event_is_sent_once_in_order() -> None:
    sent: list[str] = []
    def send(batch: list[str]) -> bool:
        sent.extend(batch)
        return True

    with Emitter(send, lambda: None) as emitter:
        for i in range(500):
            assert emitter.put(str(i))
    assert sent == [str(i) for i in range(500)]


def test_waiting_events_go_out_together() -> None:
    gate = threading.Event()
    batches: list[list[str]] = []

    def send(batch: list[str]) -> bool:
        gate.wait(5)
        batches.append(batch)
        return True

    with Emitter(send, lambda: None) as emitter:
        emitter.put("first")
        for i in range(10):
            emitter.put(str(i))
        gate.set()
    assert [e for b in batches for e in b] == ["first"] + [str(i) for i in range(10)]
    assert len(batches) < 11


def test_a_refused_batch_stops_the_emitter_and_hangs_up() -> None:
    hung_up = threading.Event()
    with Emitter(lambda batch: False, hung_up.set) as emitter:
        emitter.put("x")
        assert hung_up.wait(5)
        assert emitter.put("y") is False
    assert emitter.stopped


def test_a_redis_error_is_raised_on_exit() -> None:
    def fail(batch: list[str]) -> bool:
        raise redis.ConnectionError("gone")

    with pytest.raises(redis.ConnectionError):
        with Emitter(fail, lambda: None) as emitter:
            emitter.put("x")
