"""Agents are written whole or not at all, and a tenant holds at most `max_agents` of them.

Each write (create, rename or change, delete) is one Lua script: a web killed at any point, or a
script that fails, leaves either the whole change or nothing, and no name that can never be used again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from parley.shared.errors import Conflict, NotFound, TooManyAgents
from parley.shared.schema import AgentCreate, AgentUpdate
from parley.shared.store import keys
from parley.shared.store.agents import AgentStore
from parley.shared.store.connection import RedisClients


def _spec(name: str, **fields: Any) -> AgentCreate:
    return AgentCreate(name=name, **fields)


def _dump(r: redis.Redis) -> dict[str, Any]:
    """Every key with its type and value (to show a refused call changed nothing)."""
    shown: dict[str, Any] = {}
    for key in sorted(r.scan_iter(match="*")):  # type: ignore[type-var]
        kind = r.type(key)
        value = {"hash": r.hgetall, "zset": lambda k: r.zrange(k, 0, -1, withscores=True), "string": r.get}[kind](key)
        shown[key] = (kind, value)
    return shown


def assert_whole(r: redis.Redis, tenant: str) -> None:
    """The tenant's name index, creation index and agent hashes describe the same agents."""
    names: dict[str, str] = r.hgetall(keys.agent_names(tenant))  # type: ignore[assignment]
    index = set(r.zrange(keys.agents(tenant), 0, -1))  # type: ignore[arg-type]
    prefix = keys.agent(tenant, "")
    hashes = {key[len(prefix) :] for key in r.scan_iter(match=prefix + "*")}  # type: ignore[union-attr]
    assert index == hashes, f"index {index} != hashes {hashes}"
    assert sorted(names.values()) == sorted(index), f"names {names} != index {index}"
    for name, agent_id in names.items():
        assert json.loads(r.hget(prefix + agent_id, "name")) == name, f"{name!r} -> {agent_id}"  # type: ignore[arg-type]


# --- the cap ------------------------------------------------------------------------------------


def test_a_tenant_holds_at_most_max_agents_and_others_are_unaffected(clients: RedisClients) -> None:
    agents = AgentStore(clients.text, max_agents=3)
    made = [agents.create("alice", _spec(f"A{i}")) for i in range(3)]
    before = _dump(clients.text)
    with pytest.raises(TooManyAgents) as refused:
        agents.create("alice", _spec("One too many"))
    assert (refused.value.status, refused.value.code) == (409, "too_many_agents")
    assert _dump(clients.text) == before  # nothing written, the name stays free
    for i in range(3):
        agents.create("bob", _spec(f"B{i}"))  # bob's count is his own
    with pytest.raises(TooManyAgents):
        agents.create("bob", _spec("B3"))
    agents.delete("alice", made[0]["id"])
    agents.create("alice", _spec("One too many"))  # room again after a delete
    assert len(agents.visible("alice")) == 3 and len(agents.visible("bob")) == 3
    assert_whole(clients.text, "alice")
    assert_whole(clients.text, "bob")


def test_the_cap_defaults_to_the_setting(clients: RedisClients, settings: Any) -> None:
    assert AgentStore(clients.text).max_agents == settings.max_agents_per_tenant


def test_a_taken_id_is_refused_whole(agents: AgentStore, clients: RedisClients) -> None:
    agents.create("alice", _spec("First"), agent_id="agent-fixed")
    before = _dump(clients.text)
    with pytest.raises(Conflict):
        agents.create("alice", _spec("Second"), agent_id="agent-fixed")
    assert _dump(clients.text) == before


# --- a create whose script fails ------------------------------------------------------------------


def test_a_create_whose_script_fails_writes_nothing(agents: AgentStore, clients: RedisClients) -> None:
    clients.text.set(keys.agents("alice"), "not a sorted set")  # the index cannot be written
    before = _dump(clients.text)
    with pytest.raises(redis.ResponseError):
        agents.create("alice", _spec("Chef"))
    assert _dump(clients.text) == before  # no name reserved, no hash
    clients.text.delete(keys.agents("alice"))
    agents.create("alice", _spec("Chef"))  # the name was never taken
    assert_whole(clients.text, "alice")


# --- a web killed between any two commands ----------------------------------------------------------


class Killed(redis.ConnectionError):
    """The web process died before sending this command."""


@pytest.fixture
def dies_at(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[redis.Redis, int], None]]:
    """`dies_at(r, n)`: `r` sends commands 1..n-1 and raises Killed from the n-th on (a pipeline counts as one)."""
    state: dict[str, Any] = {"pool": None, "left": 0}
    original = redis.client.Pipeline.execute

    def pipeline_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.connection_pool is state["pool"]:  # only the dying client's pipelines
            _count()
        return original(self, *args, **kwargs)

    def _count() -> None:
        state["left"] -= 1
        if state["left"] <= 0:
            raise Killed("killed")

    def arm(r: redis.Redis, n: int) -> None:
        plain = r.execute_command

        def execute_command(*args: Any, **kwargs: Any) -> Any:
            _count()
            return plain(*args, **kwargs)

        state["left"], state["pool"] = n, r.connection_pool
        monkeypatch.setattr(r, "execute_command", execute_command)
        monkeypatch.setattr(redis.client.Pipeline, "execute", pipeline_execute)

    yield arm


WRITES: dict[str, Callable[[AgentStore], Any]] = {
    "create": lambda store: store.create("alice", _spec("New")),
    "rename": lambda store: store.update("alice", "Old", AgentUpdate(name="New", description="renamed")),
    "change": lambda store: store.update("alice", "Old", AgentUpdate(description="changed")),
    "delete": lambda store: store.delete("alice", "Old"),
}


