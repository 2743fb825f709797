"""A2A, translated: JSON-RPC envelopes and messages in, Parley turns out; a job (its record, or its events as they
stream) becomes an A2A Task, status updates and artifact updates. No I/O here: `routes.py` calls the turn service.

Two dialects share one endpoint, told apart by the method name: A2A 1.0 (`SendMessage`, ...; ProtoJSON shapes:
`{"text": ...}` parts, `TASK_STATE_COMPLETED`, `ROLE_AGENT`, stream results wrapped as `{"statusUpdate": ...}`) and
0.3 (`message/send`, ...; `kind`-tagged objects, `completed`, `agent`, `final` on status updates). Everything is
built once in the 1.0 vocabulary's terms and rendered by `Dialect`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from parley.shared.a2a_task import (  # noqa: F401 (this module's names too: routes and tests use them)
    ANSWER_ARTIFACT,
    FINAL_STATES,
    INTERRUPTED_STATES,
    JOB_STATES,
    WORKING_STATUSES,
    Dialect,
    TaskView,
    from_record,
    loads_or,
    record_state,
)
from parley.shared.clock import iso
from parley.shared.events import ErrorCode, EventType, id_key
from parley.shared.schema import ApprovalDecision

# ------------------------------------------------------------------------------------------------ methods

METHODS_V1 = {
    "SendMessage": "send", "SendStreamingMessage": "stream", "GetTask": "get", "CancelTask": "cancel",
    "SubscribeToTask": "subscribe", "ListTasks": "list", "GetExtendedAgentCard": "extended_card",
    "CreateTaskPushNotificationConfig": "push_set", "GetTaskPushNotificationConfig": "push_get",
    "ListTaskPushNotificationConfigs": "push_list", "DeleteTaskPushNotificationConfig": "push_delete",
}  # fmt: skip
"""A2A 1.0's JSON-RPC methods, each to what Parley does with it."""
METHODS_V03 = {
    "message/send": "send", "message/stream": "stream", "tasks/get": "get", "tasks/cancel": "cancel",
    "tasks/resubscribe": "subscribe", "agent/getAuthenticatedExtendedCard": "extended_card",
    "tasks/pushNotificationConfig/set": "push_set", "tasks/pushNotificationConfig/get": "push_get",
    "tasks/pushNotificationConfig/list": "push_list", "tasks/pushNotificationConfig/delete": "push_delete",
}  # fmt: skip
"""The legacy 0.3 method names, still sent by 0.3 clients (and by a 1.0 SDK talking to a 0.3 interface)."""

STREAMING = ("stream", "subscribe")
MAX_ID_CHARS = 200
"""A task id, context id or call id at most this long (Parley's own are far shorter)."""
MAX_PARTS = 100
"""Most parts one message may carry."""

# ------------------------------------------------------------------------------------------------- errors

ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
A2A_DOMAIN = "a2a-protocol.org"


