"""A `POST /v1/responses` request, translated into one Parley turn: its chat request, the conversation it brings
(stateless only), its client tools and what it sets for this turn only (instructions, response shape). No I/O here:
`routes.py` reads the previous response's job and calls the turn service.

Input items map so: system and developer messages join `instructions` (this turn's own, after the agent's); the
last user message is the turn's message (its `input_image` data URIs its images, its `input_file` text files read
into it: files.py); Parley's own output items sent back (`parley:tool_call`, ...) are skipped; trailing
`function_call_output` items are the client's tool results (the turn goes on from them). Earlier messages and
`function_call` items are a conversation the request brings: taken only when the response has no session (no
`conversation`, no `previous_response_id`), else refused, since the session's memory holds the conversation.
Whatever cannot be honoured is a 400 naming the field (docs/protocols.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from parley.shared.errors import InvalidInput, NotFound, ParleyError, TooLarge
from parley.shared.schema import SESSION_ID_PATTERN, ChatRequest, OnBusy
from parley.shared.settings import Settings
from parley.shared.store.turns import ClientTools

from ...errors import client_input
from ...service.turns import ThisTurn
from ..openai import translate as chat
from .files import file_text

RESPONSE_PREFIX = "resp_"
JOB_PREFIX = "job_"
RESPONSE_ID = re.compile(r"resp_[0-9a-f]{32}")
REFUSED = ("prompt",)
"""Fields Parley cannot honour: refused with 400 when set (stored prompts do not exist here)."""
TEXT_PARTS = ("input_text", "output_text", "text")
ROLES = ("user", "assistant", "system", "developer")
SLUG = "parley"
"""Parley's implementor slug: Open Responses has implementors prefix their own item types with it ("slug:type")."""
TOOL_CALL = f"{SLUG}:tool_call"
"""The output item of a call of the agent's own tools (built-in or MCP), which Parley ran: a receipt, not a request
for the client (Open Responses' extension items are prefixed with the implementor's slug)."""
APPROVAL_REQUEST = f"{SLUG}:approval_request"
"""The output item of a call of the agent's tools that waits for a person's decision."""
RECEIPTS = (TOOL_CALL, APPROVAL_REQUEST)
"""Parley's own output items: taken back as input (a client sending a response's output again) and skipped, since
the calls they record already ran and their results reached the answer."""


def response_id(job_id: str) -> str:
    return RESPONSE_PREFIX + job_id.removeprefix(JOB_PREFIX)


def job_id_of(value: str) -> str:
    """The job behind a response id; NotFound for anything that is not one (it cannot name a response)."""
    if not RESPONSE_ID.fullmatch(value):
        raise NotFound(f"response {value[:80]!r} not found")
    return JOB_PREFIX + value.removeprefix(RESPONSE_PREFIX)


def refused(message: str, field: str) -> ParleyError:
    """The 400 for what Parley cannot honour as asked (`field` names the part at fault)."""
    return ParleyError(message, field=field)


class ResponseCreate(BaseModel):
    model_config = ConfigDict(
        extra="allow", json_schema_extra={"examples": [{"model": "Chef", "input": "Something with basil?"}]},
    )  # fmt: skip
    model: str = Field(..., min_length=1, description="The agent's name or id.")
    input: str | list[Any] = Field(..., description="A user message, or input items (docs/protocols.md).")
    instructions: str | None = Field(None, description="This turn's own instructions, after the agent's.")
    stream: bool = False
    background: bool = False
    store: bool = True
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = Field(None, description='A session id, or {"id": session id}.')
    tools: Any = Field(None, description="Function tools the client runs itself.")
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    text: Any = Field(None, description='{"format": {"type": "json_schema", "schema": {...}}} or text.')
    metadata: Any = None
    on_busy: OnBusy = Field("enqueue", description="Parley's: what to do while a turn of the conversation is under "
                            "way (enqueue, reject, interrupt, steer), as on /api/v1/chat.")  # fmt: skip