@pytest.mark.parametrize("write", sorted(WRITES))
@pytest.mark.parametrize("killed_at", range(1, 9))
def test_a_web_killed_at_any_command_leaves_the_agents_whole(
    write: str, killed_at: int, dies_at: Callable[[redis.Redis, int], None]
) -> None:
    server = fakeredis.FakeServer()
    seen = fakeredis.FakeRedis(server=server, decode_responses=True)
    AgentStore(seen).create("alice", _spec("Old"))
    dying = fakeredis.FakeRedis(server=server, decode_responses=True)
    store = AgentStore(dying)
    dies_at(dying, killed_at)
    try:
        WRITES[write](store)
    except Killed:
        pass
    assert_whole(seen, "alice")
    # A new web carries on: both names are usable (free, or held by a whole agent).
    fresh = AgentStore(fakeredis.FakeRedis(server=server, decode_responses=True))
    for name in ("Old", "New"):
        if fresh.find("alice", name) is None:
            fresh.create("alice", _spec(name))
    assert_whole(seen, "alice")


# --- concurrent writes never leave a stale name ------------------------------------------------------


def _read_before(store: AgentStore, monkeypatch: pytest.MonkeyPatch, snapshot: dict[str, Any]) -> None:
    """The next write acts on `snapshot`, as a web that read the agent before another web changed it."""
    real = store._owned
    calls = {"n": 0}

    def owned(tenant: str, id_or_name: str) -> dict[str, Any]:
        calls["n"] += 1
        return dict(snapshot) if calls["n"] == 1 else real(tenant, id_or_name)

    monkeypatch.setattr(store, "_owned", owned)


def test_delete_after_a_concurrent_rename_leaves_no_stale_name(
    agents: AgentStore, clients: RedisClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = agents.create("alice", _spec("Old"))
    read = agents.get("alice", made["id"])
    AgentStore(clients.text).update("alice", made["id"], AgentUpdate(name="Renamed"))  # another web
    _read_before(agents, monkeypatch, read)
    agents.delete("alice", made["id"])
    assert_whole(clients.text, "alice")
    assert agents.find("alice", "Renamed") is None and agents.find("alice", made["id"]) is None
    agents.create("alice", _spec("Renamed"))  # the name is free


def test_rename_after_a_concurrent_rename_leaves_no_stale_name(
    agents: AgentStore, clients: RedisClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = agents.create("alice", _spec("Old"))
    read = agents.get("alice", made["id"])
    AgentStore(clients.text).update("alice", made["id"], AgentUpdate(name="Between"))  # another web
    _read_before(agents, monkeypatch, read)
    changed = agents.update("alice", made["id"], AgentUpdate(name="Last"))
    assert changed["name"] == "Last"
    assert_whole(clients.text, "alice")
    agents.create("alice", _spec("Between"))  # the middle name was released
    agents.create("alice", _spec("Old"))


def test_a_change_after_a_concurrent_rename_keeps_the_new_name(
    agents: AgentStore, clients: RedisClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = agents.create("alice", _spec("Old"))
    read = agents.get("alice", made["id"])
    AgentStore(clients.text).update("alice", made["id"], AgentUpdate(name="Renamed"))  # another web
    _read_before(agents, monkeypatch, read)
    changed = agents.update("alice", made["id"], AgentUpdate(description="later"))
    assert (changed["name"], changed["description"]) == ("Renamed", "later")
    assert agents.get("alice", "Renamed")["description"] == "later"
    assert_whole(clients.text, "alice")


def test_a_write_racing_a_delete_answers_not_found(
    agents: AgentStore, clients: RedisClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = agents.create("alice", _spec("Old"))
    read = agents.get("alice", made["id"])
    AgentStore(clients.text).delete("alice", made["id"])  # another web
    _read_before(agents, monkeypatch, read)
    with pytest.raises(NotFound):
        agents.update("alice", made["id"], AgentUpdate(description="too late"))
    assert clients.text.exists(keys.agent("alice", made["id"])) == 0  # not brought back half-way
    assert_whole(clients.text, "alice")


def test_a_name_left_behind_by_a_half_write_is_free(agents: AgentStore, clients: RedisClients) -> None:
    """Names an older, non-atomic write left pointing at no agent do not block the name for ever."""
    clients.text.hset(keys.agent_names("alice"), mapping={"Ghost": "agent-gone", "Spook": "agent-gone-too"})
    made = agents.create("alice", _spec("Ghost"))
    assert agents.get("alice", "Ghost")["id"] == made["id"]
    renamed = agents.update("alice", "Ghost", AgentUpdate(name="Spook"))
    assert agents.get("alice", "Spook")["id"] == renamed["id"]
    assert_whole(clients.text, "alice")


def test_an_invalid_file_agent_names_its_file_and_entry(tmp_path: Path) -> None:
    """PARLEY_AGENTS_FILE is the operator's: a shape the API would refuse stops the process with a clear message."""
    path = tmp_path / "agents.yaml"
    path.write_text("- name: Fine\n- name: Bad\n  response_shape: {properties: {a: {pattern: '(?=a)'}}}\n")
    with pytest.raises(ValueError, match=r"agents\.yaml: agent 1 \('Bad'\) is not valid"):
        AgentStore(fakeredis.FakeRedis(decode_responses=True)).load_file(str(path))
