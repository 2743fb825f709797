"""The `openai` provider: OpenAI or any OpenAI-compatible server, through the official SDK's async
client, which retries 429, 5xx and connection errors with backoff and honours Retry-After."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import openai

from parley.shared.settings import Settings
from parley.shared.text import clean

from .base import PROGRESS, REASONING, TEXT, ModelError, ModelStream, ToolCall
from .cache_key import PROMPT_CACHE_KEY

DEFAULT_LIMITS = openai.DEFAULT_CONNECTION_LIMITS
"""The SDK's own pool limits (1000 connections, 100 kept alive), raised when a worker runs more turns."""


class OpenAIProvider:
    """Streams through the OpenAI SDK's generic `post`, which keeps what matters of the SDK (auth,
    retries of 429/5xx/connection errors honouring Retry-After, timeouts, typed errors) and
    skips what costs: the typed request transform (~0.14 ms per message, growing with the
    history) and a pydantic model per chunk. `ChunkStream` also reads each answer to its end,
    so the connection is reused (the SDK's `AsyncStream` drains the body after `[DONE]` only on
    HTTP/1.1, and parses every event into a model). docs/benchmarks.md has the figures.

    One client (one connection pool) serves every turn of the worker; it belongs to the event
    loop that first uses it, and `aclose()` closes it.
    """

    def __init__(self, settings: Settings) -> None:
        self.client = openai.AsyncOpenAI(
            api_key=settings.openai_api_key or "not-needed",
            base_url=settings.openai_base_url,
            max_retries=settings.model_max_retries,
            timeout=openai.Timeout(settings.model_timeout_s, connect=10.0),
            http_client=openai.DefaultAsyncHttpxClient(limits=pool_limits(settings.worker_concurrency)),
        )
        self.stream_usage = settings.model_stream_usage
        self.response_format = settings.model_response_format
        self.prompt_cache_key = settings.model_prompt_cache_key

    @asynccontextmanager
    async def stream(self, *, model: str, messages: list[dict[str, Any]], temperature: float | None,
                     max_tokens: int | None, tools: list[dict[str, Any]] | None = None,
                     response_format: dict[str, Any] | None = None,
                     tool_choice: Any = None) -> AsyncIterator[ModelStream]:  # fmt: skip
        body = self._body(model, messages, temperature, max_tokens, tools, response_format, tool_choice)
        try:
            response = await self.client.post(
                "/chat/completions", body=body, cast_to=object, stream=True, stream_cls=ChunkStream
            )
        except openai.APIError as error:
            raise _model_error(error) from error
        usage: dict[str, Any] = {}
        calls: list[ToolCall] = []
        said: dict[str, str] = {}
        parts = _parts(response, usage, calls, said)
        try:
            yield ModelStream(parts, usage, calls, said)
        finally:
            # Closing a response not read to its end drops its connection (httpcore shields that from a
            # second cancel): the model sees the hang-up. The generator goes first (unless another task
            # is mid-read in it), so nothing reads the closed response later.
            with contextlib.suppress(RuntimeError):
                await parts.aclose()
            await response.response.aclose()

    def _body(self, model: str, messages: list[dict[str, Any]], temperature: float | None,
              max_tokens: int | None, tools: list[dict[str, Any]] | None,
              response_format: dict[str, Any] | None, tool_choice: Any = None) -> dict[str, Any]:  # fmt: skip
        """The request body; `response_format`, `stream_options` and `prompt_cache_key` (the session's, when
        the running task set one: cache_key.py) only when the settings allow them, `tool_choice` only with tools."""
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
        if tools:
            body["tools"] = tools
            if tool_choice is not None:
                body["tool_choice"] = tool_choice
        if response_format and self.response_format:
            body["response_format"] = response_format
        if self.stream_usage:
            body["stream_options"] = {"include_usage": True}
        cache_key = PROMPT_CACHE_KEY.get()
        if cache_key and self.prompt_cache_key:
            body["prompt_cache_key"] = cache_key
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return body

    async def aclose(self) -> None:
        """Close the connection pool (the worker calls it on exit)."""
        await self.client.close()


def pool_limits(concurrency: int) -> httpx2.Limits:
    """Room for every turn a worker runs at once to stream, and to keep its connection for the next step."""
    default_max = DEFAULT_LIMITS.max_connections or 0
    default_keep = DEFAULT_LIMITS.max_keepalive_connections or 0
    return httpx2.Limits(max_connections=max(default_max, concurrency),
                         max_keepalive_connections=max(default_keep, concurrency),
                         keepalive_expiry=DEFAULT_LIMITS.keepalive_expiry)  # fmt: skip


SSE_LINE_END = re.compile(rb"\r\n|\r|\n")


