"""OpenAI-compatible `/v1/chat/completions` and `/v1/models`: any OpenAI client talks to an agent
by changing only its base URL, key and model name (the agent's name or id).

With a session (`X-Parley-Session` header, else the `user` field) the agent answers from that
session's memory in Redis and only the request's last user message is new; without one, the
request's messages are the whole conversation and nothing is stored. Either way the turn goes
through the same queue and workers as `/api/v1/chat`. docs/openai.md lists the fields honoured,
ignored and refused.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from parley.shared.errors import InvalidInput, TooLarge
from parley.shared.models import SESSION_ID_PATTERN, ChatRequest

from .. import chatting
from ..deps import ApiKey, Runtime, Tenant
from ..errors import client_input, documented
from ..streams import SSE_HEADERS, PlacedStreamingResponse, job_events, stream_place

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"],
                   responses=documented(400, 401, 404, 409, 413, 422, 429, 502, 503, 504))  # fmt: skip

REFUSED = ("n", "tools", "functions", "tool_choice", "function_call", "response_format", "logprobs", "top_logprobs")
"""Fields whose meaning Parley cannot honour: refused (422) rather than silently dropped, when set."""


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [{"model": "Chef", "messages": [{"role": "user", "content": "Hello!"}]}]},
    )
    model: str = Field(..., min_length=1, description="The agent's name or id.")
    messages: list[ChatMessageIn] = Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="Names the session when X-Parley-Session is absent.")


def _text(message: ChatMessageIn) -> str:
    """A message's text; text parts of a multi-part content are joined (image parts: not yet)."""
    if isinstance(message.content, str):
        return message.content
    parts = message.content or []
    return "".join(str(part.get("text", "")) for part in parts if part.get("type") == "text")


def _check_history(body: ChatCompletionRequest, max_messages: int, max_chars: int) -> None:
    """413 for a conversation over PARLEY_MAX_HISTORY_MESSAGES messages or PARLEY_MAX_HISTORY_CHARS
    characters of text in all, before anything is stored or queued."""
    if len(body.messages) > max_messages:
        raise TooLarge(f"the request brings {len(body.messages)} messages; at most {max_messages} are taken",
                       field="messages")  # fmt: skip
    if sum(len(_text(message)) for message in body.messages) > max_chars:
        raise TooLarge(f"the messages' text is over {max_chars} characters in all", field="messages")


def _session_id(body: ChatCompletionRequest, header: str | None) -> str | None:
    """`X-Parley-Session` (checked by FastAPI), else `user`, which must then be a session id (422)."""
    if header is not None or body.user is None:
        return header
    if not re.fullmatch(SESSION_ID_PATTERN, body.user):
        raise InvalidInput("user names the session here: it must be a session id (1-128 of A-Z a-z 0-9 . _ : @ -, "
                           "starting with a letter or digit)", field="user")  # fmt: skip
    return body.user


def _turn(body: ChatCompletionRequest, session_id: str | None) -> tuple[ChatRequest, list[dict[str, str]] | None]:
    """The chat request and, without a session, the conversation the request brings."""
    refused = [name for name in REFUSED if (body.model_extra or {}).get(name) not in (None, [], 1)]
    if refused:
        raise InvalidInput(f"not supported by Parley agents: {', '.join(refused)}", field=refused[0])
    last = body.messages[-1]
    if last.role != "user" or not _text(last).strip():
        raise InvalidInput("the last message must be a user message with text", field="messages")
    with client_input():
        request = ChatRequest(message=_text(last), agent=body.model, session_id=session_id)
    if session_id is not None:
        return request, None
    role = {"developer": "system"}
    history = [{"role": role.get(m.role, m.role), "content": _text(m)} for m in body.messages[:-1]]
    return request, history


def _completion_id(job_id: str) -> str:
    return "chatcmpl-" + job_id.removeprefix("job_")


