"""Model providers: each streams the answer's text pieces for a list of chat messages.

`openai` speaks to OpenAI or any OpenAI-compatible server through the official SDK, which retries
429, 5xx and connection errors with backoff and honours Retry-After. `demo` needs no network:
it streams a plainly labelled offline answer that still shows the conversation's memory.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import httpx2
import openai

from parley.shared.settings import Settings


class ModelError(Exception):
    """The model could not answer; `status` is its HTTP status when it gave one."""

    def __init__(self, message: str, status: int | None = None, timed_out: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.timed_out = timed_out


class ModelStream:
    """The answer's text pieces as they arrive; `close()` (from any thread) hangs up on the model."""

    def __init__(self, pieces: Iterator[str], close: Any = None, usage: dict[str, Any] | None = None) -> None:
        self._pieces = pieces
        self._close = close
        self.closed = False
        self.usage = usage if usage is not None else {}
        """Token counts as the model reported them (filled in as the stream ends), else empty."""

    def __iter__(self) -> Iterator[str]:
        for piece in self._pieces:
            if self.closed:
                return
            yield piece

    def close(self) -> None:
        self.closed = True
        if self._close is not None:
            self._close()


class Provider(Protocol):
    def stream(self, *, model: str, messages: list[dict[str, str]], temperature: float | None,
               max_tokens: int | None) -> Any:  # fmt: skip
        """A context manager yielding a `ModelStream`; leaving it closes the connection."""


class OpenAIProvider:
    """Streams through the OpenAI SDK's generic `post`, which keeps what matters of the SDK (auth,
    retries of 429/5xx/connection errors honouring Retry-After, timeouts, typed errors) and
    skips what costs: the typed request transform (~0.14 ms per message, growing with the
    history) and a pydantic model per chunk. `ChunkStream` also reads each answer to its end,
    so the connection is reused (openai 3.x's sync `Stream` stops at `[DONE]` and the
    connection is dropped). docs/benchmarks.md has the figures.
    """

    def __init__(self, settings: Settings) -> None:
        self.client = openai.OpenAI(
            api_key=settings.openai_api_key or "not-needed",
            base_url=settings.openai_base_url,
            max_retries=settings.model_max_retries,
            timeout=openai.Timeout(settings.model_timeout_s, connect=10.0),
        )
        self.stream_usage = settings.model_stream_usage

    @contextmanager
    def stream(self, *, model: str, messages: list[dict[str, str]], temperature: float | None,
               max_tokens: int | None) -> Iterator[ModelStream]:  # fmt: skip
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
        if self.stream_usage:
            body["stream_options"] = {"include_usage": True}
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        try:
            response = self.client.post(
                "/chat/completions", body=body, cast_to=object, stream=True, stream_cls=ChunkStream
            )
        except openai.APIError as error:
            raise _model_error(error) from error
        usage: dict[str, Any] = {}
        try:
            yield ModelStream(_pieces(response, usage), lambda: _hang_up(response), usage)
        finally:
            response.response.close()


class ChunkStream(openai.Stream[dict]):  # type: ignore[type-arg]
    """The streamed chunks as plain dicts, read to the end of the body."""

    def __iter__(self) -> Iterator[dict]:  # type: ignore[override, type-arg]
        for line in self.response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if not data or data == "[DONE]":
                continue  # keep reading: a body read to its end lets the connection be reused
            chunk = json.loads(data)
            if isinstance(chunk, dict) and chunk.get("error"):
                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else str(error)
                raise ModelError(f"the model sent an error mid-answer: {message}")
            yield chunk


def _hang_up(response: Any) -> None:
    """Close the model's connection from another thread, waking a read blocked on it.

    Closing the response alone waits for the reading thread; shutting the socket down does not.
    """
    stream = getattr(response, "response", None)
    network = stream.extensions.get("network_stream") if stream is not None else None
    sock = network.get_extra_info("socket") if network is not None else None
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _pieces(response: ChunkStream, usage: dict[str, Any]) -> Iterator[str]:
    try:
        for chunk in response:
            if chunk.get("usage"):
                usage.update(chunk["usage"])
            for choice in chunk.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    yield content
    except openai.APIError as error:
        raise _model_error(error) from error
    except (httpx2.HTTPError, json.JSONDecodeError) as error:  # httpx2: the openai SDK's transport
        raise ModelError(f"the model's stream broke off: {error.__class__.__name__}") from error


def _model_error(error: openai.APIError) -> ModelError:
    if isinstance(error, openai.APITimeoutError):
        return ModelError("the model did not answer in time", timed_out=True)
    if isinstance(error, openai.APIStatusError):
        return ModelError(f"the model answered {error.status_code}: {error.message}", status=error.status_code)
    return ModelError(f"could not reach the model: {error.message}")


class DemoProvider:
    """Offline answers, labelled as such, streamed a word at a time."""

    def __init__(self, settings: Settings) -> None:
        self.delay_s = settings.demo_chunk_delay_ms / 1000

    @contextmanager
    def stream(self, *, model: str, messages: list[dict[str, str]], temperature: float | None,
               max_tokens: int | None) -> Iterator[ModelStream]:  # fmt: skip
        answer = demo_answer(messages)
        prompt = sum(len(str(m["content"]).split()) for m in messages)
        usage = {"prompt_tokens": prompt, "completion_tokens": len(answer.split()),
                 "total_tokens": prompt + len(answer.split())}  # fmt: skip
        yield ModelStream(self._words(answer), usage=usage)

    def _words(self, text: str) -> Iterator[str]:
        words = text.split(" ")
        for index, word in enumerate(words):
            if self.delay_s:
                time.sleep(self.delay_s)
            yield word if index == len(words) - 1 else word + " "


def demo_answer(messages: list[dict[str, str]]) -> str:
    """What the demo model says: the message back, and the earlier one, to show memory works."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    text = f'[demo model, offline] You said: "{users[-1]}".'
    if len(users) > 1:
        text += f' Earlier you said: "{users[-2]}". I remember {len(users) - 1} earlier message(s).'
    text += " Set OPENAI_API_KEY or OPENAI_BASE_URL to talk to a real model."
    return text


def make_provider(settings: Settings) -> Provider:
    return OpenAIProvider(settings) if settings.provider == "openai" else DemoProvider(settings)
