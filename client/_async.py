"""`AsyncParley`: the asynchronous client (httpx.AsyncClient), a line-for-line mirror of `_sync.py`."""

from __future__ import annotations

import builtins
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from datetime import date
from types import TracebackType
from typing import Any, Unpack

import anyio
import httpx

from ._base import (
    DEFAULT_CHAT_TIMEOUT,
    DEFAULT_STREAM_TIMEOUT,
    DEFAULT_TIMEOUT,
    BaseClient,
    Call,
    ResumeState,
    approval_body,
    chat_body,
    feedback_body,
    items,
    new_idempotency_key,
    path,
    query,
    usage_query,
)
from .errors import ConnectionError, UnavailableError, WaitTimeoutError, error_from_response
from .models import (
    FINAL_STATUSES,
    AgentFields,
    AgentOptions,
    AgentPublic,
    ApprovalResult,
    CancelResult,
    ChatResponse,
    Event,
    FeedbackItem,
    FeedbackPage,
    JobAccepted,
    JobPublic,
    McpServer,
    McpServerFields,
    McpServerOptions,
    MessagePage,
    MessagePublic,
    OnBusy,
    Rating,
    Schedule,
    SessionPage,
    SessionPublic,
    UsageGrouping,
    UsagePage,
    Webhook,
    WebhookDelivery,
)
from .sse import SSEDecoder


