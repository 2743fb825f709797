"""The stores over one Redis, as both processes hold them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parley.shared.settings import Settings
from parley.shared.store.agents import AgentStore
from parley.shared.store.connection import RedisClients
from parley.shared.store.sessions import SessionStore
from parley.shared.store.turns import TurnStore


@dataclass
class Stores:
    settings: Settings
    clients: RedisClients
    agents: AgentStore
    sessions: SessionStore
    turns: TurnStore

    @staticmethod
    def parts(settings: Settings, clients: RedisClients) -> dict[str, Any]:
        """The fields of a `Stores` (for subclasses that add their own)."""
        return {
            "settings": settings,
            "clients": clients,
            "agents": AgentStore(clients.text, max_agents=settings.max_agents_per_tenant),
            "sessions": SessionStore(clients.text),
            "turns": TurnStore(clients, settings),
        }
