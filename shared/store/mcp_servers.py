"""A tenant's MCP servers in Redis, and the tool list of each, cached.

`keys.mcp_servers(tenant)` is one hash: server name -> JSON `{url, headers, allowed_tools, created_at,
updated_at}`. Header values (a server's API key, as a rule) are kept there for the calls, sealed with
PARLEY_SECRETS_KEY when it is set (shared/sealing.py), and nothing here returns them: `McpServer.public()` shows
`header_names` only, and `repr` hides them.

`keys.mcp_tools(tenant, name)` caches the server's tools (as `tools/list` gave them, before `allowed_tools`)
with the revision it spoke and a fingerprint of the URL and headers it was asked with (a list fetched for an
older registration under the same name is not used), for PARLEY_MCP_TOOLS_TTL_S; a failed listing is kept
for at most `FAILURE_TTL_S`, so a dead server costs one wait per that many seconds, not one per turn.

The web writes through `McpServerStore` (sync); the worker reads with `read_servers` (`redis.asyncio`);
both get tool lists with `server_tools` (async: it may ask the server).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
import redis.asyncio as aredis

from parley.shared.clock import now_ms
from parley.shared.errors import Conflict, NotFound, TooManyMcpServers
from parley.shared.sealing import Sealer, Unsealable
from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.text import clean, clean_json
from parley.tools import mcp_client, network

log = logging.getLogger("parley.mcp")

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
"""The tool names Parley offers (the MCP spec's recommended set); a server's others are left out."""
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
MAX_URL_CHARS = 2048
MAX_HEADERS = 32
MAX_HEADER_VALUE_CHARS = 8192
MAX_ALLOWED_TOOLS = 256
MAX_DESCRIPTION_CHARS = 2000
FAILURE_TTL_S = 30
RESERVED_HEADERS = frozenset({
    "host", "content-length", "content-type", "content-encoding", "transfer-encoding", "connection", "keep-alive",
    "te", "trailer", "upgrade", "accept", "accept-encoding", "mcp-session-id", "mcp-protocol-version",
    "last-event-id",
})  # fmt: skip
"""Headers the MCP transport sets itself: a tenant may not send its own."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError("a server name is 1 to 64 letters, digits, '_' or '-'")
    return name


def check_url(url: str) -> str:
    """An http(s) URL with a host and no user or password in it (credentials go in `headers`)."""
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"the URL is longer than {MAX_URL_CHARS} characters")
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as error:
        raise ValueError(f"not a valid URL: {error}") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError("an MCP server's URL is http:// or https://")
    if not parsed.host:
        raise ValueError("the URL has no host")
    if parsed.userinfo:
        raise ValueError("the URL may not hold a user or password: send credentials in `headers`")
    if parsed.fragment:
        raise ValueError("the URL may not have a #fragment")
    return str(parsed)


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    for name, value in headers.items():
        if not HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name[:80]!r} is not a valid header name")
        lower = name.lower()
        if lower in RESERVED_HEADERS:
            raise ValueError(f"the {name} header is the MCP transport's own and cannot be set")
        if lower in seen:
            raise ValueError(f"the {name} header is given twice")
        seen.add(lower)
        if len(value) > MAX_HEADER_VALUE_CHARS:
            raise ValueError(f"the value of {name} is longer than {MAX_HEADER_VALUE_CHARS} characters")
        if any(ord(char) < 0x20 and char != "\t" or ord(char) > 0x7E for char in value):
            raise ValueError(f"the value of {name} holds a character other than printable ASCII")
    return headers


def check_allowed_tools(names: list[str] | None) -> list[str] | None:
    if names is None:
        return None
    if len(names) > MAX_ALLOWED_TOOLS:
        raise ValueError(f"at most {MAX_ALLOWED_TOOLS} allowed tools")
    for name in names:
        if not TOOL_NAME.fullmatch(name):
            raise ValueError(f"{name[:80]!r} is not a tool name (1 to 128 letters, digits, '_', '-' or '.')")
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class McpServer:
    """One registered server. `allowed_tools` None: all its tools."""

    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    allowed_tools: list[str] | None = None
    created_at: int = 0
    updated_at: int | None = None

    def public(self) -> dict[str, Any]:
        """As the API shows it: header names, never their values."""
        return {"name": self.name, "url": self.url, "header_names": sorted(self.headers),
                "allowed_tools": self.allowed_tools}  # fmt: skip

    def allows(self, tool: str) -> bool:
        return self.allowed_tools is None or tool in self.allowed_tools

    def endpoint(self) -> mcp_client.Endpoint:
        return mcp_client.Endpoint(url=self.url, headers=dict(self.headers))

    def fingerprint(self) -> str:
        """Changes when what the server is asked with (URL, headers) changes."""
        material = json.dumps([self.url, sorted(self.headers.items())], ensure_ascii=False)
        return hashlib.sha256(clean(material).encode()).hexdigest()[:32]


