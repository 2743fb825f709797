"""How the engine and a running job reach each other: the job's `JobControl`, in a context variable
of the job's task.

The engine (worker/engine.py) makes one per job, sets it in the task it runs the job in, and stops
a job through it: a cancel or a newer attempt of the turn (found by the engine's watch), or a lost
Redis write (found by the turn's outbox). Stopping cancels the task, so a turn blocked on the
model's socket stops at once and its model connection is closed; `reason` tells the engine what
the cancellation meant.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass

from parley.shared.store.worker_turns import Attempt


@dataclass
class JobControl:
    task: asyncio.Task[object]
    attempt: Attempt | None = None
    """Set once the turn started: the attempt the engine's watch checks in Redis."""
    confirmed_at: float = 0.0
    """When Redis last said (loop time) that `attempt` still runs: at its start and at every emit, whose
    fence says so. The watch asks only about turns not confirmed for a while: a turn streaming its
    answer is checked by its own emits, for free."""
    committing: bool = False
    """Set while the turn's last step (its commit) runs: it is no longer stopped from outside, since the
    commit itself ends the attempt (the watch would find it ended and cancel the commit's reply)."""
    reason: BaseException | None = None
    """Why the task was cancelled by `stop`: the `Stopped` or Redis error the engine reports instead."""

    def started(self, attempt: Attempt) -> None:
        """The turn started as `attempt`: from here the engine's watch stops it when it is canceled or taken over."""
        self.attempt = attempt
        self.confirm()

    def confirm(self) -> None:
        self.confirmed_at = asyncio.get_running_loop().time()

    def stop(self, reason: BaseException) -> None:
        """Cancel the job's task for `reason`, unless it is committing or already stopped."""
        if self.committing or self.reason is not None or self.task.done():
            return
        self.reason = reason
        self.task.cancel()


CURRENT: ContextVar[JobControl | None] = ContextVar("parley_job_control", default=None)
"""The running job's control, in its task's context (None outside the engine: a job run directly)."""
