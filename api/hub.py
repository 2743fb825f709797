"""Job events for SSE clients: one Redis pub/sub connection per web process, however many streams.

A stream subscribes to its job's channel *before* it reads the backlog (XRANGE), then drops any
live event at or below the last id it sent, so no event falls between the two and none is sent
twice. If the pub/sub connection drops, or a slow client's buffer overflows, the stream is told
to re-read the backlog from its last id: live delivery is a fast path, the stream is the truth.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import RedisError

from parley.shared import events
from parley.shared.errors import NotReady, TooManyRequests
from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store.connection import connect_async
from parley.shared.tasks import cancel_until_done

log = logging.getLogger("parley.api.hub")

SUBSCRIBER_BUFFER = 1000
_KEEPALIVE = {
    option: value
    for option, value in ((getattr(socket, "TCP_KEEPIDLE", None), 10), (getattr(socket, "TCP_KEEPINTVL", None), 5),
                          (getattr(socket, "TCP_KEEPCNT", None), 3))
    if option is not None
}  # fmt: skip
"""The listening connection waits without a timeout; TCP keep-alives notice a peer gone silent
(a dropped network, not a closed socket) in about 25 s rather than the OS default of hours."""
RESYNC = ("", "")
"""Queued to a subscriber when it may have missed live events and must re-read the backlog."""
DRAIN = ("", "drain")
"""Queued to every subscriber when this web process is told to stop."""


class Subscriber:
    """Live events for one stream, and the one wait on them.

    A list and a future rather than an asyncio.Queue: a Queue holds four deques (~3 KiB) and
    thousands of idle streams each hold one (docs/benchmarks.md, idle streams)."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.waiter: asyncio.Future[None] | None = None

    def deliver(self, item: tuple[str, str]) -> None:
        if len(self.items) >= SUBSCRIBER_BUFFER:
            self._resync()  # a client this far behind re-reads the backlog instead
        else:
            self._put(item)

    def drain(self) -> None:
        if len(self.items) >= SUBSCRIBER_BUFFER:
            self._resync(DRAIN)  # its stream re-reads the backlog on the next web it reaches
        else:
            self._put(DRAIN)

    def _resync(self, marker: tuple[str, str] = RESYNC) -> None:
        self.items.clear()
        self._put(marker)

    def _put(self, item: tuple[str, str]) -> None:
        self.items.append(item)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self, timeout_s: float) -> tuple[str, str]:
        """The next item; TimeoutError when none came within `timeout_s`."""
        if not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout_s):
                    await self.waiter
            finally:
                self.waiter = None
        return self.items.pop(0)


READ_CONNECTIONS = 64
"""Redis connections one web process reads event backlogs over, at most (pub/sub has its own)."""
STREAMS_RETRY_AFTER_S = 2
BACKLOG_BATCH = 200
"""Backlog reads sent to Redis in one pipeline, at most."""


class TenantStreams:
    """How many SSE streams each tenant has open on this web process, each tenant at most `limit`
    (PARLEY_MAX_STREAMS_PER_TENANT), so one tenant cannot hold all of a process's streams.

    Used from the event loop only (routes and responses), so plain counts need no lock.

    `send_timeout_s` (PARLEY_SSE_SEND_TIMEOUT_S) bounds one send of a stream that holds a place: a
    client that stops reading must not hold its place (and subscription) until TCP gives up."""

    def __init__(self, limit: int, send_timeout_s: float = 30.0) -> None:
        self.limit = limit
        self.send_timeout_s = send_timeout_s
        self.open: dict[str, int] = {}

    def take(self, tenant: str) -> StreamPlace:
        """One of the tenant's places; TooManyRequests (429, before any stream starts) when none is free."""
        count = self.open.get(tenant, 0)
        if count >= self.limit:
            raise TooManyRequests(f"this tenant already has {self.limit} event streams open on this server; "
                                  f"close one or try again shortly", retry_after_s=STREAMS_RETRY_AFTER_S)  # fmt: skip
        self.open[tenant] = count + 1
        return StreamPlace(self, tenant)

    def give_back(self, tenant: str) -> None:
        count = self.open.get(tenant, 0) - 1
        if count > 0:
            self.open[tenant] = count
        else:
            self.open.pop(tenant, None)


