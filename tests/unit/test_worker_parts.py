"""The worker gets its parts passed in (worker/runtime.py, worker/__main__.py): every job a worker runs,
and every abandoned job its maintenance fails, reaches its function or failure callback with that
worker's runtime as `rt`, while the call stored in Redis stays what the web queued; `TurnWorker` is
configured through its constructor, not through class attributes shared by every worker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from rq import Callback, Queue
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from parley.worker.__main__ import make_worker
from parley.worker.rq_worker import TurnWorker

CALLS: list[tuple[str, tuple[Any, ...], Any]] = []


def job_function(tenant: str, job_id: str, *, rt: Any) -> str:
    CALLS.append(("job", (tenant, job_id), rt))
    raise RuntimeError("fails, so its failure callback runs too")


def failure_callback(job: Job, connection: Any, exc_type: Any, exc_value: Any, tb: Any, *, rt: Any) -> None:
    CALLS.append(("failure", tuple(job.args), rt))


def _worker_and_queue(clients: Any, settings: Any) -> tuple[TurnWorker, Queue, Any]:
    rt = SimpleNamespace(clients=clients, name="this worker's runtime")
    queue = Queue(settings.queue_name, connection=clients.raw)  # as the web queues: a plain rq queue
    return make_worker(rt, settings), queue, rt  # type: ignore[arg-type]


def _enqueue(queue: Queue, job_id: str) -> Job:
    return queue.enqueue_call(f"{__name__}.job_function", args=("acme", job_id), job_id=job_id,
                              on_failure=Callback(f"{__name__}.failure_callback"))  # fmt: skip


def test_a_job_and_its_failure_callback_get_the_worker_s_runtime(clients, make_settings) -> None:
    CALLS.clear()
    worker, queue, rt = _worker_and_queue(clients, make_settings(PARLEY_WORKER_CONCURRENCY="3"))
    _enqueue(queue, "job_1")
    worker.work(burst=True, logging_level="WARNING")
    assert CALLS == [("job", ("acme", "job_1"), rt), ("failure", ("acme", "job_1"), rt)]
    stored = Job.fetch("job_1", connection=clients.raw)  # what Redis holds is the call the web queued
    assert stored.func_name == f"{__name__}.job_function" and stored.args == ("acme", "job_1")
    assert stored.get_status() == JobStatus.FAILED


def test_an_abandoned_job_failed_by_maintenance_gets_the_worker_s_runtime(clients, make_settings) -> None:
    CALLS.clear()
    worker, queue, rt = _worker_and_queue(clients, make_settings())
    job = _enqueue(queue, "job_2")
    job.set_status(JobStatus.STARTED)
    clients.raw.zadd(StartedJobRegistry(queue=queue).key, {"job_2:execution_1": 1})  # its worker died long ago
    worker.clean_registries()
    assert CALLS == [("failure", ("acme", "job_2"), rt)]


def test_turn_workers_are_configured_each_by_its_own_constructor(clients, make_settings) -> None:
    settings = make_settings(PARLEY_WORKER_CONCURRENCY="7", PARLEY_HEARTBEAT_TTL_S="9", PARLEY_DRAIN_GRACE_S="3")
    worker, _queue, _rt = _worker_and_queue(clients, settings)
    other = TurnWorker([Queue("other", connection=clients.raw)], connection=clients.raw)
    assert (worker.concurrency, worker.heartbeat_ttl_s, worker.drain_grace_s) == (7, 9, 3)
    assert (other.concurrency, other.heartbeat_ttl_s, other.drain_grace_s) == (1, 20, 25)
    assert worker.get_heartbeat_ttl(Job(connection=clients.raw)) == 9