def _usage(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": int(usage.get("total_tokens", prompt + completion))}  # fmt: skip


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, rt: Runtime, tenant: Tenant, key: ApiKey,
    x_parley_session: Annotated[str | None, Header(alias="X-Parley-Session", pattern=SESSION_ID_PATTERN)] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse | StreamingResponse:  # fmt: skip
    """Chat with an agent in OpenAI's format (`model` = the agent's name or id)."""
    _check_history(body, rt.settings.max_history_messages, rt.settings.max_history_chars)
    session_id = _session_id(body, x_parley_session)
    request, history = _turn(body, session_id)
    if body.stream:
        with stream_place(rt.hub, tenant) as place:  # a tenant past its stream limit gets 429, and nothing is queued
            accepted = await chatting.accept(rt, tenant, request, idempotency_key, key, history=history)
            completion_id, created = _completion_id(accepted.job_id), int(time.time())
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            chunks = _chunks(rt, tenant, accepted.job_id, completion_id, created, body.model, include_usage)
            headers = {**SSE_HEADERS, "X-Parley-Job": accepted.job_id, "X-Parley-Session": accepted.session_id}
            return PlacedStreamingResponse(place, chunks, media_type="text/event-stream", headers=headers)
    accepted = await chatting.accept(rt, tenant, request, idempotency_key, key, history=history)
    completion_id, created = _completion_id(accepted.job_id), int(time.time())
    result = await chatting.wait_for_result(rt, tenant, accepted)
    return JSONResponse({
        "id": completion_id, "object": "chat.completion", "created": created, "model": body.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.response},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": _usage(result.usage), "system_fingerprint": None,
    }, headers={"X-Parley-Session": result.session_id, "X-Parley-Job": accepted.job_id})  # fmt: skip


async def _chunks(rt: Any, tenant: str, job_id: str, completion_id: str, created: int, model: str,
                  include_usage: bool) -> AsyncIterator[str]:  # fmt: skip
    """The turn's events as `chat.completion.chunk`s, then `[DONE]`."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"  # fmt: skip

    yield chunk({"role": "assistant", "content": ""})
    sent_text = False
    async for _, payload in job_events(rt.hub, tenant, job_id, None, rt.settings.sse_ping_s, stop_on_drain=False):
        if not payload:
            yield ": ping\n\n"
            continue
        event = json.loads(payload)
        kind = event["type"]
        if kind == "delta":
            sent_text = True
            yield chunk({"content": event["content"]})
        elif kind == "status" and event.get("message") in ("retrying", "repairing") and sent_text:
            # OpenAI's format cannot take back text already sent: say so rather than send it twice.
            yield _error_chunk("the answer was interrupted (its worker stopped or its shape was repaired); "
                               "retry the request", "interrupted")  # fmt: skip
            break
        elif kind == "llm_thought" and sent_text:
            yield chunk({"content": "\n\n"})  # the thought streamed so far is not the answer: set it apart
        elif kind == "response":
            yield chunk({}, "stop")
            if include_usage:
                usage_chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                               "model": model, "choices": [], "usage": _usage(event.get("usage"))}  # fmt: skip
                yield f"data: {json.dumps(usage_chunk)}\n\n"
        elif kind == "error":
            yield _error_chunk(event.get("message", "the turn failed"), event.get("code", "turn_failed"))
    yield "data: [DONE]\n\n"


def _error_chunk(message: str, code: str) -> str:
    return f"data: {json.dumps({'error': {'message': message, 'type': 'server_error', 'code': code}})}\n\n"


@router.get("/models")
async def list_models(rt: Runtime, tenant: Tenant) -> dict[str, Any]:
    """The agents this key can see, as OpenAI models (`id` is the agent's name)."""
    agents = await run_in_threadpool(rt.agents.visible, tenant)
    return {"object": "list", "data": [
        {"id": agent["name"], "object": "model", "created": int(agent["created_at"]) // 1000,
         "owned_by": "parley", "parley_agent_id": agent["id"]} for agent in agents
    ]}  # fmt: skip
