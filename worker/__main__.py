"""`python -m parley.worker`: one RQ worker process consuming chat turns."""

from __future__ import annotations

import logging
import sys

from parley.shared.settings import get_settings

from .rq_worker import TurnWorker
from .runtime import runtime


def main() -> int:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rt = runtime()
    if settings.agents_file:
        count = rt.agents.load_file(settings.agents_file)
        logging.getLogger("parley.worker").info("loaded %d agents from %s", count, settings.agents_file)
    TurnWorker.heartbeat_ttl_s = settings.heartbeat_ttl_s
    worker = TurnWorker(
        [rt.turns.queue],
        connection=rt.clients.raw,
        worker_ttl=settings.maintenance_interval_s + 15,  # rq waits in BLPOP for worker_ttl - 15 s
        maintenance_interval=settings.maintenance_interval_s,
        job_monitoring_interval=settings.heartbeat_ttl_s,
    )
    worker.work(logging_level=settings.rq_log_level, with_scheduler=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
