"""The RQ worker class that runs many turns at once, each on a thread of its own.

A model call takes seconds and a turn spends nearly all of it waiting on the model's socket, so
one process holds up to `concurrency` turns (`PARLEY_WORKER_CONCURRENCY`) instead of one: the
main thread dequeues while a slot is free and starts each turn on its own thread. Everything RQ
offers stays true, because each turn goes through rq's own steps: `prepare_execution` (an
execution record, the StartedJobRegistry entry, the worker's execution index), `perform_job`
(rq's success and failure handling, callbacks, retries) and rq's registries, so `rq info` and
rq-dashboard show every running turn. rq 3.0 ships only one-job-at-a-time workers; this class
overrides their overridable methods (`work`, `execute_job`, `request_stop`, `set_state`,
`get_heartbeat_ttl`), calls their methods (`bootstrap`, `prepare_execution`, `perform_job`,
`heartbeat`, `Execution.heartbeat`, `Queue.dequeue_any`, `enqueue_job`, ...), and also relies on
four private parts of rq's worker, to check on every rq upgrade: `_install_signal_handlers`,
`_stop_requested`, `_shutdown_requested_date` and `_ordered_queues`.

Liveness: one side thread beats every running turn of the process in one pipeline every third
of `PARLEY_HEARTBEAT_TTL_S`, and entries live only that TTL; maintenance runs every
`PARLEY_MAINTENANCE_INTERVAL_S`. So a turn whose worker died is retried (or failed) by rq's
abandoned-job cleanup within TTL + 2 x interval seconds: 40 s by default.

SIGTERM drains: no new turn is taken, running turns may finish within `PARLEY_DRAIN_GRACE_S`
(25 s, below Kubernetes' 30 s), and the rest are handed back to the front of the queue (without
using up a retry: a deploy is not the turn's failure) to run elsewhere; then the process exits.

Why threads and not a fork per job: a fork costs ~14 ms per job on a 2-core machine against
~3.5 ms in-process, and one process per in-flight turn costs its memory per turn
(docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

import redis
from rq import SimpleWorker
from rq.exceptions import DequeueTimeout, StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.utils import now
from rq.worker import WorkerStatus

from .deadlines import SharedTimerDeathPenalty

log = logging.getLogger("parley.worker")

BUSY_DEQUEUE_WAIT_S = 1
"""How long the main thread blocks on the queue while turns run: it then checks for a stop request.
An idle worker blocks for rq's full dequeue timeout and is woken by the signal itself."""


