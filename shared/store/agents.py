"""Agents in Redis: one hash each, a creation-ordered index and a name index per tenant.

Agents from PARLEY_AGENTS_FILE live under `keys.FILE_SCOPE`; every tenant sees them (first) and
none may change them.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import redis
import yaml
from pydantic import ValidationError

from parley.shared.clock import iso, now_ms
from parley.shared.errors import Conflict, InvalidInput, NotFound, TooManyAgents
from parley.shared.schema import AgentCreate, AgentPublic, AgentUpdate
from parley.shared.settings import Settings
from parley.shared.store import keys, scripts
from parley.tools import unknown_tools

STORED_FIELDS = (
    "id", "name", "description", "type", "model", "context", "first_message", "instructions",
    "response_shape", "tools", "temperature", "max_tokens", "max_turns", "created_at", "updated_at", "source",
    "context_budget", "approval", "session_ttl_s", "max_tool_steps", "max_turn_tokens", "fallback_models",
)  # fmt: skip

DEFAULT_MAX_AGENTS: int = Settings.model_fields["max_agents_per_tenant"].default
STALE_RETRIES = 5
"""An update or delete reads the agent again this often when it changed between read and write."""

def _encode(agent: dict[str, Any]) -> dict[str, str]:
    return {name: _as_stored(agent.get(name)) for name in STORED_FIELDS}


def _as_stored(value: Any) -> str:
    """A field's value as the agent's hash holds it (JSON)."""
    return json.dumps(value)


def _flat(agent: dict[str, Any]) -> list[str]:
    """The agent's hash as `field, value, ...` arguments of a script (no JSON for Lua to decode)."""
    return [item for pair in _encode(agent).items() for item in pair]


def decode_agent(raw: dict[str, str]) -> dict[str, Any]:
    return {name: json.loads(value) for name, value in raw.items()}


def public(agent: dict[str, Any], default_model: str) -> AgentPublic:
    """The agent as the API shows it (timestamps in ISO 8601, the default model filled in)."""
    shown = dict(agent)
    shown["model"] = agent.get("model") or default_model
    shown["approval"] = agent.get("approval") or []  # agents stored before approvals existed have none
    shown["fallback_models"] = agent.get("fallback_models") or []  # nor before fallbacks
    shown["created_at"] = iso(agent["created_at"])
    shown["updated_at"] = iso(agent.get("updated_at"))
    return AgentPublic.model_validate(shown)


