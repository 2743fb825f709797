"""`/api/v1/tools`: the tools agents may name in `tools`: this deployment's, then the tenant's MCP servers'.

The router's lifespan loads the tools when the web process starts, so a tool module that fails to
import stops the process at start with its name, instead of failing agent requests later.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from parley.shared.store.mcp_servers import McpServerStore, server_tools
from parley.tools import load_registry

from ..deps import Runtime, Tenant, get_tenant
from ..errors import documented

log = logging.getLogger("parley.api")


@asynccontextmanager
async def load_tools_at_start(app: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's own lifespan (FastAPI nests an included router's), once `app.state.rt` exists."""
    registry = load_registry(app.state.rt.settings)
    log.info("tools: %s", ", ".join(registry.names()))
    yield


router = APIRouter(prefix="/api/v1/tools", tags=["tools"], dependencies=[Depends(get_tenant)],
                   responses=documented(401, 503), lifespan=load_tools_at_start)  # fmt: skip


class ToolPublic(BaseModel):
    """One tool as the model is told about it."""

    name: str = Field(..., examples=["calculator"])
    description: str = Field(..., examples=["Evaluate an arithmetic expression exactly."])
    parameters: dict[str, Any] = Field(
        ..., description="JSON Schema of the tool's arguments.",
        examples=[{"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}],
    )  # fmt: skip


@router.get("", response_model=list[ToolPublic])
async def list_tools(rt: Runtime, tenant: Tenant) -> list[ToolPublic]:
    """Every tool agents may name, by name, with the JSON Schema of its arguments: the built-ins, then each MCP
    server's tools as `mcp:<server>/<tool>` (those its `allowed_tools` let through; a server that cannot list
    its tools now is left out)."""
    builtin = [ToolPublic.model_validate(spec) for spec in load_registry(rt.settings).describe()]
    return builtin + await _mcp_tools(rt, tenant)


async def _mcp_tools(rt: Runtime, tenant: str) -> list[ToolPublic]:
    store = McpServerStore(rt.clients.text, rt.settings.max_mcp_servers, rt.settings.sealer)
    servers = await run_in_threadpool(store.list, tenant)
    found = await server_tools(rt.hub.redis, rt.settings, tenant, servers)
    return [ToolPublic(name=f"mcp:{server.name}/{tool['name']}", description=tool["description"],
                       parameters=tool["parameters"])
            for server in servers if server.name in found
            for tool in found[server.name].tools if server.allows(tool["name"])]  # fmt: skip