async def sse_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The lines of an SSE body, ended by CRLF, LF or CR only, as the SSE format has them. Not httpx's
    `aiter_lines`: like `str.splitlines` it also breaks at U+2028, U+0085 and other characters that a JSON string
    may hold unescaped, which cut a chunk's JSON in two. (No UTF-8 sequence holds a CR or LF byte, so splitting
    the bytes first is safe.)"""
    rest = b""
    async for chunk in chunks:
        *lines, rest = SSE_LINE_END.split(rest + chunk)
        for line in lines:
            yield line.decode("utf-8", errors="replace")
    if rest:
        yield rest.decode("utf-8", errors="replace")


class ChunkStream(openai.AsyncStream[dict]):  # type: ignore[type-arg]
    """The streamed chunks as plain dicts, read to the end of the body."""

    async def __aiter__(self) -> AsyncIterator[dict]:  # type: ignore[override, type-arg]
        async for line in sse_lines(self.response.aiter_bytes()):
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


async def _parts(response: ChunkStream, usage: dict[str, Any], calls: list[ToolCall],
                 said: dict[str, str] | None = None) -> AsyncGenerator[tuple[str, str], None]:  # fmt: skip
    """Text and reasoning pieces as they come (and a PROGRESS mark per piece of a call); the function
    calls, whose names and arguments arrive in fragments keyed by `index`, are put together into
    `calls` at the end. Every string is `clean`ed: a lone surrogate (`"\\ud800"` in the JSON) becomes
    U+FFFD here, before it can reach Redis or a Lua script. `said` gets the answer's `model` and `id`."""
    fragments: dict[int, dict[str, str]] = {}
    try:
        async for chunk in response:
            if said is not None and not said:
                said.update({name: clean(chunk[name])[:256] for name in ("model", "id")
                             if isinstance(chunk.get(name), str)})  # fmt: skip
            if chunk.get("usage"):
                usage.update(_clean_usage(chunk["usage"]))
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                # Servers name streamed reasoning differently: `reasoning_content` (DeepSeek, vLLM) or `reasoning`.
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(reasoning, str) and reasoning:
                    yield REASONING, clean(reasoning)
                content = delta.get("content")
                if isinstance(content, str) and content:
                    yield TEXT, clean(content)
                for fragment in delta.get("tool_calls") or ():
                    if _merge_call_fragment(fragments, fragment):
                        yield PROGRESS, ""
    except openai.APIError as error:
        raise _model_error(error) from error
    except httpx2.TimeoutException as error:  # httpx2: the openai SDK's transport
        raise ModelError("the model stopped sending mid-answer (read timed out)", timed_out=True) from error
    except (httpx2.HTTPError, json.JSONDecodeError) as error:
        raise ModelError(f"the model's stream broke off: {error.__class__.__name__}") from error
    calls.extend(ToolCall(id=clean(f["id"]) or f"call_{index}", name=clean(f["name"]),
                          arguments=clean(f["arguments"]) or "{}")
                 for index, f in sorted(fragments.items()))  # fmt: skip


def _clean_usage(usage: Any) -> dict[str, Any]:
    """The usage object's numbers with their names cleaned (they end up in the job's result), flat: the prompt
    tokens served from the provider's cache become `cached_tokens` (OpenAI's `prompt_tokens_details.cached_tokens`,
    else DeepSeek's `prompt_cache_hit_tokens`); other nested details are left out."""
    if not isinstance(usage, dict):
        return {}
    flat = {clean(str(name)): count for name, count in usage.items() if isinstance(count, int | float)}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if cached is None:
        cached = usage.get("prompt_cache_hit_tokens")
    if isinstance(cached, int) and not isinstance(cached, bool) and cached >= 0:
        flat["cached_tokens"] = cached
    return flat


def _merge_call_fragment(fragments: dict[int, dict[str, str]], fragment: Any) -> bool:
    """Add one fragment of a call; whether it carried content (an id, a name or arguments)."""
    if not isinstance(fragment, dict):
        return False
    try:
        index = int(fragment.get("index") or 0)
    except (TypeError, ValueError):
        index = 0
    call = fragments.setdefault(index, {"id": "", "name": "", "arguments": ""})
    function = fragment.get("function") or {}
    if not isinstance(function, dict):
        function = {}
    call_id, name, arguments = fragment.get("id"), function.get("name"), function.get("arguments")
    call["id"] = call["id"] or (call_id if isinstance(call_id, str) else "")
    call["name"] = call["name"] or (name if isinstance(name, str) else "")  # sent once, with the first fragment
    call["arguments"] += arguments if isinstance(arguments, str) else ""
    return bool(call_id or name or arguments)


def _model_error(error: openai.APIError) -> ModelError:
    if isinstance(error, openai.APITimeoutError):
        return ModelError("the model did not answer in time", timed_out=True)
    if isinstance(error, openai.APIStatusError):
        return ModelError(f"the model answered {error.status_code}: {error.message}", status=error.status_code)
    return ModelError(f"could not reach the model: {error.message}")
