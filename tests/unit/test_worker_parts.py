"""The worker gets its parts passed in (worker/runtime.py, worker/__main__.py): every job a worker runs,
and every abandoned job its maintenance fails, reaches its function or failure callback with that
worker's runtime as `rt`, while the call stored in Redis stays what the web queued; the engine and its
rq side are configured through their constructors, not through class attributes shared by every worker."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from rq import Callback, Queue
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from parley.shared.tasks import cancel_until_done
from parley.worker.__main__ import make_engine
from parley.worker.engine import Engine
from parley.worker.rq_side import Held, RqSide

CALLS: list[tuple[str, tuple[Any, ...], Any]] = []


def job_function(tenant: str, job_id: str, *, rt: Any) -> str:
    CALLS.append(("job", (tenant, job_id), rt))
    raise RuntimeError("fails, so its failure callback runs too")


async def async_job_function(tenant: str, job_id: str, *, rt: Any) -> str:
    """As a turn is: a coroutine function, awaited on the engine's loop."""
    await asyncio.sleep(0)
    CALLS.append(("job", (tenant, job_id), rt))
    raise RuntimeError("fails, so its failure callback runs too")


def failure_callback(job: Job, connection: Any, exc_type: Any, exc_value: Any, tb: Any, *, rt: Any) -> None:
    CALLS.append(("failure", tuple(job.args), rt))


def _engine_and_queue(clients: Any, settings: Any) -> tuple[Engine, Queue, Any]:
    rt = SimpleNamespace(clients=clients, name="this worker's runtime")
    queue = Queue(settings.queue_name, connection=clients.raw)  # as the web queues: a plain rq queue
    return make_engine(rt, settings, burst=True), queue, rt  # type: ignore[arg-type]


def _enqueue(queue: Queue, job_id: str, function: str = "job_function") -> Job:
    return queue.enqueue_call(f"{__name__}.{function}", args=("acme", job_id), job_id=job_id,
                              on_failure=Callback(f"{__name__}.failure_callback"))  # fmt: skip


@pytest.mark.parametrize("function", ["job_function", "async_job_function"])
def test_a_job_and_its_failure_callback_get_the_worker_s_runtime(clients, make_settings, function: str) -> None:
    CALLS.clear()
    engine, queue, rt = _engine_and_queue(clients, make_settings(PARLEY_WORKER_CONCURRENCY="3"))
    _enqueue(queue, "job_1", function)
    asyncio.run(engine.run(logging_level="WARNING"))
    assert CALLS == [("job", ("acme", "job_1"), rt), ("failure", ("acme", "job_1"), rt)]
    stored = Job.fetch("job_1", connection=clients.raw)  # what Redis holds is the call the web queued
    assert stored.func_name == f"{__name__}.{function}" and stored.args == ("acme", "job_1")
    assert stored.get_status() == JobStatus.FAILED


def test_an_abandoned_job_failed_by_maintenance_gets_the_worker_s_runtime(clients, make_settings) -> None:
    CALLS.clear()
    engine, queue, rt = _engine_and_queue(clients, make_settings())
    job = _enqueue(queue, "job_2")
    job.set_status(JobStatus.STARTED)
    clients.raw.zadd(StartedJobRegistry(queue=queue).key, {"job_2:execution_1": 1})  # its worker died long ago
    engine.rq.clean_registries()
    assert CALLS == [("failure", ("acme", "job_2"), rt)]


