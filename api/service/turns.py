"""A chat turn, whatever protocol asked for it: accept it (checks, agent, idempotency, queue) and
follow its events to the answer or the error that fits how it ended.

`/api/v1/chat` (waited for, streamed, queued), the OpenAI-compatible `/v1/chat/completions` and the
seed's `/agents/chat-agent` all go through here; the summary follows its job with `last_events` too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from parley.shared import events, logs, tracing
from parley.shared.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    NothingToRegenerate,
    NotReady,
    ParleyError,
    TimedOut,
    TooLarge,
    turn_error,
)
from parley.shared.events import EventType
from parley.shared.schema import TEXT_MAX, ChatRequest, ChatResponse
from parley.shared.shapes import check_shape
from parley.shared.store import images
from parley.shared.store.turns import Accepted, ClientTools

from ..runtime import WebRuntime
from ..streams import Draining, job_events


def _resolve_agent(rt: WebRuntime, tenant: str, body: ChatRequest) -> dict[str, Any]:
    bound = rt.sessions.bound_agent(tenant, body.session_id) if body.session_id else None
    if body.agent:
        agent = rt.agents.get(tenant, body.agent)
        if bound and bound != agent["id"]:
            raise Conflict(f"session {body.session_id!r} belongs to another agent ({bound})")
        return agent
    found = rt.agents.get_by_id(tenant, bound) if bound else rt.agents.first(tenant)
    if found is None:
        if bound:
            raise NotFound(f"the agent of session {body.session_id!r} no longer exists")
        raise NotFound("no agent exists yet: create one with POST /api/v1/agents")
    return found


def _check_sizes(rt: WebRuntime, body: ChatRequest) -> None:
    if len(body.message) > rt.settings.max_message_chars:
        raise TooLarge(f"message is longer than {rt.settings.max_message_chars} characters")
    for index, image in enumerate(body.images):
        try:
            images.check(image, rt.settings.max_image_bytes)
        except images.ImageError as error:
            if error.too_large:
                raise TooLarge(f"images[{index}] {error}") from None
            raise InvalidInput(f"images[{index}] {error}", field=f"images.{index}") from None


MCP_MODEL_PREFIX = "mcp__"
"""How the model knows an agent's MCP tools (`mcp__<server>__<tool>`, worker/mcp/): a client tool may not
start so on an agent that has MCP tools."""
SESSION_TAIL = 128
"""Messages read back from a session's end to find the tool calls waiting for the client's results."""


def _check_clashes(agent: dict[str, Any], tools: list[dict[str, Any]]) -> None:
    """400 for a client tool named like one of the agent's own: the model could not tell them apart."""
    own = agent.get("tools") or []
    builtin = {name for name in own if not name.startswith("mcp:")}
    has_mcp = len(builtin) < len(own)
    for index, tool in enumerate(tools):
        name = tool["function"]["name"]
        if name in builtin or (has_mcp and name.startswith(MCP_MODEL_PREFIX)):
            why = f"a tool named {name!r}" if name in builtin else f"MCP tools (the model's {MCP_MODEL_PREFIX}* names)"
            raise ParleyError(f"tools[{index}] clashes with the agent's own tools: it has {why}; rename yours",
                              field=f"tools.{index}.function.name")  # fmt: skip


def waiting_calls(tail: list[dict[str, Any]]) -> list[str]:
    """The ids of the tool calls a session's last assistant message made that no stored tool message answers
    (the client's: the agent's own were answered before the turn ended); [] when a user message is last."""
    answered: set[str] = set()
    for message in reversed(tail):
        if message["role"] == "tool":
            answered.add(message.get("tool_call_id") or "")
            continue
        if message["role"] != "assistant":
            return []
        return [call["id"] for call in message.get("tool_calls") or () if call.get("id") not in answered]
    return []


def check_results(results: list[dict[str, str]], waiting: list[str]) -> None:
    """400 unless the tool results answer exactly the calls that wait for them."""
    unknown = [result["tool_call_id"] for result in results if result["tool_call_id"] not in waiting]
    if unknown:
        raise ParleyError(f"tool message for {unknown[0]!r}: the session has no tool call of that id waiting for a "
                          f"result (waiting: {', '.join(waiting) or 'none'})", field="messages")  # fmt: skip
    missing = sorted(set(waiting) - {result["tool_call_id"] for result in results})
    if missing:
        raise ParleyError(f"the session's tool calls {', '.join(missing)} have no tool message answering them",
                          field="messages")  # fmt: skip


