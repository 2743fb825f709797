"""What a worker process builds once and reuses for every turn: settings, Redis, stores, provider."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from parley.shared.agents import AgentStore
from parley.shared.redis_client import RedisClients, connect
from parley.shared.sessions import SessionStore
from parley.shared.settings import Settings, get_settings
from parley.shared.turns import TurnStore

from .providers import Provider, make_provider


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    clients: RedisClients
    agents: AgentStore
    sessions: SessionStore
    turns: TurnStore
    provider: Provider


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    settings = get_settings()
    # Workers wait on BLPOP for up to the dequeue timeout: give their sockets room for it.
    clients = connect(settings, socket_timeout_s=settings.maintenance_interval_s + 30)
    return Runtime(
        settings=settings,
        clients=clients,
        agents=AgentStore(clients.text),
        sessions=SessionStore(clients.text),
        turns=TurnStore(clients, settings),
        provider=make_provider(settings),
    )
