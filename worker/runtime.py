"""What a worker process builds once and reuses for every job (settings, Redis, stores, model
provider, tools), and how its jobs receive it: passed in, never looked up.

`__main__` builds the `Runtime` once (`Runtime.build`, as the web builds its `WebRuntime`) and
gives it to the worker's job class (`RuntimeJob.bound_to`). RQ names a job's function by import
path and calls it with the arguments stored in Redis; a `RuntimeJob` adds the runtime as the
keyword `rt`, to the job's function and to its failure callback alike. The bound class is the
worker's `job_class` and its queue's, so the jobs the worker runs and the abandoned jobs its
maintenance fails (rq's registry cleanup fetches them through the queue's job class) both reach
their functions with this worker's runtime.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import redis.asyncio as aredis
from rq.job import Job

from parley.shared.settings import Settings
from parley.shared.store.connection import RedisClients, connect, connect_async
from parley.shared.store.stores import Stores
from parley.shared.store.worker_turns import WorkerTurns
from parley.tools import ToolRegistry, load_registry

from .providers import Provider, make_provider

SYNC_THREADS = 32
"""The bounded pool where a turn's blocking work runs (sync tools, the sync reads of its context and
memory, shape checks), beside the event loop: at most this many at once, whatever the concurrency."""
ASYNC_CONNECTIONS = 128
"""The event loop's Redis connections: a turn holds one only for a round trip, so a thousand turns share them."""


@dataclass
class Runtime(Stores):
    provider: Provider
    tools: ToolRegistry
    aio: aredis.Redis
    """The event loop's client (a turn's start, events, commit, and the watch)."""
    worker_turns: WorkerTurns
    threads: ThreadPoolExecutor

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        """The worker's parts, built once per process. Loads the tools first: a tool module that
        does not import stops the worker at start, not mid-turn."""
        tools = load_registry(settings)
        # The dequeue waits on BLMOVE for up to its timeout: give the sync sockets room for it.
        clients = connect(settings, socket_timeout_s=settings.maintenance_interval_s + 30)
        size_pools(clients)
        parts = Stores.parts(settings, clients)
        aio = connect_async(settings, max_connections=ASYNC_CONNECTIONS)
        return cls(**parts, provider=make_provider(settings), tools=tools, aio=aio,
                   worker_turns=WorkerTurns(parts["turns"], aio),
                   threads=ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="sync"))  # fmt: skip


def size_pools(clients: RedisClients) -> None:
    """Give each sync pool room for every thread that may use it at once: the pool's threads, rq's
    dequeue and bookkeeping threads, rq's pub/sub thread. redis-py 8 raises `MaxConnectionsError`
    past a pool's cap rather than wait; a pool opens connections only as they are needed."""
    limit = SYNC_THREADS + 10
    for client in (clients.text, clients.raw):
        client.connection_pool.max_connections = max(client.connection_pool.max_connections, limit)


class RuntimeJob(Job):
    """An rq job whose function and failure callback are called with the worker's runtime as `rt`.

    Use `bound_to(rt)`: RQ creates job objects itself (`job_class.fetch`), so the runtime rides on
    the class, one class per runtime (not a process-wide global: two workers in one process may
    hold two runtimes). The arguments stored in Redis are unchanged: a job queued before this
    worker started runs the same.
    """

    runtime: ClassVar[Runtime]

    @classmethod
    def bound_to(cls, rt: Runtime) -> type[RuntimeJob]:
        return type(cls.__name__, (cls,), {"runtime": rt, "__module__": cls.__module__})

    @property
    def func(self) -> Any:
        func = super().func
        return None if func is None else functools.partial(func, rt=self.runtime)

    @property
    def failure_callback(self) -> Any:
        callback: Any = super().failure_callback  # rq types it without the `rt` keyword Parley's callbacks take
        return None if callback is None else functools.partial(callback, rt=self.runtime)