class TurnWorker(SimpleWorker):
    death_penalty_class = SharedTimerDeathPenalty  # rq's default (SIGALRM) works on the main thread only

    def __init__(self, *args: Any, concurrency: int = 1, heartbeat_ttl_s: int = 20, drain_grace_s: float = 25.0,
                 **kwargs: Any) -> None:  # fmt: skip
        """rq's `SimpleWorker` arguments, and: `concurrency`, how many turns this process runs at once;
        `heartbeat_ttl_s`, how long a running turn's registry entry lives without a beat;
        `drain_grace_s`, after SIGTERM, how long running turns may take before they are handed back."""
        self.concurrency = concurrency
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.drain_grace_s = drain_grace_s
        super().__init__(*args, **kwargs)
        self._running: dict[str, tuple[Job, Queue, Execution]] = {}
        """Execution id -> what it runs, for every turn on a thread of this process."""
        self._changed = threading.Condition()
        """Guards `_running`; notified when a turn ends (a slot is free) and on a stop request."""
        self._waiting_idle = False
        """True while the main thread blocks on the queue with no turn running (a signal may interrupt it)."""
        self._drain_deadline: float | None = None
        self._handing_back = threading.Event()
        self._beat_stop = threading.Event()
        self._left = False

    # -- what this worker runs ------------------------------------------------------------

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.heartbeat_ttl_s

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """rq marks a worker `idle` whenever it waits for a job; this one stays `busy` while turns run."""
        if state == WorkerStatus.IDLE and self._running:
            state = WorkerStatus.BUSY
        super().set_state(state, pipeline=pipeline)

    # -- the work loop --------------------------------------------------------------------

    def work(self, burst: bool = False, logging_level: str | None = None, *args: Any, **kwargs: Any) -> bool:
        """Take turns while a slot is free, until SIGTERM (or, in burst mode, an empty queue).

        Redis errors leave the loop (raised to the caller, which starts a fresh worker once Redis
        answers); turns still running carry on and end on their own (their writes are fenced).
        """
        self.bootstrap(logging_level or "INFO")
        self._install_signal_handlers()
        beat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        beat.start()
        started = 0
        try:
            while not self._stop_requested:
                try:
                    self.check_for_suspension(burst)
                    if self.should_run_maintenance_tasks:
                        self.run_maintenance_tasks()
                    if not self._slot_free(timeout_s=1.0):
                        continue  # full: look at maintenance and stop requests again, then wait on
                    result = self._dequeue(burst)
                except StopRequested:
                    break
                if result is None:
                    if burst and not self._running:
                        break
                    if burst:
                        self._wait_for_change(0.05)
                    continue
                job, queue = result
                if self._stop_requested:
                    self._put_back(job, queue)
                    break
                self.execute_job(job, queue)
                started += 1
        except (redis.ConnectionError, redis.TimeoutError):
            self._left = True  # the heartbeat thread ends with the last running turn
            raise
        self._drain(burst)
        self._beat_stop.set()
        beat.join()
        self.teardown()
        return bool(started)

    def _slot_free(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until fewer than `concurrency` turns run and no stop was requested.

        A full worker comes back to the loop every `timeout_s`, so it still runs rq's maintenance
        (which finds other workers' abandoned turns) even when every worker is full."""
        with self._changed:
            if len(self._running) >= self.concurrency and not self._stop_requested:
                self._changed.wait(timeout_s)
            return len(self._running) < self.concurrency and not self._stop_requested

    def _wait_for_change(self, timeout_s: float) -> None:
        with self._changed:
            self._changed.wait(timeout_s)

    def _dequeue(self, burst: bool) -> tuple[Job, Queue] | None:
        """The next turn, or None when none came in time.

        With no turn running this is rq's own dequeue (heartbeats, maintenance, a long blocking
        wait that SIGTERM interrupts, as in any rq worker). With turns running the wait is short
        and never interrupted, so a turn moved off the queue is never dropped on the floor.
        """
        if not self._running:
            self._waiting_idle = True
            try:
                if self._stop_requested:
                    raise StopRequested()
                return self.dequeue_job_and_maintain_ttl(None if burst else self.dequeue_timeout)
            finally:
                self._waiting_idle = False
        try:
            result = self.queue_class.dequeue_any(
                self._ordered_queues, None if burst else BUSY_DEQUEUE_WAIT_S, connection=self.connection,
                job_class=self.job_class, serializer=self.serializer, death_penalty_class=self.death_penalty_class,
            )  # fmt: skip
        except DequeueTimeout:
            return None
        if result is not None:
            result[0].redis_server_version = self.get_redis_server_version()
        return result

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Start the turn on a thread of its own and return at once."""
        execution = self.prepare_execution(job)
        with self._changed:
            self._running[execution.id] = (job, queue, execution)
        thread = threading.Thread(target=self._perform, args=(job, queue, execution), name=f"turn-{job.id}",
                                  daemon=True)  # fmt: skip
        thread.start()

    def _perform(self, job: Job, queue: Queue, execution: Execution) -> None:
        try:
            self.perform_job(job, queue, execution)
        except Exception:  # rq's own failure handling could not reach Redis: the turn is left to expire
            log.warning("turn %s: rq could not record its end; it will be found abandoned", job.id, exc_info=True)
        finally:
            with self._changed:
                self._running.pop(execution.id, None)
                self.executions.pop(execution.id, None)
                self._changed.notify_all()

    # -- heartbeats -----------------------------------------------------------------------

    def _beat(self) -> None:
        interval_s = max(1.0, self.heartbeat_ttl_s / 3)
        while not self._beat_stop.wait(interval_s):
            running = list(self._running.values())
            if self._left and not running:
                return
            if not running or self._handing_back.is_set():
                continue  # an idle worker's main thread beats for itself while it waits for a turn
            try:
                self.maintain_all_heartbeats(running)
            except redis.RedisError:
                log.warning("heartbeat of %d turns failed; retrying in %.0f s", len(running), interval_s,
                            exc_info=True)  # fmt: skip

    def maintain_all_heartbeats(self, running: list[tuple[Job, Queue, Execution]]) -> None:
        """rq's `maintain_heartbeats` for every running turn at once: one round trip, not one per turn."""
        worker_ttl = self.job_monitoring_interval + 60
        with self.connection.pipeline() as pipe:
            self.heartbeat(worker_ttl, pipeline=pipe)
            job_beats: list[tuple[int, Job]] = []
            for job, _queue, execution in running:
                ttl = self.get_heartbeat_ttl(job)
                execution.heartbeat(job.started_job_registry, ttl, pipeline=pipe)
                job_beats.append((len(pipe), job))
                job.heartbeat(now(), ttl, pipeline=pipe, xx=True)
            results = pipe.execute()
            for index, job in job_beats:
                if results[index] == 1:  # the job was deleted meanwhile: the beat re-created it (rq #1450)
                    pipe.delete(job.key)
            if results[0] == 1:  # the worker's hash had expired: write it whole again, with a TTL
                pipe.hset(self.key, mapping=self.serialize())
                pipe.expire(self.key, worker_ttl)
            if len(pipe):
                pipe.execute()

    # -- stopping -------------------------------------------------------------------------

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM or SIGINT: take no new turn; running ones get `drain_grace_s` to finish.

        A second signal hands back at once whatever still runs.
        """
        self._shutdown_requested_date = now()
        signal.signal(signal.SIGINT, self.request_force_stop)
        signal.signal(signal.SIGTERM, self.request_force_stop)
        self.handle_warm_shutdown_request()
        self._drain_deadline = time.monotonic() + self.drain_grace_s
        self._stop_requested = True
        try:
            self.set_shutdown_requested_date()
        except redis.RedisError:
            pass
        if self._waiting_idle:
            raise StopRequested()  # wakes the main thread from its blocking dequeue, as rq does

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        if self._shutdown_requested_date and (now() - self._shutdown_requested_date).total_seconds() < 1:
            return  # the same stop, delivered twice (a process group and the process itself)
        log.warning("second stop signal: handing back %d running turn(s) now", len(self._running))
        self._drain_deadline = time.monotonic()
        with self._changed:
            self._changed.notify_all()

    def _drain(self, burst: bool) -> None:
        """Wait for the running turns (until the drain deadline); hand back those still running."""
        with self._changed:
            while self._running:
                deadline = self._drain_deadline
                if deadline is None:
                    if not burst:
                        deadline = self._drain_deadline = time.monotonic() + self.drain_grace_s
                    else:
                        self._changed.wait(0.5)
                        continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(min(left, 0.5))
            running = list(self._running.values())
        if running:
            self.hand_back(running)

    def hand_back(self, running: list[tuple[Job, Queue, Execution]]) -> None:
        """Give the still-running turns back to the front of their queue and exit at once.

        Each turn's execution record is deleted (so no registry shows it running here) and its job
        queued again at the front, in one transaction. This does not use up one of the turn's
        retries: the turn did not fail, its worker is being replaced. Its next attempt's START
        fences this one, which the process exit stops anyway.
        """
        self._handing_back.set()
        log.warning("%d turn(s) still running after %.0f s of drain: handing them back", len(running),
                    self.drain_grace_s)  # fmt: skip
        try:
            with self.connection.pipeline() as pipe:
                pipe.multi()  # before any command: `enqueue_job` given a pipeline expects a transaction
                for job, queue, execution in running:
                    execution.delete(job=job, pipeline=pipe)
                    queue.enqueue_job(job, pipeline=pipe, at_front=True)
                pipe.execute()
            self.register_death()
        except redis.RedisError:
            log.warning("could not hand the turns back; rq will find them abandoned", exc_info=True)
        finally:
            logging.shutdown()
            os._exit(0)

    def _put_back(self, job: Job, queue: Queue) -> None:
        """A turn dequeued after the stop request, never started: back to the front of its queue."""
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            pipe.lpush(queue.key, job.id)
            pipe.execute()