def encode_server(server: McpServer, sealer: Sealer) -> str:
    """The hash value of a server, its header values sealed (shared/sealing.py)."""
    headers = {name: sealer.seal(value) for name, value in server.headers.items()}
    return json.dumps({"url": server.url, "headers": headers, "allowed_tools": server.allowed_tools,
                       "created_at": server.created_at, "updated_at": server.updated_at})  # fmt: skip


def decode_server(name: str, raw: str | None, sealer: Sealer) -> McpServer | None:
    """The hash value as a server, its header values unsealed; None for a missing or unreadable one (logged,
    without its headers: a sealed value no key of PARLEY_SECRETS_KEY opens makes it unreadable)."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        headers = {header: sealer.unseal(value) for header, value in dict(data.get("headers") or {}).items()}
        return McpServer(name=name, url=data["url"], headers=headers,
                         allowed_tools=data.get("allowed_tools"), created_at=int(data.get("created_at") or 0),
                         updated_at=data.get("updated_at"))  # fmt: skip
    except Unsealable as error:
        log.warning("MCP server %r is left out: %s", name, error)
        return None
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("MCP server %r has an unreadable record; left out", name)
        return None


class McpServerStore:
    """The web's reads and writes; `tenant` scopes every call."""

    def __init__(self, r: redis.Redis, max_servers: int, sealer: Sealer) -> None:
        """`sealer`: the settings' (PARLEY_SECRETS_KEY), which seals header values as they are written."""
        self.r = r
        self.max_servers = max_servers
        self.sealer = sealer

    def list(self, tenant: str) -> list[McpServer]:
        """The tenant's servers, oldest first."""
        raw: dict[str, str] = self.r.hgetall(keys.mcp_servers(tenant))  # type: ignore[assignment]
        servers = [decode_server(name, value, self.sealer) for name, value in raw.items()]
        return sorted((s for s in servers if s is not None), key=lambda s: (s.created_at, s.name))

    def find(self, tenant: str, name: str) -> McpServer | None:
        if not NAME.fullmatch(name):
            return None
        return decode_server(name, self.r.hget(keys.mcp_servers(tenant), name), self.sealer)  # type: ignore[arg-type]

    def get(self, tenant: str, name: str) -> McpServer:
        server = self.find(tenant, name)
        if server is None:
            raise NotFound(f"MCP server {name[:80]!r} not found")
        return server

    def create(self, tenant: str, server: McpServer) -> McpServer:
        """Store a new server: 409 when the name is taken or the tenant holds `max_servers` already (checked and
        written in one transaction, so two requests at once cannot both pass)."""
        key = keys.mcp_servers(tenant)
        server = McpServer(server.name, server.url, server.headers, server.allowed_tools, now_ms(), None)

        def write(pipe: redis.client.Pipeline) -> None:
            if pipe.hexists(key, server.name):
                raise Conflict(f"an MCP server named {server.name!r} already exists")
            if pipe.hlen(key) >= self.max_servers:  # type: ignore[operator]
                raise TooManyMcpServers(f"this tenant has {self.max_servers} MCP servers, the most it may hold "
                                        "(PARLEY_MAX_MCP_SERVERS): delete one first")  # fmt: skip
            pipe.multi()
            pipe.hset(key, server.name, encode_server(server, self.sealer))
            pipe.delete(keys.mcp_tools(tenant, server.name))

        self.r.transaction(write, key)
        return server

    def update(self, tenant: str, server: McpServer) -> McpServer:
        """Replace a server's record (404 if it was deleted meanwhile). Its cached tool list stays: it is used
        only while the URL and headers are those it was listed with (`McpServer.fingerprint`)."""
        key = keys.mcp_servers(tenant)
        server = McpServer(server.name, server.url, server.headers, server.allowed_tools, server.created_at,
                           now_ms())  # fmt: skip

        def write(pipe: redis.client.Pipeline) -> None:
            if not pipe.hexists(key, server.name):
                raise NotFound(f"MCP server {server.name!r} not found")
            pipe.multi()
            pipe.hset(key, server.name, encode_server(server, self.sealer))

        self.r.transaction(write, key)
        return server

    def delete(self, tenant: str, name: str) -> None:
        if not NAME.fullmatch(name):
            raise NotFound(f"MCP server {name[:80]!r} not found")
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.mcp_servers(tenant), name)
            pipe.delete(keys.mcp_tools(tenant, name))
            removed, _ = pipe.execute()
        if not removed:
            raise NotFound(f"MCP server {name[:80]!r} not found")


