"""Which tools a deployment offers: the built-ins, the `parley.tools` entry points, PARLEY_TOOL_MODULES.

Loaded once per process (cached by the one setting it depends on) and loaded at start, so a
misconfigured deployment fails there, naming the module, rather than in the middle of a turn.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from functools import lru_cache
from types import ModuleType

from parley.shared.settings import Settings, get_settings
from parley.tools.registry import TOOL_ATTRIBUTE, ToolRegistry, tools_of_module
from parley.tools.schema import Tool

ENTRY_POINT_GROUP = "parley.tools"

BUILTIN_MODULES = (
    "parley.tools.calculator",
    "parley.tools.clock",
    "parley.tools.http_get",
    "parley.tools.notes",
)


class ToolLoadError(RuntimeError):
    """A configured tool module or entry point could not be loaded (raised at start)."""


def load_registry(settings: Settings) -> ToolRegistry:
    """The deployment's tools: built-ins, then entry points, then `PARLEY_TOOL_MODULES` (cached per process).

    An entry point may name a module (all its `@tool` functions are offered) or one `@tool`
    function. Raises `ToolLoadError` naming the module or entry point that failed to import, or
    two tools that share a name.
    """
    return _load(settings.tool_modules)


def clear_cache() -> None:
    """Forget the loaded registry (tests that change entry points or modules call it)."""
    _load.cache_clear()


def default_registry() -> ToolRegistry:
    """`load_registry(get_settings())`: the process's registry."""
    return load_registry(get_settings())


MCP_NAME = re.compile(r"^mcp:[A-Za-z0-9_-]{1,64}/(\*|[A-Za-z0-9_.-]{1,128})$")
"""An MCP tool an agent may name: `mcp:<server>/<tool>` or `mcp:<server>/*` (every tool of the server)."""


def unknown_tools(names: list[str]) -> list[str]:
    """The names in `names` that no tool of this deployment has (agents naming them are refused with 422).

    A well-formed `mcp:<server>/<tool>` or `mcp:<server>/*` is known: the server may be registered later,
    and a tool its server does not offer is simply not offered to the model. A malformed one is unknown."""
    registry = default_registry()
    return [name for name in names
            if not (MCP_NAME.fullmatch(name) if name.startswith("mcp:") else registry.get(name) is not None)]


@lru_cache(maxsize=8)
def _load(tool_modules: str) -> ToolRegistry:
    registry = ToolRegistry()
    try:
        for module_name in BUILTIN_MODULES:
            _add_all(registry, tools_of_module(_import(module_name, "built-in tool module").__name__))
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            _add_all(registry, _entry_point_tools(entry_point))
        for module_name in (name.strip() for name in tool_modules.split(",")):
            if module_name:
                found = tools_of_module(_import(module_name, "PARLEY_TOOL_MODULES module").__name__)
                if not found:
                    raise ToolLoadError(f"PARLEY_TOOL_MODULES module {module_name!r} defines no @tool function")
                _add_all(registry, found)
    except ValueError as error:  # two tools of one name
        raise ToolLoadError(str(error)) from error
    return registry


def _add_all(registry: ToolRegistry, tools: list[Tool]) -> None:
    for made in tools:
        registry.add(made)


def _import(module_name: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as error:
        raise ToolLoadError(f"{what} {module_name!r} failed to import: {type(error).__name__}: {error}") from error


def _entry_point_tools(entry_point: importlib.metadata.EntryPoint) -> list[Tool]:
    where = f"entry point {entry_point.name!r} ({entry_point.value}) in group {ENTRY_POINT_GROUP!r}"
    try:
        loaded = entry_point.load()
    except Exception as error:
        raise ToolLoadError(f"{where} failed to load: {type(error).__name__}: {error}") from error
    if isinstance(loaded, ModuleType):
        found = tools_of_module(loaded.__name__)
        if not found:
            raise ToolLoadError(f"{where} names a module with no @tool function")
        return found
    made = getattr(loaded, TOOL_ATTRIBUTE, None)
    if not isinstance(made, Tool):
        raise ToolLoadError(f"{where} is neither a module nor a function decorated with @tool")
    return [made]
