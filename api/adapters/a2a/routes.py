"""A2A's routes: each agent's card and its JSON-RPC endpoint. Parse (translate.py), call the turn service
(api/service/turns.py) and the job's events (api/streams.py), shape the answer (translate.py).

Everything the JSON-RPC endpoint answers is JSON-RPC, errors included (A2A's codes, never Parley's error shape):
HTTP 200 for what the request asked wrong, and the HTTP status itself where HTTP answers (401 with
`WWW-Authenticate: Bearer`, 404 for an agent this key cannot see, 429 with `Retry-After`, 503 with the store down).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from parley.shared import events
from parley.shared.clock import now_ms
from parley.shared.errors import (
    Conflict,
    NotFound,
    NotReady,
    ParleyError,
    PrivateNetwork,
    TooManyRequests,
    TooManyWebhooks,
    Unauthorized,
    UnresolvableHost,
)
from parley.shared.events import EventType
from parley.shared.schema import ChatRequest
from parley.shared.store.turns import new_job_id
from parley.shared.store.webhooks import KIND_A2A, Webhook, WebhookStore
from parley.shared.text import clean_json

from ...deps import Credentials, Runtime, Tenant, check_request_rate, tenant_for_key
from ...errors import documented
from ...routes import webhooks as webhook_routes
from ...runtime import WebRuntime
from ...service import turns
from ...streams import PING, SSE_HEADERS, Draining, PlacedStreamingResponse, job_events, stream_place
from . import push, translate
from .translate import Call, Dialect, Incoming, RpcError

log = logging.getLogger("parley.api.a2a")

router = APIRouter(prefix="/a2a", tags=["A2A"])

CARD_VERSION = "0.1.0"
JSON = "application/json"


@router.get("/{agent}/.well-known/agent-card.json", responses=documented(401, 404, 429, 503))
async def agent_card(agent: str, request: Request, rt: Runtime, tenant: Tenant) -> dict[str, Any]:
    """The agent's A2A card (1.0, with 0.3's fields): its JSON-RPC endpoint `/a2a/{agent}` and Bearer keys."""
    found = await run_in_threadpool(rt.agents.get, tenant, agent)
    url = str(request.base_url).rstrip("/") + f"/a2a/{quote(agent, safe='')}"
    return translate.agent_card(found, url, CARD_VERSION)


@router.post("/{agent}", response_model=None, responses={200: {"description": "A JSON-RPC response, or SSE"}})
async def json_rpc(
    agent: str, request: Request, rt: Runtime, credentials: Credentials,
    a2a_version: Annotated[str | None, Header(alias="A2A-Version")] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:  # fmt: skip
    """The agent's A2A JSON-RPC endpoint: SendMessage, SendStreamingMessage, GetTask, CancelTask,
    SubscribeToTask (and the 0.3 names message/send, message/stream, tasks/get, tasks/cancel, tasks/resubscribe)."""
    body: Any = None
    legacy = False
    try:
        tenant = await _tenant(rt, credentials.credentials if credentials else None)
        body = await _body(request)
        call = translate.parse_call(body)
        legacy = call.legacy
        translate.check_version(a2a_version)
        found = await _agent(rt, tenant, agent)
        handler = Handler(rt, tenant, credentials.credentials if credentials else "", found, call, idempotency_key)
        return await handler.run()
    except RpcError as error:
        return _error(translate.request_id(body), error, legacy)
    except ParleyError as error:
        return _error(translate.request_id(body), _from_parley(error), legacy)
    except RedisError as error:
        log.warning("Redis unavailable during an A2A call: %s", error)
        return _error(translate.request_id(body), _store_down(), legacy)


async def _tenant(rt: WebRuntime, key: str | None) -> str:
    tenant = tenant_for_key(rt, key)
    await check_request_rate(rt, tenant)
    return tenant


async def _agent(rt: WebRuntime, tenant: str, name_or_id: str) -> dict[str, Any]:
    """The endpoint's agent; HTTP 404 (a JSON-RPC error inside) for one this key cannot see: no endpoint is there."""
    try:
        return await run_in_threadpool(rt.agents.get, tenant, name_or_id)
    except NotFound as error:
        raise translate.invalid_request(error.message, http_status=404, parley_code=error.code) from None


async def _body(request: Request) -> Any:
    """The request's JSON; -32700 for what is not JSON (nor UTF-8, nor shallow enough to read)."""
    raw = await request.body()
    try:
        return clean_json(json.loads(raw))  # lone surrogates as U+FFFD, as the body guard does for JSON bodies
    except (ValueError, RecursionError):
        raise translate.parse_error("the body is not valid JSON") from None


