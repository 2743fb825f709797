"""`python -m parley.worker`: one RQ worker process running up to `PARLEY_WORKER_CONCURRENCY` turns at once.

The process's parts are built here, once, and passed in: the runtime (worker/runtime.py) to the
job class every job runs through, the settings to `TurnWorker`'s constructor.

If Redis goes away while a turn runs, rq's failure handling itself cannot reach Redis and
`work()` raises. The process then waits for Redis and starts a fresh worker instead of exiting:
the interrupted turn is found abandoned by maintenance and retried (see docs/architecture.md).
"""

from __future__ import annotations

import logging
import sys
import time

import redis
from rq import Queue

from parley.shared.logs import configure_logging
from parley.shared.settings import Settings, get_settings

from .rq_worker import TurnWorker
from .runtime import Runtime, RuntimeJob

log = logging.getLogger("parley.worker")


def main() -> int:
    settings = get_settings()
    configure_logging(settings)
    rt = Runtime.build(settings)  # a tool module that does not import stops the worker here, not mid-turn
    log.info("tools: %s", ", ".join(rt.tools.names()))
    while True:
        try:
            if settings.agents_file:
                count = rt.agents.load_file(settings.agents_file)
                log.info("loaded %d agents from %s", count, settings.agents_file)
            worker = make_worker(rt, settings)
            worker.work(logging_level=settings.rq_log_level, with_scheduler=False)
            return 0
        except (redis.ConnectionError, redis.TimeoutError) as error:
            log.warning("lost Redis (%s); starting a new worker once it answers", error)
            _wait_for_redis(rt.clients.raw)


def make_worker(rt: Runtime, settings: Settings) -> TurnWorker:
    """A worker on the turns' queue whose every job gets `rt`: the job class bound to it is the
    worker's and its queue's, so abandoned jobs that rq's registry cleanup fails get it too."""
    job_class = RuntimeJob.bound_to(rt)
    return TurnWorker(
        [Queue(settings.queue_name, connection=rt.clients.raw, job_class=job_class)],
        connection=rt.clients.raw,
        job_class=job_class,
        concurrency=settings.worker_concurrency,
        heartbeat_ttl_s=settings.heartbeat_ttl_s,
        drain_grace_s=settings.drain_grace_s,
        worker_ttl=settings.maintenance_interval_s + 15,  # rq waits in BLPOP for worker_ttl - 15 s
        maintenance_interval=settings.maintenance_interval_s,
        job_monitoring_interval=settings.heartbeat_ttl_s,
    )


def _wait_for_redis(client: redis.Redis, max_delay_s: float = 5.0) -> None:
    delay_s = 0.2
    while True:
        try:
            client.ping()
            return
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, max_delay_s)


if __name__ == "__main__":
    sys.exit(main())
