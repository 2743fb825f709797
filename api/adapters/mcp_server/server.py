"""The MCP server itself: the official SDK's low-level `Server`, whose handlers list the caller's agents as tools
and run a call as a turn through the one chat service (api/service/turns.py).

Nothing lives between requests: each HTTP request brings its caller (`Caller`: runtime, tenant, key) as the
handlers' lifespan state, so any web process answers any request. Cancel, as each revision says:
- 2026-07-28: closing the call's response stream cancels the call's handler (the SDK does so); the handler then
  cancels the turn.
- 2025-11-25: a disconnect is no cancel (the turn goes on and commits); `notifications/cancelled` is. The POST
  that carries it reaches any web process, so the call's turn is found through Redis: a call made under a
  connection token (`Mcp-Session-Id`, see routes.py) is accepted with the Idempotency-Key `call_key(token,
  request id)`, and the notification (seen by routes.py before the SDK) cancels that key's job.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from parley.shared import events
from parley.shared.errors import ParleyError, TooManyRequests
from parley.shared.events import EventType
from parley.shared.schema import ChatResponse
from parley.shared.store.turns import Accepted

from ...runtime import WebRuntime
from ...service import turns
from ...streams import Draining, job_events
from . import translate

log = logging.getLogger("parley.api.mcp_server")

UNAVAILABLE = "the service cannot reach its store right now; try again shortly"


@dataclass(frozen=True)
class Caller:
    """Who sent this HTTP request: what the handlers would otherwise have to keep between requests."""

    rt: WebRuntime
    tenant: str
    key: str
    token: str | None = None
    """The 2025-11-25 connection token (`Mcp-Session-Id`) this request carries, if any."""


Context = ServerRequestContext[Caller]


async def _agents(caller: Caller) -> dict[str, dict[str, Any]]:
    """The caller's agents by tool name; Redis down is a JSON-RPC error saying so (not a bare internal error)."""
    try:
        return translate.tools_by_name(await run_in_threadpool(caller.rt.agents.visible, caller.tenant))
    except RedisError:
        raise MCPError(types.INTERNAL_ERROR, UNAVAILABLE) from None


