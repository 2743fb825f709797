"""OpenAI's chat completions, translated: a `ChatCompletionRequest` becomes Parley's `ChatRequest` (plus
the conversation it brings, without a session, and the client's own tools), and the turn's answer or
events become a `chat.completion` or `chat.completion.chunk`s. No I/O here: `routes.py` calls the turn service.

Client tools (`tools`, `tool_choice`, `parallel_tool_calls`, `role: "tool"` messages) are checked here as far as
the request alone allows; what needs the agent or the session (a name clash with the agent's tools, the
session's waiting calls) is checked by the turn service. Whatever cannot be honoured is a 400 naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from parley.shared.errors import InvalidInput, ParleyError, TooLarge
from parley.shared.events import ErrorCode, EventType, decode
from parley.shared.schema import SESSION_ID_PATTERN, ChatRequest, ChatResponse, OnBusy
from parley.shared.settings import Settings
from parley.shared.shapes import ShapeError, check_json
from parley.shared.store.turns import ClientTools

from ...errors import client_input

REFUSED = ("n", "response_format", "logprobs", "top_logprobs")
"""Fields whose meaning Parley cannot honour: refused (422) rather than silently dropped, when set."""
LEGACY = ("functions", "function_call")
"""OpenAI's deprecated function calling: refused with 400 (use `tools` / `tool_choice`)."""

TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
"""OpenAI's pattern for a function's name."""
MAX_TOOLS = 128
"""Most client tools one request may bring (OpenAI's own limit)."""
TOOL_MAX_BYTES = 64 * 1024
"""One tool (name, description, parameters) at most this many UTF-8 bytes as JSON."""
TOOLS_MAX_BYTES = 512 * 1024
"""All of a request's tools at most this many UTF-8 bytes as JSON."""
TOOL_MAX_DEPTH = 32
"""A tool's `parameters` schema nested at most this deep."""
CALL_ID_MAX_CHARS = 256
"""A tool call's id (in an assistant's `tool_calls` or a tool message's `tool_call_id`) at most this long."""
MAX_CALLS_PER_MESSAGE = 128
"""Most `tool_calls` one assistant message may carry."""
FUNCTION_FIELDS: dict[str, tuple[type, str]] = {
    "description": (str, "a string"), "parameters": (dict, "a JSON Schema object"), "strict": (bool, "true or false"),
}
"""A function tool's optional fields: the type each must have, and how an error says it."""
FUNCTION_KEYS = frozenset({"name", *FUNCTION_FIELDS})
TOOL_CHOICES = ("none", "auto", "required")


def _short(value: Any) -> str:
    """A client's value quoted in an error message, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def refused(message: str, field: str) -> ParleyError:
    """The 400 for a request Parley cannot honour as asked (`field` names the part at fault)."""
    return ParleyError(message, field=field)


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: Any = Field(None, description="An assistant message's calls of the client's tools.")
    tool_call_id: Any = Field(None, description="The call a `tool` message answers.")


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
    tools: Any = Field(None, description="OpenAI function tools the client runs itself (docs/openai.md).")
    tool_choice: Any = Field(None, description='"none", "auto", "required" or {"type": "function", ...}.')
    parallel_tool_calls: Any = Field(None, description="true or absent: the model may call several tools at once.")
    on_busy: OnBusy = Field("enqueue", description="Parley's: what to do while a turn of the session is under way "
                            "(enqueue, reject, interrupt, steer), as on /api/v1/chat.")  # fmt: skip


@dataclass(frozen=True)
class Turn:
    """What a request asks for: the chat request, the conversation it brings (without a session: None with
    one) and its client tools (None when it brings none)."""

    request: ChatRequest
    history: list[dict[str, Any]] | None
    client_tools: ClientTools | None


def _text(message: ChatMessageIn) -> str:
    """A message's text; text parts of a multi-part content are joined (image parts: not yet)."""
    if isinstance(message.content, str):
        return message.content
    parts = message.content or []
    return "".join(str(part.get("text", "")) for part in parts if part.get("type") == "text")