def _store_down() -> RpcError:
    down = translate.internal_error("the data store is unavailable; try again shortly", http_status=503,
                                    parley_code="redis_unavailable")  # fmt: skip
    down.headers["Retry-After"] = "2"
    return down


def _from_parley(error: ParleyError) -> RpcError:
    """Parley's errors in A2A's terms: HTTP's own for a key, an agent, a limit, a store; else invalid params."""
    if isinstance(error, Unauthorized):
        failed = translate.invalid_request(error.message, http_status=401, parley_code=error.code)
        failed.headers["WWW-Authenticate"] = "Bearer"
        return failed
    if isinstance(error, TooManyRequests):
        failed = translate.internal_error(error.message, http_status=429, parley_code=error.code)
        failed.headers["Retry-After"] = str(error.retry_after_s)
        return failed
    if isinstance(error, NotReady):
        return translate.internal_error(error.message, http_status=503, parley_code=error.code)
    if isinstance(error, NotFound):
        return translate.invalid_params(error.message, parley_code=error.code)
    return translate.invalid_params(error.message, parley_code=error.code)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(translate.dumps(body), status_code=status, media_type=JSON, headers=headers)


def _error(request_id: str | int | None, error: RpcError, legacy: bool) -> Response:
    return _json(translate.error_body(request_id, error, legacy), error.http_status, error.headers)


