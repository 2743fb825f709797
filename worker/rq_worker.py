"""The RQ worker class that runs turns, tuned so a dead worker's turn is noticed within a minute.

Out of the box rq 3.0 notices abandoned jobs late: `SimpleWorker` sends no heartbeat while a job
runs (so a job's registry entry lives `timeout + 60` s), maintenance runs every 600 s, and an
idle worker blocks in BLPOP for `worker_ttl - 15` s before it can run maintenance. This worker
beats from a side thread every third of `PARLEY_HEARTBEAT_TTL_S`, keeps its entries alive for
only that TTL, and runs maintenance every `PARLEY_MAINTENANCE_INTERVAL_S` (with a dequeue wait
just as long), so a turn whose worker died is retried (or failed) within
TTL + 2 x interval seconds: 40 s by default.

Why `SimpleWorker` (no fork per job): a fork costs ~14 ms per job on a 2-core machine against
~3.5 ms in-process; docs/benchmarks.md has the figures this choice rests on.
"""

from __future__ import annotations

import logging
import threading

import redis
from rq import SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.worker import WorkerStatus

log = logging.getLogger("parley.worker")


class TurnWorker(SimpleWorker):
    heartbeat_ttl_s: int = 20

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.heartbeat_ttl_s

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(job, execution, stop), name="heartbeat", daemon=True)
        beat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            stop.set()
            beat.join()
        self.set_state(WorkerStatus.IDLE)

    def _beat(self, job: Job, execution: Execution, stop: threading.Event) -> None:
        interval_s = max(1.0, self.heartbeat_ttl_s / 3)
        while not stop.wait(interval_s):
            try:
                self.maintain_heartbeats(job, execution)
            except redis.RedisError:
                log.warning("heartbeat for job %s failed; retrying in %.0f s", job.id, interval_s, exc_info=True)