class AsyncParley(BaseClient):
    """A client of one Parley service.

        async with AsyncParley() as client:      # PARLEY_URL, PARLEY_API_KEY
            print((await client.chat("Hello!")).response)

    `base_url` defaults to PARLEY_URL, else http://127.0.0.1:8000; `api_key` to PARLEY_API_KEY.
    `timeout` applies to every request; `chat_timeout` is the read timeout of `chat`,
    `stream_timeout` the longest silence on an event stream. 429 and 503 answers are retried up to
    `max_retries` times (honouring Retry-After); a dropped event stream is resumed up to
    `max_reconnects` times in a row. `http_client` lets you bring your own httpx.AsyncClient (proxies,
    TLS, transports); it is not closed by `close()`.
    """

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
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, chat_timeout=chat_timeout, stream_timeout=stream_timeout,
                         max_retries=max_retries, max_reconnects=max_reconnects)  # fmt: skip
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()
        self.agents = AsyncAgents(self)
        self.sessions = AsyncSessions(self)
        self.jobs = AsyncJobs(self)
        self.mcp_servers = AsyncMcpServers(self)
        self.feedback = AsyncFeedbackApi(self)
        self.webhooks = AsyncWebhooks(self)
        self.schedules = AsyncSchedules(self)

    # -- lifecycle ------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection pool (unless `http_client` was given)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncParley:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        await self.close()

    # -- chat -----------------------------------------------------------------------------

    async def chat(self, message: str = "", *, agent: str | None = None, session_id: str | None = None,
             images: Sequence[str] | None = None, idempotency_key: str | None = None, on_busy: OnBusy | None = None,
             regenerate: bool = False) -> ChatResponse:  # fmt: skip
        """Send a message and wait for the answer (`POST /api/v1/chat`).

        GatewayTimeoutError (504) when the service stopped waiting: the turn goes on, see
        `jobs.wait(err.job_id)`. The Idempotency-Key (one is generated unless given) makes the
        SDK's retries safe: a retried request returns the same turn, stored once.
        `on_busy` says what happens while a turn of the session is in flight: `enqueue` (the service's
        default), `reject` (ConflictError `session_busy`), `interrupt` or `steer`. `regenerate=True` (with a
        `session_id` and no message) answers the session's last user message again, replacing the old answer.
        """
        headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
        body = chat_body(message, agent, session_id, images, on_busy, regenerate)
        response = await self._request("POST", path("chat"), json=body, headers=headers, timeout=self.chat_timeout,
                                 idempotent=True)  # fmt: skip
        return ChatResponse.model_validate(response.json())

    async def chat_job(self, message: str = "", *, agent: str | None = None, session_id: str | None = None,
                 images: Sequence[str] | None = None, idempotency_key: str | None = None,
                 on_busy: OnBusy | None = None, regenerate: bool = False) -> JobAccepted:  # fmt: skip
        """Queue a turn and return at once (`POST /api/v1/chat/jobs`); follow it with `jobs`. `on_busy` and
        `regenerate` as for `chat`."""
        headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
        body = chat_body(message, agent, session_id, images, on_busy, regenerate)
        response = await self._request("POST", path("chat", "jobs"), json=body, headers=headers, idempotent=True)
        return JobAccepted.model_validate(response.json())

    def stream(self, message: str = "", *, agent: str | None = None, session_id: str | None = None,
               images: Sequence[str] | None = None, idempotency_key: str | None = None,
               on_busy: OnBusy | None = None, regenerate: bool = False) -> AsyncEventStream:  # fmt: skip
        """Send a message and iterate over the turn's events until `done` (`POST /api/v1/chat/stream`).

        Nothing is sent until iteration starts. A dropped connection is resumed from
        `GET /api/v1/jobs/{job_id}/events` with `Last-Event-ID`, so no event is repeated or missing.
        `on_busy` and `regenerate` as for `chat` (with `steer`, the message joins the running turn: its
        stream carries a `steered` event).
        """
        headers = {"Idempotency-Key": idempotency_key or new_idempotency_key(), "Accept": "text/event-stream"}
        body = chat_body(message, agent, session_id, images, on_busy, regenerate)
        start = Call("POST", path("chat", "stream"), body, headers)
        return AsyncEventStream(self, ResumeState(self, start=start))

    # -- approvals ------------------------------------------------------------------------

    async def approve(self, job_id: str, call_id: str, reason: str | None = None) -> ApprovalResult:
        """Let a waiting tool call run (`POST /api/v1/jobs/{job_id}/approvals`); the turn goes on, on any worker.

        `call_id` comes from the `approval_required` event or the job's `pending` list. NotFoundError for an
        unknown job or call, ConflictError when the call was decided already or the job does not wait.
        """
        return await self._decide(job_id, call_id, True, reason)

    async def deny(self, job_id: str, call_id: str, reason: str | None = None) -> ApprovalResult:
        """Refuse a waiting tool call: the model is told it was denied (with `reason`) and carries on."""
        return await self._decide(job_id, call_id, False, reason)

    async def _decide(self, job_id: str, call_id: str, approve: bool, reason: str | None) -> ApprovalResult:
        body = await self._json("POST", path("jobs", job_id, "approvals"), json=approval_body(call_id, approve, reason))
        return ApprovalResult.model_validate(body)

    # -- usage ----------------------------------------------------------------------------

    async def usage(self, *, group_by: UsageGrouping = "day", since: str | date | None = None,
                    until: str | date | None = None, limit: int | None = None,
                    cursor: str | None = None) -> UsagePage:  # fmt: skip
        """The tenant's usage (`GET /api/v1/usage`): turns, tokens and (when the service has prices) cost by
        `group_by`: `agent`, `session` or `day`, from `since` to `until` (UTC days, both included: a `date`,
        `YYYY-MM-DD` or an ISO 8601 time; by default the last 30 days, at most 366). One page of rows in key
        order (`limit` of them, at most 1000) with the range's `total`; pass `next_cursor` as `cursor` for the next."""
        params = usage_query(group_by, since, until, limit, cursor)
        return UsagePage.model_validate(await self._json("GET", path("usage"), params=params, idempotent=True))

    # -- transport ------------------------------------------------------------------------

    async def _request(self, method: str, url_path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None, timeout: httpx.Timeout | None = None,
                 idempotent: bool = False, stream: bool = False) -> httpx.Response:  # fmt: skip
        """Send with retries (see `_retry_delay`); the 2xx response (open, when `stream`) or the
        mapped APIError; ConnectionError when no answer came."""
        attempt = 0
        while True:
            attempt += 1
            request = self._http.build_request(
                method, self._url(url_path), json=json, params=params, headers=self._headers(headers),
                timeout=timeout or self.timeout,
            )  # fmt: skip
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as error:
                delay = self._retry_delay(attempt, error=error, idempotent=idempotent)
                if delay is None:
                    raise ConnectionError(f"{method} {url_path} failed: {error!r}") from error
                await anyio.sleep(delay)
                continue
            if response.is_success:
                return response
            try:
                await response.aread()
            except httpx.TransportError:
                pass  # the status decides; the body only adds detail
            finally:
                await response.aclose()
            delay = self._retry_delay(attempt, response=response)
            if delay is None:
                raise error_from_response(response)
            await anyio.sleep(delay)

    async def _json(self, method: str, url_path: str, **kwargs: Any) -> Any:
        return (await self._request(method, url_path, **kwargs)).json()


