"""`/api/v1/agents`: create, list, read, change and delete agents."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from parley.shared.errors import InvalidInput
from parley.shared.schema import AgentCreate, AgentPublic, AgentUpdate
from parley.shared.store.agents import public

from ..deps import Runtime, Tenant
from ..errors import documented

router = APIRouter(prefix="/api/v1/agents", tags=["agents"], responses=documented(401, 404, 422, 503, 409))


@router.post("", status_code=201, response_model=AgentPublic)
def create_agent(body: AgentCreate, rt: Runtime, tenant: Tenant) -> AgentPublic:
    """Create an agent; its name must be unique for the tenant."""
    _check_session_ttl(rt, body.session_ttl_s)
    return public(rt.agents.create(tenant, body), rt.settings.default_model)


@router.get("", response_model=list[AgentPublic])
def list_agents(rt: Runtime, tenant: Tenant) -> list[AgentPublic]:
    """Agents this key can see: file agents first, then the tenant's, by creation."""
    return [public(agent, rt.settings.default_model) for agent in rt.agents.visible(tenant)]


@router.get("/{agent}", response_model=AgentPublic)
def get_agent(agent: str, rt: Runtime, tenant: Tenant) -> AgentPublic:
    """One agent, by id or name."""
    return public(rt.agents.get(tenant, agent), rt.settings.default_model)


@router.patch("/{agent}", response_model=AgentPublic)
def update_agent(agent: str, body: AgentUpdate, rt: Runtime, tenant: Tenant) -> AgentPublic:
    """Change some of an agent's fields; later turns use the new values."""
    _check_session_ttl(rt, body.session_ttl_s)
    return public(rt.agents.update(tenant, agent, body), rt.settings.default_model)


def _check_session_ttl(rt: Runtime, ttl_s: int | None) -> None:
    """422 for a `session_ttl_s` below PARLEY_SESSION_TTL_MIN_S (60 s unless a test lowers it)."""
    if ttl_s is not None and ttl_s < rt.settings.session_ttl_min_s:
        raise InvalidInput(f"session_ttl_s must be at least {rt.settings.session_ttl_min_s}", field="session_ttl_s")


@router.delete("/{agent}", status_code=204)
async def delete_agent(agent: str, rt: Runtime, tenant: Tenant) -> Response:
    """Delete an agent. Its sessions stay readable; new turns in them answer 404."""
    await run_in_threadpool(rt.agents.delete, tenant, agent)
    return Response(status_code=204)