def _session_tail(rt: WebRuntime, tenant: str, session_id: str) -> list[dict[str, Any]]:
    try:
        stored = rt.sessions.messages(tenant, session_id, limit=SESSION_TAIL, before=None)
    except NotFound:
        return []
    return [message.model_dump() for message in stored]


def _check_client_tools(rt: WebRuntime, tenant: str, agent: dict[str, Any], session_id: str | None,
                        client_tools: ClientTools) -> None:  # fmt: skip
    """What of the client's tools needs the agent or the session: names, "required", the waiting calls.
    Without a session the adapter checked the results against the conversation the request brings."""
    _check_clashes(agent, client_tools.tools)
    if client_tools.tool_choice == "required" and not (client_tools.tools or agent.get("tools")):
        raise ParleyError('tool_choice is "required" but neither the request nor the agent has a tool',
                          field="tool_choice")  # fmt: skip
    if client_tools.results is not None and session_id is not None:
        check_results(client_tools.results, waiting_calls(_session_tail(rt, tenant, session_id)))


@dataclass(frozen=True)
class ThisTurn:
    """What a request sets for its turn only (the Responses API's `instructions` and `text.format`): instructions
    after the agent's, a response shape instead of the agent's."""

    instructions: str | None = None
    response_shape: dict[str, Any] | str | None = None
    annotations: dict[str, Any] | None = None
    """What the protocol that made the turn keeps with it and shows again (the Responses API's `background`,
    `previous_response_id`, `metadata`): the turn itself does not read it."""
    job_id: str | None = None
    """The id the turn gets, when the protocol must name it before the turn is queued (A2A's push notification
    config on SendMessage, stored first so the turn's first end finds it); default: a new one. Not hashed: a
    replayed request answers with the first request's job."""


def request_hash(body: ChatRequest, history: list[dict[str, Any]] | None = None,
                 client_tools: ClientTools | None = None, this_turn: ThisTurn | None = None) -> str:  # fmt: skip
    """What an Idempotency-Key is bound to: the same key with another request is a conflict."""
    request = {**body.model_dump(), "history": history}
    if client_tools is not None:  # only then: a request without them hashes as it always did
        request["client_tools"] = client_tools.job_fields()
    if this_turn is not None and this_turn != ThisTurn():
        request["this_turn"] = [this_turn.instructions, this_turn.response_shape, this_turn.annotations]
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def _check_this_turn(rt: WebRuntime, this_turn: ThisTurn) -> None:
    """The turn's own instructions within the agent fields' bound, its shape checked as an agent's is (422)."""
    if this_turn.instructions is not None and len(this_turn.instructions) > TEXT_MAX:
        raise InvalidInput(f"instructions are longer than {TEXT_MAX} characters", field="instructions")
    if this_turn.response_shape is not None:
        try:
            check_shape(this_turn.response_shape)
        except ValueError as error:
            raise InvalidInput(f"response shape: {error}", field="response_shape") from None


def _check_regenerate(rt: WebRuntime, tenant: str, body: ChatRequest) -> None:
    """A regenerate needs a session (404) with a user message to answer again (409 `nothing_to_regenerate`).
    The turn answers the last one as it is when the turn runs (turns queued before it may add one)."""
    session_id = body.session_id or ""
    if rt.sessions.bound_agent(tenant, session_id) is None:
        raise NotFound(f"session {session_id!r} not found")
    if rt.sessions.last_user_message(tenant, session_id) is None:
        raise NothingToRegenerate(f"session {session_id!r} has no user message to answer again")


def _accept(rt: WebRuntime, tenant: str, body: ChatRequest, idempotency_key: str | None, api_key: str,
            history: list[dict[str, Any]] | None, client_tools: ClientTools | None,
            this_turn: ThisTurn, trace: dict[str, str]) -> Accepted:  # fmt: skip
    digest = request_hash(body, history, client_tools, this_turn)
    if idempotency_key:
        replay = rt.turns.replay(tenant, idempotency_key, digest)
        if replay:
            return replay
    _check_sizes(rt, body)
    _check_this_turn(rt, this_turn)
    agent = _resolve_agent(rt, tenant, body)
    if body.regenerate:
        _check_regenerate(rt, tenant, body)
    if client_tools is not None:
        _check_client_tools(rt, tenant, agent, body.session_id, client_tools)
    return rt.turns.accept(
        tenant=tenant, agent=agent, session_id=body.session_id, message=body.message, images=body.images,
        idempotency_key=idempotency_key, request_hash=digest, api_key=api_key, history=history,
        client_tools=client_tools, instructions=this_turn.instructions, response_shape=this_turn.response_shape,
        annotations=this_turn.annotations, on_busy=_on_busy(body, history, client_tools), job_id=this_turn.job_id,
        regenerate=body.regenerate, trace=trace,
    )  # fmt: skip


