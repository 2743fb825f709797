"""A turn's outbox: events queued without waiting go out in order, gathered into as few sends as the
sends' own pace allows; a refused or failed send stops the turn once and drops what follows."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from parley.worker.turn.outbox import Outbox


class Sender:
    def __init__(self, answers: list[bool | Exception] | None = None, delay_s: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.answers = answers or []
        self.delay_s = delay_s

    async def __call__(self, batch: list[str]) -> bool:
        self.batches.append(batch)
        await asyncio.sleep(self.delay_s)
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_events_queued_together_go_in_one_send_and_those_queued_meanwhile_in_the_next() -> None:
    async def scenario() -> Sender:
        sender = Sender(delay_s=0.05)
        outbox = Outbox(sender, lambda error: None)
        assert all(outbox.put(f"e{n}") for n in range(3))  # one turn of the loop: one batch
        await asyncio.sleep(0.01)  # the first send is under way
        assert all(outbox.put(f"e{n}") for n in range(3, 6))
        await outbox.sent()
        return sender

    assert asyncio.run(scenario()).batches == [["e0", "e1", "e2"], ["e3", "e4", "e5"]]


def test_a_refused_send_stops_the_turn_once_and_drops_what_follows() -> None:
    stops: list[BaseException | None] = []

    async def scenario() -> tuple[Sender, Outbox]:
        sender = Sender(answers=[False], delay_s=0.02)
        outbox = Outbox(sender, stops.append)
        outbox.put("e0")
        await asyncio.sleep(0.005)
        outbox.put("e1")  # waits for the first send, which is refused: never sent
        await outbox.sent()
        return sender, outbox

    sender, outbox = asyncio.run(scenario())
    assert sender.batches == [["e0"]]
    assert outbox.stopped and stops == [None]
    assert outbox.put("e2") is False


def test_a_redis_error_stops_the_turn_with_the_error_and_sent_raises_it() -> None:
    stops: list[BaseException | None] = []
    error = RedisConnectionError("gone")

    async def scenario() -> None:
        outbox = Outbox(Sender(answers=[error]), stops.append)
        outbox.put("e0")
        await outbox.sent()

    with pytest.raises(RedisConnectionError):
        asyncio.run(scenario())
    assert stops == [error]
