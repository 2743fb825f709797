"""Fixtures for the fast unit tests: a hermetic environment, Settings, and Redis on fakeredis.

The turn scripts are Lua, so fakeredis needs its Lua extra (`fakeredis[lua]`, i.e. `lupa`).
Both clients share ONE fake server, as `text` and `raw` share one Redis in production.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from parley.shared.settings import Settings
from parley.shared.store.agents import AgentStore
from parley.shared.store.connection import RedisClients
from parley.shared.store.sessions import SessionStore
from parley.shared.store.turns import TurnStore
from parley.shared.store.worker_turns import WorkerTurns

SETTINGS_ENV = {field.alias.upper() for field in Settings.model_fields.values() if field.alias}
"""Every environment variable Settings reads (pydantic-settings matches them case-insensitively)."""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Settings variable from the caller's environment, and a cwd without a `.env` file."""
    for name in list(os.environ):
        if name.upper() in SETTINGS_ENV:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def make_settings(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """`make_settings(PARLEY_MAX_QUEUE_DEPTH="1")`: Settings from exactly these variables."""

    def make(**env: str) -> Settings:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return Settings()  # type: ignore[call-arg]

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def clients(server: fakeredis.FakeServer) -> Iterator[RedisClients]:
    text = fakeredis.FakeRedis(server=server, decode_responses=True)
    raw = fakeredis.FakeRedis(server=server, decode_responses=False)
    yield RedisClients(text=text, raw=raw)
    text.close()
    raw.close()


@pytest.fixture
def turns(clients: RedisClients, settings: Settings) -> TurnStore:
    return TurnStore(clients, settings)


@pytest.fixture
def worker_turns(server: fakeredis.FakeServer, turns: TurnStore) -> WorkerTurns:
    """The worker's side of `turns` (async: `asyncio.run(worker_turns.start(...))`), on the same fake Redis."""
    return WorkerTurns(turns, fakeredis.FakeAsyncRedis(server=server, decode_responses=True))


@pytest.fixture
def sessions(clients: RedisClients) -> SessionStore:
    return SessionStore(clients.text)


@pytest.fixture
def agents(clients: RedisClients) -> AgentStore:
    return AgentStore(clients.text)


@pytest.fixture
def chef() -> dict[str, Any]:
    """An agent as the stores hand it around (only the fields a turn reads)."""
    return {"id": "agent-chef", "name": "Chef", "first_message": "Hello! What shall we cook?"}
