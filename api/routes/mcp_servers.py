"""`/api/v1/mcp-servers`: the tenant's MCP servers (register, list, read, change, delete).

A registration is checked before anything is stored: the URL (http(s), no credentials in it, a host that
resolves to public addresses or ones PARLEY_PRIVATE_NETWORKS_ALLOWED names: else 422), then the server
itself, asked for its tools with the given headers (unreachable or failing: 502 `mcp_server_failed`; too
slow: 504 `mcp_server_timeout`). Header values are stored for the calls and never shown again.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from parley.shared.errors import (
    Conflict,
    McpServerFailed,
    McpServerTimeout,
)
from parley.shared.store import mcp_servers as store
from parley.shared.store.mcp_servers import McpServer, McpServerStore, ServerTools

from ..deps import Runtime, Tenant
from ..errors import documented
from ..runtime import WebRuntime
from ..service.addresses import check_public_url

router = APIRouter(prefix="/api/v1/mcp-servers", tags=["mcp-servers"],
                   responses=documented(401, 404, 409, 422, 502, 503, 504))  # fmt: skip


class McpServerCreate(BaseModel):
    """A server to register."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="1 to 64 letters, digits, '_' or '-'; agents name its tools mcp:<name>/<tool>.")
    url: str = Field(..., description="The server's Streamable HTTP endpoint (http:// or https://).")
    headers: dict[str, str] = Field(default_factory=dict, description="Sent on every request; never shown again.")
    allowed_tools: list[str] | None = Field(None, description="Only these of its tools are offered (default: all).")

    _name = field_validator("name")(store.check_name)
    _url = field_validator("url")(store.check_url)
    _headers = field_validator("headers")(store.check_headers)
    _allowed = field_validator("allowed_tools")(store.check_allowed_tools)


class McpServerUpdate(BaseModel):
    """Fields to change; `headers` replaces all the headers (null or {}: none)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    headers: dict[str, str] | None = None
    allowed_tools: list[str] | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else store.check_url(value)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else store.check_headers(value)

    _allowed = field_validator("allowed_tools")(store.check_allowed_tools)


class McpToolBrief(BaseModel):
    name: str
    description: str


class McpServerPublic(BaseModel):
    """A registered server as the API shows it: header names only, and the tools agents may use of it."""

    name: str
    url: str
    header_names: list[str]
    allowed_tools: list[str] | None
    tools: list[McpToolBrief] = Field(..., description="Its tools that `allowed_tools` lets through.")
    tools_error: str | None = Field(None, description="Why its tools could not be listed just now, if they could not.")


def _store(rt: WebRuntime) -> McpServerStore:
    return McpServerStore(rt.clients.text, rt.settings.max_mcp_servers, rt.settings.sealer)


def _shown(server: McpServer, found: ServerTools | None) -> McpServerPublic:
    tools = [] if found is None else [tool for tool in found.tools if server.allows(tool["name"])]
    return McpServerPublic(**server.public(), tools=[McpToolBrief(name=t["name"], description=t["description"])
                                                     for t in tools],
                           tools_error=None if found is None else found.error)  # fmt: skip


async def _check_address(rt: WebRuntime, url: str) -> None:
    """422 when the URL's host does not resolve or reaches a private address the operator did not allow."""
    await check_public_url(rt, url, purpose="MCP servers must be public unless PARLEY_PRIVATE_NETWORKS_ALLOWED "
                           "names them")  # fmt: skip


async def _connect(rt: WebRuntime, tenant: str, server: McpServer) -> ServerTools:
    """Check the address, ask the server for its tools (502/504 when it cannot say), cache them."""
    await _check_address(rt, server.url)
    found = await store.list_live(server, rt.settings)
    if found.error is not None:
        failure = McpServerTimeout if found.timed_out else McpServerFailed
        raise failure(f"could not list the tools of the MCP server {server.name!r}: {found.error}")
    return found


@router.post("", status_code=201, response_model=McpServerPublic)
async def create_server(body: McpServerCreate, rt: Runtime, tenant: Tenant) -> McpServerPublic:
    """Register an MCP server: it is asked for its tools first; nothing is stored when that fails."""
    servers = _store(rt)
    if await run_in_threadpool(servers.find, tenant, body.name) is not None:  # before a slow connect
        raise Conflict(f"an MCP server named {body.name!r} already exists")
    server = McpServer(name=body.name, url=body.url, headers=body.headers, allowed_tools=body.allowed_tools)
    found = await _connect(rt, tenant, server)
    server = await run_in_threadpool(servers.create, tenant, server)
    await store.remember(rt.hub.redis, rt.settings, tenant, server, found)
    return _shown(server, found)


@router.get("", response_model=list[McpServerPublic])
async def list_servers(rt: Runtime, tenant: Tenant) -> list[McpServerPublic]:
    """The tenant's servers, oldest first, each with its tools (cached, or asked for)."""
    servers = await run_in_threadpool(_store(rt).list, tenant)
    found = await store.server_tools(rt.hub.redis, rt.settings, tenant, servers)
    return [_shown(server, found.get(server.name)) for server in servers]


@router.get("/{name}", response_model=McpServerPublic)
async def get_server(name: str, rt: Runtime, tenant: Tenant) -> McpServerPublic:
    """One server, with its tools (cached, or asked for)."""
    server = await run_in_threadpool(_store(rt).get, tenant, name)
    found = await store.server_tools(rt.hub.redis, rt.settings, tenant, [server])
    return _shown(server, found.get(server.name))


@router.patch("/{name}", response_model=McpServerPublic)
async def update_server(name: str, body: McpServerUpdate, rt: Runtime, tenant: Tenant) -> McpServerPublic:
    """Change a server's URL, headers or allowed tools; a new URL or new headers are tried first, as at
    registration, and nothing changes when that fails."""
    servers = _store(rt)
    current = await run_in_threadpool(servers.get, tenant, name)
    fields: dict[str, Any] = body.model_dump(exclude_unset=True)
    changed = McpServer(name=current.name, url=fields.get("url") or current.url,
                        headers=(fields["headers"] or {}) if "headers" in fields else current.headers,
                        allowed_tools=fields["allowed_tools"] if "allowed_tools" in fields else current.allowed_tools,
                        created_at=current.created_at)  # fmt: skip
    found: ServerTools | None = None
    if changed.fingerprint() != current.fingerprint():
        found = await _connect(rt, tenant, changed)
    server = await run_in_threadpool(servers.update, tenant, changed)
    if found is not None:
        await store.remember(rt.hub.redis, rt.settings, tenant, server, found)
    else:
        found = (await store.server_tools(rt.hub.redis, rt.settings, tenant, [server])).get(server.name)
    return _shown(server, found)


@router.delete("/{name}", status_code=204)
async def delete_server(name: str, rt: Runtime, tenant: Tenant) -> Response:
    """Remove a server; agents naming its tools go on without them."""
    await run_in_threadpool(_store(rt).delete, tenant, name)
    return Response(status_code=204)