@dataclass
class Item:
    """One input item, checked: a message (`role`, `text`, `images`) or a function call or its output."""

    kind: str
    role: str = ""
    text: str = ""
    images: list[str] = field(default_factory=list)
    call: dict[str, Any] | None = None


@dataclass(frozen=True)
class Turn:
    """What a request asks for: the chat request (its session named or None), the conversation it brings (None
    with a session), its client tools and this turn's own settings."""

    request: ChatRequest
    history: list[dict[str, Any]] | None
    client_tools: ClientTools | None
    this_turn: ThisTurn


# ------------------------------------------------------------------------------------------------ input


def _part_text(part: Any, field: str, role: str, images: list[str]) -> str:
    """One content part's text ('' for an image, which joins `images`); 400 for any other part."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in TEXT_PARTS and isinstance(part.get("text"), str):
        return str(part["text"])
    if kind == "input_image" and role == "user":
        url = part.get("image_url")
        if not isinstance(url, str) or not url.startswith("data:"):
            raise refused(f"{field}.image_url must be a data: URI (Parley fetches no image and keeps no files)",
                          f"{field}.image_url")  # fmt: skip
        images.append(url)
        return ""
    if kind == "input_file" and role == "user":
        return file_text(part, field)
    raise refused(f"{field} must be an input_text part{', input_image or input_file' if role == 'user' else ''} "
                  "(audio and other parts are not supported)", field)  # fmt: skip


def _message(item: dict[str, Any], field: str) -> Item:
    role = item.get("role")
    if role not in ROLES:
        raise refused(f"{field}.role must be one of {', '.join(ROLES)}", f"{field}.role")
    content = item.get("content")
    images: list[str] = []
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "".join(_part_text(part, f"{field}.content.{n}", role, images) for n, part in enumerate(content))
    else:
        raise refused(f"{field}.content must be a string or a list of content parts", f"{field}.content")
    return Item("message", role=role, text=text, images=images)


def _output_text(value: Any, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_part_text(part, f"{field}.{n}", "tool", []) for n, part in enumerate(value))
    raise refused(f"{field} must be a string or a list of input_text parts", field)


def _item(item: Any, index: int) -> Item:
    """One input item, checked (400 naming it when it is not one Parley takes)."""
    field = f"input.{index}"
    if not isinstance(item, dict):
        raise refused(f"{field} must be an input item (an object)", field)
    kind = item.get("type", "message")
    if kind in RECEIPTS:
        return Item(kind)
    if kind == "message":
        return _message(item, field)
    if kind == "function_call_output":
        call_id = chat._call_id(item.get("call_id"), f"{field}.call_id")
        output = _output_text(item.get("output"), f"{field}.output")
        return Item(kind, call={"tool_call_id": call_id, "content": output})
    if kind == "function_call":
        if not isinstance(item.get("arguments"), str):
            raise refused(f"{field}.arguments must be a string (the arguments as JSON text)", f"{field}.arguments")
        call = {"id": chat._call_id(item.get("call_id"), f"{field}.call_id"), "type": "function",
                "function": {"name": chat._function_name(item.get("name"), f"{field}.name"),
                             "arguments": item["arguments"]}}  # fmt: skip
        return Item(kind, call=call)
    raise refused(f"{field}.type {chat._short(kind)} is not supported: input items are messages, function_call and "
                  "function_call_output items (and Parley's own output items, which are skipped)",
                  f"{field}.type")  # fmt: skip


def _items(value: str | list[Any]) -> list[Item]:
    if isinstance(value, str):
        return [Item("message", role="user", text=value)]
    return [item for item in (_item(item, index) for index, item in enumerate(value)) if item.kind not in RECEIPTS]


def _check_size(items: list[Item], settings: Settings) -> None:
    """413 past PARLEY_MAX_HISTORY_MESSAGES items or PARLEY_MAX_HISTORY_CHARS characters, before anything is stored."""
    if len(items) > settings.max_history_messages:
        raise TooLarge(f"input holds {len(items)} items; at most {settings.max_history_messages} are taken",
                       field="input")  # fmt: skip
    chars = sum(len(item.text) + len(json.dumps(item.call or "")) for item in items)
    if chars > settings.max_history_chars:
        raise TooLarge(f"the input's text is over {settings.max_history_chars} characters in all", field="input")


def _conversation(items: list[Item]) -> list[dict[str, Any]]:
    """Items a stateless request brings, as the worker's history takes them (function calls join the assistant
    message before them), checked as /v1/chat/completions checks its messages."""
    out: list[dict[str, Any]] = []
    for item in items:
        if item.kind == "function_call":
            if out and out[-1]["role"] == "assistant":
                out[-1].setdefault("tool_calls", []).append(item.call)
                out[-1]["content"] = out[-1]["content"] or None
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [item.call]})
        elif item.kind == "function_call_output":
            assert item.call is not None
            out.append({"role": "tool", **item.call})
        else:
            out.append({"role": item.role, "content": item.text})
    chat._check_answers(out)
    return out


# ------------------------------------------------------------------------------------------ tools, format


def _tool(tool: Any, index: int) -> dict[str, Any]:
    """A Responses function tool (flat) in the chat format the client-tools checks take."""
    field = f"tools.{index}"
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise refused(f'{field} must be a function tool {{"type": "function", "name", ...}}: no other tool type '
                      "(web search, file search, MCP, ...) is supported", f"{field}.type")  # fmt: skip
    return {"type": "function", "function": {key: value for key, value in tool.items() if key != "type"}}


def _client_tools(body: ResponseCreate, results: list[dict[str, str]] | None) -> ClientTools | None:
    if body.tools is not None and not isinstance(body.tools, list):
        raise refused("tools must be a list of function tools", "tools")
    tools = chat.client_tools([_tool(tool, n) for n, tool in enumerate(body.tools or [])])
    choice = body.tool_choice
    if isinstance(choice, dict) and choice.get("type") == "function" and "function" not in choice:
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    choice = chat.tool_choice(choice, {tool["function"]["name"] for tool in tools})
    if body.parallel_tool_calls is not None and not isinstance(body.parallel_tool_calls, bool):
        raise refused("parallel_tool_calls must be true or false", "parallel_tool_calls")
    if body.parallel_tool_calls is False and tools:
        raise refused("parallel_tool_calls false is not supported: the model may call several tools in one step",
                      "parallel_tool_calls")  # fmt: skip
    if tools or choice is not None or results is not None:
        return ClientTools(tools, choice, results)
    return None


def response_shape(text: Any) -> dict[str, Any] | None:
    """`text.format` as this turn's response shape: a json_schema's schema, json_object any object, text none."""
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None and isinstance(text, dict) and set(text) <= {"format", "verbosity"}:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema" and isinstance(fmt, dict) and isinstance(fmt.get("schema"), dict):
        return dict(fmt["schema"])
    raise refused('text.format must be {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", '
                  '"name", "schema": {...}}', "text.format")  # fmt: skip


def format_name(text: Any) -> str | None:
    """The name a json_schema `text.format` gives its schema (shown again on the response)."""
    fmt = text.get("format") if isinstance(text, dict) else None
    name = fmt.get("name") if isinstance(fmt, dict) and fmt.get("type") == "json_schema" else None
    return name[:64] if isinstance(name, str) else None


def metadata_of(body: ResponseCreate) -> dict[str, str]:
    """The request's `metadata` as OpenAI bounds it: at most 16 string keys of 64 characters, values of 512."""
    value = body.metadata
    if value is None:
        return {}
    if (not isinstance(value, dict) or len(value) > 16
            or any(not isinstance(k, str) or len(k) > 64 or not isinstance(v, str) or len(v) > 512
                   for k, v in value.items())):  # fmt: skip
        raise refused("metadata holds at most 16 string keys (64 characters) with string values (512 characters)",
                      "metadata")  # fmt: skip
    return dict(value)


