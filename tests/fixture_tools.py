"""Tools that misbehave on purpose, registered in the processes under test through
`PARLEY_TOOL_MODULES=tests.fixture_tools` (the worker and the web import it at start)."""

from __future__ import annotations

import time

from parley.shared.tools import tool


@tool
def explode(reason: str = "boom") -> str:
    """Always fails: shows that a tool's exception reaches the model and the client, and the turn goes on."""
    raise RuntimeError(f"the tool broke: {reason}")


@tool
def slow(seconds: float) -> str:
    """Sleeps for `seconds`: past the tool timeout it is abandoned and reported as timed out."""
    time.sleep(seconds)
    return f"slept {seconds} s"
