"""rq's job timeout for a worker that runs turns on threads, with one timer thread per process.

rq's default death penalty is SIGALRM, which only the main thread can use; its thread-friendly
`TimerDeathPenalty` starts a `threading.Timer` (a thread) per job. A worker holding a hundred
turns would keep a hundred timer threads asleep for the job timeout; here one scheduler thread
keeps every deadline in a heap and, when one passes, raises the timeout exception in the thread
that runs the job (`PyThreadState_SetAsyncExc`, as `TimerDeathPenalty` does).
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time
from typing import Any

from rq.timeouts import BaseDeathPenalty, JobTimeoutException


class _Deadlines:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, type[BaseException]]] = []
        self._live: set[int] = set()
        """Entries neither cancelled nor fired; the heap may still hold dead ones until they reach its head."""
        self._serial = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, at: float, thread_id: int, exception: type[BaseException]) -> int:
        entry = next(self._serial)
        with self._changed:
            heapq.heappush(self._heap, (at, entry, thread_id, exception))
            self._live.add(entry)
            if self._thread is None or not self._thread.is_alive():  # not started yet, or lost in a fork
                self._thread = threading.Thread(target=self._run, name="job-deadlines", daemon=True)
                self._thread.start()
            self._changed.notify()
        return entry

    def cancel(self, entry: int) -> None:
        with self._changed:
            self._live.discard(entry)
            while self._heap and self._heap[0][1] not in self._live:  # keep the head live; the rest on expiry
                heapq.heappop(self._heap)

    def _run(self) -> None:
        with self._changed:
            while True:
                if not self._heap:
                    self._changed.wait()
                    continue
                at, entry, thread_id, exception = self._heap[0]
                left = at - time.monotonic()
                if left > 0:
                    self._changed.wait(left)
                    continue
                heapq.heappop(self._heap)
                if entry not in self._live:
                    continue
                self._live.discard(entry)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exception))


_DEADLINES = _Deadlines()


class SharedTimerDeathPenalty(BaseDeathPenalty):
    """Raises `exception` in the thread that entered the `with` block once `timeout` seconds pass."""

    def __init__(self, timeout: float, exception: type[BaseException] = JobTimeoutException, **kwargs: Any) -> None:
        super().__init__(timeout, exception, **kwargs)
        self._thread_id = threading.get_ident()
        self._entry: int | None = None

    def setup_death_penalty(self) -> None:
        if self._timeout > 0:
            self._entry = _DEADLINES.add(time.monotonic() + self._timeout, self._thread_id, self._exception)

    def cancel_death_penalty(self) -> None:
        if self._entry is not None:
            _DEADLINES.cancel(self._entry)
            self._entry = None
