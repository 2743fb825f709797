"""Tools that misbehave on purpose, registered in the processes under test through
`PARLEY_TOOL_MODULES=tests.fixture_tools` (the worker and the web import it at start)."""

from __future__ import annotations

import time

from parley.tools import ToolContext, tool


@tool
def explode(reason: str = "boom") -> str:
    """Always fails: shows that a tool's exception reaches the model and the client, and the turn goes on."""
    raise RuntimeError(f"the tool broke: {reason}")


@tool
def slow(seconds: float) -> str:
    """Sleeps for `seconds`: past the tool timeout it is abandoned and reported as timed out."""
    time.sleep(seconds)
    return f"slept {seconds} s"


@tool
def unpaired(text: str = "") -> str:
    """Answers with a lone UTF-16 surrogate: the worker must store and stream U+FFFD instead."""
    return f"half a pair: \ud800 {text}".strip()


BUMPS_KEY = "parley-test:bumps"
"""Counts `bump` runs (a test's own key, outside Parley's `parley:` prefix), expiring after an hour."""


@tool
def bump(ctx: ToolContext) -> str:
    """A side effect: adds one to a counter in Redis, so a test can see how often the tool really ran."""
    with ctx.redis.pipeline() as pipe:
        pipe.incr(BUMPS_KEY)
        pipe.expire(BUMPS_KEY, 3600)
        count, _ = pipe.execute()
    return f"bumped to {count}"


@tool
def bump_then_wait(seconds: float, ctx: ToolContext) -> str:
    """`bump`'s side effect, then a wait of `seconds`: a test kills the worker during the wait, after the effect."""
    text = bump(ctx)
    time.sleep(seconds)
    return text
