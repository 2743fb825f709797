"""`python -m parley.worker`: one worker process running up to `PARLEY_WORKER_CONCURRENCY` turns at once,
as tasks on one event loop (engine.py; uvloop where installed).

The process's parts are built here, once, and passed in: the runtime (worker/runtime.py) to the
job class every job runs through, the settings to the engine and rq's side of it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
import threading
from collections.abc import Callable

from rq import Queue

from parley.shared import tracing
from parley.shared.logs import configure_logging
from parley.shared.settings import Settings, get_settings
from parley.shared.store.schedules import ScheduleStore

from .engine import Engine
from .rq_side import RqSide
from .runtime import Runtime, RuntimeJob
from .schedules import ScheduleFiring
from .webhooks import Dispatcher

log = logging.getLogger("parley.worker")


SWITCH_INTERVAL_S = 0.001
"""How long a thread may hold the GIL while another waits (Python's default: 5 ms). The event loop shares
the process with rq's two threads and the pool; at the default, a turn's next send could wait 5 ms."""


def main() -> int:
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    settings = get_settings()
    configure_logging(settings)
    tracing.setup("parley-worker")  # OTEL_EXPORTER_OTLP_ENDPOINT set: the turns' spans go there
    rt = Runtime.build(settings)  # a tool module that does not import stops the worker here, not mid-turn
    log.info("tools: %s", ", ".join(rt.tools.names()))
    preload_mcp_client()
    if settings.agents_file:
        count = rt.agents.load_file(settings.agents_file)
        log.info("loaded %d agents from %s", count, settings.agents_file)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(rt, settings))
    tracing.shutdown()  # the spans still buffered go out before the exit below
    # The engine has drained and told rq it is gone. A sync tool abandoned at its timeout may still run
    # on a pool thread, which Python's exit would wait for (pool threads are not daemons): leave now.
    logging.shutdown()
    os._exit(0)


def preload_mcp_client() -> threading.Thread:
    """Import the MCP client (worker/mcp, the `mcp` SDK: about 0.5 s) on a side thread now. Imported by the first
    turn of an agent with MCP tools instead, it would stall the event loop, and every turn the worker runs, while
    it loads."""
    thread = threading.Thread(target=importlib.import_module, args=("parley.worker.mcp",), name="preload-mcp",
                              daemon=True)  # fmt: skip
    thread.start()
    return thread


async def _serve(rt: Runtime, settings: Settings) -> None:
    try:
        await make_engine(rt, settings).run(logging_level=settings.rq_log_level)
    finally:
        await rt.provider.aclose()
        await rt.aio.aclose()
        rt.threads.shutdown(wait=False, cancel_futures=True)


def make_engine(rt: Runtime, settings: Settings, *, burst: bool = False) -> Engine:
    """An engine on the turns' queue whose every job gets `rt`: the job class bound to it is the
    worker's and its queue's, so abandoned jobs that rq's registry cleanup fails get it too."""
    job_class = RuntimeJob.bound_to(rt)
    side = RqSide(
        [Queue(settings.queue_name, connection=rt.clients.raw, job_class=job_class)],
        connection=rt.clients.raw,
        job_class=job_class,
        heartbeat_ttl_s=settings.heartbeat_ttl_s,
        worker_ttl=settings.maintenance_interval_s + 15,
        maintenance_interval=settings.maintenance_interval_s,
        job_monitoring_interval=settings.heartbeat_ttl_s,
    )
    return Engine(side, concurrency=settings.worker_concurrency, drain_grace_s=settings.drain_grace_s,
                  turns=getattr(rt, "worker_turns", None), threads=getattr(rt, "threads", None),
                  burst=burst, schedules=schedule_firing(rt, settings, burst),
                  webhooks=_webhooks(rt, settings))  # fmt: skip


def schedule_firing(rt: Runtime, settings: Settings, burst: bool) -> ScheduleFiring | None:
    """The process's firing loop of schedules: none in burst mode (the process ends with an empty queue) nor
    for a runtime without the turn stores (tests of the engine alone)."""
    if burst or getattr(rt, "worker_turns", None) is None:
        return None
    return ScheduleFiring(ScheduleStore(rt.clients.text, settings.max_schedules), rt.agents, rt.turns)


def _webhooks(rt: Runtime, settings: Settings) -> Dispatcher | None:
    """The webhook dispatcher on the runtime's event-loop Redis client (None for a runtime without one)."""
    aio = getattr(rt, "aio", None)
    return None if aio is None else Dispatcher(aio, settings)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (cheaper I/O per turn), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


if __name__ == "__main__":
    sys.exit(main())
