"""What the sync and async clients share: configuration, request shapes, retry decisions, and the
bookkeeping of a resumable event stream. Nothing here does I/O."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote

import httpx

from .errors import ConnectionError, retry_after_seconds
from .models import Event, EventType, event_id_key

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
"""Every request: 5 s to connect, 30 s for each read and write."""
DEFAULT_CHAT_TIMEOUT = 130.0
"""Read timeout of `chat`: longer than the service's PARLEY_CHAT_TIMEOUT_S (120 s), so its 504 arrives first."""
DEFAULT_STREAM_TIMEOUT = 60.0
"""Longest silence on an event stream before it counts as dropped: the service pings every
PARLEY_SSE_PING_S (15 s by default)."""
USER_AGENT = "parley-python/0.1.0"
API = "/api/v1"

RETRY_STATUSES = (429, 503)
"""Refusals that change nothing on the service, so any request may be sent again."""
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport failures before the request left: safe to retry for any method."""


def path(*parts: str) -> str:
    """`/api/v1/<part>/<part>`, each part percent-encoded (ids and names may hold any character)."""
    return API + "".join("/" + quote(part, safe="") for part in parts)


def new_idempotency_key() -> str:
    return f"parley-client-{uuid.uuid4().hex}"


def chat_body(message: str, agent: str | None, session_id: str | None, images: Sequence[str] | None,
              on_busy: str | None = None, regenerate: bool = False) -> dict[str, Any]:  # fmt: skip
    """A chat request's body: `regenerate` sends no message (the session's last one is answered again),
    `on_busy` only when given (the service's default is `enqueue`)."""
    body: dict[str, Any] = {"regenerate": True} if regenerate else {"message": message}
    if regenerate and message:
        raise ValueError("regenerate answers the session's last user message again: pass no message")
    if on_busy is not None:
        body["on_busy"] = on_busy
    if agent is not None:
        body["agent"] = agent
    if session_id is not None:
        body["session_id"] = session_id
    if images:
        body["images"] = list(images)
    return body


def approval_body(call_id: str, approve: bool, reason: str | None) -> dict[str, Any]:
    """The body of `POST /jobs/{id}/approvals`: `reason` only when given (it is told to the model with a denial)."""
    body: dict[str, Any] = {"call_id": call_id, "approve": approve}
    if reason is not None:
        body["reason"] = reason
    return body


def query(**params: Any) -> dict[str, Any]:
    """Query parameters without the ones left out (None)."""
    return {name: value for name, value in params.items() if value is not None}


@dataclass(frozen=True)
class Call:
    """One request to (re)send: a stream's opening POST or its resuming GET."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    headers: Mapping[str, str] | None = None


class BaseClient:
    """Configuration and retry policy of `Parley` and `AsyncParley`.

    The backoff settings are attributes (not arguments) so a test or an impatient caller can
    change them on an instance: `client.retry_backoff_s = 0`.
    """

    retry_backoff_s: float = 0.5
    """First delay between tries when the API named none; doubles each try (with jitter)."""
    retry_backoff_max_s: float = 8.0
    max_retry_after_s: float = 30.0
    """A 429/503 asking to wait longer than this is raised at once (RateLimitError/UnavailableError
    with `retry_after`) rather than slept on."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        chat_timeout: float = DEFAULT_CHAT_TIMEOUT,
        stream_timeout: float = DEFAULT_STREAM_TIMEOUT,
        max_retries: int = 2,
        max_reconnects: int = 5,
    ) -> None:
        self.base_url = (base_url or os.environ.get("PARLEY_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("PARLEY_API_KEY")
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.chat_timeout = httpx.Timeout(self.timeout.connect, read=chat_timeout, write=self.timeout.write,
                                          pool=self.timeout.pool)  # fmt: skip
        self.stream_timeout = httpx.Timeout(self.timeout.connect, read=stream_timeout, write=self.timeout.write,
                                            pool=self.timeout.pool)  # fmt: skip
        if max_retries < 0 or max_reconnects < 0:
            raise ValueError("max_retries and max_reconnects must be 0 or more")
        self.max_retries = max_retries
        self.max_reconnects = max_reconnects

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(extra or {})
        return headers

    def _backoff(self, attempt: int) -> float:
        """Delay before try `attempt + 1`: exponential from `retry_backoff_s`, capped, with jitter."""
        delay = min(self.retry_backoff_max_s, self.retry_backoff_s * 2 ** max(0, attempt - 1))
        return delay * random.uniform(0.5, 1.0)

    def _retry_delay(self, attempt: int, *, response: httpx.Response | None = None,
                     error: Exception | None = None, idempotent: bool = False) -> float | None:  # fmt: skip
        """Seconds to wait before sending again after try number `attempt` failed, or None to give up.

        429 and 503 are retried for any request (the API changed nothing), honouring `Retry-After`
        up to `max_retry_after_s`. Transport failures are retried when the request never left, or
        when sending it again is harmless (`idempotent`: reads, and chat calls, which carry an
        Idempotency-Key). Everything else is final.
        """
        if attempt > self.max_retries:
            return None
        if response is not None:
            if response.status_code not in RETRY_STATUSES:
                return None
            after = retry_after_seconds(response.headers)
            if after is None:
                return self._backoff(attempt)
            return after if after <= self.max_retry_after_s else None
        if isinstance(error, _UNSENT) or (idempotent and isinstance(error, httpx.TransportError)):
            return self._backoff(attempt)
        return None


class ResumeState:
    """Where a resumable stream is: its job, the last event given to the caller, the failures in a row.

    `next_call` is the request that (re)opens it: the opening POST (with its Idempotency-Key, so
    sending it again returns the same job's stream from its start) until the `session` event named
    the job, then `GET /jobs/{id}/events` with `Last-Event-ID`. `accept` drops any event at or
    before the last one given, so the caller sees each event once, in order, whatever the server
    replays.
    """

    def __init__(self, client: BaseClient, *, start: Call | None = None, job_id: str | None = None,
                 last_event_id: str | None = None) -> None:  # fmt: skip
        if start is None and job_id is None:
            raise ValueError("a stream needs an opening request or a job id")
        self.client = client
        self.start = start
        self.job_id = job_id
        self.last_event_id = last_event_id or None
        self.failures = 0
        self.connections = 0
        self.done = False

    def next_call(self) -> Call:
        self.connections += 1
        if self.job_id is None:
            assert self.start is not None
            return self.start
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        return Call("GET", path("jobs", self.job_id, "events"), headers=headers)

    def accept(self, event: Event) -> bool:
        """True when `event` is new (and now the last one); False for a repeat."""
        if self.last_event_id and event.id:
            last, new = event_id_key(self.last_event_id), event_id_key(event.id)
            if (last is not None and new is not None and new <= last) or event.id == self.last_event_id:
                return False
        if event.id:
            self.last_event_id = event.id
        if self.job_id is None and event.type == EventType.SESSION and event.job_id:
            self.job_id = event.job_id
        self.failures = 0
        self.done = event.type == EventType.DONE
        return True

    def failed(self, error: BaseException | None) -> float:
        """Record a lost connection (`error`, or None when the stream ended before `done`); the delay
        before reconnecting, or ConnectionError once `max_reconnects` tries in a row brought nothing."""
        self.failures += 1
        if self.failures > self.client.max_reconnects:
            where = f"job {self.job_id}" if self.job_id else "the turn"
            reason = repr(error) if error is not None else "the stream ended before its `done` event"
            raise ConnectionError(
                f"the event stream of {where} was lost and {self.client.max_reconnects} reconnections "
                f"brought nothing new (last event {self.last_event_id!r}): {reason}"
            ) from error
        return 0.0 if self.failures == 1 else self.client._backoff(self.failures - 1)


def feedback_body(rating: str | None, comment: str | None) -> dict[str, Any]:
    """The body of `PUT .../messages/{id}/feedback`: `comment` only when given (none goes with a clear)."""
    body: dict[str, Any] = {"rating": rating}
    if comment is not None:
        body["comment"] = comment
    return body


def usage_query(group_by: str, since: str | date | None, until: str | date | None, limit: int | None,
                cursor: str | None) -> dict[str, Any]:  # fmt: skip
    """The query of `GET /api/v1/usage`: a `date` (or `datetime`) as ISO 8601 text."""
    def text(day: str | date | None) -> str | None:
        return day.isoformat() if isinstance(day, date) else day

    return query(group_by=group_by, since=text(since), until=text(until), limit=limit, cursor=cursor)


def items(body: Any) -> list[Any]:
    """A listing's items, whether the API answered a bare array or `{"data": [...]}`."""
    return body.get("data", []) if isinstance(body, dict) else list(body)
