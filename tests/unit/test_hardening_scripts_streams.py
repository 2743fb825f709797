"""Stream places per tenant (PARLEY_MAX_STREAMS_PER_TENANT): taken before a stream starts, given
back whatever ends the response, even one whose body never started."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
from starlette.requests import ClientDisconnect

from parley.api.hub import TenantStreams
from parley.api.streams import PlacedStreamingResponse
from parley.shared.errors import TooManyRequests

SCOPE = {"type": "http", "asgi": {"spec_version": "2.4"}, "http_version": "1.1", "method": "GET", "path": "/",
         "headers": []}  # fmt: skip


async def _body(started: list[bool]) -> AsyncIterator[str]:
    started.append(True)
    yield "id: 1\ndata: {}\n\n"


async def _receive_nothing() -> MutableMapping[str, Any]:
    await asyncio.sleep(3600)
    return {"type": "http.disconnect"}


async def _send_ok(message: MutableMapping[str, Any]) -> None:
    return None


def test_past_the_limit_a_tenant_gets_429_and_others_do_not() -> None:
    streams = TenantStreams(limit=2)
    streams.take("alice"), streams.take("alice")
    with pytest.raises(TooManyRequests) as refused:
        streams.take("alice")
    assert refused.value.retry_after_s >= 1
    streams.take("bob")
    assert streams.open == {"alice": 2, "bob": 1}


def test_a_place_not_handed_to_a_response_is_given_back_when_its_block_ends() -> None:
    streams = TenantStreams(limit=1)
    with pytest.raises(RuntimeError), streams.take("alice"):
        raise RuntimeError("the turn was refused")
    with streams.take("alice"):
        pass
    assert streams.open == {}


def test_a_response_gives_its_place_back_when_it_ends() -> None:
    streams = TenantStreams(limit=1)
    started: list[bool] = []
    with streams.take("alice") as place:
        response = PlacedStreamingResponse(place, _body(started), media_type="text/event-stream")
    assert streams.open == {"alice": 1}  # handed over: held by the response
    asyncio.run(response(SCOPE, _receive_nothing, _send_ok))
    assert started == [True]
    assert streams.open == {}


def test_a_response_whose_body_never_started_gives_its_place_back() -> None:
    streams = TenantStreams(limit=1)
    started: list[bool] = []

    async def send_fails(message: MutableMapping[str, Any]) -> None:
        raise OSError("the client went away before the headers")

    with streams.take("alice") as place:
        response = PlacedStreamingResponse(place, _body(started), media_type="text/event-stream")
    with pytest.raises(ClientDisconnect):  # Starlette's word for the OSError
        asyncio.run(response(SCOPE, _receive_nothing, send_fails))
    assert started == []
    assert streams.open == {}
    streams.take("alice")  # the place is free again


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])  # uvicorn says 2.3: Starlette's task-group path
def test_a_send_blocked_past_the_timeout_ends_the_stream_and_closes_its_body(spec_version: str) -> None:
    """A client that reads nothing: uvicorn's send waits for ever. The response ends after the bound,
    its place is given back and its body generator closed (its `finally` runs: a subscription is left)."""
    streams = TenantStreams(limit=1, send_timeout_s=0.2)
    closed: list[bool] = []
    sends: list[str] = []

    async def endless() -> AsyncIterator[str]:
        try:
            while True:
                yield "id: 1\ndata: {}\n\n"
        finally:
            closed.append(True)

    async def send_blocks_on_the_body(message: MutableMapping[str, Any]) -> None:
        sends.append(message["type"])
        if message["type"] == "http.response.body" and len(sends) > 3:
            await asyncio.sleep(3600)  # the connection's buffers are full

    with streams.take("alice") as place:
        response = PlacedStreamingResponse(place, endless(), media_type="text/event-stream")
    scope = {**SCOPE, "asgi": {"spec_version": spec_version}}

    async def run() -> None:
        async with asyncio.timeout(5):
            await response(scope, _receive_nothing, send_blocks_on_the_body)

    asyncio.run(run())
    assert streams.open == {} and closed == [True]
    streams.take("alice")  # the place is free again
