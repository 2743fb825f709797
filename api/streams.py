"""A job's event stream as Server-Sent Events, from any web process, resumable by `Last-Event-ID`.

The races, and who wins them (see also hub.py):
- An event published between our SUBSCRIBE and our XRANGE arrives twice (backlog and live):
  the live copy has an id at or below the last sent, so it is dropped.
- The pub/sub connection drops, or this client's buffer fills: the subscriber gets RESYNC and
  re-reads the backlog after its last id.
- A live message is lost anyway (a bug, a race we did not foresee): after each quiet ping
  interval the stream re-reads the backlog, so an event is late by one interval, never lost.
- The client goes away: Starlette cancels the generator; leaving `subscription` unsubscribes.
- This web process gets SIGTERM: every stream ends with a `retry:` hint and a comment, so
  clients reconnect (with `Last-Event-ID`) to another web while this one drains and exits.
- The client stops reading but keeps its connection: once the connection's buffers are full,
  uvicorn's `send` waits for them to drain. One send blocked for PARLEY_SSE_SEND_TIMEOUT_S ends
  the stream (its subscription and place given back at once); the client resumes with `Last-Event-ID`.

Each stream holds one of its tenant's places on this process (PARLEY_MAX_STREAMS_PER_TENANT):
taken before anything starts (past the limit: 429 JSON with Retry-After, and no turn queued),
given back when the response ends, whatever ends it (`done`, the client gone, a drain, Redis
gone, a send timed out), even when its body never started.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

from redis.exceptions import RedisError
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from parley.shared import events
from parley.shared.errors import NotReady
from parley.shared.store import keys

from .hub import DRAIN, RESYNC, EventHub, StreamPlace

log = logging.getLogger("parley.api.streams")

SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
PING = ": ping\n\n"
STORE_UNAVAILABLE = ": the event store is unavailable; reconnect with Last-Event-ID\n\n"
SHUTTING_DOWN = "retry: 500\n: this server is shutting down; reconnect with Last-Event-ID\n\n"
"""A `retry:` line sets EventSource's reconnection delay (ms); no event is dispatched."""


class Draining(Exception):
    """This web process is stopping; the stream should end so its client reconnects elsewhere."""


class SendTimedOut(Exception):
    """One send of a stream waited PARLEY_SSE_SEND_TIMEOUT_S: its client reads nothing."""


async def _close(iterator: object) -> None:
    """Close an async generator now (its `finally` blocks run: a subscription is left at once)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


async def job_events(hub: EventHub, tenant: str, job_id: str, after: str | None, ping_s: float,
                     subscribe_timeout_s: float = 5.0, stop_on_drain: bool = True,
                     ) -> AsyncIterator[tuple[str, str]]:  # fmt: skip
    """Yield (id, JSON) for each event after `after`, live, until `done`; ('', '') means ping.

    Raises Draining when the process is told to stop (unless `stop_on_drain` is False: for
    clients that cannot resume, the stream goes on while uvicorn lets it)."""
    async with hub.subscription(keys.live_channel(tenant, job_id), subscribe_timeout_s) as subscriber:
        last = after
        pending = await hub.backlog(tenant, job_id, last)
        while True:
            for event_id, payload in pending:
                if last is not None and events.id_key(event_id) <= events.id_key(last):
                    continue
                last = event_id
                yield event_id, payload
                if events.is_terminal(payload):
                    return
            try:
                item = await subscriber.get(ping_s)
            except TimeoutError:
                # Quiet for a while: look at the stream itself too, so a live message lost on
                # the way can delay an event by one ping interval at most, never lose it.
                pending = await hub.backlog(tenant, job_id, last)
                if not pending:
                    yield "", ""
                continue
            if item == DRAIN:
                if stop_on_drain:
                    raise Draining
                item = RESYNC
            pending = await hub.backlog(tenant, job_id, last) if item == RESYNC else [item]


async def sse_body(source: AsyncIterator[tuple[str, str]]) -> AsyncIterator[str]:
    """SSE text; if Redis goes away mid-stream the stream ends with a comment saying so, and the
    client resumes with `Last-Event-ID` (on any web) once Redis is back."""
    try:
        async for event_id, payload in source:
            yield events.sse_frame(event_id, payload) if event_id else PING
    except (RedisError, NotReady) as error:
        log.warning("stream ended: Redis unavailable (%s)", error)
        yield STORE_UNAVAILABLE
    except Draining:
        yield SHUTTING_DOWN
    finally:  # closed early (a send timed out): the source leaves its subscription now, not when collected
        await _close(source)


def stream_place(hub: EventHub, tenant: str) -> StreamPlace:
    """Take one of the tenant's stream places on this process, before the turn is queued or the stream
    starts: raises TooManyRequests (429 with Retry-After) when the tenant has none free. Use it as
    `with stream_place(...) as place:` around the route's work, ending in `PlacedStreamingResponse(place, ...)`
    (or `sse_response`): the place is given back if the block raises, else when the response ends."""
    return hub.tenant_streams.take(tenant)


class PlacedStreamingResponse(StreamingResponse):
    """A StreamingResponse that holds a stream place and gives it back when the response ends, however
    it ends. Released here rather than in the body generator: a generator that never started (the
    client went away first) never runs its `finally`.

    Each send may block at most the place's `send_timeout_s` (PARLEY_SSE_SEND_TIMEOUT_S): uvicorn's
    `send` waits while the connection's buffers are full, so a client that stops reading would hold
    the stream until TCP gives up. Past the bound the response ends: its body is closed (its
    subscription left), its place given back, and uvicorn closes the connection (logging that the
    response was not completed); the client resumes with `Last-Event-ID`."""

    def __init__(self, place: StreamPlace, content: AsyncIterator[str], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        place.hand_over()
        self.place = place

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        timeout_s = self.place.send_timeout_s

        async def bounded_send(message: Message) -> None:
            try:
                async with asyncio.timeout(timeout_s):
                    await send(message)
            except TimeoutError:
                raise SendTimedOut from None

        try:
            await super().__call__(scope, receive, bounded_send)
        except SendTimedOut:
            log.warning("stream ended: its client read nothing for %s s", timeout_s)
            self.place.release()
            with suppress(Exception):  # the body's own cleanup failing must not hide the ending
                await _close(self.body_iterator)
        finally:
            self.place.release()


def sse_response(place: StreamPlace, source: AsyncIterator[tuple[str, str]], job_id: str,
                 session_id: str) -> StreamingResponse:  # fmt: skip
    """The stream, with the job and session named in headers too: a client whose connection drops
    before the first event can still resume from `/api/v1/jobs/{job_id}/events`."""
    headers = {**SSE_HEADERS, "X-Parley-Job": job_id, "X-Parley-Session": session_id}
    return PlacedStreamingResponse(place, sse_body(source), media_type="text/event-stream", headers=headers)