def test_engines_are_configured_each_by_its_own_constructor(clients, make_settings) -> None:
    settings = make_settings(PARLEY_WORKER_CONCURRENCY="7", PARLEY_HEARTBEAT_TTL_S="9", PARLEY_DRAIN_GRACE_S="3")
    engine, _queue, rt = _engine_and_queue(clients, settings)
    second = make_engine(rt, make_settings(PARLEY_WORKER_CONCURRENCY="2", PARLEY_HEARTBEAT_TTL_S="30",
                                           PARLEY_DRAIN_GRACE_S="10"))  # fmt: skip
    other = RqSide([Queue("other", connection=clients.raw)], connection=clients.raw)
    assert (engine.concurrency, engine.rq.heartbeat_ttl_s, engine.drain_grace_s) == (7, 9, 3)  # kept its own
    assert (second.concurrency, second.rq.heartbeat_ttl_s, second.drain_grace_s) == (2, 30, 10)
    assert other.heartbeat_ttl_s == 20  # rq side's own default
    assert engine.rq.get_heartbeat_ttl(Job(connection=clients.raw)) == 9
    assert other.get_heartbeat_ttl(Job(connection=clients.raw)) == 20


def test_the_mcp_client_is_imported_on_a_side_thread_at_start() -> None:
    """A fresh interpreter: the worker's start leaves `parley.worker.mcp` loaded by its side thread, so the first turn
    of an agent with MCP tools does not load it on the event loop."""
    import subprocess
    import sys

    code = (
        "import sys, threading\n"
        "from parley.worker.__main__ import preload_mcp_client\n"
        "assert 'parley.worker.mcp' not in sys.modules and 'mcp' not in sys.modules\n"
        "thread = preload_mcp_client()\n"
        "assert thread is not threading.current_thread()\n"
        "thread.join(60)\n"
        "assert 'parley.worker.mcp' in sys.modules and 'mcp' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr


def test_side_tasks_that_lose_a_cancel_are_cancelled_again(caplog: pytest.LogCaptureFixture) -> None:
    """redis-py's asyncio client can lose a cancel that lands mid-command; a shutdown (the engine's, the web's hub and
    reporter) cancels again."""
    losing = {"loses-two": 2, "never-ends": 10**9}

    async def loses() -> None:
        lost = 0
        name = asyncio.current_task().get_name()  # type: ignore[union-attr]
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if lost >= losing[name]:
                    raise
                lost += 1  # as a Redis command that swallowed it would

    async def scenario() -> tuple[bool, bool]:
        two = asyncio.create_task(loses(), name="loses-two")
        never = asyncio.create_task(loses(), name="never-ends")
        await asyncio.sleep(0)
        await cancel_until_done([two], give_up_s=5)
        await cancel_until_done([never], give_up_s=0.3)  # logged and left
        left_running = not never.done()
        losing["never-ends"] = 0
        never.cancel()
        await asyncio.gather(never, return_exceptions=True)
        return two.cancelled(), left_running

    assert asyncio.run(scenario()) == (True, True)
    assert "never-ends" in caplog.text


def test_a_job_left_taken_but_not_started_is_queued_again_once_it_has_waited_past_the_heartbeat(clients) -> None:
    """requeue_stranded: a job its worker took (rq's dequeue) and never started goes back to the front of the queue,
    only after a maintenance pass has seen it waiting there longer than the heartbeat TTL; a started one stays."""
    queue = Queue("turns", connection=clients.raw)
    rq = RqSide([queue], connection=clients.raw, heartbeat_ttl_s=5)
    stranded, started, later = (queue.enqueue("os.getcwd", job_id=name) for name in ("stranded", "started", "later"))
    for _ in range(2):  # rq's dequeue on Redis 6.2 or later (fakeredis reports an older one: dequeue_any would LPOP)
        assert Queue.lmove(clients.raw, queue.key, None) is not None
    stray = queue.intermediate_queue
    rq.requeue_stranded(queue)  # first seen: a live worker may be about to start them
    assert stray.get_job_ids() == ["stranded", "started"]
    rq.begin(Held(started, queue))
    for job in (stranded, started):
        clients.raw.set(stray.get_first_seen_key(job.id), time.time() - 6)  # seen by a pass 6 s ago
    rq.requeue_stranded(queue)
    assert stray.get_job_ids() == []
    assert queue.get_job_ids() == ["stranded", "later"]
    assert clients.raw.exists(stray.get_first_seen_key("stranded")) == 0
    assert "started" in queue.started_job_registry
    assert later.id not in queue.started_job_registry
