"""Redis connections, configured in one place.

Two clients over one URL: `text` decodes replies to str (Parley's own keys); `raw` leaves bytes
as they are, which RQ needs for its pickled job data. Both time out quickly so a Redis outage
becomes a prompt error a client can act on, not a hang.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .settings import Settings


@dataclass(frozen=True)
class RedisClients:
    text: redis.Redis
    raw: redis.Redis


def connect(settings: Settings, *, socket_timeout_s: float | None = None) -> RedisClients:
    """Clients for `settings.redis_url`; `socket_timeout_s` overrides the command timeout."""
    timeout = settings.redis_timeout_s if socket_timeout_s is None else socket_timeout_s
    options = dict(
        socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=timeout,
        health_check_interval=1,  # an idle pooled connection is checked first: a Redis restart costs no request
        # One immediate retry on a dropped connection: after a Redis restart every pooled
        # connection is stale once. Scripts that write are safe to run twice (see scripts.py).
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[redis.ConnectionError],
    )
    text = redis.Redis.from_url(settings.redis_url, decode_responses=True, **options)  # type: ignore[arg-type]
    raw = redis.Redis.from_url(settings.redis_url, decode_responses=False, **options)  # type: ignore[arg-type]
    return RedisClients(text=text, raw=raw)
