"""A job's event stream as Server-Sent Events, from any web process, resumable by `Last-Event-ID`.

The races, and who wins them (see also hub.py):
- An event published between our SUBSCRIBE and our XRANGE arrives twice (backlog and live):
  the live copy has an id at or below the last sent, so it is dropped.
- The pub/sub connection drops, or this client's buffer fills: the subscriber gets RESYNC and
  re-reads the backlog after its last id.
- A live message is lost anyway (a bug, a race we did not foresee): after each quiet ping
  interval the stream re-reads the backlog, so an event is late by one interval, never lost.
- The client goes away: its `http.disconnect` cancels the stream (PlacedStreamingResponse); leaving
  `subscription` unsubscribes.
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
from collections.abc import AsyncIterator, Mapping
from contextlib import suppress
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from parley.shared import events
from parley.shared.errors import NotReady
from parley.shared.events import EventType
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


async def chat_events(hub: EventHub, tenant: str, job_id: str, ping_s: float,
                      stop_on_drain: bool = True) -> AsyncIterator[tuple[str, str]]:  # fmt: skip
    """A chat request's events: its job's, and when its message joined a running turn (`on_busy: steer`), that
    turn's from where the message joined it to its end, in place of the steer job's own `done`."""
    async for event_id, payload in job_events(hub, tenant, job_id, None, ping_s, stop_on_drain=stop_on_drain):
        if event_id and '"steered"' in payload:
            event = events.decode(payload)
            if event["type"] == EventType.STEERED and event.get("job_id") and event.get("at"):
                yield event_id, payload
                async for item in job_events(hub, tenant, event["job_id"], event["at"], ping_s,
                                             stop_on_drain=stop_on_drain):
                    yield item
                return
        yield event_id, payload


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
    """A lean streaming response for thousands of idle streams: it holds a stream place and gives it back
    when the response ends, however it ends. Released here rather than in the body generator: a generator
    that never started (the client went away first) never runs its `finally`.

    Raw ASGI rather than Starlette's StreamingResponse, whose anyio task group (a second task, cancel
    scopes, an Event) cost ~6 KiB per idle stream (docs/benchmarks.md, idle streams). Here the request's
    own task sends the body, and one small task waits for the client's `http.disconnect` (uvicorn drops
    sends to a gone client silently, so only `receive` tells): when it comes, the request's task is
    cancelled the way `asyncio.timeout` cancels it, the body is closed (its subscription left) and the
    response ends normally.

    Each send may block at most the place's `send_timeout_s` (PARLEY_SSE_SEND_TIMEOUT_S): uvicorn's
    `send` waits while the connection's buffers are full, so a client that stops reading would hold
    the stream until TCP gives up. Past the bound the response ends: its body is closed (its
    subscription left), its place given back, and uvicorn closes the connection (logging that the
    response was not completed); the client resumes with `Last-Event-ID`."""

    def __init__(self, place: StreamPlace, content: AsyncIterator[str], status_code: int = 200,
                 headers: Mapping[str, str] | None = None, media_type: str | None = None) -> None:  # fmt: skip
        self.body_iterator = content
        self.status_code = status_code
        self.media_type = self.media_type if media_type is None else media_type
        self.background = None
        self.init_headers(headers)
        place.hand_over()
        self.place = place

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        gone = _Disconnect(task, receive)
        try:
            try:
                await self._stream(send)
            finally:
                gone.disarm()  # at once, no await before: a cancel it made can only land inside `_stream`
        except SendTimedOut:
            log.warning("stream ended: its client read nothing for %s s", self.place.send_timeout_s)
            self.place.release()
        except asyncio.CancelledError:
            if not gone.cancelled_us(task):
                raise
        except OSError:  # the server says the client is gone (ASGI 2.4 servers raise on send)
            raise ClientDisconnect() from None
        finally:
            self.place.release()
            with suppress(Exception):  # the body's own cleanup failing must not hide the ending
                await _close(self.body_iterator)

    async def _stream(self, send: Send) -> None:
        timeout_s = self.place.send_timeout_s

        async def bounded_send(message: Message) -> None:
            try:
                async with asyncio.timeout(timeout_s):
                    await send(message)
            except TimeoutError:
                raise SendTimedOut from None

        headers, self.raw_headers = self.raw_headers, []  # not kept for the stream's whole life
        await bounded_send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        del headers
        async for chunk in self.body_iterator:
            body = chunk.encode() if isinstance(chunk, str) else chunk
            await bounded_send({"type": "http.response.body", "body": body, "more_body": True})
        await bounded_send({"type": "http.response.body", "body": b"", "more_body": False})


class _Disconnect:
    """Waits for the client's `http.disconnect` in one small task and then cancels the stream's task, as
    `asyncio.timeout` does (the stream tells its own cancel from any other by `cancelled_us`)."""

    __slots__ = ("armed", "fired", "watcher")

    def __init__(self, task: asyncio.Task[Any], receive: Receive) -> None:
        self.armed, self.fired = True, False
        self.watcher = asyncio.ensure_future(self._wait(task, receive))

    async def _wait(self, task: asyncio.Task[Any], receive: Receive) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception:  # noqa: BLE001 - a receive that fails has no client behind it either
            log.debug("receive failed; the stream's client is taken as gone", exc_info=True)
        if self.armed:
            self.fired = True
            task.cancel()

    def cancelled_us(self, task: asyncio.Task[Any]) -> bool:
        """True when the stream's task was cancelled by this client going away (and by nothing else)."""
        return self.fired and task.uncancel() == 0

    def disarm(self) -> None:
        """The stream has ended: a disconnect from now on cancels nothing."""
        self.armed = False
        self.watcher.cancel()


def sse_response(place: StreamPlace, source: AsyncIterator[tuple[str, str]], job_id: str,
                 session_id: str) -> StreamingResponse:  # fmt: skip
    """The stream, with the job and session named in headers too: a client whose connection drops
    before the first event can still resume from `/api/v1/jobs/{job_id}/events`."""
    headers = {**SSE_HEADERS, "X-Parley-Job": job_id, "X-Parley-Session": session_id}
    return PlacedStreamingResponse(place, sse_body(source), media_type="text/event-stream", headers=headers)
