"""An agent's MCP tools for one turn: which it has, what the model calls them, and a call's result.

The agent names `mcp:<server>/<tool>` or `mcp:<server>/*`; `load_remote_tools` reads those servers, gets
each one's tool list (cached, parley.shared.store.mcp_servers) and keeps what the server's `allowed_tools`
lets through. The model knows each tool by a name OpenAI accepts (`model_name`); events by its shown name
`mcp:<server>/<tool>`. A tool the agent names explicitly whose server is not registered, cannot list its
tools, or does not offer it is not shown to the model, and a call of it (the model may know it from earlier
turns) gets an `ok=False` result saying why. Nothing here raises for a server's problem.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis
from mcp_types import CallToolResult, EmbeddedResource, ImageContent, ResourceLink, TextContent, TextResourceContents

from parley.shared.settings import Settings
from parley.shared.store import images
from parley.shared.store.mcp_servers import McpServer, ServerTools, bounds, read_servers, server_tools
from parley.tools import ToolContext, ToolError, ToolResult, mcp_client
from parley.tools.registry import cut, parse_arguments

log = logging.getLogger("parley.mcp")

MODEL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
NAME_PREFIX = "mcp__"
DIGEST_CHARS = 10
MAX_IMAGES = 5
"""Most images of one result the model is shown (the rest are named in the text)."""
ALL = "*"


def model_name(server: str, tool: str) -> str:
    """The model's name for `mcp:<server>/<tool>`: `mcp__<server>__<tool>` when that is a valid OpenAI name and
    unambiguous (the server's name has no `__`), else a shortened form with a hash of the shown name."""
    plain = f"{NAME_PREFIX}{server}__{tool}"
    if "__" not in server and MODEL_NAME.fullmatch(plain):
        return plain
    digest = hashlib.sha256(f"{server}/{tool}".encode()).hexdigest()[:DIGEST_CHARS]
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", f"{server}__{tool}")
    return f"{NAME_PREFIX}{safe[:64 - len(NAME_PREFIX) - DIGEST_CHARS - 1]}_{digest}"


@dataclass(frozen=True)
class McpTool:
    """One tool of a server the turn may call, or (`problem` set) one it named but cannot call."""

    server: McpServer
    tool: str
    spec: dict[str, Any] | None = None
    """The Chat Completions `tools` entry; None when the model is not offered it."""
    revision: str | None = None
    problem: str | None = None

    @property
    def shown(self) -> str:
        return f"mcp:{self.server.name}/{self.tool}"


class McpTools:
    """The `RemoteTools` (worker/turn/toolbox.py) of a turn's MCP tools."""

    def __init__(self, settings: Settings, tools: dict[str, McpTool]) -> None:
        self.settings = settings
        self.tools = tools
        self.specs: list[dict[str, Any]] = [tool.spec for tool in tools.values() if tool.spec is not None]

    def shown_name(self, model_name: str) -> str | None:
        tool = self.tools.get(model_name)
        return tool.shown if tool is not None else None

    async def run(self, model_name: str, arguments: str, ctx: ToolContext) -> ToolResult:
        """Call the tool on its server within PARLEY_MCP_TIMEOUT_S and PARLEY_MCP_MAX_BYTES; never raises for the
        server's problems (the model gets `ok=False` and why)."""
        tool = self.tools.get(model_name)
        if tool is None:
            return ToolResult.of(False, f"error: no MCP tool is named {model_name!r} in this turn")
        if tool.problem is not None:
            return ToolResult.of(False, f"error: {tool.shown} cannot be called: {tool.problem}")
        try:
            args = parse_arguments(arguments)
        except ToolError as error:
            return ToolResult.of(False, f"error: {error}")
        try:
            result = await mcp_client.call_tool(tool.server.endpoint(), bounds(self.settings), tool.tool, args,
                                                tool.revision)  # fmt: skip
        except mcp_client.McpFailure as failure:
            log.info("MCP call %s failed: %s", tool.shown, failure.message)
            return ToolResult.of(False, f"error: {failure.message}")
        except Exception as error:  # a server's answer the SDK did not expect: still the model's to see
            log.warning("MCP call %s failed unexpectedly", tool.shown, exc_info=True)
            return ToolResult.of(False, f"error: the MCP server failed: {type(error).__name__}: {error}")
        return to_result(result, self.settings.max_image_bytes)


def to_result(result: CallToolResult, max_image_bytes: int) -> ToolResult:
    """What the model is given: the text parts joined, structured content as JSON text (unless a text part says
    it already), images as data URIs (checked, at most MAX_IMAGES), other content named; `isError` is ok=False."""
    texts: list[str] = []
    shown: list[str] = []
    for part in result.content:
        if isinstance(part, TextContent):
            texts.append(part.text)
        elif isinstance(part, ImageContent):
            note = _image(part.mime_type, part.data, shown, max_image_bytes)
            if note:
                texts.append(note)
        else:
            texts.append(_other(part))
    structured = result.structured_content
    if structured is not None and not _said(structured, texts):
        texts.append(json.dumps(structured, ensure_ascii=False))
    text = "\n".join(texts)
    if result.is_error:
        return ToolResult.of(False, cut("error: " + (text or "the tool failed")))
    if not text:
        text = f"(the tool returned {len(shown)} image(s): they follow)" if shown else "(the tool returned no content)"
    return ToolResult.of(True, cut(text), images=tuple(shown))


def _image(mime: str, data: str, shown: list[str], max_bytes: int) -> str | None:
    """Keep the image as a data URI (None), or say why it is left out."""
    uri = f"data:{mime};base64,{data}"
    if len(shown) >= MAX_IMAGES:
        return f"[an image ({mime}) left out: at most {MAX_IMAGES} images of one result are shown]"
    try:
        images.check(uri, max_bytes)
    except images.ImageError as error:
        return f"[an image ({mime[:60]}) left out: it {error}]"
    shown.append(uri)
    return None


def _other(part: Any) -> str:
    """Audio, resource links and embedded resources, in words (text resources with their text)."""
    if isinstance(part, ResourceLink):
        return f"[resource link: {part.uri} ({part.name})]"
    if isinstance(part, EmbeddedResource):
        resource = part.resource
        if isinstance(resource, TextResourceContents):
            return resource.text
        return f"[resource {resource.uri}: binary content left out]"
    return f"[{getattr(part, 'type', 'unknown')} content left out: the model is given text and images only]"


def _said(structured: Any, texts: list[str]) -> bool:
    """Whether a text part is already the structured content (as JSON, or the bare `result` a tool returned)."""
    for text in texts:
        try:
            if json.loads(text) == structured:
                return True
        except ValueError:
            pass
        if isinstance(structured, dict) and structured.keys() == {"result"} and structured["result"] == text:
            return True
    return False


def _wanted(names: Iterable[str]) -> dict[str, set[str]]:
    """`mcp:<server>/<tool>` names by server: the tools named, `*` for all."""
    wanted: dict[str, set[str]] = {}
    for name in names:
        server, slash, tool = name.removeprefix("mcp:").partition("/")
        if name.startswith("mcp:") and slash and server and tool:
            wanted.setdefault(server, set()).add(tool)
    return wanted


def _of_server(server: McpServer | None, name: str, asked: set[str], found: ServerTools | None) -> list[McpTool]:
    """The tools of one server the agent named: callable ones with a spec, named ones it cannot call with a
    problem."""
    if server is None:
        missing = McpServer(name=name, url="")
        return [McpTool(missing, tool, problem=f"no MCP server named {name!r} is registered")
                for tool in sorted(asked - {ALL})]  # fmt: skip
    if found is None or found.error is not None:
        problem = f"its server's tools could not be listed: {found.error if found else 'no answer'}"
        return [McpTool(server, tool, problem=problem) for tool in sorted(asked - {ALL})]
    offered = [tool for tool in found.tools if server.allows(tool["name"])]
    tools = [McpTool(server, tool["name"], spec=_spec(server, tool), revision=found.revision)
             for tool in offered if ALL in asked or tool["name"] in asked]  # fmt: skip
    for tool in sorted(asked - {ALL} - {tool["name"] for tool in offered}):
        why = "its server does not offer it" if server.allows(tool) else "its server's allowed_tools leave it out"
        tools.append(McpTool(server, tool, problem=why))
    return tools


def _spec(server: McpServer, tool: dict[str, Any]) -> dict[str, Any]:
    description = f"[MCP server {server.name}] {tool['description']}".strip()
    return {"type": "function", "function": {"name": model_name(server.name, tool["name"]),
                                             "description": description, "parameters": tool["parameters"]}}


def _by_model_name(tools: list[McpTool]) -> dict[str, McpTool]:
    """Each tool under its model name; a name taken already (only a contrived pair of names can do that) falls
    back to the hashed form, and the tool is dropped (logged) if that is taken too."""
    named: dict[str, McpTool] = {}
    for tool in sorted(tools, key=lambda t: (t.server.name, t.tool)):
        name = model_name(tool.server.name, tool.tool)
        if name in named:
            name = model_name(tool.server.name + "__", tool.tool)  # the hashed form
        if name in named:
            log.warning("MCP tool %s left out: its model name %s is taken", tool.shown, name)
            continue
        if tool.spec is not None and tool.spec["function"]["name"] != name:
            tool = McpTool(tool.server, tool.tool, spec={**tool.spec, "function": {**tool.spec["function"],
                                                                                   "name": name}},
                           revision=tool.revision)  # fmt: skip
        named[name] = tool
    return named


async def load_remote_tools(aio: aredis.Redis, settings: Settings, tenant: str,
                            names: list[str]) -> McpTools | None:  # fmt: skip
    """The turn's MCP tools for the agent's `mcp:` names (None when it names none). Reads the servers and their
    tool lists (asking servers whose list is not cached, all at once, each within PARLEY_MCP_TIMEOUT_S)."""
    wanted = _wanted(names)
    if not wanted:
        return None
    servers = await read_servers(aio, tenant, wanted, settings.sealer)
    found = await server_tools(aio, settings, tenant, servers.values())
    tools: list[McpTool] = []
    for name, asked in sorted(wanted.items()):
        tools += _of_server(servers.get(name), name, asked, found.get(name))
    return McpTools(settings, _by_model_name(tools))
