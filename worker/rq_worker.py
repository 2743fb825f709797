"""The RQ worker class that runs turns, tuned so a dead worker's turn is noticed within a minute.

Out of the box rq 3.0 notices abandoned jobs late: `SimpleWorker` sends no heartbeat while a job
runs (so a job's registry entry lives `timeout + 60` s), maintenance runs every 600 s, and an
idle worker blocks in BLPOP for `worker_ttl - 15` s before it can run maintenance. This worker
beats from a side thread every third of `PARLEY_HEARTBEAT_TTL_S`, keeps its entries alive for
only that TTL, and runs maintenance every `PARLEY_MAINTENANCE_INTERVAL_S` (with a dequeue wait
just as long), so a turn whose worker died is retried (or failed) within
TTL + 2 x interval seconds: 40 s by default.

SIGTERM drains: no new turn is taken, the running one may finish within `PARLEY_DRAIN_GRACE_S`
(25 s, below Kubernetes' 30 s), and past that it is handed back to the queue to run elsewhere.

Why `SimpleWorker` (no fork per job): a fork costs ~14 ms per job on a 2-core machine against
~3.5 ms in-process; docs/benchmarks.md has the figures this choice rests on.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import redis
from rq import SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.worker import WorkerStatus

log = logging.getLogger("parley.worker")


class TurnWorker(SimpleWorker):
    heartbeat_ttl_s: int = 20
    drain_grace_s: float = 25.0
    """After SIGTERM, how long a running turn may take to finish before it is handed back."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._running: tuple[Job, Execution] | None = None
        self._handing_back = threading.Event()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.heartbeat_ttl_s

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(job, execution, stop), name="heartbeat", daemon=True)
        beat.start()
        self._running = (job, execution)
        try:
            self.perform_job(job, queue, execution)
        finally:
            self._running = None
            stop.set()
            beat.join()
        self.set_state(WorkerStatus.IDLE)

    def _beat(self, job: Job, execution: Execution, stop: threading.Event) -> None:
        interval_s = max(1.0, self.heartbeat_ttl_s / 3)
        while not stop.wait(interval_s) and not self._handing_back.is_set():
            try:
                self.maintain_heartbeats(job, execution)
            except redis.RedisError:
                log.warning("heartbeat for job %s failed; retrying in %.0f s", job.id, interval_s, exc_info=True)

    def handle_warm_shutdown_request(self) -> None:
        """SIGTERM: take no new turn (rq's warm shutdown), let the running one finish within
        `drain_grace_s`, and past that hand it back to the queue, to be retried elsewhere."""
        super().handle_warm_shutdown_request()
        running = self._running
        if running is not None:
            timer = threading.Timer(self.drain_grace_s, self._hand_back, args=running)
            timer.daemon = True
            timer.start()

    def _hand_back(self, job: Job, execution: Execution) -> None:
        """Give the running turn back and exit at once.

        The turn's execution is marked expired and rq's own abandoned-job cleanup runs on it
        alone: with retries left, rq queues it again (at the front) and the failure callback
        leaves it be, so it is retried, not failed. The next attempt's START fences this one.
        """
        if self._running is None or self._running[0].id != job.id:
            return
        self._handing_back.set()
        log.warning("turn %s still running after %.0f s of drain: handing it back", job.id, self.drain_grace_s)
        try:
            registry = job.started_job_registry
            self.connection.zadd(registry.key, {f"{job.id}:{execution.id}": 0}, xx=True)
            registry.cleanup(timestamp=1)  # only entries that expired before 1970: ours
            self.register_death()
        except redis.RedisError:
            log.warning("could not hand turn %s back; rq will find it abandoned", job.id, exc_info=True)
        finally:
            logging.shutdown()
            os._exit(0)