class AsyncEventStream:
    """The events of one turn, in order, each once, ending with `done`. Iterate over it with `async for`;
    use it as an async context manager (or call `aclose()`) to stop early. `job_id` is known once the `session`
    event arrived; `last_event_id` is the id of the last event given out."""

    def __init__(self, client: AsyncParley, state: ResumeState) -> None:
        self._client = client
        self._state = state
        self._events = self._run()

    @property
    def job_id(self) -> str | None:
        return self._state.job_id

    @property
    def last_event_id(self) -> str | None:
        return self._state.last_event_id

    @property
    def connections(self) -> int:
        """How many requests the stream took so far (1 when it was never resumed)."""
        return self._state.connections

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        await self.aclose()

    async def _run(self) -> AsyncGenerator[Event, None]:
        state, client = self._state, self._client
        while not state.done:
            call = state.next_call()
            try:
                response = await client._request(call.method, call.path, json=call.json, headers=call.headers,
                                                 timeout=client.stream_timeout, stream=True)  # fmt: skip
            except (ConnectionError, UnavailableError) as error:
                await anyio.sleep(state.failed(error))
                continue
            lost: BaseException | None = None
            try:
                decoder = SSEDecoder()
                async for chunk in response.aiter_bytes():
                    for sse in decoder.feed(chunk):
                        event = Event.from_sse(sse)
                        if state.accept(event):
                            yield event
                            if state.done:
                                return
            except httpx.TransportError as error:
                lost = error
            finally:
                await response.aclose()
            await anyio.sleep(state.failed(lost))


class AsyncAgents:
    """`client.agents`: create, list, read, change and delete agents."""

    def __init__(self, client: AsyncParley) -> None:
        self._client = client

    async def create(self, name: str, **fields: Unpack[AgentOptions]) -> AgentPublic:
        """Create an agent (`POST /api/v1/agents`); ConflictError when the name is taken."""
        body = await self._client._json("POST", path("agents"), json={**fields, "name": name})
        return AgentPublic.model_validate(body)

    async def list(self) -> builtins.list[AgentPublic]:
        """The agents this key sees: file agents first, then the tenant's, by creation."""
        body = await self._client._json("GET", path("agents"), idempotent=True)
        return [AgentPublic.model_validate(item) for item in body]

    async def get(self, agent: str) -> AgentPublic:
        """One agent, by id or name."""
        return AgentPublic.model_validate(await self._client._json("GET", path("agents", agent), idempotent=True))

    async def update(self, agent: str, **fields: Unpack[AgentFields]) -> AgentPublic:
        """Change some fields (`PATCH`); `None` clears model, response_shape, temperature, max_tokens, max_turns."""
        return AgentPublic.model_validate(
            await self._client._json("PATCH", path("agents", agent), json=dict(fields), idempotent=True)
        )

    async def delete(self, agent: str) -> None:
        """Delete an agent; its sessions stay readable."""
        await self._client._request("DELETE", path("agents", agent))


class AsyncSessions:
    """`client.sessions`: conversations and their messages."""

    def __init__(self, client: AsyncParley) -> None:
        self._client = client

    async def create(self, agent: str | None = None, *, session_id: str | None = None,
               metadata: Mapping[str, Any] | None = None) -> SessionPublic:  # fmt: skip
        """Start a session with an agent (the tenant's first agent when omitted)."""
        body: dict[str, Any] = query(agent=agent, session_id=session_id)
        if metadata is not None:
            body["metadata"] = dict(metadata)
        return SessionPublic.model_validate(await self._client._json("POST", path("sessions"), json=body))

    async def list(self, *, agent: str | None = None, page_size: int = 20) -> AsyncIterator[SessionPublic]:
        """Every session (of `agent`, when given), newest first, fetched `page_size` at a time."""
        cursor: str | None = None
        while True:
            page = await self.page(agent=agent, limit=page_size, cursor=cursor)
            for session in page.data:  # noqa: UP028 - no `yield from` in async generators
                yield session
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def page(self, *, agent: str | None = None, limit: int | None = None,
                   cursor: str | None = None) -> SessionPage:  # fmt: skip
        """One page of sessions, newest first; pass its `next_cursor` for the next."""
        params = query(agent=agent, limit=limit, cursor=cursor)
        body = await self._client._json("GET", path("sessions"), params=params, idempotent=True)
        return SessionPage.model_validate(body)

    async def get(self, session_id: str) -> SessionPublic:
        body = await self._client._json("GET", path("sessions", session_id), idempotent=True)
        return SessionPublic.model_validate(body)

    async def delete(self, session_id: str) -> None:
        """Delete a session with its messages."""
        await self._client._request("DELETE", path("sessions", session_id))

    async def messages(self, session_id: str, *, limit: int | None = None, before: str | None = None,
                 include_replaced: bool = False) -> builtins.list[MessagePublic]:  # fmt: skip
        """The newest `limit` messages (before message id `before`), oldest first; with `include_replaced`,
        also the answers a `regenerate` replaced (`include=replaced`)."""
        params = query(limit=limit, before=before, include="replaced" if include_replaced else None)
        body = await self._client._json("GET", path("sessions", session_id, "messages"), params=params,
                                        idempotent=True)  # fmt: skip
        return MessagePage.model_validate(body).data

    async def fork(self, session_id: str, at: str, *, new_session_id: str | None = None) -> SessionPublic:
        """A new session of the same agent holding the messages of `session_id` up to message id `at`
        (`POST /api/v1/sessions/{id}/fork`); `new_session_id` names it (generated when omitted)."""
        body = {"at": at, **query(session_id=new_session_id)}
        return SessionPublic.model_validate(await self._client._json("POST", path("sessions", session_id, "fork"),
                                                                     json=body))  # fmt: skip


