"""What the web process builds once at start and shares across requests."""

from __future__ import annotations

from dataclasses import dataclass

from parley.shared.agents import AgentStore
from parley.shared.redis_client import RedisClients, connect
from parley.shared.sessions import SessionStore
from parley.shared.settings import Settings
from parley.shared.turns import TurnStore

from .hub import EventHub


@dataclass
class WebRuntime:
    settings: Settings
    clients: RedisClients
    agents: AgentStore
    sessions: SessionStore
    turns: TurnStore
    hub: EventHub
    tenants_by_key: dict[str, str]

    @classmethod
    def build(cls, settings: Settings) -> WebRuntime:
        clients = connect(settings)
        return cls(
            settings=settings,
            clients=clients,
            agents=AgentStore(clients.text),
            sessions=SessionStore(clients.text),
            turns=TurnStore(clients, settings),
            hub=EventHub(settings),
            tenants_by_key=settings.keys_to_tenants(),
        )

    def agent_names(self, tenant: str) -> dict[str, str]:
        """Agent id -> name for every agent the tenant sees (to label sessions)."""
        return {agent["id"]: agent["name"] for agent in self.agents.visible(tenant)}
