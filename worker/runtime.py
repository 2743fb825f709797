"""What a worker process builds once and reuses for every turn: settings, Redis, stores, provider."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from parley.shared.redis_client import RedisClients, connect
from parley.shared.settings import Settings, get_settings
from parley.shared.stores import Stores

from .providers import Provider, make_provider

REDIS_CONNECTIONS_PER_TURN = 3
"""A running turn may hold up to three pooled connections at once: its own thread's, its emitter's
and its cancel watch's; the heartbeat, maintenance and dequeue need a few more for the process."""


@dataclass
class Runtime(Stores):
    provider: Provider


def size_pools(clients: RedisClients, settings: Settings) -> None:
    """Give each pool room for every turn the worker runs at once.

    redis-py 8 caps a pool at 100 connections and raises `MaxConnectionsError` past that (it does
    not wait), so a worker running 100 turns could fail turns for want of a connection. A pool
    opens connections only as they are needed, so the cap costs nothing while it is not reached.
    """
    limit = REDIS_CONNECTIONS_PER_TURN * settings.worker_concurrency + 10
    for client in (clients.text, clients.raw):
        client.connection_pool.max_connections = max(client.connection_pool.max_connections, limit)


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    settings = get_settings()
    # Workers wait on BLPOP for up to the dequeue timeout: give their sockets room for it.
    clients = connect(settings, socket_timeout_s=settings.maintenance_interval_s + 30)
    size_pools(clients, settings)
    return Runtime(**Stores.parts(settings, clients), provider=make_provider(settings))