def _on_busy(body: ChatRequest, history: list[dict[str, Any]] | None, client_tools: ClientTools | None) -> str:
    """The request's `on_busy`, where it can be honoured: a steer joins a running turn as text, so a message that
    brings images, tool results or its own conversation cannot be one (422)."""
    if body.on_busy != "steer":
        return body.on_busy
    if body.images or history is not None or (client_tools is not None and client_tools.results is not None):
        raise InvalidInput("on_busy \"steer\" joins a running turn with text only: this request brings images, "
                           "tool results or its own conversation; use enqueue or interrupt",
                           field="on_busy")  # fmt: skip
    return "enqueue" if body.regenerate else "steer"


async def accept(rt: WebRuntime, tenant: str, body: ChatRequest, idempotency_key: str | None,
                 api_key: str = "", history: list[dict[str, Any]] | None = None,
                 client_tools: ClientTools | None = None, this_turn: ThisTurn | None = None) -> Accepted:  # fmt: skip
    """Queue a turn (see TurnStore.accept); `history` makes it a turn that brings its conversation,
    `client_tools` one whose model may call the client's tools (400 for what cannot be honoured),
    `this_turn` one with its own instructions or response shape (422 when they are out of bounds)."""
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 255):
        raise InvalidInput("Idempotency-Key must be 1 to 255 characters", field="Idempotency-Key")
    accepted = await run_in_threadpool(_accept, rt, tenant, body, idempotency_key, api_key, history, client_tools,
                                       this_turn or ThisTurn(), tracing.job_fields())  # fmt: skip
    logs.bind(session_id=accepted.session_id, job_id=accepted.job_id)
    tracing.accepted(accepted.job_id, accepted.session_id)
    return accepted


async def last_events(rt: WebRuntime, tenant: str, job_id: str, timeout_s: float, *, too_long: str,
                      stopping: str, **error_extra: str) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Follow a job's events to `done`: the last event of each type. TimedOut (`too_long`) after
    `timeout_s` and NotReady (`stopping`) when this process is stopping, both naming the job."""
    seen: dict[str, dict[str, Any]] = {}
    try:
        async with asyncio.timeout(timeout_s):
            async for _, payload in job_events(rt.hub, tenant, job_id, None, ping_s=rt.settings.sse_ping_s):
                if payload:
                    event = events.decode(payload)
                    seen[event["type"]] = event
    except TimeoutError:
        raise TimedOut(too_long, job_id=job_id, **error_extra) from None
    except Draining:
        raise NotReady(stopping, job_id=job_id, **error_extra) from None
    return seen


async def answering_events(rt: WebRuntime, tenant: str, job_id: str, timeout_s: float, *, too_long: str,
                           stopping: str, **error_extra: str) -> tuple[str, dict[str, dict[str, Any]]]:  # fmt: skip
    """`last_events` of the job that answers a request: its own, or, when its message joined a running turn
    (`on_busy: steer`), that turn's (with its id). Errors carry `error_extra`, else the followed job's
    `status_url`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        seen = await last_events(rt, tenant, job_id, left, too_long=too_long, stopping=stopping,
                                 **(error_extra or {"status_url": f"/api/v1/jobs/{job_id}"}))  # fmt: skip
        steered = seen.get(EventType.STEERED)
        if steered is None or not steered.get("job_id") or EventType.RESPONSE in seen:
            return job_id, seen
        job_id = steered["job_id"]  # the message joined that running turn: its answer is this request's


async def wait_for_result(rt: WebRuntime, tenant: str, accepted: Accepted) -> ChatResponse:
    """Follow the turn's events to `done`; its answer, or the error that fits how it ended.

    The events carry all the answer needs (`session` names the agent, `response` holds the
    text), so no extra read of the job record is needed.
    """
    job_id, seen = await answering_events(rt, tenant, accepted.job_id, rt.settings.chat_timeout_s,
                                          too_long="the turn is taking too long; poll its job",
                                          stopping="this server is shutting down; the turn goes on: poll its job")
    session, response = seen.get(EventType.SESSION), seen.get(EventType.RESPONSE)
    error = seen.get(EventType.ERROR, {})
    if session is not None and response is not None:
        return ChatResponse(response=response["content"], agent_id=session["agent_id"],
                            agent_name=session["agent_name"], session_id=session["session_id"],
                            job_id=job_id, usage=response.get("usage"),
                            structured=response.get("structured"), tool_calls=response.get("tool_calls"))  # fmt: skip
    raise turn_error(error.get("code"), error.get("message") or "the turn failed", job_id=job_id)
