"""The async `openai` provider against the real scripted model server (tests/model_server.py, a
subprocess), on its own event loop and without a worker: what it streams, how it fails, how it
retries, and that a cancelled reader hangs up on the model while a finished one leaves its
connection for the next step.

A mid-answer `error` chunk is one thing the model server cannot script, so that test serves one
answer from a few lines of asyncio in the test itself."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from parley.shared.settings import Settings
from parley.worker.providers.base import REASONING, TEXT, ModelError, ModelStream
from parley.worker.providers.openai import OpenAIProvider
from tests.harness import ModelServer

USER = [{"role": "user", "content": "hello there model"}]
Make = Callable[..., OpenAIProvider]
"""`make_provider`: a provider for a base URL and settings."""
SETTINGS_ENV = {field.alias.upper() for field in Settings.model_fields.values() if field.alias}


@pytest.fixture
def server(model_server: ModelServer) -> ModelServer:
    model_server.control("reset", {})
    return model_server


@pytest.fixture
def make_provider(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., OpenAIProvider]]:
    """`make_provider(base_url, PARLEY_X="1")`: a provider from exactly these settings (no `.env`)."""
    for name in list(os.environ):
        if name.upper() in SETTINGS_ENV:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

    def make(base_url: str, **env: str) -> OpenAIProvider:
        for name, value in {"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "test", **env}.items():
            monkeypatch.setenv(name, value)
        return OpenAIProvider(Settings())  # type: ignore[call-arg]

    yield make


def run(provider: OpenAIProvider, step: Callable[[], Awaitable[Any]]) -> Any:
    """Run `step` on a fresh event loop, closing the provider's pool after it."""

    async def main() -> Any:
        try:
            return await step()
        finally:
            await provider.aclose()

    return asyncio.run(main())


async def read_all(provider: OpenAIProvider, **kwargs: Any) -> tuple[list[tuple[str, str]], ModelStream, int]:
    """Every part of one step, the stream, and how many times it reported activity."""
    activity = 0

    def seen() -> None:
        nonlocal activity
        activity += 1

    async with provider.stream(model="m", messages=USER, temperature=None, max_tokens=None, **kwargs) as stream:
        stream.on_activity = seen
        parts = [part async for part in stream.parts()]
    return parts, stream, activity


def connections(provider: OpenAIProvider) -> list[Any]:
    """The connections in the provider's pool (the httpcore pool behind the SDK's httpx2 client)."""
    return list(provider.client._client._transport._pool.connections)  # type: ignore[attr-defined]


def wait_stats(server: ModelServer, **expected: int) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        stats = server.control("stats")
        if all(stats[name] == value for name, value in expected.items()) or time.monotonic() > deadline:
            return stats  # type: ignore[no-any-return]
        time.sleep(0.02)