class AsyncJobs:
    """`client.jobs`: a turn's status, its events, cancel, and waiting for its end."""

    def __init__(self, client: AsyncParley) -> None:
        self._client = client

    async def get(self, job_id: str) -> JobPublic:
        return JobPublic.model_validate(await self._client._json("GET", path("jobs", job_id), idempotent=True))

    async def cancel(self, job_id: str) -> CancelResult:
        """Cancel a queued or running turn (`canceled` is False when it had already ended)."""
        body = await self._client._json("POST", path("jobs", job_id, "cancel"), idempotent=True)
        return CancelResult.model_validate(body)

    async def wait(self, job_id: str, timeout: float | None = None, *, poll_interval: float = 0.5) -> JobPublic:
        """Poll until the job is `finished`, `failed` or `canceled`; WaitTimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.get(job_id)
            if job.status in FINAL_STATUSES:
                return job
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeoutError(f"job {job_id} is still {job.status} after {timeout} s", job)
            await anyio.sleep(poll_interval if left is None else min(poll_interval, left))

    def events(self, job_id: str, last_event_id: str | None = None) -> AsyncEventStream:
        """The job's events from the first (or after `last_event_id`) until `done`, resumed when dropped."""
        return AsyncEventStream(self._client, ResumeState(self._client, job_id=job_id, last_event_id=last_event_id))


class AsyncMcpServers:
    """`client.mcp_servers`: the tenant's remote MCP servers, whose tools agents name `mcp:<server>/<tool>`."""

    def __init__(self, client: AsyncParley) -> None:
        self._client = client

    async def create(self, name: str, url: str, **fields: Unpack[McpServerOptions]) -> McpServer:
        """Add a server (`POST /api/v1/mcp-servers`); the service lists its tools at once. `headers` (for
        example an Authorization) are stored and sent to it, and never shown again: only `header_names`."""
        body = await self._client._json("POST", path("mcp-servers"), json={**fields, "name": name, "url": url})
        return McpServer.model_validate(body)

    async def list(self) -> builtins.list[McpServer]:
        """The tenant's MCP servers."""
        body = await self._client._json("GET", path("mcp-servers"), idempotent=True)
        items = body.get("data", body) if isinstance(body, dict) else body
        return [McpServer.model_validate(item) for item in items]

    async def get(self, name: str) -> McpServer:
        """One server, with its tools."""
        return McpServer.model_validate(await self._client._json("GET", path("mcp-servers", name), idempotent=True))

    async def update(self, name: str, **fields: Unpack[McpServerFields]) -> McpServer:
        """Change some fields (`PATCH`): `url`, `headers` (replaces them all), `allowed_tools` (None: every tool)."""
        body = await self._client._json("PATCH", path("mcp-servers", name), json=dict(fields), idempotent=True)
        return McpServer.model_validate(body)

    async def delete(self, name: str) -> None:
        """Remove a server; agents naming its tools no longer get them."""
        await self._client._request("DELETE", path("mcp-servers", name))


