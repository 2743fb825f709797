"""CancelWatch: one shared thread checks every open watch; none calls hang_up once it is closed."""

from __future__ import annotations

import threading
import time

import redis

from parley.worker.turn.cancel_watch import CancelWatch


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_hangs_up_once_the_turn_is_no_longer_ours() -> None:
    ours = threading.Event()
    ours.set()
    hung_up = threading.Event()
    with CancelWatch(ours.is_set, hung_up.set, interval_s=0.05) as watch:
        time.sleep(0.2)
        assert not watch.fired and not hung_up.is_set()
        ours.clear()
        assert _wait(hung_up.is_set)
    assert watch.fired


def test_many_watches_share_one_thread_and_each_fires_alone() -> None:
    before = threading.active_count()
    flags = [threading.Event() for _ in range(50)]
    for flag in flags:
        flag.set()
    hung = [threading.Event() for _ in range(50)]
    watches = [CancelWatch(flag.is_set, done.set, interval_s=0.05) for flag, done in zip(flags, hung, strict=True)]
    for watch in watches:
        watch.__enter__()
    try:
        assert threading.active_count() <= before + 1
        flags[7].clear()
        assert _wait(hung[7].is_set)
        time.sleep(0.2)
        assert [i for i, done in enumerate(hung) if done.is_set()] == [7]
    finally:
        for watch in watches:
            watch.__exit__(None, None, None)


def test_no_hang_up_after_the_block_is_left_and_redis_errors_are_retried() -> None:
    calls: list[str] = []

    def flaky() -> bool:
        calls.append("ask")
        if len(calls) == 1:
            raise redis.ConnectionError("blip")
        return True

    with CancelWatch(flaky, lambda: calls.append("hang up"), interval_s=0.05):
        assert _wait(lambda: len(calls) >= 3)
    asked = len(calls)
    gone = CancelWatch(lambda: False, lambda: calls.append("late hang up"), interval_s=0.01)
    with gone:
        pass
    time.sleep(0.2)
    assert "hang up" not in calls and "late hang up" not in calls
    assert len(calls) == asked  # nothing asked once the block was left