class RpcError(Exception):
    """A JSON-RPC error with A2A's code and reason; `http_status` is 200 except for what HTTP itself answers
    (a missing key, an unknown agent, too many requests, the data store down)."""

    def __init__(self, code: int, reason: str, message: str, http_status: int = 200,
                 metadata: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.http_status, self.metadata = http_status, metadata or {}
        self.headers: dict[str, str] = {}


def parse_error(message: str) -> RpcError:
    return RpcError(-32700, "PARSE_ERROR", message)


def invalid_request(message: str, http_status: int = 200, **metadata: str) -> RpcError:
    return RpcError(-32600, "INVALID_REQUEST", message, http_status, metadata)


def method_not_found(method: str) -> RpcError:
    return RpcError(-32601, "METHOD_NOT_FOUND", f"no A2A method {method[:80]!r}")


def invalid_params(message: str, **metadata: str) -> RpcError:
    return RpcError(-32602, "INVALID_PARAMS", message, metadata=metadata)


def internal_error(message: str, http_status: int = 500, **metadata: str) -> RpcError:
    return RpcError(-32603, "INTERNAL", message, http_status, metadata)


def task_not_found(task_id: str) -> RpcError:
    return RpcError(-32001, "TASK_NOT_FOUND", f"task {task_id[:MAX_ID_CHARS]!r} not found")


def task_not_cancelable(task_id: str, state: str) -> RpcError:
    return RpcError(-32002, "TASK_NOT_CANCELABLE", f"task {task_id!r} has ended ({state}): it cannot be canceled")


def push_not_supported() -> RpcError:
    return RpcError(-32003, "PUSH_NOTIFICATION_NOT_SUPPORTED", "push notifications are not supported by Parley yet")


def unsupported(message: str) -> RpcError:
    return RpcError(-32004, "UNSUPPORTED_OPERATION", message)


def content_type_not_supported(message: str) -> RpcError:
    return RpcError(-32005, "CONTENT_TYPE_NOT_SUPPORTED", message)


def extended_card_not_configured() -> RpcError:
    return RpcError(-32007, "EXTENDED_AGENT_CARD_NOT_CONFIGURED", "this agent has no extended card")


def version_not_supported(version: str) -> RpcError:
    return RpcError(-32009, "VERSION_NOT_SUPPORTED",
                    f"A2A version {version[:40]!r} is not supported: this server speaks 1.0 and 0.3")  # fmt: skip


def error_body(request_id: str | int | None, error: RpcError, legacy: bool) -> dict[str, Any]:
    """The JSON-RPC error response: 1.0 carries a google.rpc.ErrorInfo in `data` (as the SDK reads it), 0.3
    the metadata itself (when there is any)."""
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if not legacy:
        body["data"] = [{"@type": ERROR_INFO_TYPE, "reason": error.reason, "domain": A2A_DOMAIN,
                         "metadata": error.metadata}]  # fmt: skip
    elif error.metadata:
        body["data"] = error.metadata
    return {"jsonrpc": "2.0", "id": request_id, "error": body}


def result_body(request_id: str | int | None, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def dumps(body: Any) -> str:
    """JSON as sent: ASCII escapes, so any string the API accepted (a lone surrogate too) can be sent back."""
    return json.dumps(body, separators=(",", ":"))


# ----------------------------------------------------------------------------------------------- envelope


@dataclass(frozen=True)
class Call:
    """One JSON-RPC request: its id, what it asks (a value of METHODS_V1), in which dialect, and its params."""

    request_id: str | int | None
    kind: str
    legacy: bool
    params: dict[str, Any]


def request_id(body: Any) -> str | int | None:
    """The id an error answer carries: the request's, when it is one JSON-RPC allows (else null)."""
    value = body.get("id") if isinstance(body, dict) else None
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def parse_call(body: Any) -> Call:
    """The JSON-RPC envelope, checked: -32600 for what is no single request, -32601 for an unknown method."""
    if isinstance(body, list):
        raise invalid_request("batch requests are not supported: send one JSON-RPC request per HTTP request")
    if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
        raise invalid_request('the body must be a JSON-RPC 2.0 request object ({"jsonrpc": "2.0", ...})')
    raw_id = body.get("id")
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, str | int)):
        raise invalid_request("id must be a string, an integer or null")
    method = body.get("method")
    if not isinstance(method, str) or not method:
        raise invalid_request("method must be a non-empty string")
    legacy = method in METHODS_V03
    kind = METHODS_V03.get(method) or METHODS_V1.get(method)
    if kind is None:
        raise method_not_found(method)
    params = body.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise invalid_params("params must be an object")
    return Call(raw_id, kind, legacy, params)


def check_version(header: str | None) -> None:
    """The `A2A-Version` header, when sent, must name 1.x or 0.3 (a missing header means 0.3, per the spec; this
    server answers both dialects on one endpoint, by method name)."""
    if header is None or not header.strip():
        return
    major, _, minor = header.strip().partition(".")
    if major == "1" or (major == "0" and minor.split(".")[0] == "3"):
        return
    raise version_not_supported(header)


def param(params: dict[str, Any], camel: str, snake: str | None = None) -> Any:
    """A field by its JSON name, or its proto name (ProtoJSON parsers accept both)."""
    return params[camel] if camel in params else params.get(snake or camel)