def test_text_reasoning_and_usage_stream_in(server: ModelServer, make_provider: Make) -> None:
    server.control("script", {"reasoning": "let me think", "reply": "Hello there, friend."})
    provider = make_provider(server.base_url)
    parts, stream, activity = run(provider, lambda: read_all(provider))
    assert "".join(p for kind, p in parts if kind == REASONING) == "let me think"
    assert [p for kind, p in parts if kind == TEXT] == ["Hello", " there,", " friend."]
    assert activity == len(parts)
    # The scripted model reports prompt_tokens_details.cached_tokens (0: nothing before it): read into the flat usage.
    assert stream.usage == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6, "cached_tokens": 0}
    assert stream.tool_calls == []
    sent = server.control("requests")[-1]["body"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_tool_call_fragments_are_merged(server: ModelServer, make_provider: Make) -> None:
    calls = [{"name": "calculator", "arguments": {"expression": "6*7"}}, {"name": "current_time", "arguments": "{}"}]
    server.control("script", {"reply": "Checking.", "tool_calls": calls})
    provider = make_provider(server.base_url)
    tools = [{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}]
    parts, stream, activity = run(provider, lambda: read_all(provider, tools=tools))
    assert parts == [(TEXT, "Checking.")]
    assert activity == 1 + 4  # each call comes in two fragments: activity, never yielded
    assert [(c.id, c.name, c.arguments) for c in stream.tool_calls] == [
        ("call_0", "calculator", '{"expression": "6*7"}'), ("call_1", "current_time", "{}")]  # fmt: skip
    assert server.control("requests")[-1]["body"]["tools"] == tools


def test_a_500_is_retried_then_answers(server: ModelServer, make_provider: Make) -> None:
    server.control("script", [{"status": 500, "retry_after_ms": 10}, {"status": 429, "retry_after_ms": 10},
                              {"reply": "third time lucky"}])  # fmt: skip
    provider = make_provider(server.base_url, PARLEY_MODEL_MAX_RETRIES="2")
    parts, _, _ = run(provider, lambda: read_all(provider))
    assert "".join(p for _, p in parts) == "third time lucky"
    requests = server.control("requests")
    assert [r["status"] for r in requests] == [500, 429, 200]
    assert [r["headers"].get("x-stainless-retry-count") for r in requests] == ["0", "1", "2"]


def test_retries_run_out_as_a_model_error(server: ModelServer, make_provider: Make) -> None:
    server.control("script", [{"status": 503, "retry_after_ms": 10}] * 2)
    provider = make_provider(server.base_url, PARLEY_MODEL_MAX_RETRIES="1")
    with pytest.raises(ModelError) as caught:
        run(provider, lambda: read_all(provider))
    assert caught.value.status == 503 and not caught.value.timed_out and "503" in str(caught.value)


def test_a_broken_stream_and_a_silent_one_are_model_errors(server: ModelServer, make_provider: Make) -> None:
    server.control("script", [{"reply": "one two three", "drop_after_chunks": 1}, {"reply": "one two", "hang": True}])
    provider = make_provider(server.base_url, PARLEY_MODEL_TIMEOUT_S="0.5", PARLEY_MODEL_MAX_RETRIES="0")
    with pytest.raises(ModelError) as broken:
        run(provider, lambda: read_all(provider))
    assert "broke off" in str(broken.value) and not broken.value.timed_out
    provider = make_provider(server.base_url, PARLEY_MODEL_TIMEOUT_S="0.5", PARLEY_MODEL_MAX_RETRIES="0")
    with pytest.raises(ModelError) as silent:
        run(provider, lambda: read_all(provider))
    assert silent.value.timed_out


async def _one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTP/1.1 answer that starts well and then carries an `error` chunk, as some servers send."""
    head = await reader.readuntil(b"\r\n\r\n")
    lengths = [line.split(b":")[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")]
    length = int(lengths[0])
    await reader.readexactly(length)
    events = [{"choices": [{"index": 0, "delta": {"content": "Partly"}}]},
              {"error": {"message": "the model is overloaded", "type": "server_error"}}]  # fmt: skip
    body = b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
    await writer.drain()
    writer.close()


def test_an_error_chunk_mid_answer_is_a_model_error(make_provider: Make) -> None:
    async def step() -> tuple[list[str], ModelError | None]:
        server = await asyncio.start_server(_one_answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        provider = make_provider(f"http://127.0.0.1:{port}/v1", PARLEY_MODEL_MAX_RETRIES="0")
        texts: list[str] = []
        try:
            async with provider.stream(model="m", messages=USER, temperature=None, max_tokens=None) as stream:
                async for piece in stream:
                    texts.append(piece)
        except ModelError as error:
            return texts, error
        finally:
            await provider.aclose()
            server.close()
        return texts, None

    texts, error = asyncio.run(step())
    assert texts == ["Partly"]
    assert error is not None and "error mid-answer: the model is overloaded" in str(error) and error.status is None


def test_cancelling_the_reader_hangs_up_on_the_model(server: ModelServer, make_provider: Make) -> None:
    server.control("script", {"reply": "first and then nothing", "hang": True})
    provider = make_provider(server.base_url)

    async def step() -> tuple[list[str], bool, int, dict[str, Any]]:
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        texts: list[str] = []

        async def read() -> None:
            async with provider.stream(model="m", messages=USER, temperature=None, max_tokens=None) as stream:
                async for piece in stream:
                    texts.append(piece)
                    if not first.done():
                        first.set_result(None)

        task = asyncio.create_task(read())
        await asyncio.wait_for(first, 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # Seen while the provider's pool is still open: the hang-up is the cancel's doing, not aclose()'s.
        stats = await asyncio.to_thread(wait_stats, server, disconnects=1, open_streams=0)
        return texts, task.cancelled(), len(connections(provider)), stats

    texts, cancelled, pooled, stats = run(provider, step)
    assert texts == ["first"] and cancelled
    assert pooled == 0  # the hung-up connection is not kept for another request
    assert stats == {"requests": 1, "open_streams": 0, "disconnects": 1}


def test_leaving_the_step_early_hangs_up_too(server: ModelServer, make_provider: Make) -> None:
    server.control("script", {"reply": "first and then nothing", "hang": True})
    provider = make_provider(server.base_url)

    async def step() -> tuple[list[str], int, dict[str, Any]]:
        texts: list[str] = []
        async with provider.stream(model="m", messages=USER, temperature=None, max_tokens=None) as stream:
            async for piece in stream:
                texts.append(piece)
                break  # the caller has what it wanted, e.g. a tool call it will not wait out
        stats = await asyncio.to_thread(wait_stats, server, disconnects=1, open_streams=0)
        return texts, len(connections(provider)), stats

    texts, pooled, stats = run(provider, step)
    assert texts == ["first"] and pooled == 0
    assert stats == {"requests": 1, "open_streams": 0, "disconnects": 1}


def test_an_answer_read_to_its_end_leaves_its_connection_for_the_next(server: ModelServer, make_provider: Make) -> None:
    provider = make_provider(server.base_url)

    async def step() -> tuple[list[str], int, bool]:
        answers = []
        for _ in range(3):
            parts, _, _ = await read_all(provider)
            answers.append("".join(p for _, p in parts))
        pooled = connections(provider)
        return answers, len(pooled), all(c.is_idle() for c in pooled)

    answers, pooled, idle = run(provider, step)
    assert answers == ["echo: hello there model"] * 3
    assert pooled == 1 and idle  # one connection served all three answers and waits for the next
    assert server.control("stats")["disconnects"] == 0


def test_many_steps_stream_at_once_and_all_keep_their_connections(server: ModelServer, make_provider: Make) -> None:
    server.control("options", {"chunk_delay_ms": 50})  # the reset of the next test restores the default
    provider = make_provider(server.base_url, PARLEY_WORKER_CONCURRENCY="150")
    many = 120  # above the SDK's default of 100 connections kept alive

    async def step() -> tuple[list[str], float, int]:
        started = time.monotonic()
        results = await asyncio.gather(*(read_all(provider) for _ in range(many)))
        took = time.monotonic() - started
        return ["".join(p for _, p in parts) for parts, _, _ in results], took, len(connections(provider))

    answers, took, pooled = run(provider, step)
    assert answers == ["echo: hello there model"] * many
    assert took < many * 0.15 / 4, took  # one after another they would take about many * 0.15 s
    assert pooled == many  # every connection stays for the next step of its turn


def test_line_separators_inside_the_text_stay_in_it(server: ModelServer, make_provider: Make) -> None:
    """U+2028, U+2029 and U+0085 are line breaks to str.splitlines (and httpx's aiter_lines), but not to SSE: a
    JSON string may hold them raw, and the chunk must not be cut there."""
    text = "one\u2028two\u2029three\x85four\x1cfive"
    server.control("script", {"reply": text, "chunks": 1})
    provider = make_provider(server.base_url)
    parts, _, _ = run(provider, lambda: read_all(provider))
    assert "".join(p for kind, p in parts if kind == TEXT) == text
