"""rq's own answer to "more turns at once": a `WorkerPool` of one-job-at-a-time worker processes.

    python -m bench.load.pool --workers 20      (environment: the same as `python -m parley.worker`)

The pool forks `--workers` `SimpleWorker`s (no fork per job, like Parley's worker) on Parley's
turn queue. The turn code is imported before the fork, so the workers share its pages with the
pool (copy-on-write): the fairest memory figure for the pool is PSS, which the benchmark reports
beside RSS.
"""

from __future__ import annotations

import argparse
import logging

import redis
from rq import SimpleWorker
from rq.worker_pool import WorkerPool

import parley.worker.turn  # noqa: F401 - imported before the fork, shared by every worker
from parley.shared.settings import get_settings
from parley.worker.runtime import Runtime, RuntimeJob


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workers", type=int, default=20)
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=logging.WARNING)
    connection = redis.Redis.from_url(settings.redis_url)
    # settings, Redis pools, the model client and tools, built before the fork as Parley's worker builds them;
    # every job gets them as `rt` through the job class, as in `python -m parley.worker`
    job_class = RuntimeJob.bound_to(Runtime.build(settings))
    pool = WorkerPool([settings.queue_name], connection=connection, num_workers=args.workers,
                      worker_class=SimpleWorker, job_class=job_class)  # fmt: skip
    pool.start(logging_level="WARNING")


if __name__ == "__main__":
    main()