async def list_tools(ctx: Context, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    """Every agent the key can see, as a tool (one page: a tenant's agents are bounded)."""
    named = await _agents(ctx.lifespan_context)
    return types.ListToolsResult(tools=[translate.tool(name, agent) for name, agent in named.items()])


def call_key(token: str, request_id: str | int) -> str:
    """The Idempotency-Key of the call `request_id` under a connection token: bounded whatever the id's length,
    and `7` and `"7"` (two ids to JSON-RPC) stay apart."""
    return f"mcp:{token}:{hashlib.sha256(json.dumps(request_id).encode()).hexdigest()[:32]}"


def _idempotency_key(ctx: Context) -> str | None:
    """Where a 2025-11-25 `notifications/cancelled` can find this call's turn (see the module's docstring)."""
    token = ctx.lifespan_context.token
    if token is None or ctx.request_id is None or ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return None
    return call_key(token, ctx.request_id)


async def call_tool(ctx: Context, params: types.CallToolRequestParams) -> types.CallToolResult:
    """Run one turn of the named agent; its answer, its error, or its approval wait as the tool's result.
    An unknown tool is a protocol error (-32602); anything wrong with the arguments or the turn, a tool error."""
    caller = ctx.lifespan_context
    agent = (await _agents(caller)).get(params.name)
    if agent is None:
        raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name!r} (tools/list names this key's agents)")
    try:
        body = translate.chat_request(agent, params.arguments)
    except translate.BadArguments as error:
        return translate.failed(f"invalid arguments: {error}", code="invalid_request")
    try:
        accepted = await turns.accept(caller.rt, caller.tenant, body, _idempotency_key(ctx), caller.key)
    except ParleyError as error:
        known = {k: str(v) for k, v in error.extra.items()}
        if isinstance(error, TooManyRequests):  # a limit or the budget: when to call again, as HTTP's Retry-After
            known["retry_after_s"] = str(error.retry_after_s)
        return translate.failed(error.message, code=error.code, **known)
    except RedisError:
        return translate.failed(UNAVAILABLE, code="not_ready")
    try:
        return await _follow(ctx, accepted, agent)
    except BaseException:
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:  # the call's stream closed: the revision's cancel
            with anyio.CancelScope(shield=True):
                await _cancel(caller, accepted.job_id)
        raise


async def _cancel(caller: Caller, job_id: str) -> None:
    try:
        if await run_in_threadpool(caller.rt.turns.cancel, caller.tenant, job_id):
            log.info("MCP call abandoned: turn %s canceled", job_id)
    except RedisError as error:
        log.warning("could not cancel turn %s: %s", job_id, error)


class _Progress:
    """`notifications/progress` from the turn's `delta`s (the SDK sends them only to a client that asked, with a
    progressToken): progress counts the answer's characters so far, the message is the new piece."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.chars = 0

    async def delta(self, content: str) -> None:
        if content:
            self.chars += len(content)
            await self.ctx.session.report_progress(float(self.chars), message=content)


async def _follow(ctx: Context, accepted: Accepted, agent: dict[str, Any]) -> types.CallToolResult:
    """Follow the turn's events to its end or its approval wait, bounded by PARLEY_CHAT_TIMEOUT_S."""
    caller, job_id = ctx.lifespan_context, accepted.job_id
    seen: dict[str, dict[str, Any]] = {}
    pending: list[dict[str, Any]] = []
    progress = _Progress(ctx)
    turn = {"job_id": job_id, "session_id": accepted.session_id, "agent_id": accepted.agent_id}
    try:
        async with asyncio.timeout(caller.rt.settings.chat_timeout_s):
            source = job_events(caller.rt.hub, caller.tenant, job_id, None, ping_s=caller.rt.settings.sse_ping_s)
            async for _, payload in source:
                if not payload:
                    continue
                event = events.decode(payload)
                kind = event["type"]
                seen[kind] = event
                if kind == EventType.DELTA:
                    await progress.delta(event.get("content") or "")
                elif kind == EventType.APPROVAL_REQUIRED:
                    pending.append({key: event.get(key) for key in ("call_id", "tool_name", "args")})
                elif kind == EventType.STATUS and event.get("message") == "resumed":
                    pending = []
                elif kind == EventType.STATUS and event.get("message") == "waiting":
                    return translate.waiting(accepted.session_id, job_id, accepted.agent_id, pending)
    except TimeoutError:
        return translate.failed(f"the turn is taking too long; it goes on: poll GET /api/v1/jobs/{job_id}",
                                code="timeout", **turn)  # fmt: skip
    except Draining:
        return translate.failed(f"this server is shutting down; the turn goes on: poll GET /api/v1/jobs/{job_id}",
                                code="not_ready", **turn)  # fmt: skip
    except RedisError:
        return translate.failed(UNAVAILABLE, code="not_ready", **turn)
    return _ended(seen, turn, agent)


def _ended(seen: dict[str, dict[str, Any]], turn: dict[str, str], agent: dict[str, Any]) -> types.CallToolResult:
    """The result of a turn whose `done` came: its answer, or its error as a tool error."""
    session, response = seen.get(EventType.SESSION), seen.get(EventType.RESPONSE)
    if session is not None and response is not None:
        result = ChatResponse(response=response["content"], agent_id=session["agent_id"],
                              agent_name=session["agent_name"], session_id=session["session_id"],
                              job_id=turn["job_id"], structured=response.get("structured"))  # fmt: skip
        return translate.answer(result, agent)
    error = seen.get(EventType.ERROR, {})
    return translate.failed(error.get("message") or "the turn failed", code=error.get("code") or "failed", **turn)


async def cancel_call(caller: Caller, request_id: object) -> None:
    """2025-11-25 `notifications/cancelled`: cancel the turn of the call `request_id` made under the caller's
    connection token (nothing when the caller has none or no such call is known)."""
    if caller.token is None or not isinstance(request_id, str | int) or isinstance(request_id, bool):
        return
    try:
        job_id = await run_in_threadpool(_job_of_call, caller, call_key(caller.token, request_id))
    except RedisError as error:
        log.warning("could not look up the call to cancel: %s", error)
        return
    if job_id:
        await _cancel(caller, job_id)


def _job_of_call(caller: Caller, idempotency_key: str) -> str | None:
    """The job a call's Idempotency-Key names."""
    return caller.rt.turns.idempotent_job(caller.tenant, idempotency_key)


def build() -> Server[Caller]:
    """The one MCP server of this process (stateless: it holds no caller, session or call)."""
    server: Server[Caller] = Server("parley", version="0.1.0", title="Parley agents", instructions=(
        "Each tool is a Parley agent. Call it with a `message`; pass the `session_id` of an earlier result's "
        "`_meta.parley` to continue that conversation."), on_list_tools=list_tools, on_call_tool=call_tool)  # fmt: skip
    return server
