"""Names of the tools agents may list.

The tool registry and the agent loop that runs tools arrive with the "Agent loop" issue; until
then no tool is registered, so an agent that names one is refused with a clear 422 rather than
accepted and silently never given the tool.
"""

from __future__ import annotations

REGISTERED_TOOLS: frozenset[str] = frozenset()


def unknown_tools(names: list[str]) -> list[str]:
    """The names in `names` that no registered tool has."""
    return [name for name in names if name not in REGISTERED_TOOLS]
