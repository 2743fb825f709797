"""Sends the events a turn's agent loop emits (`delta`, `thinking`, `llm_thought`, `tool_execution`,
`tool_result`, `status`) from a side thread, every batch of waiting events in one Redis pipeline,
so reading the model's stream never waits on Redis between chunks. The turn's last events
(`response` or `error`, then `done`) go out with its commit, not through here.

A fast model sends its chunks in bursts; one round trip per chunk made Redis latency the pace of
the whole turn (docs/benchmarks.md). Order is kept: one thread sends, batches go out in order,
and a pipeline runs its scripts in order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType

import redis

_CLOSE = object()


class Emitter:
    def __init__(self, send_batch: Callable[[list[str]], bool], on_stop: Callable[[], None]) -> None:
        """`send_batch` emits events and says whether the turn is still ours; when it is not,
        `on_stop` runs (it hangs up on the model) and later events are dropped."""
        self._send_batch = send_batch
        self._on_stop = on_stop
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="emitter", daemon=True)
        self.stopped = False
        self.error: redis.RedisError | None = None

    def __enter__(self) -> Emitter:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self._queue.put(_CLOSE)
        self._thread.join()
        if self.error is not None and exc is None:
            raise self.error

    def put(self, payload: str) -> bool:
        """Queue one event; False once the turn is no longer ours (stop reading the model)."""
        if self.stopped:
            return False
        self._queue.put(payload)
        return True

    def _run(self) -> None:
        closing = False
        while not closing:
            batch: list[str] = []
            item = self._queue.get()
            while True:
                if item is _CLOSE:
                    closing = True
                    break
                batch.append(item)  # type: ignore[arg-type]
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch and not self.stopped:
                self._send(batch)

    def _send(self, batch: list[str]) -> None:
        try:
            still_ours = self._send_batch(batch)
        except redis.RedisError as error:
            self.error, still_ours = error, False
        if not still_ours:
            self.stopped = True
            self._on_stop()
