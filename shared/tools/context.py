"""What a tool is given (`ToolContext`), what running one gives back (`ToolResult`), and `ToolError`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from parley.shared.text import clean

if TYPE_CHECKING:
    import redis

    from parley.shared.settings import Settings

PREVIEW_CHARS = 300
"""Longest `ToolResult.preview` (the `tool_result` event's `preview`), in characters."""


class ToolError(Exception):
    """A failure the tool expected (bad input, refused URL, ...): the model is shown `error: <message>` as is.

    Any other exception a tool raises is shown as `error: <ExceptionType>: <message>` and logged.
    """


@dataclass(frozen=True)
class ToolContext:
    """What a tool may know about the turn it runs in; a parameter annotated `ToolContext` receives it."""

    tenant: str
    session_id: str
    job_id: str
    redis: redis.Redis
    """The text client (`decode_responses=True`) the worker uses."""
    settings: Settings
    memory: bool = True
    """False for a turn without session memory (a `/v1/chat/completions` call that brought its own
    history): it has no notes, and `remember` / `recall` refuse."""


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one tool call, success or not."""

    ok: bool
    content: str
    """What the model is given: the result text, or `error: ...` when `ok` is false."""
    preview: str
    """At most `PREVIEW_CHARS` characters of `content`, for the `tool_result` event."""
    images: tuple[str, ...] = ()
    """Images the tool returned (an MCP server's image content), as `data:` URIs; the model sees them."""

    @classmethod
    def of(cls, ok: bool, content: str, images: tuple[str, ...] = ()) -> ToolResult:
        """The result with lone surrogates replaced (`clean`): a tool's text reaches Redis and Lua scripts."""
        content = clean(content)
        return cls(ok=ok, content=content, preview=preview(content), images=images)


def preview(text: str) -> str:
    """`text` cut to `PREVIEW_CHARS` characters, an ellipsis marking the cut."""
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
