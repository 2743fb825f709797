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
from dataclasses import dataclass
from typing import Any, ClassVar

from rq.job import Job

from parley.shared.settings import Settings
from parley.shared.store.connection import RedisClients, connect
from parley.shared.store.stores import Stores
from parley.tools import ToolRegistry, load_registry

from .providers import Provider, make_provider

REDIS_CONNECTIONS_PER_TURN = 3
"""A running turn may hold up to three pooled connections at once: its own thread's, its emitter's
and its cancel watch's; the heartbeat, maintenance and dequeue need a few more for the process."""


@dataclass
class Runtime(Stores):
    provider: Provider
    tools: ToolRegistry

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        """The worker's parts, built once per process. Loads the tools first: a tool module that
        does not import stops the worker at start, not mid-turn."""
        tools = load_registry(settings)
        # Workers wait on BLPOP for up to the dequeue timeout: give their sockets room for it.
        clients = connect(settings, socket_timeout_s=settings.maintenance_interval_s + 30)
        size_pools(clients, settings)
        return cls(**Stores.parts(settings, clients), provider=make_provider(settings), tools=tools)


def size_pools(clients: RedisClients, settings: Settings) -> None:
    """Give each pool room for every turn the worker runs at once.

    redis-py 8 caps a pool at 100 connections and raises `MaxConnectionsError` past that (it does
    not wait), so a worker running 100 turns could fail turns for want of a connection. A pool
    opens connections only as they are needed, so the cap costs nothing while it is not reached.
    """
    limit = REDIS_CONNECTIONS_PER_TURN * settings.worker_concurrency + 10
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
