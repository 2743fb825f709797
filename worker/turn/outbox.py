"""A turn's events on their way to Redis: the agent loop queues them without waiting, and a flush
task sends whatever has gathered in one EMIT_TURN_EVENT call, so reading the model's stream never
waits on Redis between chunks. The turn's last events (`response` or `error`, then `done`) go out
with its commit, not through here.

A fast model sends its chunks in bursts; one round trip per chunk made Redis latency the pace of
the whole turn (docs/benchmarks.md). Every event queued while a flush is under way (or in the same
turn of the event loop) rides in the next one. Order is kept: one flush runs at a time, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError


class Outbox:
    def __init__(self, send_batch: Callable[[list[str]], Awaitable[bool]],
                 on_stop: Callable[[BaseException | None], None]) -> None:  # fmt: skip
        """`send_batch` emits events and says whether the turn is still ours; when it is not (or Redis
        failed: the error is passed) `on_stop` runs, and later events are dropped."""
        self._send_batch = send_batch
        self._on_stop = on_stop
        self._waiting: list[str] = []
        self._flushing: asyncio.Task[None] | None = None
        self.stopped = False
        self.error: RedisError | None = None

    def put(self, payload: str) -> bool:
        """Queue one event; False once the turn is no longer ours (stop reading the model)."""
        if self.stopped:
            return False
        self._waiting.append(payload)
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
        return True

    async def sent(self) -> None:
        """Wait until every event queued so far has been sent (or dropped); raise the Redis error
        that stopped the turn, if one did."""
        while self._flushing is not None:
            await asyncio.shield(self._flushing)
        if self.error is not None:
            raise self.error

    async def _flush(self) -> None:
        try:
            while self._waiting and not self.stopped:
                batch, self._waiting = self._waiting, []
                try:
                    still_ours = await self._send_batch(batch)
                except RedisError as error:
                    self.error, still_ours = error, False
                if not still_ours:
                    self.stopped = True
                    self._waiting.clear()
                    self._on_stop(self.error)
        finally:
            self._flushing = None