class Handler:
    """One JSON-RPC call on one agent's endpoint, for one tenant."""

    def __init__(self, rt: WebRuntime, tenant: str, key: str, agent: dict[str, Any], call: Call,
                 idempotency_key: str | None) -> None:  # fmt: skip
        self.rt, self.tenant, self.key, self.agent, self.call = rt, tenant, key, agent, call
        self.idempotency_key = idempotency_key
        self.dialect = Dialect(call.legacy)

    async def run(self) -> Response:
        routes: dict[str, Callable[[], Awaitable[Response]]] = {
            "send": self.send, "stream": self.stream, "get": self.get, "cancel": self.cancel,
            "subscribe": self.subscribe, "push_set": self.push_set, "push_get": self.push_get,
            "push_list": self.push_list, "push_delete": self.push_delete,
        }  # fmt: skip
        route = routes.get(self.call.kind)
        if route is None:
            raise self._unsupported()
        return await route()

    def _unsupported(self) -> RpcError:
        if self.call.kind == "extended_card":
            return translate.extended_card_not_configured()
        return translate.unsupported("ListTasks is not supported: a context is a Parley session, whose messages "
                                     "(GET /api/v1/sessions/{contextId}/messages) name tasks (job_id)")  # fmt: skip

    def _ok(self, result: Any) -> Response:
        return _json(translate.result_body(self.call.request_id, result))

    # -- reading a task -----------------------------------------------------------------------------------------

    async def _record(self, task_id: str) -> dict[str, str]:
        """The job of this tenant and this agent with the task's id; TaskNotFound for any other."""
        record = await run_in_threadpool(self.rt.turns.job, self.tenant, task_id)
        if record is None or record.get("agent_id") != self.agent["id"]:
            raise translate.task_not_found(task_id)
        return record

    async def _task(self, task_id: str, history_length: int | None = None) -> dict[str, Any]:
        record = await self._record(task_id)
        return translate.from_record(task_id, record).render(self.dialect, history_length)

    async def get(self) -> Response:
        task_id = translate.task_id_param(self.call.params)
        length = translate.history_length(translate.param(self.call.params, "historyLength", "history_length"))
        return self._ok(await self._task(task_id, length))

    async def cancel(self) -> Response:
        task_id = translate.task_id_param(self.call.params)
        record = await self._record(task_id)
        state = translate.record_state(record)
        if state in translate.FINAL_STATES:
            raise translate.task_not_cancelable(task_id, state)
        if not await run_in_threadpool(self.rt.turns.cancel, self.tenant, task_id):
            ended = translate.record_state(await self._record(task_id))
            if ended != "canceled":
                raise translate.task_not_cancelable(task_id, ended)
        return self._ok(await self._task(task_id))

    # -- sending a message --------------------------------------------------------------------------------------

    async def _accept(self, incoming: Incoming, job_id: str | None = None) -> str:
        """Queue the message as a turn of this agent in the context's session (a new one without contextId);
        `job_id` names the task (default: a new id)."""
        try:
            request = ChatRequest(message=incoming.text, agent=self.agent["id"], session_id=incoming.context_id)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, p['loc'])) or 'message'}: {p['msg']}" for p in error.errors())
            names = problems.replace("session_id", "message.contextId").replace("message:", "message text:")
            raise translate.invalid_params(names) from None
        accepted = await turns.accept(self.rt, self.tenant, request, self.idempotency_key, self.key,
                                      this_turn=turns.ThisTurn(job_id=job_id) if job_id else None)  # fmt: skip
        return accepted.job_id

    async def _decide(self, incoming: Incoming) -> tuple[str, str | None, bool]:
        """Apply a message's decisions to the task that waits for them: (task id, the last event id before the
        decisions, True when the last waiting call was decided and the turn goes on)."""
        task_id = str(incoming.task_id)
        record = await self._record(task_id)
        if incoming.context_id is not None and incoming.context_id != record.get("session_id"):
            raise translate.invalid_params(f"task {task_id!r} belongs to another contextId")
        state = translate.record_state(record)
        if state != "input-required":
            raise translate.unsupported(f"task {task_id!r} is {state}, not waiting for input: to go on with the "
                                        "conversation, send a new message with its contextId")  # fmt: skip
        waiting = translate.undecided_calls(record)
        unknown = [decision.call_id for decision in incoming.decisions if decision.call_id not in waiting]
        if unknown:
            raise translate.invalid_params(f"task {task_id!r} waits for no decision on call {unknown[0]!r} "
                                           f"(waiting: {', '.join(sorted(waiting)) or 'none'})")  # fmt: skip
        backlog = await self.rt.hub.backlog(self.tenant, task_id, None)
        after = backlog[-1][0] if backlog else None
        outcome = ""
        for decision in incoming.decisions:
            try:
                outcome = await run_in_threadpool(self.rt.turns.decide, self.tenant, task_id, decision.call_id,
                                                  decision.approve, decision.reason or "")  # fmt: skip
            except (NotFound, Conflict) as error:
                raise translate.invalid_params(error.message, parley_code=error.code) from None
        return task_id, after, outcome == "resumed"

    async def _settle(self, task_id: str, after: str | None) -> None:
        """Wait (PARLEY_CHAT_TIMEOUT_S at most) until the task ends or waits for input: a blocking send's answer
        is the task then (still working, past the wait: the client polls GetTask)."""
        try:
            async with asyncio.timeout(self.rt.settings.chat_timeout_s):
                async for _, payload in self._events(task_id, after):
                    if not payload:
                        continue
                    event = events.decode(payload)
                    if event["type"] == EventType.DONE or (
                        event["type"] == EventType.STATUS and event.get("message") == "waiting"
                    ):
                        return
        except (TimeoutError, Draining):
            return

    async def send(self) -> Response:
        incoming = translate.parse_send(self.call.params, self.call.legacy)
        config = push.from_send(self.call.params, self.call.legacy)
        if incoming.task_id is not None:
            if config is not None:
                await self._record(incoming.task_id)
                await self._put_config(incoming.task_id, config)
            task_id, after, resumed = await self._decide(incoming)
            if resumed and incoming.blocking:
                await self._settle(task_id, after)
        else:
            task_id = await self._accept_with(incoming, config)
            if incoming.blocking:
                await self._settle(task_id, None)
        return self._ok(self.dialect.send_result(await self._task(task_id, incoming.history_length)))

    # -- push notification configs (push.py) ---------------------------------------------------------------------

    def _webhooks(self) -> WebhookStore:
        return WebhookStore(self.rt.clients.text, self.rt.settings.max_webhooks, self.rt.settings.sealer)

    async def _put_config(self, task_id: str, config: push.PushConfig) -> Webhook:
        """Store the config for the task (its URL checked as a webhook's is): -32602 when it may not be."""
        try:
            await webhook_routes.check_address(self.rt, config.url)
        except (PrivateNetwork, UnresolvableHost) as error:
            raise translate.invalid_params(f"url: {error.message}", parley_code=error.code) from None
        hook = push.subscription(task_id, config, self.call.legacy, now_ms())
        try:
            return await run_in_threadpool(self._webhooks().put_config, self.tenant, hook)
        except TooManyWebhooks as error:
            raise translate.invalid_params(error.message, parley_code=error.code) from None

    async def _accept_with(self, incoming: Incoming, config: push.PushConfig | None) -> str:
        """Queue the message; with a push config, the config is stored first, for the task's id chosen here, so
        the task's first end (however soon) finds it. A replayed request (Idempotency-Key) gets the first one's task."""
        if config is None:
            return await self._accept(incoming)
        job_id = new_job_id()
        provisional = await self._put_config(job_id, config)
        try:
            task_id = await self._accept(incoming, job_id)
        except BaseException:
            await run_in_threadpool(self._drop_config, provisional.id)
            raise
        if task_id != job_id:
            await self._put_config(task_id, config)
            await run_in_threadpool(self._drop_config, provisional.id)
        return task_id

    def _drop_config(self, subscription_id: str) -> None:
        with suppress(NotFound, RedisError):
            self._webhooks().delete(self.tenant, subscription_id, KIND_A2A)

    async def _configs(self, task_id: str) -> list[Webhook]:
        await self._record(task_id)  # TaskNotFound for another tenant's or agent's task
        return await run_in_threadpool(self._webhooks().task_configs, self.tenant, task_id)

    async def _config(self) -> Webhook:
        task_id, config_id = push.parse_ref(self.call.params, self.call.legacy)
        configs = await self._configs(task_id)
        found = [hook for hook in configs if config_id is None or hook.config_id == config_id]
        if not found:
            raise translate.invalid_params(f"task {task_id!r} has no push notification config "
                                           f"{config_id or task_id!r}")  # fmt: skip
        return found[0]

    async def push_set(self) -> Response:
        task_id, config = push.parse_set(self.call.params, self.call.legacy)
        await self._record(task_id)
        return self._ok(push.render(await self._put_config(task_id, config), self.call.legacy))

    async def push_get(self) -> Response:
        return self._ok(push.render(await self._config(), self.call.legacy))

    async def push_list(self) -> Response:
        task_id, _ = push.parse_ref(self.call.params, self.call.legacy)
        return self._ok(push.render_list(await self._configs(task_id), self.call.legacy))

    async def push_delete(self) -> Response:
        hook = await self._config()
        await run_in_threadpool(self._drop_config, hook.id)
        return self._ok(None)

    # -- streams ------------------------------------------------------------------------------------------------

    async def stream(self) -> Response:
        incoming = translate.parse_send(self.call.params, self.call.legacy)
        with stream_place(self.rt.hub, self.tenant) as place:  # past the tenant's stream limit: 429, nothing queued
            if incoming.task_id is not None:
                task_id, _, resumed = await self._decide(incoming)
            else:
                task_id, resumed = await self._accept(incoming), False
            return await self._sse(place, task_id, resumed)

    async def subscribe(self) -> Response:
        task_id = translate.task_id_param(self.call.params)
        record = await self._record(task_id)
        state = translate.record_state(record)
        if state in translate.FINAL_STATES:
            raise translate.unsupported(f"task {task_id!r} has ended ({state}): GetTask shows it")
        with stream_place(self.rt.hub, self.tenant) as place:
            return await self._sse(place, task_id, False)

    async def _sse(self, place: Any, task_id: str, resumed: bool) -> Response:
        """The task's stream: its snapshot (the events so far, folded), then an update per event that changes
        something, until it ends or waits for input."""
        record = await self._record(task_id)
        backlog = await self.rt.hub.backlog(self.tenant, task_id, None)
        stored = [(event_id, events.decode(payload)) for event_id, payload in backlog]
        folded = translate.fold(task_id, record, stored, self.dialect)
        if resumed:
            folded.resumed()
        after = backlog[-1][0] if backlog else None
        headers = {**SSE_HEADERS, "X-Parley-Job": task_id, "X-Parley-Session": record.get("session_id", "")}
        body = self._frames(folded, task_id, after)
        return PlacedStreamingResponse(place, body, media_type="text/event-stream", headers=headers)

    def _events(self, task_id: str, after: str | None) -> AsyncIterator[tuple[str, str]]:
        return job_events(self.rt.hub, self.tenant, task_id, after, self.rt.settings.sse_ping_s)

    def _frame(self, result: Any) -> str:
        return f"data: {translate.dumps(translate.result_body(self.call.request_id, result))}\n\n"

    async def _frames(self, folded: translate.TaskFold, task_id: str, after: str | None) -> AsyncIterator[str]:
        yield self._frame(folded.snapshot())
        if translate.stream_ends_at_snapshot(folded):
            return
        try:
            async for event_id, payload in self._events(task_id, after):
                if not payload:
                    yield PING
                    continue
                for result in folded.feed(events.decode(payload), event_id):
                    yield self._frame(result)
                if folded.closed:
                    return
        except (RedisError, NotReady, Draining) as error:
            log.warning("A2A stream of %s ended early: %s", task_id, error)
            interrupted = translate.internal_error("the stream was interrupted (server stopping or store "
                                                   "unavailable): SubscribeToTask resumes it")  # fmt: skip
            body = translate.error_body(self.call.request_id, interrupted, self.call.legacy)
            yield f"event: error\ndata: {translate.dumps(body)}\n\n"
