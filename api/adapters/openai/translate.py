"""OpenAI's chat completions, translated: a `ChatCompletionRequest` becomes Parley's `ChatRequest` (plus
the conversation it brings, without a session), and the turn's answer or events become a
`chat.completion` or `chat.completion.chunk`s. No I/O here: `routes.py` calls the turn service.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from parley.shared.errors import InvalidInput, TooLarge
from parley.shared.events import ErrorCode, EventType, decode
from parley.shared.schema import SESSION_ID_PATTERN, ChatRequest, ChatResponse
from parley.shared.settings import Settings

from ...errors import client_input

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


def read(body: ChatCompletionRequest, session_header: str | None,
         settings: Settings) -> tuple[ChatRequest, list[dict[str, str]] | None]:  # fmt: skip
    """The turn a request asks for: the chat request and, without a session, the conversation it brings.
    413 past the history limits, 422 for what Parley cannot honour; nothing is stored or queued yet."""
    _check_history(body, settings.max_history_messages, settings.max_history_chars)
    return _turn(body, _session_id(body, session_header))


def completion_id(job_id: str) -> str:
    return "chatcmpl-" + job_id.removeprefix("job_")


def _usage(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": int(usage.get("total_tokens", prompt + completion))}  # fmt: skip


def completion(result: ChatResponse, model: str, created: int) -> dict[str, Any]:
    """The waited-for answer as a `chat.completion`."""
    return {
        "id": completion_id(result.job_id), "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.response},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": _usage(result.usage), "system_fingerprint": None,
    }  # fmt: skip


async def chunks(events: AsyncIterator[tuple[str, str]], job_id: str, created: int, model: str,
                 include_usage: bool) -> AsyncIterator[str]:  # fmt: skip
    """The turn's events (`job_events`; a ping is an empty payload) as `chat.completion.chunk`s, then `[DONE]`."""
    chunk_id = completion_id(job_id)

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        payload = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"  # fmt: skip

    yield chunk({"role": "assistant", "content": ""})
    sent_text = False
    async for _, payload in events:
        if not payload:
            yield ": ping\n\n"
            continue
        event = decode(payload)
        kind = event["type"]
        if kind == EventType.DELTA:
            sent_text = True
            yield chunk({"content": event["content"]})
        elif kind == EventType.STATUS and event.get("message") in ("retrying", "repairing") and sent_text:
            # OpenAI's format cannot take back text already sent: say so rather than send it twice.
            yield _error_chunk("the answer was interrupted (its worker stopped or its shape was repaired); "
                               "retry the request", "interrupted")  # fmt: skip
            break
        elif kind == EventType.LLM_THOUGHT and sent_text:
            yield chunk({"content": "\n\n"})  # the thought streamed so far is not the answer: set it apart
        elif kind == EventType.RESPONSE:
            yield chunk({}, "stop")
            if include_usage:
                usage_chunk = {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                               "model": model, "choices": [], "usage": _usage(event.get("usage"))}  # fmt: skip
                yield f"data: {json.dumps(usage_chunk)}\n\n"
        elif kind == EventType.ERROR:
            yield _error_chunk(event.get("message", "the turn failed"), event.get("code", ErrorCode.TURN_FAILED))
    yield "data: [DONE]\n\n"


def _error_chunk(message: str, code: str) -> str:
    return f"data: {json.dumps({'error': {'message': message, 'type': 'server_error', 'code': code}})}\n\n"


def models(agents: list[dict[str, Any]]) -> dict[str, Any]:
    """Agents as OpenAI's model list (`id` is the agent's name)."""
    return {"object": "list", "data": [
        {"id": agent["name"], "object": "model", "created": int(agent["created_at"]) // 1000,
         "owned_by": "parley", "parley_agent_id": agent["id"]} for agent in agents
    ]}  # fmt: skip
