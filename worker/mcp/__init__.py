"""The tenant's MCP servers' tools in a turn: `load_remote_tools` gives the toolbox a `RemoteTools` (McpTools)."""

from .tools import McpTools, load_remote_tools, model_name, to_result

__all__ = ["McpTools", "load_remote_tools", "model_name", "to_result"]
