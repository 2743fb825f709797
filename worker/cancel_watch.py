"""Watches from a side thread whether a turn is still this worker's to run."""

from __future__ import annotations

import threading
from collections.abc import Callable

import redis


class CancelWatch:
    """Checks from a side thread whether the turn is still ours to run, and hangs up on the model
    when it is not, so a cancel stops a model that is slow to send its next chunk too."""

    def __init__(self, still_running: Callable[[], bool], hang_up: Callable[[], None], interval_s: float = 0.5):
        self.still_running = still_running
        self.hang_up = hang_up
        self.interval_s = interval_s
        self.fired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="cancel-watch", daemon=True)

    def __enter__(self) -> CancelWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                running = self.still_running()
            except redis.RedisError:
                continue
            if not running:
                self.fired = True
                self.hang_up()
                return
