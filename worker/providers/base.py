"""What every model provider gives the turn: one model step streamed as a `ModelStream` (its
reasoning and answer text as they arrive, then the function calls it asks for), `ModelError` when
the model cannot answer, and the `Provider` protocol the providers (openai.py, demo.py) follow.

Everything here runs on the worker's one event loop: a step is read with `async for`, and
cancelling the task that reads it is how a turn hangs up on the model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from parley.shared.text import clean


class ModelError(Exception):
    """The model could not answer; `status` is its HTTP status when it gave one."""

    def __init__(self, message: str, status: int | None = None, timed_out: bool = False) -> None:
        super().__init__(clean(message))  # a model's error text reaches the job record and the stream
        self.status = status
        self.timed_out = timed_out


TEXT = "text"
REASONING = "reasoning"
PROGRESS = "progress"
"""A piece of a function call: content that `parts()` counts as activity but does not yield."""


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for; `arguments` is the JSON text as the model wrote it."""

    id: str
    name: str
    arguments: str

    def as_message_part(self) -> dict[str, Any]:
        """The call in OpenAI's `tool_calls` shape (how it is stored and sent back to the model)."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


class ModelStream:
    """One model step as it arrives.

    `async for piece in stream` gives the answer's text pieces; `parts()` gives `(TEXT | REASONING,
    piece)` pairs. `tool_calls` and `usage` are complete once the iteration has ended. The caller
    keeps the idle timeout: it sets `on_activity` before iterating, and that is called for every
    piece of content the model sends, a fragment of a function call (never yielded) included, so
    a model that is busy writing a long call is not taken for an idle one.
    """

    def __init__(self, parts: AsyncIterator[tuple[str, str]], usage: dict[str, Any] | None = None,
                 tool_calls: list[ToolCall] | None = None, response: dict[str, str] | None = None) -> None:  # fmt: skip
        self._parts = parts
        self.on_activity: Callable[[], None] | None = None
        self.usage = usage if usage is not None else {}
        """Token counts as the model reported them (filled in as the stream ends), else empty."""
        self.tool_calls = tool_calls if tool_calls is not None else []
        self.response = response if response is not None else {}
        """What the server said of its answer, as it arrived: `model` (the model that answered), `id` (traces)."""

    async def parts(self) -> AsyncIterator[tuple[str, str]]:
        """`(TEXT | REASONING, piece)` as the model sends them; PROGRESS marks only count as activity."""
        async for part in self._parts:
            if self.on_activity is not None:
                self.on_activity()
            if part[0] != PROGRESS:
                yield part

    def raw(self) -> AsyncIterator[tuple[str, str]]:
        """Every part as the provider sends it, PROGRESS marks included, with no `on_activity` call: for a wrapper
        that reads ahead and streams the parts on in a `ModelStream` of its own (fallback.py)."""
        return self._parts

    def __aiter__(self) -> AsyncIterator[str]:
        return self._texts()

    async def _texts(self) -> AsyncIterator[str]:
        async for kind, piece in self.parts():
            if kind == TEXT:
                yield piece


class Provider(Protocol):
    def stream(self, *, model: str, messages: list[dict[str, Any]], temperature: float | None,
               max_tokens: int | None, tools: list[dict[str, Any]] | None = None,
               response_format: dict[str, Any] | None = None, tool_choice: Any = None
               ) -> AbstractAsyncContextManager[ModelStream]:  # fmt: skip
        """`async with provider.stream(...) as stream`: leaving it (normally, by an exception, or by the
        task being cancelled mid-read) closes the model's HTTP response at once.

        `tools` are OpenAI function tools the model may call, `tool_choice` OpenAI's choice among them (None:
        not sent); `response_format` asks for JSON."""
        ...

    async def aclose(self) -> None:
        """Close the provider's HTTP client (the worker calls it on exit)."""
        ...
