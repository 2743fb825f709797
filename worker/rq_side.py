"""rq's side of the worker: its bookkeeping of the jobs the engine runs (worker/engine.py), through rq's
own methods, so `rq info`, rq-dashboard and rq's retries and abandoned-job handling see every turn.

rq 3.0 ships only one-job-at-a-time workers, each job run by `perform_job`; the engine runs the job
function itself (as a task on its event loop) and asks this class for what `perform_job` does around
that call: `begin` (an execution record, the StartedJobRegistry entry, the job marked started: rq's
`prepare_execution` and `prepare_job_execution`) and `end` (rq's success or failure handling, with
callbacks and retries: `_finalize_success`, `_finalize_failure`). It also beats every running job's
heartbeat in one pipeline and hands running jobs back to the queue on a drain.

Besides rq's public and overridable methods (`bootstrap`, `prepare_execution`, `prepare_job_execution`,
`heartbeat`, `Execution.heartbeat`, `Queue.dequeue_any`, `enqueue_job`, `set_state`, `get_heartbeat_ttl`,
...) this relies on private parts, to check on every rq upgrade: `_finalize_success`,
`_finalize_failure`, `_ordered_queues`, `_exc_handlers`, and its copy of rq's registry maintenance
(`clean_registries`, with its own handling of the intermediate queue, `requeue_stranded`, which uses
`IntermediateQueue`'s first-seen marks as rq's cleanup does).

Every method here is blocking rq code: the engine calls them from its own threads, never its loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from rq import SimpleWorker, worker_registration
from rq.exceptions import DequeueTimeout
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    RateLimitRegistry,
    ReadyJobRegistry,
    StartedJobRegistry,
)
from rq.timeouts import TimerDeathPenalty
from rq.utils import now
from rq.worker import WorkerStatus

log = logging.getLogger("parley.worker")


@dataclass
class Held:
    """A job this worker holds: what rq needs to end it or hand it back. `execution` is None until `begin` ran."""

    job: Job
    queue: Queue
    execution: Execution | None = None


class RqSide(SimpleWorker):
    death_penalty_class = TimerDeathPenalty
    """For rq's success and failure callbacks, which rq times out: they run on a thread of the engine's,
    where rq's default (SIGALRM) cannot; a timer thread per callback, and turns have only a failure one."""

    def __init__(self, *args: Any, heartbeat_ttl_s: int = 20, **kwargs: Any) -> None:
        """rq's `SimpleWorker` arguments, and `heartbeat_ttl_s`: how long a running job's registry entry
        lives without a beat."""
        self.heartbeat_ttl_s = heartbeat_ttl_s
        super().__init__(*args, **kwargs)
        self._suspension_checked_at = 0.0
        self.busy: Callable[[], bool] = lambda: False
        """Whether the engine runs a job now (it sets this): rq would mark the worker idle between dequeues."""

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.heartbeat_ttl_s

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """rq marks a worker `idle` whenever it waits for a job; this one stays `busy` while jobs run."""
        if state == WorkerStatus.IDLE and self.busy():
            state = WorkerStatus.BUSY
        super().set_state(state, pipeline=pipeline)

    def clean_registries(self) -> None:
        """rq's maintenance of each queue's registries (`Worker.clean_registries` and rq's
        `registry.clean_registries`, as rq 3.0 has them), with one change: the failure callbacks of
        abandoned jobs run under this worker's death penalty. rq's registries time them with SIGALRM,
        which only the main thread may use, and here maintenance runs on the dequeue thread. And the
        intermediate queue's strays are queued again (`requeue_stranded`), where rq fails them."""
        for queue in self.queues:
            if not queue.acquire_maintenance_lock():
                continue  # another worker is cleaning
            self.log.info("Worker %s: cleaning registries for queue: %s", self.name, queue.name)
            options = {"name": queue.name, "connection": queue.connection, "job_class": queue.job_class,
                       "serializer": queue.serializer}  # fmt: skip
            FinishedJobRegistry(**options).cleanup()
            StartedJobRegistry(**options, death_penalty_class=self.death_penalty_class).cleanup(
                exception_handlers=self._exc_handlers
            )
            for registry in (FailedJobRegistry, DeferredJobRegistry, ReadyJobRegistry):
                registry(**options).cleanup()
            for rate_limit_registry in RateLimitRegistry.all(queue.connection):
                rate_limit_registry.cleanup()
            worker_registration.clean_worker_registry(queue)
            self.requeue_stranded(queue)
            queue.release_maintenance_lock()
        self.last_cleaned_at = now()  # type: ignore[assignment]  # as rq sets it

    def requeue_stranded(self, queue: Queue) -> None:
        """Put back at the front of the queue each job a worker took (rq's dequeue moves it to the intermediate
        queue) and died with before starting it: one seen there by an earlier pass, more than the heartbeat TTL
        ago, and not started since. A live worker starts a job it took within milliseconds (`begin` takes it off
        the intermediate queue); a SIGKILL between the two left it there.

        rq's own cleanup (`IntermediateQueue.cleanup`) fails such a job after a minute without running its
        failure callback: the turn never ran, yet stayed `queued` for its clients, its session's lane held
        every later turn, and its place among the tenant's admitted turns was never given back."""
        stray = queue.intermediate_queue
        for job_id in stray.get_job_ids():
            if job_id in queue.started_job_registry:
                continue
            if not self.connection.exists(Job.key_for(job_id)):
                stray.remove(job_id)  # deleted meanwhile: nothing to run
                continue
            if stray.set_first_seen(job_id):
                continue  # first seen now: a live worker may be about to start it
            first_seen = stray.get_first_seen(job_id)
            if first_seen is None or (now() - first_seen).total_seconds() <= self.heartbeat_ttl_s:
                continue
            with self.connection.pipeline() as pipe:
                try:
                    pipe.watch(stray.key)  # a worker that starts it meanwhile takes it off: then it stays
                    if job_id not in {one.decode() for one in pipe.lrange(stray.key, 0, -1)}:
                        continue
                    pipe.multi()
                    pipe.lrem(stray.key, 1, job_id)
                    pipe.lpush(queue.key, job_id)
                    pipe.delete(stray.get_first_seen_key(job_id))
                    pipe.execute()
                except redis.WatchError:
                    continue
            log.warning("job %s was taken by a worker that stopped before starting it: queued again", job_id)

    def check_for_suspension(self, burst: bool) -> None:
        """rq's check whether `rq suspend` holds the workers, at most once a second (rq asks Redis before
        every dequeue: one command per job)."""
        if time.monotonic() - self._suspension_checked_at >= 1.0:
            super().check_for_suspension(burst)
            self._suspension_checked_at = time.monotonic()

    def dequeue(self, timeout_s: int) -> tuple[Job, Queue] | None:
        """The next job of this worker's queues, waiting at most `timeout_s`; None when none came."""
        try:
            result = self.queue_class.dequeue_any(
                self._ordered_queues, timeout_s, connection=self.connection, job_class=self.job_class,
                serializer=self.serializer, death_penalty_class=self.death_penalty_class,
            )  # fmt: skip
        except DequeueTimeout:
            return None
        if result is not None:
            result[0].redis_server_version = self.get_redis_server_version()
        return result

    def begin(self, held: Held) -> None:
        """What rq does before a job runs (`prepare_execution`, then `prepare_job_execution`), in one
        transaction where rq uses two: the execution record and its registry entries, the worker `busy`,
        the job's heartbeat, the job marked started and taken off the intermediate queue (with its mark of
        having been seen there, if any). Left out: the
        worker's own heartbeat, which the engine beats for all its jobs at once, and the worker's state
        when it is `busy` already."""
        job, queue = held.job, held.queue
        ttl = self.get_heartbeat_ttl(job)
        with self.connection.pipeline() as pipe:
            held.execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
            self.executions[held.execution.id] = held.execution
            if self.get_state() != WorkerStatus.BUSY:
                self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            job.heartbeat(now(), ttl, pipeline=pipe)
            job.prepare_for_execution(self.name, pipeline=pipe)
            pipe.persist(job.key)
            if len(self.queues) == 1:  # as rq: with several queues, its maintenance sorts the intermediate queue
                pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            # A maintenance pass that saw it in the intermediate queue a moment ago left this mark; gone, it cannot
            # make a later attempt of the job (a retry) look stranded at once (requeue_stranded).
            pipe.delete(queue.intermediate_queue.get_first_seen_key(job.id))
            pipe.execute()

    def end(self, held: Held, value: Any = None, error: BaseException | None = None) -> None:
        """What rq does after a job returned `value` or raised `error`: result, registries, callbacks, retries."""
        assert held.execution is not None
        try:
            if error is None:
                self._finalize_success(held.job, held.queue, held.execution, value)
            else:
                self._finalize_failure(held.job, held.queue, held.execution, (type(error), error,
                                                                              error.__traceback__))  # fmt: skip
        finally:
            self.executions.pop(held.execution.id, None)

    def beat(self, held: list[Held]) -> None:
        """rq's `maintain_heartbeats` for the worker and every running job at once: one round trip, not one per job."""
        worker_ttl = self.job_monitoring_interval + 60
        with self.connection.pipeline() as pipe:
            self.heartbeat(worker_ttl, pipeline=pipe)
            job_beats: list[tuple[int, Job]] = []
            for one in held:
                if one.execution is None:
                    continue
                ttl = self.get_heartbeat_ttl(one.job)
                one.execution.heartbeat(one.job.started_job_registry, ttl, pipeline=pipe)
                job_beats.append((len(pipe), one.job))
                one.job.heartbeat(now(), ttl, pipeline=pipe, xx=True)
            results = pipe.execute()
            for index, job in job_beats:
                if results[index] == 1:  # the job was deleted meanwhile: the beat re-created it (rq #1450)
                    pipe.delete(job.key)
            if results[0] == 1:  # the worker's hash had expired: write it whole again, with a TTL
                pipe.hset(self.key, mapping=self.serialize())
                pipe.expire(self.key, worker_ttl)
            if len(pipe):
                pipe.execute()

    def hand_back(self, held: list[Held]) -> None:
        """Give running jobs back to the front of their queue, in one transaction: each one's execution
        record is deleted (no registry shows it running here) and the job queued again. This does not
        use up one of the job's retries: it did not fail, its worker is being replaced. Its next
        attempt's START fences this one, which the process exit stops anyway."""
        with self.connection.pipeline() as pipe:
            pipe.multi()  # before any command: `enqueue_job` given a pipeline expects a transaction
            for one in held:
                if one.execution is not None:
                    one.execution.delete(job=one.job, pipeline=pipe)
                else:  # rq had not recorded it as started yet: it is still in the intermediate queue
                    pipe.lrem(one.queue.intermediate_queue_key, 1, one.job.id)
                one.queue.enqueue_job(one.job, pipeline=pipe, at_front=True)
            pipe.execute()
        self.register_death()

    def put_back(self, job: Job, queue: Queue) -> None:
        """A job dequeued after the stop request, never started: back to the front of its queue."""
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            pipe.lpush(queue.key, job.id)
            pipe.execute()

    def wait_for_redis(self, max_delay_s: float = 5.0) -> None:
        """Block until Redis answers again (after a lost connection), backing off up to `max_delay_s`."""
        delay_s = 0.2
        while True:
            try:
                self.connection.ping()
                return
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, max_delay_s)