def _optional_id(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_ID_CHARS:
        raise invalid_params(f"{name} must be a string of at most {MAX_ID_CHARS} characters")
    return value


def task_id_param(params: dict[str, Any]) -> str:
    """The `id` of GetTask / CancelTask / SubscribeToTask (and their 0.3 names)."""
    task_id = _optional_id(params.get("id"), "id")
    if task_id is None:
        raise invalid_params("id (the task's id) is required")
    return task_id


def history_length(value: Any) -> int | None:
    """`historyLength`: how many of the task's latest messages to show (None: all of them)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid_params("historyLength must be a non-negative integer")
    return value


# ------------------------------------------------------------------------------------------------ messages


@dataclass(frozen=True)
class Incoming:
    """What a SendMessage asks: a new turn (`text`, in `context_id` or a new session) or, with `task_id`, the
    decisions on the calls that task waits for."""

    text: str
    decisions: list[ApprovalDecision]
    task_id: str | None
    context_id: str | None
    blocking: bool
    history_length: int | None


def _part_content(part: Any, index: int, legacy: bool) -> tuple[str, Any]:
    """('text', str) or ('data', value) for one part; other kinds (files, raw bytes, URLs) are refused."""
    if not isinstance(part, dict):
        raise invalid_params(f"message.parts[{index}] must be an object")
    if legacy:
        kind = part.get("kind")
        value = part.get(kind) if isinstance(kind, str) else None
    else:
        present = [key for key in ("text", "data", "raw", "url") if key in part]
        if len(present) != 1:
            raise invalid_params(f"message.parts[{index}] must hold exactly one of text, data, raw, url")
        kind, value = present[0], part[present[0]]
    if kind == "text" and isinstance(value, str):
        return "text", value
    if kind == "data" and value is not None:
        return "data", value
    if kind in ("text", "data"):
        raise invalid_params(f"message.parts[{index}].{kind} is missing or of the wrong type")
    raise content_type_not_supported(f"message.parts[{index}] is a {str(kind)[:20]} part: Parley agents take text "
                                     "parts (and decisions as data parts for a task that waits for input)")  # fmt: skip


def _decision(value: Any, index: int) -> ApprovalDecision:
    """A data part deciding a waiting call: `{"call_id", "approve", "reason"?}`."""
    if not isinstance(value, dict) or "call_id" not in value:
        raise content_type_not_supported(f"message.parts[{index}] is a data part but no decision "
                                         '{"call_id", "approve", "reason"?}: agents take text parts')  # fmt: skip
    try:
        return ApprovalDecision.model_validate(value)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, p['loc'])) or 'data'}: {p['msg']}" for p in error.errors())
        raise invalid_params(f"message.parts[{index}] is not a valid decision ({problems})") from None


def _role(message: dict[str, Any], legacy: bool) -> None:
    role = message.get("role")
    user = ("user",) if legacy else ("ROLE_USER", "user", 1)
    if role is not None and role not in user:
        raise invalid_params(f"message.role must be {'user' if legacy else 'ROLE_USER'}: the client speaks as the user")


def _configuration(params: dict[str, Any], legacy: bool) -> tuple[bool, int | None]:
    """(blocking, historyLength): 1.0 says `returnImmediately`, 0.3 `blocking`; both block by default."""
    config = params.get("configuration") or {}
    if not isinstance(config, dict):
        raise invalid_params("configuration must be an object")
    if legacy:
        blocking = config.get("blocking")
        blocking = True if blocking is None else blocking
    else:
        immediately = param(config, "returnImmediately", "return_immediately")
        blocking = immediately if immediately is None or not isinstance(immediately, bool) else not immediately
        blocking = True if blocking is None else blocking
    if not isinstance(blocking, bool):
        raise invalid_params("configuration.returnImmediately (0.3: blocking) must be true or false")
    return blocking, history_length(param(config, "historyLength", "history_length"))


def parse_send(params: dict[str, Any], legacy: bool) -> Incoming:
    """SendMessage's (or message/send's) params: text parts joined by newlines make the turn's message; data
    parts `{"call_id", "approve", "reason"?}` decide a waiting task's calls (they need `taskId`)."""
    message = params.get("message")
    if not isinstance(message, dict):
        raise invalid_params("message is required (an object with role and parts)")
    _role(message, legacy)
    parts = message.get("parts")
    if not isinstance(parts, list) or not parts:
        raise invalid_params("message.parts must be a non-empty list")
    if len(parts) > MAX_PARTS:
        raise invalid_params(f"message.parts holds {len(parts)} parts; at most {MAX_PARTS} are taken")
    texts: list[str] = []
    decisions: list[ApprovalDecision] = []
    for index, part in enumerate(parts):
        kind, value = _part_content(part, index, legacy)
        if kind == "text":
            texts.append(value)
        else:
            decisions.append(_decision(value, index))
    task_id = _optional_id(param(message, "taskId", "task_id"), "message.taskId")
    context_id = _optional_id(param(message, "contextId", "context_id"), "message.contextId")
    blocking, length = _configuration(params, legacy)
    if decisions and task_id is None:
        raise invalid_params("a decision (data part with call_id) needs message.taskId: the task that waits for it")
    if task_id is not None and (texts or not decisions):
        raise invalid_params("a message to an existing task carries only decisions: data parts "
                             '{"call_id", "approve", "reason"?} for the calls it waits for (input-required); '
                             "to go on with the conversation, send a new message with its contextId")  # fmt: skip
    if len({decision.call_id for decision in decisions}) < len(decisions):
        raise invalid_params("the message decides the same call twice")
    return Incoming("\n".join(texts), decisions, task_id, context_id, blocking, length)


