"""A fake, OpenAI-compatible chat-completions server for Parley's tests and benchmarks.

Why it exists: the integration tests must prove what the model *saw* (memory), how
Parley reacts to rate limits, outages, slow and broken streams and cancellations, and
the benchmarks must measure Parley's own overhead.  A real provider can do none of that
deterministically, so this server answers ``echo: <last user message>`` (plus the
earlier user messages) and can be scripted over plain HTTP from another process.

Run it::

    python -m tests.model_server --port 8001 [--chunk-delay-ms 5] [--chunks 20]

or, inside a test process, ``base_url, stop = serve_in_thread()``.

Control API (JSON over HTTP, see the handlers below):

* ``POST /_control/script``  list of steps (or one step), appended to a FIFO; each chat
  request consumes one step.  Step fields, combinable: ``status`` (4xx/5xx error,
  with optional ``retry_after`` / ``retry_after_ms`` headers and ``body``), ``reply``,
  ``delay_ms``, ``chunk_delay_ms``, ``first_chunk_delay_ms``, ``chunks``, ``hang``,
  ``drop_after_chunks``, ``tool_calls`` (a list of ``{"name", "arguments"}``: the answer
  calls these functions, streamed as OpenAI streams them, arguments split over chunks;
  ``reply`` then is the text before the calls, default none) and ``reasoning`` (text
  streamed first as ``delta.reasoning_content``, as reasoning models do), ``keepalive_ms`` (a
  stream that, after its opening role chunk, sends only ``: keep-alive`` SSE comment lines
  every ``keepalive_ms`` ms, never any content, until the client leaves: an idle model), ``usage`` (an object
  ``{"prompt_tokens", "completion_tokens"}``: the token counts the answer reports instead of word counts),
  ``with_tools`` (true: only a request that offers tools takes this step, so a summary job's request, which
  offers none, cannot take a turn's scripted tool call; false: only one that offers none), ``model`` (the
  step is for requests naming this model only, so one model can fail while another answers). A request
  takes the first step queued that it may take.
  Text holding a lone UTF-16 surrogate is sent as JSON's ``"\\ud800"`` escape, as Python's
  ``json.dumps`` writes it.
* ``POST /_control/options`` / ``GET /_control/options``  default options at runtime.
* ``POST /_control/reset``  clear script, recorded requests, counters; restore options.
* ``GET /_control/requests``  every chat request: ``{"body", "status", "headers"}``, and for one
  answered, ``"usage"`` as sent.

Prompt caching: every answer's usage carries ``prompt_tokens_details: {"cached_tokens": N}``, N the
prompt tokens of the longest prefix this request shares with an earlier one (with the same
``prompt_cache_key``, or without one any earlier request), as a provider's prompt cache serves them
(tests/prompt_cache.py has the rules; option ``cache_block`` rounds N down to a multiple, 1: not
rounded). Option ``echo_words`` cuts the default echo answer to that many words (0: whole), so answers and
rolling summaries stay the size of a real model's.
* ``GET /_control/stats``  ``{"requests", "open_streams", "disconnects"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.prompt_cache import PrefixCache

MODEL_ID = "test-model"
_RECORDED_HEADERS = ("authorization", "x-stainless-retry-count")
_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


class ControlError(ValueError):
    """A malformed control request; answered with 400 so a typo in a test fails loudly."""


class _DropConnection(Exception):
    """Raised after a partial response so uvicorn closes the socket mid-body.

    An ASGI app has no other way to abort a connection; uvicorn logs such exceptions,
    which :class:`_HideDrops` suppresses because here the abort is the point.
    """


class _HideDrops(logging.Filter):
    """Keeps intentional ``drop_after_chunks`` aborts out of uvicorn's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _DropConnection)


