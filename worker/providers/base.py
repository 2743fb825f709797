"""What every model provider gives the turn: one model step streamed as a `ModelStream` (its
reasoning and answer text as they arrive, then the function calls it asks for), `ModelError` when
the model cannot answer, and the `Provider` protocol the providers (openai.py, demo.py) follow."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
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
    """One model step as it arrives; `close()` (from any thread) hangs up on the model.

    Iterating gives the answer's text pieces; `parts()` gives `(TEXT | REASONING, piece)` pairs.
    `tool_calls` and `usage` are complete once the iteration has ended. `last_content_at` is when
    the model last sent content (text, reasoning or a piece of a call), for the idle timeout;
    `close(idle=True)` marks the hang-up as one for idleness (`idle`), not a cancel.
    """

    def __init__(self, parts: Iterator[tuple[str, str]], close: Any = None, usage: dict[str, Any] | None = None,
                 tool_calls: list[ToolCall] | None = None) -> None:  # fmt: skip
        self._parts = parts
        self._close = close
        self._lock = threading.Lock()
        self.closed = False
        self.idle = False
        self.last_content_at = time.monotonic()
        self.usage = usage if usage is not None else {}
        """Token counts as the model reported them (filled in as the stream ends), else empty."""
        self.tool_calls = tool_calls if tool_calls is not None else []

    def parts(self) -> Iterator[tuple[str, str]]:
        for part in self._parts:
            if self.closed:
                return
            self.last_content_at = time.monotonic()
            if part[0] != PROGRESS:
                yield part
        self.end()

    def __iter__(self) -> Iterator[str]:
        return (piece for kind, piece in self.parts() if kind == TEXT)

    def idle_for(self, now: float) -> float:
        """Seconds since the model last sent content."""
        return now - self.last_content_at

    def close(self, idle: bool = False) -> None:
        """Hang up, unless the step has ended (its connection may serve another request by then)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self.idle = idle
            if self._close is not None:
                self._close()

    def end(self) -> None:
        """The step is over (read to its end, or its connection given back): `close` does nothing from now on."""
        with self._lock:
            self.closed = True


class Provider(Protocol):
    def stream(self, *, model: str, messages: list[dict[str, Any]], temperature: float | None,
               max_tokens: int | None, tools: list[dict[str, Any]] | None = None,
               response_format: dict[str, Any] | None = None) -> Any:  # fmt: skip
        """A context manager yielding a `ModelStream`; leaving it closes the connection.

        `tools` are OpenAI function tools the model may call; `response_format` asks for JSON."""
