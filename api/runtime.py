"""What the web process builds once at start and shares across requests."""

from __future__ import annotations

from dataclasses import dataclass

from parley.shared.settings import Settings
from parley.shared.store.connection import connect
from parley.shared.store.stores import Stores

from .hub import EventHub


@dataclass
class WebRuntime(Stores):
    hub: EventHub
    tenants_by_key: dict[str, str]

    @classmethod
    def build(cls, settings: Settings) -> WebRuntime:
        return cls(**Stores.parts(settings, connect(settings)), hub=EventHub(settings),
                   tenants_by_key=settings.keys_to_tenants())  # fmt: skip

    def agent_names(self, tenant: str) -> dict[str, str]:
        """Agent id -> name for every agent the tenant sees (to label sessions)."""
        return {agent["id"]: agent["name"] for agent in self.agents.visible(tenant)}