# -------------------------------------------------------------------------------------------------- turn


def conversation_id(body: ResponseCreate) -> str | None:
    """The session `conversation` names (a string or {"id": ...}); 400 with previous_response_id as well."""
    value = body.conversation
    if value is None:
        return None
    if body.previous_response_id is not None:
        raise refused("conversation and previous_response_id cannot both be set", "conversation")
    session_id = value.get("id") if isinstance(value, dict) else value
    if not isinstance(session_id, str) or not re.fullmatch(SESSION_ID_PATTERN, session_id):
        raise InvalidInput("conversation must be a conversation (session) id: 1-128 of A-Z a-z 0-9 . _ : @ -, "
                           "starting with a letter or digit", field="conversation")  # fmt: skip
    return session_id


def _refuse_fields(body: ResponseCreate) -> None:
    extra = body.model_extra or {}
    for name in REFUSED:
        if extra.get(name) is not None:
            raise refused(f"{name} is not supported by Parley agents", name)
    if body.background and not body.store:
        raise refused("background responses must be stored: store false cannot go with background true", "store")


def _split(items: list[Item]) -> tuple[list[str], list[Item], Item | None, list[dict[str, str]] | None]:
    """(system texts, earlier items, the new user message or None, the trailing tool results or None)."""
    system = [item.text for item in items if item.kind == "message" and item.role in ("system", "developer")]
    rest = [item for item in items if not (item.kind == "message" and item.role in ("system", "developer"))]
    start = len(rest)
    while start > 0 and rest[start - 1].kind == "function_call_output":
        start -= 1
    if start < len(rest):
        results: list[dict[str, str]] = []
        for item in rest[start:]:
            assert item.call is not None
            if any(result["tool_call_id"] == item.call["tool_call_id"] for result in results):
                raise refused(f"two function_call_output items answer call {item.call['tool_call_id']!r}", "input")
            results.append(item.call)
        return system, rest[:start], None, results
    if not rest or rest[-1].kind != "message" or rest[-1].role != "user":
        raise InvalidInput("input must end with a user message, or with function_call_output items answering the "
                           "previous response's function calls", field="input")  # fmt: skip
    return system, rest[:-1], rest[-1], None


