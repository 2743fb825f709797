"""The engine runs jobs as tasks on one event loop while rq's records tell the truth about them: a running
job is in the StartedJobRegistry with the worker `busy`, a finished one in the FinishedJobRegistry with the
worker `idle` again; `concurrency` jobs run at once and no more; a job past its timeout fails as rq's
JobTimeoutException (its failure callback called), without holding up the others."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from rq import Callback, Queue
from rq.job import Job, JobStatus
from rq.registry import FinishedJobRegistry, StartedJobRegistry
from rq.worker import WorkerStatus

from parley.worker.__main__ import make_engine
from parley.worker.engine import Engine

RUNNING = {"now": 0, "most": 0}
FAILURES: list[tuple[str, str]] = []


async def waits(seconds: float, *, rt: Any) -> str:
    RUNNING["now"] += 1
    RUNNING["most"] = max(RUNNING["most"], RUNNING["now"])
    try:
        await asyncio.sleep(seconds)
    finally:
        RUNNING["now"] -= 1
    return f"waited {seconds}"


def failed(job: Job, connection: Any, exc_type: Any, exc_value: Any, tb: Any, *, rt: Any) -> None:
    FAILURES.append((job.id, exc_type.__name__))


def _engine(clients: Any, make_settings: Any, burst: bool = True, **env: str) -> tuple[Engine, Queue]:
    settings = make_settings(**env)
    engine = make_engine(SimpleNamespace(clients=clients), settings, burst=burst)  # type: ignore[arg-type]
    return engine, Queue(settings.queue_name, connection=clients.raw)


def _enqueue(queue: Queue, job_id: str, seconds: float, timeout: int | None = None) -> Job:
    return queue.enqueue_call(f"{__name__}.waits", args=(seconds,), job_id=job_id, timeout=timeout,
                              on_failure=Callback(f"{__name__}.failed"))  # fmt: skip


def test_rq_shows_a_running_job_started_and_the_worker_busy_then_finished_and_idle(clients, make_settings) -> None:
    engine, queue = _engine(clients, make_settings, burst=False)
    _enqueue(queue, "job_a", 1.5)
    seen: dict[str, Any] = {}

    def state() -> str:
        return clients.raw.hget(engine.rq.key, "state").decode()

    async def scenario() -> None:
        run = asyncio.create_task(engine.run(logging_level="WARNING"))
        while "job_a" not in engine.running:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # rq's records are written beside the job, on the books thread
        seen["started"] = StartedJobRegistry(queue=queue).get_job_ids()
        seen["status"] = Job.fetch("job_a", connection=clients.raw).get_status()
        seen["state"] = state()
        while engine.running:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        seen["state after"] = state()
        engine.request_stop()
        await run

    asyncio.run(scenario())
    assert seen == {"started": ["job_a"], "status": JobStatus.STARTED, "state": WorkerStatus.BUSY,
                    "state after": WorkerStatus.IDLE}  # fmt: skip
    job = Job.fetch("job_a", connection=clients.raw)
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == "waited 1.5"
    assert FinishedJobRegistry(queue=queue).get_job_ids() == ["job_a"]
    assert StartedJobRegistry(queue=queue).get_job_ids() == []


def test_at_most_concurrency_jobs_run_at_once_and_all_finish(clients, make_settings) -> None:
    RUNNING.update(now=0, most=0)
    engine, queue = _engine(clients, make_settings, PARLEY_WORKER_CONCURRENCY="3")
    for n in range(7):
        _enqueue(queue, f"job_{n}", 0.3)
    asyncio.run(engine.run(logging_level="WARNING"))
    assert RUNNING["most"] == 3
    assert sorted(FinishedJobRegistry(queue=queue).get_job_ids()) == [f"job_{n}" for n in range(7)]


def test_a_job_past_its_timeout_fails_as_rq_s_timeout_and_the_others_finish(clients, make_settings) -> None:
    FAILURES.clear()
    engine, queue = _engine(clients, make_settings, PARLEY_WORKER_CONCURRENCY="4")
    _enqueue(queue, "job_slow", 30, timeout=1)
    _enqueue(queue, "job_quick", 0.2)
    asyncio.run(asyncio.wait_for(engine.run(logging_level="WARNING"), timeout=15))
    assert FAILURES == [("job_slow", "JobTimeoutException")]
    assert Job.fetch("job_slow", connection=clients.raw).get_status() == JobStatus.FAILED
    assert Job.fetch("job_quick", connection=clients.raw).get_status() == JobStatus.FINISHED
