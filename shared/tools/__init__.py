"""Tools agents may call: the `@tool` decorator, the registry that runs them, and the built-ins.

A tool is a typed Python function; its JSON Schema comes from its signature (or a pydantic model).
Agents name the tools they may use; a deployment offers the built-ins (`calculator`,
`current_time`, `http_get`, `remember`, `recall`) plus its own, through the `parley.tools`
entry-point group or modules named in PARLEY_TOOL_MODULES (docs/tools.md).
"""

from __future__ import annotations

from parley.tools.context import PREVIEW_CHARS, ToolContext, ToolError, ToolResult
from parley.tools.loading import (
    BUILTIN_MODULES,
    ENTRY_POINT_GROUP,
    ToolLoadError,
    clear_cache,
    default_registry,
    load_registry,
    unknown_tools,
)
from parley.tools.registry import MAX_RESULT_CHARS, ToolRegistry, tool
from parley.tools.schema import Tool

__all__ = [
    "BUILTIN_MODULES",
    "ENTRY_POINT_GROUP",
    "MAX_RESULT_CHARS",
    "PREVIEW_CHARS",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolLoadError",
    "ToolRegistry",
    "ToolResult",
    "clear_cache",
    "default_registry",
    "load_registry",
    "tool",
    "unknown_tools",
]
