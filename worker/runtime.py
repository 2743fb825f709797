"""What a worker process builds once and reuses for every turn: settings, Redis, stores, provider."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from parley.shared.redis_client import connect
from parley.shared.settings import get_settings
from parley.shared.stores import Stores

from .providers import Provider, make_provider


@dataclass
class Runtime(Stores):
    provider: Provider


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    settings = get_settings()
    # Workers wait on BLPOP for up to the dequeue timeout: give their sockets room for it.
    clients = connect(settings, socket_timeout_s=settings.maintenance_interval_s + 30)
    return Runtime(**Stores.parts(settings, clients), provider=make_provider(settings))