# ------------------------------------------------------------------------------------------------ dialect
# Dialect, TaskView, record_state and from_record live in parley.shared.a2a_task (the worker's push
# notifications render tasks too); they are this module's names as well.


def undecided_calls(record: dict[str, str]) -> set[str]:
    """The ids of the calls a waiting job still waits a decision for."""
    decided = loads_or(record.get("decisions"), {})
    decided = decided if isinstance(decided, dict) else {}
    pending = loads_or(record.get("pending"), [])
    return {str(call.get("call_id")) for call in pending if call.get("call_id") not in decided}


# ------------------------------------------------------------------------------------------------ streams


@dataclass
class TaskFold:
    """A task built from its job's events, one at a time: `feed` answers the A2A stream events each one makes
    (status updates on a change of state, the answer's deltas as artifact chunks). `closed` once the task ended
    or waits for input: A2A streams end there."""

    view: TaskView
    dialect: Dialect
    shown_text: bool = False
    """An artifact chunk of the current attempt was sent: the next one appends (else it replaces)."""
    closed: bool = False
    at: str | None = None
    """When the event being fed was written (its id's milliseconds): a status's timestamp."""

    def snapshot(self) -> dict[str, Any]:
        """The stream's first event: the task as the events so far made it."""
        return self.dialect.stream_task(self.view.render(self.dialect))

    def _status(self, state: str) -> list[dict[str, Any]]:
        if state == self.view.state and state not in FINAL_STATES + INTERRUPTED_STATES:
            return []
        if self.view.state == "input-required":  # its calls were decided: they wait no more
            self.view.pending = []
        self.view.state = state
        self.view.timestamp = self.at or self.view.timestamp
        final = state in FINAL_STATES + INTERRUPTED_STATES
        self.closed = self.closed or final
        return [self.dialect.status_update(self.view.task_id, self.view.context_id, self.view.status(self.dialect),
                                           final)]  # fmt: skip

    def _restart_text(self) -> None:
        self.view.partial, self.shown_text = "", False

    def _delta(self, content: str) -> list[dict[str, Any]]:
        append, self.shown_text = self.shown_text, True
        self.view.partial += content
        update = self.dialect.artifact_update(self.view.task_id, self.view.context_id, [self.dialect.text(content)],
                                              append, False)  # fmt: skip
        return [*self._status("working"), update]

    def _response(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        self.view.answer, self.view.structured = str(event.get("content", "")), event.get("structured")
        self.view.partial = ""
        update = self.dialect.artifact_update(self.view.task_id, self.view.context_id,
                                              self.view.answer_parts(self.dialect), False, True)  # fmt: skip
        return [update, *self._status("completed")]

    def _status_event(self, message: Any) -> list[dict[str, Any]]:
        if message in ("retrying", "repairing"):
            self._restart_text()
        if message in WORKING_STATUSES:
            return self._status("working")
        if message == "waiting":
            return self._status("input-required")
        return []

    def feed(self, event: dict[str, Any], event_id: str = "") -> list[dict[str, Any]]:
        """The A2A stream events one of the job's events makes (`event_id`: its stream id, which dates it)."""
        if self.closed:
            return []
        self.at = iso(id_key(event_id)[0]) if event_id else None
        kind = event.get("type")
        if kind == EventType.STATUS:
            return self._status_event(event.get("message"))
        if kind == EventType.APPROVAL_REQUIRED:
            self.view.pending.append({"call_id": event.get("call_id"), "kind": "approval",
                                      "tool_name": event.get("tool_name"), "args": event.get("args")})  # fmt: skip
            return []
        if kind == EventType.DELTA:
            return self._delta(str(event.get("content", "")))
        if kind == EventType.LLM_THOUGHT:  # the text so far was a step between tool calls, not the answer
            self._restart_text()
            return []
        if kind == EventType.RESPONSE:
            return self._response(event)
        if kind == EventType.ERROR:
            canceled = event.get("code") == ErrorCode.CANCELED
            self.view.error = "the task was canceled" if canceled else str(event.get("message") or "the turn failed")
            return self._status("canceled" if canceled else "failed")
        if kind == EventType.DONE:
            self.closed = True
        return []

    def resumed(self) -> None:
        """The last waiting call was just decided: the task works again (its `resumed` event follows, unless the
        events read after the decision went on already)."""
        if self.view.state == "input-required":
            self.view.state, self.view.pending = "working", []


def fold(job_id: str, record: dict[str, str], backlog: list[tuple[str, dict[str, Any]]],
         dialect: Dialect) -> TaskFold:  # fmt: skip
    """The task as its stored events ((id, event) pairs) made it so far (the user's message from the record),
    ready to go on."""
    view = TaskView(task_id=job_id, context_id=record.get("session_id", ""), state="submitted",
                    user_text=record.get("message", ""))  # fmt: skip
    folded = TaskFold(view, dialect)
    for event_id, event in backlog:
        folded.feed(event, event_id)
        folded.closed = False  # a wait the turn went on from; a snapshot that ended closes its stream (routes.py)
    return folded


def stream_ends_at_snapshot(folded: TaskFold) -> bool:
    return folded.view.state in FINAL_STATES + INTERRUPTED_STATES


# ---------------------------------------------------------------------------------------------- the card


def agent_card(agent: dict[str, Any], url: str, version: str) -> dict[str, Any]:
    """The agent's card: its JSON-RPC endpoint as a 1.0 and a 0.3 interface (same URL), Bearer keys as its
    security scheme, one skill (the agent itself); plus 0.3's top-level fields, so 0.3 clients read it too."""
    name = str(agent.get("name") or agent.get("id"))
    description = str(agent.get("description") or f"The Parley agent {name}.")
    modes = ["text/plain", "application/json"]
    return {
        "name": name, "description": description, "version": version,
        "supportedInterfaces": [{"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
                                {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "0.3"}],
        "provider": {"organization": "Parley", "url": url.split("/a2a/")[0]},
        "capabilities": {"streaming": True, "pushNotifications": True, "extendedAgentCard": False},
        "securitySchemes": {"bearer": {
            "httpAuthSecurityScheme": {"scheme": "Bearer", "description": "A Parley API key (PARLEY_API_KEYS)."},
            "type": "http", "scheme": "bearer",  # 0.3's spelling of the same scheme
        }},
        "securityRequirements": [{"schemes": {"bearer": {"list": []}}}],
        "defaultInputModes": modes, "defaultOutputModes": modes,
        "skills": [{"id": str(agent.get("id") or name), "name": name, "description": description,
                    "tags": ["chat", "parley"], "inputModes": modes, "outputModes": modes}],
        # A2A 0.3's fields for the same card:
        "protocolVersion": "0.3.0", "url": url, "preferredTransport": "JSONRPC", "security": [{"bearer": []}],
    }  # fmt: skip