def _images_only_last(earlier: list[Item]) -> None:
    if any(item.images for item in earlier):
        raise refused("only the last user message may carry input_image parts", "input")


def read(body: ResponseCreate, settings: Settings, session_id: str | None) -> Turn:
    """The turn a request asks for; `session_id` is the session it continues (from `conversation` or the previous
    response), or None. 413 past the history limits, 422 for malformed input, 400 for what Parley cannot honour."""
    _refuse_fields(body)
    if session_id is not None and not body.store:
        raise refused("store false cannot go with conversation or previous_response_id: the turn would be stored "
                      "in that conversation", "store")  # fmt: skip
    items = _items(body.input)
    _check_size(items, settings)
    system, earlier, message, results = _split(items)
    _images_only_last(earlier)
    instructions = "\n\n".join(text for text in (body.instructions, *system) if text) or None
    shown = {"background": body.background, "previous_response_id": body.previous_response_id,
             "metadata": metadata_of(body), "format_name": format_name(body.text)}
    this_turn = ThisTurn(instructions=instructions, response_shape=response_shape(body.text), annotations=shown)
    extras = _client_tools(body, results)
    with client_input("input"):
        request = ChatRequest(message=message.text if message else "-", agent=body.model, session_id=session_id,
                              images=message.images if message else [], on_busy=body.on_busy)  # fmt: skip
    if message is None:
        request = request.model_copy(update={"message": ""})
    history: list[dict[str, Any]] | None = None
    if session_id is not None:
        answered = {result["tool_call_id"] for result in results or ()}
        if any(item.kind != "function_call" or item.call["id"] not in answered for item in earlier):  # type: ignore[index]
            raise refused("with a conversation or previous_response_id, input holds only what is new: system or "
                          "developer messages and one user message, or function_call_output items (the "
                          "conversation's earlier messages are in its memory)", "input")  # fmt: skip
    elif earlier or not body.store or results is not None:
        history = _conversation([*earlier, *(Item("function_call_output", call=r) for r in results or ())])
        history = history[: len(history) - len(results or ())]
    return Turn(request, history, extras, this_turn)
