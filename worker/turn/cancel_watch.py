"""Watches whether each running turn is still this worker's to run (and whether its model has gone
quiet), from one thread per process. The summary jobs use it for the second check alone."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

import redis

log = logging.getLogger("parley.worker.cancel_watch")


class CancelWatch:
    """Checks every `interval_s` whether the turn is still ours to run, and hangs up on the model
    when it is not, so a cancel stops a model that is slow to send its next chunk too.

    The checks of every turn of the process run on one shared thread (`_Watcher`), not a thread
    per turn: a worker holding a hundred turns would otherwise keep a hundred threads waking
    twice a second. Once the `with` block is left, `hang_up` is never called again (a late call
    could close a connection the model client has since given to another turn).

    `on_check(now)`, when given, runs at every check first, whatever Redis says: the turn's own
    local checks, such as hanging up on a model stream that has sent nothing for too long.
    """

    def __init__(self, still_running: Callable[[], bool], hang_up: Callable[[], None], interval_s: float = 0.5,
                 on_check: Callable[[float], None] | None = None) -> None:  # fmt: skip
        self.still_running = still_running
        self.hang_up = hang_up
        self.on_check = on_check
        self.interval_s = interval_s
        self.fired = False
        self._lock = threading.Lock()
        """Held while this watch is checked; leaving the `with` block waits for a check under way."""
        self._closed = False
        self.due = 0.0

    def __enter__(self) -> CancelWatch:
        self.due = time.monotonic() + self.interval_s
        _WATCHER.add(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        _WATCHER.remove(self)
        with self._lock:
            self._closed = True

    def check(self, now: float) -> None:
        """Ask once (from the watcher thread); hang up when the turn is no longer ours."""
        with self._lock:
            if self._closed or self.fired:
                return
            self.due = now + self.interval_s
            if self.on_check is not None:
                try:
                    self.on_check(now)
                except Exception:  # the one thread serves every turn: a failing hook must not end it
                    log.exception("a turn's watch check failed")
            try:
                running = self.still_running()
            except redis.RedisError:
                return
            if not running:
                self.fired = True
                self.hang_up()


class _Watcher:
    """The process's one watcher thread: every `tick_s` it checks the watches that are due, in turn.
    It runs only while some watch is open."""

    tick_s = 0.05

    def __init__(self) -> None:
        self._watches: set[CancelWatch] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, watch: CancelWatch) -> None:
        with self._lock:
            self._watches.add(watch)
            if self._thread is None or not self._thread.is_alive():  # not started, ended, or lost in a fork
                self._thread = threading.Thread(target=self._run, name="cancel-watch", daemon=True)
                self._thread.start()

    def remove(self, watch: CancelWatch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def _run(self) -> None:
        while True:
            time.sleep(self.tick_s)
            now = time.monotonic()
            with self._lock:
                if not self._watches:
                    self._thread = None
                    return
                due = [watch for watch in self._watches if watch.due <= now]
            for watch in due:
                watch.check(now)


_WATCHER = _Watcher()