class AgentStore:
    """Reads and writes agents; `tenant` scopes every call."""

    def __init__(self, r: redis.Redis, max_agents: int = DEFAULT_MAX_AGENTS) -> None:
        self.r = r
        self.max_agents = max_agents
        """Most agents a tenant may hold (PARLEY_MAX_AGENTS_PER_TENANT; 0: no limit)."""
        self._create = r.register_script(scripts.CREATE_AGENT)
        self._update = r.register_script(scripts.UPDATE_AGENT)
        self._delete = r.register_script(scripts.DELETE_AGENT)

    def _load(self, scope: str, agent_id: str) -> dict[str, Any] | None:
        raw = self.r.hgetall(keys.agent(scope, agent_id))
        return decode_agent(raw) if raw else None  # type: ignore[arg-type]

    def _find_in(self, scope: str, id_or_name: str) -> dict[str, Any] | None:
        agent = self._load(scope, id_or_name)
        if agent is not None:
            return agent
        agent_id = self.r.hget(keys.agent_names(scope), id_or_name)
        return self._load(scope, agent_id) if agent_id else None  # type: ignore[arg-type]

    def find(self, tenant: str, id_or_name: str) -> dict[str, Any] | None:
        """The tenant's agent, else a file agent, by id, else by name."""
        return self._find_in(tenant, id_or_name) or self._find_in(keys.FILE_SCOPE, id_or_name)

    def get(self, tenant: str, id_or_name: str) -> dict[str, Any]:
        agent = self.find(tenant, id_or_name)
        if agent is None:
            raise NotFound(f"agent {id_or_name!r} not found")
        return agent

    def get_by_id(self, tenant: str, agent_id: str) -> dict[str, Any] | None:
        """Exact id lookup, tenant first then file agents, in one round trip (the worker's read)."""
        with self.r.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.agent(tenant, agent_id))
            pipe.hgetall(keys.agent(keys.FILE_SCOPE, agent_id))
            own, filed = pipe.execute()
        raw = own or filed
        return decode_agent(raw) if raw else None

    def visible(self, tenant: str) -> list[dict[str, Any]]:
        """File agents first, then the tenant's, each in creation order."""
        result: list[dict[str, Any]] = []
        for scope in (keys.FILE_SCOPE, tenant):
            ids = self.r.zrange(keys.agents(scope), 0, -1)
            with self.r.pipeline(transaction=False) as pipe:
                for agent_id in ids:  # type: ignore[union-attr]
                    pipe.hgetall(keys.agent(scope, agent_id))
                rows = pipe.execute()
            result.extend(decode_agent(row) for row in rows if row)
        return result

    def first(self, tenant: str) -> dict[str, Any] | None:
        """The agent a request without `agent` gets: the first file agent, else the tenant's oldest."""
        for scope in (keys.FILE_SCOPE, tenant):
            ids = self.r.zrange(keys.agents(scope), 0, 0)
            if ids:
                return self._load(scope, ids[0])  # type: ignore[index]
        return None

    def create(self, tenant: str, spec: AgentCreate, *, agent_id: str | None = None, source: str = "api") -> dict:
        """Store a new agent: name, hash and index in one script, refused whole (409) when the name (or a
        given id) is taken or the tenant holds `max_agents` agents already."""
        _check_tools(spec.tools)
        agent = spec.model_dump()
        agent.update(id=agent_id or f"agent-{uuid.uuid4().hex[:12]}", created_at=now_ms(), updated_at=None,
                     source=source)  # fmt: skip
        outcome = self._create(
            keys=[keys.agent_names(tenant), keys.agent(tenant, agent["id"]), keys.agents(tenant)],
            args=[agent["name"], agent["id"], agent["created_at"], self.max_agents, keys.agent(tenant, ""),
                  *_flat(agent)],
        )  # fmt: skip
        if outcome == "too_many":
            raise TooManyAgents(f"this tenant has {self.max_agents} agents, the most it may hold: delete one first")
        if outcome == "name_taken":
            raise Conflict(f"an agent named {agent['name']!r} already exists")
        if outcome == "id_taken":
            raise Conflict(f"an agent with id {agent['id']!r} already exists")
        return agent

    def update(self, tenant: str, id_or_name: str, change: AgentUpdate) -> dict[str, Any]:
        """Change some fields (a rename moves the name) in one script; it writes only if the agent is still
        as read, else it is read again (a concurrent rename or delete never leaves a stale name)."""
        fields = change.model_dump(exclude_unset=True)
        if "name" in fields and (fields["name"] is None or not fields["name"].strip()):
            raise InvalidInput("name must not be blank")
        if fields.get("tools") is not None:
            _check_tools(fields["tools"])
        if "tools" in fields and fields["tools"] is None:
            fields["tools"] = []
        for _ in range(STALE_RETRIES):
            agent = self._owned(tenant, id_or_name)
            new_name = fields["name"].strip() if fields.get("name") else agent["name"]
            changed = {**agent, **fields, "name": new_name, "updated_at": now_ms()}
            outcome = self._update(
                keys=[keys.agent_names(tenant), keys.agent(tenant, agent["id"])],
                args=[agent["id"], agent["name"], new_name, _as_stored(agent["name"]),
                      _as_stored(agent.get("updated_at")), keys.agent(tenant, ""), *_flat(changed)],
            )  # fmt: skip
            if outcome == "updated":
                return changed
            if outcome == "name_taken":
                raise Conflict(f"an agent named {new_name!r} already exists")
        raise Conflict("the agent kept changing while this request ran; try again")

    def delete(self, tenant: str, id_or_name: str) -> None:
        """Remove hash, index entry and name in one script, with the name the agent holds when it runs."""
        for _ in range(STALE_RETRIES):
            agent = self._owned(tenant, id_or_name)
            outcome = self._delete(
                keys=[keys.agent_names(tenant), keys.agent(tenant, agent["id"]), keys.agents(tenant)],
                args=[agent["id"], agent["name"], _as_stored(agent["name"])],
            )  # fmt: skip
            if outcome == "deleted":
                return
        raise Conflict("the agent kept changing while this request ran; try again")

    def _owned(self, tenant: str, id_or_name: str) -> dict[str, Any]:
        """The tenant's own agent; file agents are read-only (409), others' do not exist (404)."""
        agent = self._find_in(tenant, id_or_name)
        if agent is not None:
            return agent
        if self._find_in(keys.FILE_SCOPE, id_or_name) is not None:
            raise Conflict("this agent comes from PARLEY_AGENTS_FILE and cannot be changed through the API")
        raise NotFound(f"agent {id_or_name!r} not found")

    def load_file(self, path: str) -> int:
        """Replace the file agents with those in `path` (YAML or JSON list). Returns how many."""
        text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text)  # JSON is YAML too
        if isinstance(data, dict) and "agents" in data:
            data = data["agents"]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of agents")
        agents = []
        for position, entry in enumerate(data):
            entry = dict(entry)
            agent_id = entry.pop("id", None) or f"agent-{_slug(entry.get('name', str(position)))}"
            try:
                spec = AgentCreate.model_validate(entry)
            except ValidationError as error:  # the operator's file: say which entry, then stop the process
                raise ValueError(f"{path}: agent {position} ({entry.get('name')!r}) is not valid: {error}") from None
            _check_tools(spec.tools)
            agent = spec.model_dump()
            agent.update(id=agent_id, created_at=position, updated_at=None, source="file")
            agents.append(agent)
        scope = keys.FILE_SCOPE
        with self.r.pipeline() as pipe:
            for old_id in self.r.zrange(keys.agents(scope), 0, -1):  # type: ignore[union-attr]
                pipe.delete(keys.agent(scope, old_id))
            pipe.delete(keys.agents(scope), keys.agent_names(scope))
            for agent in agents:
                pipe.hset(keys.agent(scope, agent["id"]), mapping=_encode(agent))
                pipe.zadd(keys.agents(scope), {agent["id"]: agent["created_at"]})
                pipe.hset(keys.agent_names(scope), agent["name"], agent["id"])
            pipe.execute()
        return len(agents)


def _check_tools(tools: list[str]) -> None:
    missing = unknown_tools(tools)
    if missing:
        raise InvalidInput(f"unknown tools: {', '.join(missing)}", field="tools")


def _slug(name: str) -> str:
    text = "".join(c.lower() if c.isalnum() else "-" for c in name).strip("-")
    return "-".join(part for part in text.split("-") if part) or "agent"