def _chars(message: ChatMessageIn) -> int:
    """What a message brings to the history's character count: its text, and its tool calls as JSON."""
    calls = len(json.dumps(message.tool_calls)) if message.tool_calls is not None else 0
    return len(_text(message)) + calls


def _check_history(body: ChatCompletionRequest, max_messages: int, max_chars: int) -> None:
    """413 for a conversation over PARLEY_MAX_HISTORY_MESSAGES messages or PARLEY_MAX_HISTORY_CHARS
    characters (text and tool calls) in all, before anything is stored or queued."""
    if len(body.messages) > max_messages:
        raise TooLarge(f"the request brings {len(body.messages)} messages; at most {max_messages} are taken",
                       field="messages")  # fmt: skip
    if sum(_chars(message) for message in body.messages) > max_chars:
        raise TooLarge(f"the messages' text is over {max_chars} characters in all", field="messages")


def _session_id(body: ChatCompletionRequest, header: str | None) -> str | None:
    """`X-Parley-Session` (checked by FastAPI), else `user`, which must then be a session id (422)."""
    if header is not None or body.user is None:
        return header
    if not re.fullmatch(SESSION_ID_PATTERN, body.user):
        raise InvalidInput("user names the session here: it must be a session id (1-128 of A-Z a-z 0-9 . _ : @ -, "
                           "starting with a letter or digit)", field="user")  # fmt: skip
    return body.user


# ------------------------------------------------------------------------------------------ client tools


def _refuse_fields(body: ChatCompletionRequest) -> None:
    """422 for the fields Parley cannot honour, 400 for the legacy function calling."""
    extra = body.model_extra or {}
    legacy = [name for name in LEGACY if extra.get(name) is not None]
    if legacy:
        raise refused(f"{legacy[0]} (OpenAI's legacy function calling) is not supported: use tools and tool_choice",
                      legacy[0])  # fmt: skip
    refused_fields = [name for name in REFUSED if extra.get(name) not in (None, [], 1)]
    if refused_fields:
        raise InvalidInput(f"not supported by Parley agents: {', '.join(refused_fields)}", field=refused_fields[0])


def _function_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not TOOL_NAME.fullmatch(value):
        raise refused(f"{field} must be a function name: 1 to 64 of a-z A-Z 0-9 _ -", field)
    return value