class AsyncFeedbackApi:
    """`client.feedback`: rate the agent's answers (`up` / `down`, with a comment) and read the ratings."""

    def __init__(self, client: AsyncParley) -> None:
        self._client = client

    async def set(self, session_id: str, message_id: str, rating: Rating | None, comment: str | None = None,
                  ) -> MessagePublic:  # fmt: skip
        """Rate one of the agent's answers (`PUT .../messages/{message_id}/feedback`); `rating` None clears it.
        Returns the message, whose `feedback` is the new rating (None once cleared). ValidationError for a
        message that is not the agent's, NotFoundError for an unknown session or message."""
        body = await self._client._json("PUT", path("sessions", session_id, "messages", message_id, "feedback"),
                                        json=feedback_body(rating, comment), idempotent=True)  # fmt: skip
        return MessagePublic.model_validate(body)

    async def clear(self, session_id: str, message_id: str) -> MessagePublic:
        """Remove the rating (and comment) of a message."""
        return await self.set(session_id, message_id, None)

    async def list(self, *, agent: str | None = None, since: str | None = None,
                   page_size: int = 20) -> AsyncIterator[FeedbackItem]:  # fmt: skip
        """Every rating of the tenant (of `agent`'s answers, given at or after `since`, an ISO 8601 time),
        newest first, fetched `page_size` at a time."""
        cursor: str | None = None
        while True:
            page = await self.page(agent=agent, since=since, limit=page_size, cursor=cursor)
            for item in page.data:  # noqa: UP028 - no `yield from` in async generators
                yield item
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def page(self, *, agent: str | None = None, since: str | None = None, limit: int | None = None,
                   cursor: str | None = None) -> FeedbackPage:  # fmt: skip
        """One page of ratings, newest first (`GET /api/v1/feedback`); pass its `next_cursor` for the next."""
        params = query(agent=agent, since=since, limit=limit, cursor=cursor)
        body = await self._client._json("GET", path("feedback"), params=params, idempotent=True)
        return FeedbackPage.model_validate(body)


class AsyncWebhooks:
    """`client.webhooks`: URLs the service POSTs the tenant's turn events to, signed with each webhook's secret."""

    def __init__(self, client: AsyncParley) -> None:
        self._client = client

    async def create(self, url: str, events: Sequence[str] | None = None) -> Webhook:
        """Add a webhook (`POST /api/v1/webhooks`) for `events` (`turn.finished`, `turn.failed`, `turn.canceled`,
        `turn.waiting`; every one when omitted). Keep its `secret`: it is shown this once."""
        body: dict[str, Any] = {"url": url}
        if events is not None:
            body["events"] = list(events)
        return Webhook.model_validate(await self._client._json("POST", path("webhooks"), json=body))

    async def list(self) -> builtins.list[Webhook]:
        """The tenant's webhooks (without their secrets)."""
        body = await self._client._json("GET", path("webhooks"), idempotent=True)
        return [Webhook.model_validate(item) for item in items(body)]

    async def get(self, webhook_id: str) -> Webhook:
        body = await self._client._json("GET", path("webhooks", webhook_id), idempotent=True)
        return Webhook.model_validate(body)

    async def delete(self, webhook_id: str) -> None:
        """Remove a webhook: no more deliveries to it."""
        await self._client._request("DELETE", path("webhooks", webhook_id))

    async def deliveries(self, webhook_id: str) -> builtins.list[WebhookDelivery]:
        """The webhook's recent deliveries, with their attempts and outcome (`GET .../webhooks/{id}/deliveries`)."""
        body = await self._client._json("GET", path("webhooks", webhook_id, "deliveries"), idempotent=True)
        return [WebhookDelivery.model_validate(item) for item in items(body)]


class AsyncSchedules:
    """`client.schedules`: turns the service runs by itself, on a cron expression or every few seconds."""

    def __init__(self, client: AsyncParley) -> None:
        self._client = client

    async def create(self, agent: str, message: str, *, cron: str | None = None, interval_s: int | None = None,
                     session_id: str | None = None, timezone: str | None = None) -> Schedule:  # fmt: skip
        """Add a schedule (`POST /api/v1/schedules`): exactly one of `cron` (5 fields, read in `timezone`) and
        `interval_s` (at least 1). Each firing is one turn of `agent` with `message` (in `session_id` when
        given), run once however many processes run."""
        body = {"agent": agent, "message": message,
                **query(cron=cron, interval_s=interval_s, session_id=session_id, timezone=timezone)}  # fmt: skip
        return Schedule.model_validate(await self._client._json("POST", path("schedules"), json=body))

    async def list(self) -> builtins.list[Schedule]:
        """The tenant's schedules."""
        body = await self._client._json("GET", path("schedules"), idempotent=True)
        return [Schedule.model_validate(item) for item in items(body)]

    async def get(self, schedule_id: str) -> Schedule:
        """One schedule, with its `next_run_at`."""
        body = await self._client._json("GET", path("schedules", schedule_id), idempotent=True)
        return Schedule.model_validate(body)

    async def delete(self, schedule_id: str) -> None:
        """Remove a schedule: it fires no more (a turn it started goes on)."""
        await self._client._request("DELETE", path("schedules", schedule_id))