def _non_negative(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ControlError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def _count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ControlError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ModelOptions:
    """Default pacing; ``chunks=None`` means one stream chunk per word."""

    chunk_delay_ms: float = 0.0
    first_chunk_delay_ms: float = 0.0
    chunks: int | None = None
    echo_words: int | None = None
    """The default (echo) answer cut to its first this many words; None: whole."""
    cache_block: int = 1
    """`cached_tokens` rounded down to a multiple of this (1: not rounded)."""

    def updated(self, changes: Mapping[str, Any]) -> ModelOptions:
        """Validated copy with ``changes`` applied (unknown keys are errors, not ignored)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ControlError(f"unknown option(s): {sorted(unknown)}")
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name in ("chunks", "echo_words"):
                clean[name] = None if value in (None, 0) else _count(value, name, 1)
            elif name == "cache_block":
                clean[name] = _count(value, name, 1)
            else:
                clean[name] = _non_negative(value, name)
        return dataclasses.replace(self, **clean)


@dataclass(frozen=True, slots=True)
class Step:
    """One scripted behaviour, consumed by exactly one chat request.

    ``delay_ms`` always applies first; then ``status`` wins over everything else;
    ``hang`` wins over ``drop_after_chunks``.  For a non-stream request ``hang`` means
    no answer until the client leaves, and ``drop_after_chunks`` cuts the JSON in half.
    """

    status: int | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    body: Any = None
    reply: str | None = None
    delay_ms: float = 0.0
    chunk_delay_ms: float | None = None
    first_chunk_delay_ms: float | None = None
    chunks: int | None = None
    hang: bool = False
    drop_after_chunks: int | None = None
    tool_calls: tuple[tuple[str, str], ...] | None = None
    """(name, arguments JSON text) of each function the answer calls."""
    reasoning: str | None = None
    keepalive_ms: float | None = None
    """Send only SSE comment lines, this often, after the role chunk: a stream that never sends content."""
    usage: tuple[int, int] | None = None
    """(prompt_tokens, completion_tokens) the answer reports, instead of the words it saw and sent."""
    with_tools: bool | None = None
    """True: only a request that offers tools takes this step; False: only one that offers none."""
    model: str | None = None
    """Only a request for this model takes the step (None: any request)."""

    @classmethod
    def parse(cls, raw: Any) -> Step:
        if not isinstance(raw, dict):
            raise ControlError(f"a step must be an object, got {raw!r}")
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ControlError(f"unknown step field(s): {sorted(unknown)}")
        clean: dict[str, Any] = {}
        for name, value in raw.items():
            if value is None:
                continue
            if name == "status":
                clean[name] = _count(value, name, 400)
                if value > 599:
                    raise ControlError(f"status must be 4xx or 5xx, got {value}")
            elif name in ("retry_after", "retry_after_ms", "delay_ms", "chunk_delay_ms", "first_chunk_delay_ms",
                          "keepalive_ms"):
                clean[name] = _non_negative(value, name)
                if name == "keepalive_ms" and not value:
                    raise ControlError("keepalive_ms must be above 0")
            elif name == "chunks":
                clean[name] = _count(value, name, 1)
            elif name == "drop_after_chunks":
                clean[name] = _count(value, name, 0)
            elif name in ("hang", "with_tools"):
                if not isinstance(value, bool):
                    raise ControlError(f"{name} must be a boolean, got {value!r}")
                clean[name] = value
            elif name in ("reply", "reasoning", "model"):
                if not isinstance(value, str):
                    raise ControlError(f"{name} must be a string, got {value!r}")
                clean[name] = value
            elif name == "tool_calls":
                clean[name] = _tool_calls(value)
            elif name == "usage":
                if not isinstance(value, dict) or set(value) != {"prompt_tokens", "completion_tokens"}:
                    raise ControlError(f"usage is {{'prompt_tokens': int, 'completion_tokens': int}}, got {value!r}")
                clean[name] = (_count(value["prompt_tokens"], "prompt_tokens", 0),
                               _count(value["completion_tokens"], "completion_tokens", 0))
            else:  # body: any JSON
                clean[name] = value
        return cls(**clean)


def _tool_calls(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise ControlError(f"tool_calls must be a non-empty list, got {value!r}")
    calls = []
    for call in value:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or set(call) - {"name", "arguments"}:
            raise ControlError(f"a tool call is {{'name': str, 'arguments': object or str}}, got {call!r}")
        arguments = call.get("arguments", {})
        calls.append((call["name"], arguments if isinstance(arguments, str) else json.dumps(arguments)))
    return tuple(calls)


@dataclass(slots=True)
class ModelServerState:
    """Everything mutable, kept on ``app.state.model``.

    All reads and writes happen on the server's event loop and never span an
    ``await``, so no lock is needed; control calls from other threads or processes
    arrive as HTTP requests on that same loop.
    """

    initial: ModelOptions
    options: ModelOptions
    script: deque[Step] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    request_count: int = 0
    open_streams: int = 0
    disconnects: int = 0
    # Set when the server shuts down so hung or slow answers end instead of blocking it.
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    prompt_cache: PrefixCache = field(default_factory=PrefixCache)

    def reset(self) -> None:
        self.options = self.initial
        self.script.clear()
        self.requests.clear()
        self.prompt_cache.clear()
        self.request_count = 0
        self.disconnects = 0


# --------------------------------------------------------------------------- answers


def _text(content: Any) -> str:
    """Message content as text: a string or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def echo_answer(messages: list[Any]) -> str:
    """The default answer: shows the last user message and the earlier ones (memory checks)."""
    users = [_text(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        return "echo: "
    answer = f"echo: {users[-1]}"
    if len(users) > 1:
        answer += " | earlier: " + " / ".join(users[:-1])
    return answer


def split_chunks(text: str, chunks: int | None) -> list[str]:
    """Words with their leading spaces, or exactly ``chunks`` near-equal slices (maybe empty)."""
    if chunks is None:
        pieces = re.findall(r"\s*\S+", text)
        tail = text[sum(map(len, pieces)) :]
        if tail:
            pieces.append(tail)
        return pieces
    size, extra = divmod(len(text), chunks)
    out: list[str] = []
    start = 0
    for i in range(chunks):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return out


def _cut(text: str, words: int | None) -> str:
    """The first `words` words of `text` (all of it for None)."""
    if words is None:
        return text
    return " ".join(text.split()[:words])


def _words(messages: list[Any]) -> int:
    return sum(len(_text(m.get("content")).split()) for m in messages if isinstance(m, dict))


def _dumps(obj: Any) -> bytes:
    """Compact JSON in UTF-8; with ASCII escapes when some text holds a lone surrogate (UTF-8 cannot)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode()


def _error_body(status: int, message: str) -> dict[str, Any]:
    if status == 429:
        kind, code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        kind, code = "server_error", "server_error"
    else:
        kind, code = "invalid_request_error", None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


# --------------------------------------------------------------------------- chat endpoint


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _Exchange:
    """One chat request being answered; runs against a client-disconnect watcher.

    The watcher is what lets ``hang`` end and ``stats.disconnects`` count when a client
    (e.g. a cancelled Parley worker) goes away, and stops delays early for it.
    """

    def __init__(self, state: ModelServerState, body: dict[str, Any], step: Step, send: Send,
                 record: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.state = state
        self.body = body
        self.record = record if record is not None else {}
        self.step = step
        self.send = send
        options = state.options
        self.chunk_delay = (step.chunk_delay_ms if step.chunk_delay_ms is not None else options.chunk_delay_ms) / 1000
        self.first_delay = (
            step.first_chunk_delay_ms if step.first_chunk_delay_ms is not None else options.first_chunk_delay_ms
        ) / 1000
        self.chunks = step.chunks if step.chunks is not None else options.chunks
        self.model = body.get("model") or MODEL_ID
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    async def run(self, receive: Receive) -> None:
        answer = asyncio.create_task(self._answer())
        watcher = asyncio.create_task(_until_disconnect(receive))
        try:
            await asyncio.wait((answer, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not answer.done():
                answer.cancel()
                self.state.disconnects += 1
                with contextlib.suppress(asyncio.CancelledError):
                    await answer
        if not answer.cancelled():
            answer.result()  # re-raises _DropConnection so uvicorn aborts the socket

    async def _sleep(self, seconds: float) -> None:
        """Sleeps, but wakes at server shutdown so a long delay cannot block ``stop()``."""
        if seconds > 0 and not self.state.closing.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):  # cheaper than wait_for: no extra task
                    await self.state.closing.wait()

    async def _answer(self) -> None:
        step = self.step
        await self._sleep(step.delay_ms / 1000)
        if step.status is not None:
            await self._send_error(step)
            return
        messages = self.body["messages"]
        if step.tool_calls:
            text = step.reply or ""
        else:
            text = step.reply if step.reply is not None else _cut(echo_answer(messages), self.state.options.echo_words)
        pieces = split_chunks(text, self.chunks) if text else []
        self.state.prompt_cache.block = self.state.options.cache_block
        prompt, completion = step.usage or (_words(messages), len(text.split()))
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": min(prompt, self.state.prompt_cache.serve(self.body))},
        }
        self.record["usage"] = usage
        if self.body.get("stream"):
            await self._stream(pieces, usage)
        else:
            await self._complete(text, pieces, usage)

    async def _send_error(self, step: Step) -> None:
        assert step.status is not None
        headers = list(_JSON_HEADERS)
        if step.retry_after is not None:
            value = int(step.retry_after) if step.retry_after.is_integer() else step.retry_after
            headers.append((b"retry-after", str(value).encode()))
        if step.retry_after_ms is not None:
            headers.append((b"retry-after-ms", str(step.retry_after_ms).encode()))
        body = step.body if step.body is not None else _error_body(step.status, f"scripted {step.status}")
        payload = _dumps(body)
        headers.append((b"content-length", str(len(payload)).encode()))
        await self.send({"type": "http.response.start", "status": step.status, "headers": headers})
        await self.send({"type": "http.response.body", "body": payload})

    async def _complete(self, text: str, pieces: list[str], usage: dict[str, Any]) -> None:
        if self.step.hang:
            await self.state.closing.wait()
            await self._send_error(Step(status=503, body=_error_body(503, "model server shutting down")))
            return
        # Same total latency a stream would have, so pacing options mean the same thing.
        await self._sleep(self.first_delay + self.chunk_delay * max(len(pieces) - 1, 0))
        payload = _dumps(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": self._message(text),
                        "logprobs": None,
                        "finish_reason": "tool_calls" if self.step.tool_calls else "stop",
                    }
                ],
                "usage": usage,
                "system_fingerprint": None,
            }
        )
        headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        if self.step.drop_after_chunks is not None:
            await self.send({"type": "http.response.body", "body": payload[: len(payload) // 2], "more_body": True})
            raise _DropConnection
        await self.send({"type": "http.response.body", "body": payload})

    def _message(self, text: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
        if self.step.reasoning:
            message["reasoning_content"] = self.step.reasoning
        if self.step.tool_calls:
            message["tool_calls"] = [
                {"id": f"call_{index}", "type": "function", "function": {"name": name, "arguments": arguments}}
                for index, (name, arguments) in enumerate(self.step.tool_calls)
            ]
        return message

    def _extra_deltas(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Deltas sent before the text (reasoning) and after it (tool calls, arguments in two halves)."""
        before = [{"reasoning_content": piece} for piece in split_chunks(self.step.reasoning or "", None)]
        after: list[dict[str, Any]] = []
        for index, (name, arguments) in enumerate(self.step.tool_calls or ()):
            half = len(arguments) // 2
            after.append({"tool_calls": [{"index": index, "id": f"call_{index}", "type": "function",
                                          "function": {"name": name, "arguments": arguments[:half]}}]})
            after.append({"tool_calls": [{"index": index, "function": {"arguments": arguments[half:]}}]})
        return before, after

    def _event(self, delta: dict[str, Any], finish: str | None, with_usage: bool) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if with_usage:
            chunk["usage"] = None
        return b"data: " + _dumps(chunk) + b"\n\n"

    async def _stream(self, pieces: list[str], usage: dict[str, Any]) -> None:
        step, send = self.step, self.send
        stream_options = self.body.get("stream_options")
        with_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
        stop_at: int | None = None
        if step.hang:
            stop_at = min(1, len(pieces))
        elif step.drop_after_chunks is not None:
            stop_at = min(step.drop_after_chunks, len(pieces))

        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        self.state.open_streams += 1
        try:
            event = self._event({"role": "assistant", "content": ""}, None, with_usage)
            await send({"type": "http.response.body", "body": event, "more_body": True})
            if step.keepalive_ms is not None:
                await self._keep_alive(step.keepalive_ms / 1000)
                return
            before, after = self._extra_deltas()
            for delta in before:
                await send({"type": "http.response.body", "body": self._event(delta, None, with_usage),
                            "more_body": True})
            for index, piece in enumerate(pieces):
                if index == stop_at:
                    break
                await self._sleep(self.first_delay if index == 0 else self.chunk_delay)
                event = self._event({"content": piece}, None, with_usage)
                await send({"type": "http.response.body", "body": event, "more_body": True})
            if stop_at is None:
                for delta in after:
                    await send({"type": "http.response.body", "body": self._event(delta, None, with_usage),
                                "more_body": True})
            if stop_at is not None:
                if not step.hang:
                    raise _DropConnection
                await self.state.closing.wait()
                await send({"type": "http.response.body", "body": b""})
                return
            tail = self._event({}, "tool_calls" if step.tool_calls else "stop", with_usage)
            if with_usage:
                final: dict[str, Any] = {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": usage,
                }
                tail += b"data: " + _dumps(final) + b"\n\n"
            await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n"})
        finally:
            self.state.open_streams -= 1


    async def _keep_alive(self, every_s: float) -> None:
        """SSE comment lines and nothing else, until the client leaves or the server shuts down."""
        while not self.state.closing.is_set():
            await self.send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
            await self._sleep(every_s)
        await self.send({"type": "http.response.body", "body": b""})


class _ChatCompletions:
    """``POST /v1/chat/completions`` as a raw ASGI app (needs ``receive`` for disconnects)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        state: ModelServerState = request.app.state.model
        headers = {name: request.headers[name] for name in _RECORDED_HEADERS if name in request.headers}
        raw = await request.body()
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise ValueError("body must be an object with a 'messages' list")
        except ValueError as exc:
            state.request_count += 1
            state.requests.append({"body": raw.decode(errors="replace"), "status": 400, "headers": headers})
            await JSONResponse(_error_body(400, f"invalid request: {exc}"), status_code=400)(scope, receive, send)
            return
        step = _take_step(state.script, body)
        state.request_count += 1
        record = {"body": body, "status": step.status or 200, "headers": headers}
        state.requests.append(record)
        await _Exchange(state, body, step, send, record).run(receive)


def _take_step(script: deque[Step], body: dict[str, Any]) -> Step:
    """The first scripted step this request may take, removed (`with_tools`: whether it offers tools; `model`: the
    model it names); else the default answer."""
    for index, step in enumerate(script):
        if (step.with_tools is None or step.with_tools == bool(body.get("tools"))) and (
                step.model is None or step.model == body.get("model")):  # fmt: skip
            del script[index]
            return step
    return Step()


# --------------------------------------------------------------------------- control API


def _state(request: Request) -> ModelServerState:
    return request.app.state.model


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise ControlError(f"invalid JSON: {exc}") from exc


async def _control_script(request: Request) -> Response:
    raw = await _json(request)
    steps = [Step.parse(item) for item in (raw if isinstance(raw, list) else [raw])]
    state = _state(request)
    state.script.extend(steps)
    return JSONResponse({"queued": len(state.script)})


async def _get_script(request: Request) -> Response:
    return JSONResponse([dataclasses.asdict(step) for step in _state(request).script])


async def _control_options(request: Request) -> Response:
    state = _state(request)
    if request.method == "POST":
        raw = await _json(request)
        if not isinstance(raw, dict):
            raise ControlError("options must be an object")
        state.options = state.options.updated(raw)
    return JSONResponse(dataclasses.asdict(state.options))


async def _control_reset(request: Request) -> Response:
    _state(request).reset()
    return JSONResponse({"ok": True})


async def _control_requests(request: Request) -> Response:
    return JSONResponse(_state(request).requests)


async def _control_stats(request: Request) -> Response:
    state = _state(request)
    return JSONResponse(
        {"requests": state.request_count, "open_streams": state.open_streams, "disconnects": state.disconnects}
    )


async def _models(request: Request) -> Response:
    model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "parley-tests"}
    return JSONResponse({"object": "list", "data": [model]})


async def _control_error(request: Request, exc: Exception) -> Response:
    return JSONResponse(_error_body(400, str(exc)), status_code=400)


def build_app(options: ModelOptions | None = None) -> Starlette:
    """A fresh app with its own state, so several servers can coexist in one process."""
    initial = options or ModelOptions()
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", _ChatCompletions(), methods=["POST"]),
            Route("/v1/models", _models, methods=["GET"]),
            Route("/_control/script", _control_script, methods=["POST"]),
            Route("/_control/script", _get_script, methods=["GET"]),
            Route("/_control/options", _control_options, methods=["GET", "POST"]),
            Route("/_control/reset", _control_reset, methods=["POST"]),
            Route("/_control/requests", _control_requests, methods=["GET"]),
            Route("/_control/stats", _control_stats, methods=["GET"]),
        ],
        exception_handlers={ControlError: _control_error},
    )
    app.state.model = ModelServerState(initial=initial, options=initial)
    return app


# --------------------------------------------------------------------------- serving


class _Server(uvicorn.Server):
    """Ends hung and delayed answers first, so shutdown never waits on a stalled stream."""

    def __init__(self, config: uvicorn.Config, state: ModelServerState) -> None:
        super().__init__(config)
        self.model_state = state

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.model_state.closing.set()
        await super().shutdown(sockets=sockets)


def _bind(host: str, port: int) -> socket.socket:
    """A bound listening socket, so port 0 resolves before serving starts.

    ``proto=IPPROTO_TCP`` matters: asyncio only sets TCP_NODELAY on accepted sockets
    whose proto says TCP, and without it every response pays a ~40 ms Nagle/delayed-ACK
    stall (uvicorn's own ``Config.bind_socket`` has exactly that problem).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _make_server(host: str, port: int, options: ModelOptions) -> tuple[_Server, socket.socket]:
    app = build_app(options)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    error_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDrops) for f in error_log.filters):
        error_log.addFilter(_HideDrops())
    return _Server(config, app.state.model), _bind(host, port)


def _base_url(host: str, sock: socket.socket) -> str:
    return f"http://{host}:{sock.getsockname()[1]}"


def serve_in_thread(
    port: int = 0, host: str = "127.0.0.1", startup_timeout: float = 10.0, **options: Any
) -> tuple[str, Callable[[], None]]:
    """Start the server on a daemon thread; returns ``(base_url, stop)``.

    ``options`` are :class:`ModelOptions` fields.  ``stop`` is idempotent and waits
    for the thread, so a test session leaves no sockets or threads behind.
    """
    server, sock = _make_server(host, port, ModelOptions().updated(options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="model-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(1)
            sock.close()
            raise RuntimeError("model server did not start")
        time.sleep(0.005)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)
        sock.close()

    return _base_url(host, sock), stop


async def _serve_cli(host: str, port: int, options: ModelOptions) -> None:
    server, sock = _make_server(host, port, options)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            break
        await asyncio.sleep(0.005)
    else:
        print(f"model-server listening on {_base_url(host, sock)}", flush=True)
    await serving


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible chat-completions server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (see the printed line)")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--first-chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=None, help="exact chunks per stream (default: one per word)")
    args = parser.parse_args(argv)
    try:
        options = ModelOptions().updated(
            {
                "chunk_delay_ms": args.chunk_delay_ms,
                "first_chunk_delay_ms": args.first_chunk_delay_ms,
                "chunks": args.chunks,
            }
        )
    except ControlError as exc:
        parser.error(str(exc))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_cli(args.host, args.port, options))


if __name__ == "__main__":
    main()