def _tool(tool: Any, field: str) -> dict[str, Any]:
    """One of `tools`, checked and bounded, as the model will be offered it."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise refused(f'{field} must be a function tool {{"type": "function", "function": {{...}}}}: '
                      "no other tool type is supported", f"{field}.type")  # fmt: skip
    function = tool.get("function")
    unknown = sorted(set(tool) - {"type", "function"})
    if isinstance(function, dict):
        unknown = unknown or sorted(set(function) - FUNCTION_KEYS)
    if not isinstance(function, dict) or unknown:
        extra = f"; not supported: {', '.join(_short(key) for key in unknown[:5])}" if unknown else ""
        raise refused(f'{field} must be {{"type": "function", "function": {{"name", "description"?, "parameters"?, '
                      f'"strict"?}}}}{extra}', field)  # fmt: skip
    out: dict[str, Any] = {"name": _function_name(function.get("name"), f"{field}.function.name")}
    for key, (kind, what) in FUNCTION_FIELDS.items():
        value = function.get(key)
        if value is not None and not isinstance(value, kind):
            raise refused(f"{field}.function.{key} must be {what}", f"{field}.function.{key}")
        if value is not None:
            out[key] = value
    try:
        check_json(out, max_depth=TOOL_MAX_DEPTH, max_bytes=TOOL_MAX_BYTES, what=field)
    except ShapeError as error:
        raise refused(str(error), field) from None
    return {"type": "function", "function": out}


def client_tools(value: Any) -> list[dict[str, Any]]:
    """The request's `tools`: at most MAX_TOOLS function tools, uniquely named, TOOLS_MAX_BYTES in all."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise refused("tools must be a list of function tools", "tools")
    if len(value) > MAX_TOOLS:
        raise refused(f"tools holds {len(value)} tools; at most {MAX_TOOLS} are taken", "tools")
    tools = [_tool(tool, f"tools.{index}") for index, tool in enumerate(value)]
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        name = tool["function"]["name"]
        if name in seen:
            raise refused(f"two tools are named {name!r}", f"tools.{index}.function.name")
        seen.add(name)
    size = len(json.dumps(tools, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > TOOLS_MAX_BYTES:
        raise refused(f"tools are larger than {TOOLS_MAX_BYTES} bytes as JSON in all ({size})", "tools")
    return tools


def tool_choice(value: Any, names: set[str]) -> Any:
    """The request's `tool_choice` as the worker takes it (None when absent). A named function must be one of
    the request's `tools`; "required" with no tool at all is checked by the turn service, which knows the agent."""
    if value is None:
        return None
    if isinstance(value, str) and value in TOOL_CHOICES:
        return value
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict):
        name = value["function"].get("name")
        if isinstance(name, str) and name in names:
            return {"type": "function", "function": {"name": name}}
        raise refused(f"tool_choice names {_short(name)}, which is not one of the request's tools",
                      "tool_choice.function.name")  # fmt: skip
    raise refused('tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
                  "tool_choice")  # fmt: skip


def _check_parallel(value: Any, tools: list[dict[str, Any]]) -> None:
    """`parallel_tool_calls`: true or absent. false cannot be honoured with client tools: the model may call
    several at once and Parley hands them all back (without client tools no call reaches the client)."""
    if value is not None and not isinstance(value, bool):
        raise refused("parallel_tool_calls must be true or false", "parallel_tool_calls")
    if value is False and tools:
        raise refused("parallel_tool_calls false is not supported: the model may call several tools in one step",
                      "parallel_tool_calls")  # fmt: skip


# ---------------------------------------------------------------------------------------------- messages


def _call_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= CALL_ID_MAX_CHARS:
        raise refused(f"{field} must be a tool call id: a string of 1 to {CALL_ID_MAX_CHARS} characters", field)
    return value


def _assistant_call(call: Any, field: str) -> dict[str, Any]:
    """One call of an assistant message's `tool_calls`, in OpenAI's shape."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or call.get("type", "function") != "function":
        raise refused(f'{field} must be {{"id", "type": "function", "function": {{"name", "arguments"}}}}', field)
    if not isinstance(function.get("arguments"), str):
        raise refused(f"{field}.function.arguments must be a string (the arguments as JSON text)",
                      f"{field}.function.arguments")  # fmt: skip
    return {"id": _call_id(call.get("id"), f"{field}.id"), "type": "function",
            "function": {"name": _function_name(function.get("name"), f"{field}.function.name"),
                         "arguments": function["arguments"]}}  # fmt: skip


def _assistant_calls(message: ChatMessageIn, index: int) -> list[dict[str, Any]]:
    """A message's `tool_calls`, checked ([] when it has none): only an assistant's, unique ids."""
    field = f"messages.{index}.tool_calls"
    if message.tool_calls is None or message.tool_calls == []:
        return []
    if message.role != "assistant":
        raise refused(f"{field}: only assistant messages carry tool_calls", field)
    if not isinstance(message.tool_calls, list) or len(message.tool_calls) > MAX_CALLS_PER_MESSAGE:
        raise refused(f"{field} must be a list of at most {MAX_CALLS_PER_MESSAGE} tool calls", field)
    calls = [_assistant_call(call, f"{field}.{n}") for n, call in enumerate(message.tool_calls)]
    ids = [call["id"] for call in calls]
    if len(set(ids)) < len(ids):
        raise refused(f"{field}: two calls have the same id", field)
    return calls


def _tool_call_id(message: ChatMessageIn, index: int) -> str | None:
    """A tool message's `tool_call_id` (required); any other message must not carry one."""
    field = f"messages.{index}.tool_call_id"
    if message.role != "tool":
        if message.tool_call_id is not None:
            raise refused(f"{field}: only tool messages carry tool_call_id", field)
        return None
    return _call_id(message.tool_call_id, field)


def _conversation_message(message: ChatMessageIn, index: int) -> dict[str, Any]:
    """A request's message as the worker's history takes it (worker/turn/context.py model_message)."""
    text = _text(message)
    call_id = _tool_call_id(message, index)
    calls = _assistant_calls(message, index)
    if call_id is not None:
        return {"role": "tool", "tool_call_id": call_id, "content": text}
    if calls:
        return {"role": "assistant", "content": text or None, "tool_calls": calls}
    return {"role": "system" if message.role == "developer" else message.role, "content": text}


def _check_answers(conversation: list[dict[str, Any]]) -> None:
    """Each assistant message's tool calls answered, each by one tool message, right after it, as OpenAI
    requires (a model server would refuse the conversation otherwise): 400 naming the message at fault."""
    waiting: set[str] | None = None
    asked_at = -1
    for index, message in enumerate(conversation):
        if message["role"] == "tool":
            if waiting is None or message["tool_call_id"] not in waiting:
                raise refused(f"messages[{index}] answers tool call {message['tool_call_id']!r}, which the assistant "
                              "message before it did not make (or another tool message answered already)",
                              f"messages.{index}.tool_call_id")  # fmt: skip
            waiting.discard(message["tool_call_id"])
            continue
        _check_none_waiting(waiting, asked_at)
        waiting = {call["id"] for call in message.get("tool_calls") or ()} or None
        asked_at = index
    _check_none_waiting(waiting, asked_at)


def _check_none_waiting(waiting: set[str] | None, asked_at: int) -> None:
    if waiting:
        raise refused(f"the tool calls {', '.join(sorted(waiting))} of messages[{asked_at}] have no tool message "
                      "answering them", f"messages.{asked_at}.tool_calls")  # fmt: skip


def _results_start(messages: list[ChatMessageIn]) -> int:
    """Where the trailing `tool` messages start (len(messages) when the last message is not one)."""
    start = len(messages)
    while start > 0 and messages[start - 1].role == "tool":
        start -= 1
    return start


def _results(messages: list[ChatMessageIn], start: int) -> list[dict[str, str]]:
    """The trailing tool messages as ClientTools.results, each answering another call."""
    results: list[dict[str, str]] = []
    for index in range(start, len(messages)):
        call_id = _call_id(messages[index].tool_call_id, f"messages.{index}.tool_call_id")
        if any(result["tool_call_id"] == call_id for result in results):
            raise refused(f"messages[{index}] answers tool call {call_id!r} again", f"messages.{index}.tool_call_id")
        results.append({"tool_call_id": call_id, "content": _text(messages[index])})
    return results


def _chat_request(body: ChatCompletionRequest, session_id: str | None, text: str | None) -> ChatRequest:
    """The chat request; `text` None for a turn that goes on from tool results (no new user message)."""
    with client_input():
        request = ChatRequest(message=text if text is not None else "-", agent=body.model, session_id=session_id,
                              on_busy=body.on_busy)  # fmt: skip
    return request if text is not None else request.model_copy(update={"message": ""})


def _turn(body: ChatCompletionRequest, session_id: str | None) -> Turn:
    """The chat request, the conversation the request brings (without a session) and its client tools."""
    _refuse_fields(body)
    tools = client_tools(body.tools)
    choice = tool_choice(body.tool_choice, {tool["function"]["name"] for tool in tools})
    _check_parallel(body.parallel_tool_calls, tools)
    messages = body.messages
    start = _results_start(messages)
    results = _results(messages, start) if start < len(messages) else None
    if results is None and (messages[-1].role != "user" or not _text(messages[-1]).strip()):
        raise InvalidInput("the last message must be a user message with text, or tool messages answering the "
                           "assistant's tool_calls", field="messages")  # fmt: skip
    request = _chat_request(body, session_id, _text(messages[-1]) if results is None else None)
    extras = ClientTools(tools, choice, results) if tools or choice is not None or results is not None else None
    if session_id is not None:  # the session's memory is the conversation; the turn service checks the results
        return Turn(request, None, extras)
    conversation = [_conversation_message(message, index) for index, message in enumerate(messages)]
    _check_answers(conversation)
    return Turn(request, conversation[:start] if results is not None else conversation[:-1], extras)


def read(body: ChatCompletionRequest, session_header: str | None, settings: Settings) -> Turn:
    """The turn a request asks for. 413 past the history limits, 422 for a malformed conversation, 400 for
    what Parley cannot honour (docs/openai.md); nothing is stored or queued yet."""
    _check_history(body, settings.max_history_messages, settings.max_history_chars)
    return _turn(body, _session_id(body, session_header))


# ---------------------------------------------------------------------------------------------- answers


def completion_id(job_id: str) -> str:
    return "chatcmpl-" + job_id.removeprefix("job_")


def _usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    """The turn's usage in OpenAI's shape: the prompt tokens the provider served from its cache (the turn's
    `cached_tokens`, 0 when it did not say) in `prompt_tokens_details.cached_tokens`, as OpenAI reports them."""
    usage = usage or {}
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": int(usage.get("total_tokens", prompt + completion)),
            "prompt_tokens_details": {"cached_tokens": int(usage.get("cached_tokens", 0))}}  # fmt: skip


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    """A client tool call (`{id, name, arguments}`) in OpenAI's `tool_calls` shape."""
    return {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}


