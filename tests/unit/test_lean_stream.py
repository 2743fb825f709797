"""The lean SSE response (api/streams.py PlacedStreamingResponse): an idle stream costs little, and a
client going away, a cancel from outside and a normal end each end it the way they should."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest

from parley.api.hub import TenantStreams
from parley.api.streams import PlacedStreamingResponse

SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}, "http_version": "1.1", "method": "GET", "path": "/",
         "headers": []}  # fmt: skip
IDLE_STREAMS = 300
RESPONSE_BYTES_PER_IDLE_STREAM = 6500
"""What the response layer alone (no server, no middleware) may hold per idle stream, this test's own
client and request task included: Starlette's StreamingResponse and its task group held 10.8 KiB here,
the lean response 4.9 KiB."""


async def _idle_body(closed: list[bool]) -> AsyncIterator[str]:
    """A stream that sent its backlog and now waits for live events that never come."""
    try:
        yield "id: 1-0\ndata: {}\n\n"
        await asyncio.Event().wait()
        yield "never"
    finally:
        closed.append(True)


class Client:
    """A connection as the response sees it: sends are recorded; `leave()` makes `receive` say disconnect."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gone = asyncio.Event()

    async def receive(self) -> MutableMapping[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message["type"])

    def leave(self) -> None:
        self.gone.set()


def _response(streams: TenantStreams, closed: list[bool]) -> PlacedStreamingResponse:
    with streams.take("alice") as place:
        return PlacedStreamingResponse(place, _idle_body(closed), media_type="text/event-stream")


def test_an_idle_stream_ends_when_its_client_goes_away() -> None:
    streams, closed = TenantStreams(limit=1), list[bool]()

    async def run() -> None:
        client = Client()
        response = _response(streams, closed)
        task = asyncio.create_task(response(SCOPE, client.receive, client.send))
        await asyncio.sleep(0.05)
        assert client.sent == ["http.response.start", "http.response.body"] and not task.done()
        client.leave()
        async with asyncio.timeout(2):
            await task  # ends normally: no exception for a client that left
        assert not task.cancelled() and task.cancelling() == 0

    asyncio.run(run())
    assert closed == [True] and streams.open == {}


def test_a_cancel_from_outside_still_cancels_the_stream() -> None:
    """The disconnect watcher cancels the stream's task itself; a server cancelling it (shutdown) must
    not be mistaken for that and swallowed."""
    streams, closed = TenantStreams(limit=1), list[bool]()

    async def run() -> None:
        client = Client()
        task = asyncio.create_task(_response(streams, closed)(SCOPE, client.receive, client.send))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert closed == [True] and streams.open == {}


def test_a_client_leaving_after_the_end_cancels_nothing() -> None:
    streams = TenantStreams(limit=1)

    async def body() -> AsyncIterator[str]:
        yield "id: 1-0\ndata: {}\n\n"

    async def run() -> None:
        client = Client()
        with streams.take("alice") as place:
            response = PlacedStreamingResponse(place, body(), media_type="text/event-stream")
        await response(SCOPE, client.receive, client.send)
        client.leave()
        await asyncio.sleep(0.05)  # a cancel left pending would land here
        assert client.sent == ["http.response.start", "http.response.body", "http.response.body"]

    asyncio.run(run())
    assert streams.open == {}


def test_an_idle_stream_holds_little_in_its_response() -> None:
    """Many idle streams at once: what they hold between two snapshots, per stream, is the response's
    own cost (its task, its waits, its body's frames): the bound of issue 13's idle-stream target."""
    streams = TenantStreams(limit=IDLE_STREAMS + 1)

    async def run() -> int:
        clients = [Client() for _ in range(IDLE_STREAMS + 1)]
        warm = asyncio.create_task(_response(streams, [])(SCOPE, clients[0].receive, clients[0].send))
        await asyncio.sleep(0.05)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            tasks = [asyncio.create_task(_response(streams, [])(SCOPE, c.receive, c.send)) for c in clients[1:]]
            await asyncio.sleep(0.1)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        assert all(len(c.sent) == 2 for c in clients)  # every stream is idle, none ended
        filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
        held = sum(stat.size_diff for stat in after.filter_traces(filters).compare_to(before.filter_traces(filters),
                                                                                      "filename"))  # fmt: skip
        for client in clients:
            client.leave()
        await asyncio.gather(warm, *tasks)
        return held // IDLE_STREAMS

    per_stream = asyncio.run(run())
    assert per_stream <= RESPONSE_BYTES_PER_IDLE_STREAM, f"{per_stream} bytes per idle stream"
    assert streams.open == {}
