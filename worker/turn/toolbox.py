"""The tools one turn may call, whatever serves them: the deployment's own (`ToolRegistry`), the tenant's
MCP servers' (`mcp:<server>/<tool>`, worker/mcp/) and the client's own (`/v1/chat/completions` `tools`,
which the client runs: a call of one ends the turn).

The model knows each tool by a *model name*, a valid OpenAI function name (`^[a-zA-Z0-9_-]{1,64}$`);
events, approvals and the agent's `tools` know it by its *shown name* (`calculator`,
`mcp:github/create_issue`). For the built-ins and the client's tools both are the same.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from parley.tools import ToolContext, ToolRegistry, ToolResult

MCP_PREFIX = "mcp:"


class RemoteTools(Protocol):
    """Tools served elsewhere (an MCP server's), as the toolbox uses them."""

    specs: list[dict[str, Any]]
    """Chat Completions `tools` entries, each `function.name` a model name."""

    def shown_name(self, model_name: str) -> str | None:
        """`mcp:<server>/<tool>` for a model name these tools have, else None."""

    async def run(self, model_name: str, arguments: str, ctx: ToolContext) -> ToolResult:
        """Call the tool; never raises for the server's problems (an `ok=False` result instead)."""


@dataclass
class Toolbox:
    registry: ToolRegistry
    builtin: list[str]
    """The agent's built-in tool names (its `tools` without the `mcp:` ones)."""
    ctx: ToolContext
    threads: Executor | None
    remote: RemoteTools | None = None
    client: list[dict[str, Any]] = field(default_factory=list)
    """The client's function tools, as its request gave them."""
    approval: list[str] = field(default_factory=list)
    """The agent's `approval` patterns (fnmatch, on shown names)."""

    def specs(self) -> list[dict[str, Any]]:
        """Every tool the model is offered, built-ins first."""
        specs = self.registry.openai_tools(self.builtin) if self.builtin else []
        if self.remote is not None:
            specs += self.remote.specs
        return specs + self.client

    def shown_name(self, model_name: str) -> str:
        if self.remote is not None:
            shown = self.remote.shown_name(model_name)
            if shown is not None:
                return shown
        return model_name

    def has(self, model_name: str) -> bool:
        """Whether the agent (not the client) has this tool."""
        remote = self.remote is not None and self.remote.shown_name(model_name) is not None
        return model_name in self.builtin or remote

    def is_client(self, model_name: str) -> bool:
        return any(spec["function"]["name"] == model_name for spec in self.client)

    def needs_approval(self, model_name: str) -> bool:
        shown = self.shown_name(model_name)
        return any(fnmatch.fnmatchcase(shown, pattern) for pattern in self.approval)

    def allowed(self) -> list[str]:
        """The shown names of the tools the agent has, for the model's error when it calls another."""
        names = list(self.builtin)
        if self.remote is not None:
            names += [self.remote.shown_name(spec["function"]["name"]) or "" for spec in self.remote.specs]
        return sorted(names)

    async def run(self, model_name: str, arguments: str) -> ToolResult:
        """Run one call of an agent's tool (not a client's: the client runs those)."""
        if self.remote is not None and self.remote.shown_name(model_name) is not None:
            return await self.remote.run(model_name, arguments, self.ctx)
        if model_name not in self.builtin:
            return ToolResult.of(False, f"error: this agent has no tool named {model_name!r}; it may use: "
                                        f"{', '.join(self.allowed()) or 'none'}")  # fmt: skip
        return await self.registry.run(model_name, arguments, self.ctx, self.threads)


def split_names(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """An agent's `tools` as (built-in names, `mcp:` names)."""
    builtin: list[str] = []
    mcp: list[str] = []
    for name in names:
        (mcp if name.startswith(MCP_PREFIX) else builtin).append(name)
    return builtin, mcp
