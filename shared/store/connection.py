"""Redis connections, configured in one place.

Two clients over one URL: `text` decodes replies to str (Parley's own keys); `raw` leaves bytes
as they are, which RQ needs for its pickled job data. Both time out quickly so a Redis outage
becomes a prompt error a client can act on, not a hang.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from parley.shared.settings import Settings


@dataclass(frozen=True)
class RedisClients:
    text: redis.Redis
    raw: redis.Redis


def retry_options() -> dict[str, Any]:
    """One immediate retry of a command (or a whole pipeline) whose connection dropped: after a Redis
    restart every pooled connection is stale once.

    The retry sends the command again although its first send may have run (the reply is what was lost),
    so what it retries must be safe to run twice. What holds: reads are; so are the turn scripts of
    scripts/ (ACCEPT, START, EMIT and FINISH: scripts/__init__.py, "Run twice"). NOT safe: plain increments
    (telemetry deltas, and api/deps.py's per-tenant request rate on the hub's client, which retries the
    same way, may count twice: a count, not state), and CREATE_SESSION, whose second run answers "not
    created" (409) for the session its first run created. The other scripts (agents', the summary report's,
    telemetry's ADD_BOUNDED) and those of tools/ are not covered by this note."""
    return {"retry": Retry(NoBackoff(), 1), "retry_on_error": [redis.ConnectionError]}


def connect(settings: Settings, *, socket_timeout_s: float | None = None) -> RedisClients:
    """Clients for `settings.redis_url`; `socket_timeout_s` overrides the command timeout."""
    timeout = settings.redis_timeout_s if socket_timeout_s is None else socket_timeout_s
    options = dict(
        socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=timeout,
        health_check_interval=1,  # an idle pooled connection is checked first: a Redis restart costs no request
        **retry_options(),
    )
    text = redis.Redis.from_url(settings.redis_url, decode_responses=True, **options)  # type: ignore[arg-type]
    raw = redis.Redis.from_url(settings.redis_url, decode_responses=False, **options)  # type: ignore[arg-type]
    return RedisClients(text=text, raw=raw)


def connect_async(settings: Settings, *, max_connections: int, pool_wait_s: float = 30.0) -> aredis.Redis:
    """An asyncio client (replies decoded to str) for `settings.redis_url`, with the same timeouts and
    retry as `connect`'s. Its pool holds at most `max_connections`; a command past that waits for one
    (up to `pool_wait_s`) instead of failing: a worker running a thousand turns shares a few dozen
    connections, since each holds one only for a round trip, and a process too busy to read its
    replies promptly (which holds each connection longer) slows its turns down rather than fail them.
    A Redis that does not answer still fails a command within the command timeout."""
    return aredis.Redis.from_pool(aredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=max_connections, timeout=pool_wait_s,
        decode_responses=True, socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s, health_check_interval=1,
        retry=AsyncRetry(NoBackoff(), 1), retry_on_error=[redis.ConnectionError],
    ))  # fmt: skip