async def read_servers(aio: aredis.Redis, tenant: str, names: Iterable[str], sealer: Sealer) -> dict[str, McpServer]:
    """The tenant's servers of these names that exist (one round trip; the worker's read), header values unsealed."""
    wanted = sorted({name for name in names if NAME.fullmatch(name)})
    if not wanted:
        return {}
    values = await aio.hmget(keys.mcp_servers(tenant), wanted)
    found = {name: decode_server(name, value, sealer) for name, value in zip(wanted, values, strict=True)}
    return {name: server for name, server in found.items() if server is not None}


@dataclass(frozen=True)
class ServerTools:
    """A server's tools as Parley offers them (`name`, `description`, `parameters`), or why there are none."""

    tools: list[dict[str, Any]]
    revision: str | None = None
    error: str | None = None
    timed_out: bool = False


def bounds(settings: Settings) -> mcp_client.Bounds:
    return mcp_client.Bounds(allowed=network.parse_allowlist(settings.private_networks_allowed),
                             timeout_s=settings.mcp_timeout_s, max_bytes=settings.mcp_max_bytes)  # fmt: skip


def offered(raw_tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`tools/list` entries as Parley keeps them: valid names only, each once, text cleaned, descriptions cut,
    parameters an object schema."""
    tools: list[dict[str, Any]] = []
    seen: set[str] = set()
    for raw in raw_tools:
        name = raw.get("name")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name) or name in seen:
            continue
        seen.add(name)
        description = raw.get("description")
        description = description if isinstance(description, str) else ""
        schema = raw.get("inputSchema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            schema = {"type": "object", "properties": {}}
        tools.append({"name": name, "description": clean(description)[:MAX_DESCRIPTION_CHARS],
                      "parameters": clean_json(schema)})  # fmt: skip
    return tools


async def list_live(server: McpServer, settings: Settings) -> ServerTools:
    """Ask the server for its tools now (no cache); a failure is in `error`."""
    try:
        listing = await mcp_client.list_tools(server.endpoint(), bounds(settings))
    except mcp_client.McpFailure as failure:
        return ServerTools(tools=[], error=failure.message, timed_out=failure.timed_out)
    return ServerTools(tools=offered(listing.tools), revision=listing.revision)


async def remember(aio: aredis.Redis, settings: Settings, tenant: str, server: McpServer, found: ServerTools) -> None:
    """Cache `found` for the server (a failure for at most FAILURE_TTL_S); nothing with a TTL of 0."""
    ttl = settings.mcp_tools_ttl_s if found.error is None else min(settings.mcp_tools_ttl_s, FAILURE_TTL_S)
    if ttl <= 0:
        return
    entry = {"fingerprint": server.fingerprint(), "tools": found.tools, "revision": found.revision,
             "error": found.error}  # fmt: skip
    await aio.set(keys.mcp_tools(tenant, server.name), json.dumps(entry), ex=ttl)


def _cached(raw: str | None, server: McpServer) -> ServerTools | None:
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
        if entry.get("fingerprint") != server.fingerprint():
            return None
        return ServerTools(tools=list(entry["tools"]), revision=entry.get("revision"), error=entry.get("error"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


async def server_tools(aio: aredis.Redis, settings: Settings, tenant: str,
                       servers: Iterable[McpServer]) -> dict[str, ServerTools]:  # fmt: skip
    """Each server's tools: cached, or asked for (all at once, each within PARLEY_MCP_TIMEOUT_S) and cached."""
    servers = list(servers)
    if not servers:
        return {}
    cached = await aio.mget([keys.mcp_tools(tenant, server.name) for server in servers])
    found = {server.name: _cached(raw, server) for server, raw in zip(servers, cached, strict=True)}
    stale = [server for server in servers if found[server.name] is None]
    fresh = await asyncio.gather(*(list_live(server, settings) for server in stale))
    for server, tools in zip(stale, fresh, strict=True):
        found[server.name] = tools
        if tools.error:
            log.info("MCP server %r of tenant %r: its tools could not be listed: %s", server.name, tenant, tools.error)
        await remember(aio, settings, tenant, server, tools)
    return {name: tools for name, tools in found.items() if tools is not None}