class StreamPlace:
    """One open stream's place. As a context manager it is given back when the block ends, unless
    it was handed to the response (`hand_over`), which then gives it back when it ends."""

    __slots__ = ("_streams", "_tenant", "_held", "_handed")

    def __init__(self, streams: TenantStreams, tenant: str) -> None:
        self._streams, self._tenant = streams, tenant
        self._held, self._handed = True, False

    @property
    def send_timeout_s(self) -> float:
        """How long one send of the stream holding this place may block (PARLEY_SSE_SEND_TIMEOUT_S)."""
        return self._streams.send_timeout_s

    def hand_over(self) -> None:
        self._handed = True

    def release(self) -> None:
        """Give the place back; only the first call counts."""
        if self._held:
            self._held = False
            self._streams.give_back(self._tenant)

    def __enter__(self) -> StreamPlace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._handed:  # no response took it (the turn was refused, or the route raised)
            self.release()


class EventHub:
    def __init__(self, settings: Settings) -> None:
        # Streams wait for a pooled connection rather than fail: a plain pool raises "Too many
        # connections" past its cap, which thousands of idle streams re-reading their backlog at
        # each ping reach on a busy event loop (docs/benchmarks.md, idle streams).
        self.redis = connect_async(settings, max_connections=READ_CONNECTIONS, pool_wait_s=settings.redis_timeout_s)
        self.listen_redis = aredis.Redis.from_url(
            settings.redis_url, decode_responses=True, socket_connect_timeout=settings.redis_timeout_s,
            socket_timeout=None, socket_keepalive=True, socket_keepalive_options=_KEEPALIVE,
            health_check_interval=0,
        )  # fmt: skip
        self.subscribers: dict[str, set[Subscriber]] = {}
        self.tenant_streams = TenantStreams(settings.max_streams_per_tenant, settings.sse_send_timeout_s)
        self.confirmed: set[str] = set()
        """Channels Redis confirmed: a set, not an asyncio.Event per channel (~760 B, held by each idle stream)."""
        self._confirming: dict[str, asyncio.Future[None]] = {}
        """Channels whose subscription is not confirmed yet, and the one future their streams wait on."""
        self.pubsub: aredis.client.PubSub | None = None
        self.connected = asyncio.Event()
        self._commands = asyncio.Lock()
        """Serialises SUBSCRIBE/UNSUBSCRIBE, so a channel left and joined at once ends subscribed."""
        self._task: asyncio.Task[None] | None = None
        self._reads: list[tuple[str, str, asyncio.Future[list[Any]]]] = []
        self._batches: set[asyncio.Task[None]] = set()

    def drain(self) -> None:
        """This process is stopping: tell every open stream to end so its client reconnects elsewhere."""
        for group in self.subscribers.values():
            for subscriber in group:
                subscriber.drain()

    @property
    def stream_count(self) -> int:
        return sum(len(group) for group in self.subscribers.values())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        if self._task:
            await cancel_until_done([self._task])  # a cancel lost mid-read would hold up the web's shutdown
        await self.redis.aclose()
        await self.listen_redis.aclose()

    async def _run(self) -> None:
        delay_s = 0.1
        while True:
            pubsub = self.listen_redis.pubsub()
            try:
                await pubsub.subscribe(keys.hub_channel(), *self.subscribers)
                self.pubsub = pubsub
                self.connected.set()
                delay_s = 0.1
                for group in self.subscribers.values():  # events may have been missed while away
                    for subscriber in group:
                        subscriber._resync()
                async for message in pubsub.listen():
                    self._dispatch(message)
            except asyncio.CancelledError:
                await pubsub.aclose()
                raise
            except (RedisError, OSError) as error:
                log.warning("event hub lost Redis (%s); reconnecting in %.1f s", error, delay_s)
            self.connected.clear()
            self.pubsub = None
            self.confirmed.clear()  # confirmed again (and their streams told to resync) once back
            try:
                await pubsub.aclose()
            except (RedisError, OSError):
                pass
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 2.0)

    def _dispatch(self, message: dict) -> None:
        channel = message.get("channel")
        kind = message.get("type")
        if kind == "subscribe" and channel in self.subscribers:
            self.confirmed.add(channel)
            waiter = self._confirming.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif kind == "message" and channel in self.subscribers:
            item = events.parse_live(message["data"])
            for subscriber in self.subscribers[channel]:
                subscriber.deliver(item)

    @asynccontextmanager
    async def subscription(self, channel: str, timeout_s: float) -> AsyncIterator[Subscriber]:
        """Subscribe to `channel` and wait until Redis confirmed it; unsubscribe on exit."""
        subscriber = Subscriber()
        first = channel not in self.subscribers  # else its SUBSCRIBE was sent already (or is resent on reconnect)
        group = self.subscribers.setdefault(channel, set())
        group.add(subscriber)
        try:
            try:
                if channel not in self.confirmed:
                    waiter = self._confirming.get(channel)
                    if waiter is None:
                        waiter = self._confirming[channel] = asyncio.get_running_loop().create_future()
                    if first:
                        await self._send("subscribe", channel, timeout_s)
                    await asyncio.wait_for(asyncio.shield(waiter), timeout_s)  # shared: a timeout cancels ours only
            except (TimeoutError, RedisError, OSError) as error:
                raise NotReady("the event stream is unavailable (Redis does not answer); try again") from error
            yield subscriber
        finally:
            group.discard(subscriber)
            if not group and self.subscribers.get(channel) is group:
                del self.subscribers[channel]
                self.confirmed.discard(channel)
                waiter = self._confirming.pop(channel, None)
                if waiter is not None:
                    waiter.cancel()
                async with self._commands:
                    # Someone may have joined the channel meanwhile: then it stays subscribed.
                    if channel not in self.subscribers and self.pubsub is not None:
                        try:
                            await self.pubsub.unsubscribe(channel)
                        except (RedisError, OSError):
                            pass

    async def _send(self, command: str, channel: str, timeout_s: float) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout_s)
        async with self._commands:
            assert self.pubsub is not None
            await getattr(self.pubsub, command)(channel)

    async def backlog(self, tenant: str, job_id: str, after: str | None) -> list[tuple[str, str]]:
        """The job's stored events after `after` (all of them when None).

        Reads asked for in the same turn of the event loop go to Redis as one pipeline (at most
        BACKLOG_BATCH each) on one pooled connection: 20,000 idle streams re-read their backlog at each
        quiet ping, and one XRANGE per connection waited for the pool past its timeout (docs/benchmarks.md)."""
        start = f"({after}" if after else "-"
        waiter: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._reads.append((keys.events(tenant, job_id), start, waiter))
        if len(self._reads) == 1:
            asyncio.get_running_loop().call_soon(self._flush_reads)
        return events.from_entries(await waiter)

    def _flush_reads(self) -> None:
        reads, self._reads = self._reads, []
        for first in range(0, len(reads), BACKLOG_BATCH):
            task = asyncio.create_task(self._read_batch(reads[first : first + BACKLOG_BATCH]))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _read_batch(self, reads: list[tuple[str, str, asyncio.Future[list[Any]]]]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, start, _ in reads:
                    pipe.xrange(key, start, "+")
                results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as error:
            results = [error] * len(reads)
        for (_, _, waiter), result in zip(reads, results, strict=True):
            if waiter.done():  # its stream was cancelled meanwhile
                continue
            if isinstance(result, BaseException):
                waiter.set_exception(result)
            else:
                waiter.set_result(result)