def completion(result: ChatResponse, model: str, created: int) -> dict[str, Any]:
    """The waited-for answer as a `chat.completion`; calls of the client's tools end it with `tool_calls`."""
    message: dict[str, Any] = {"role": "assistant", "content": result.response}
    finish = "stop"
    if result.tool_calls:
        calls = [_tool_call(call.model_dump()) for call in result.tool_calls]
        message, finish = {"role": "assistant", "content": result.response or None, "tool_calls": calls}, "tool_calls"
    return {
        "id": completion_id(result.job_id), "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": _usage(result.usage), "system_fingerprint": None,
    }  # fmt: skip


async def chunks(events: AsyncIterator[tuple[str, str]], job_id: str, created: int, model: str,
                 include_usage: bool) -> AsyncIterator[str]:  # fmt: skip
    """The turn's events (`job_events`; a ping is an empty payload) as `chat.completion.chunk`s, then `[DONE]`.
    Calls of the client's tools come last, one chunk per call (`delta.tool_calls` with its `index`), and
    the final chunk's finish_reason is then "tool_calls"."""
    chunk_id = completion_id(job_id)

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        payload = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"  # fmt: skip

    yield chunk({"role": "assistant", "content": ""})
    sent_text = set_apart = False
    async for _, payload in events:
        if not payload:
            yield ": ping\n\n"
            continue
        event = decode(payload)
        kind = event["type"]
        if kind == EventType.DELTA:
            if set_apart:  # the thought streamed so far is not the answer: set it apart from what follows
                yield chunk({"content": "\n\n"})
            sent_text, set_apart = True, False
            yield chunk({"content": event["content"]})
        elif kind == EventType.STATUS and event.get("message") in ("retrying", "repairing") and sent_text:
            # OpenAI's format cannot take back text already sent: say so rather than send it twice.
            yield _error_chunk("the answer was interrupted (its worker stopped or its shape was repaired); "
                               "retry the request", "interrupted")  # fmt: skip
            break
        elif kind == EventType.LLM_THOUGHT and sent_text:
            set_apart = True
        elif kind == EventType.RESPONSE:
            calls = event.get("tool_calls") or []
            for index, call in enumerate(calls):
                yield chunk({"tool_calls": [{"index": index, **_tool_call(call)}]})
            yield chunk({}, "tool_calls" if calls else "stop")
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
