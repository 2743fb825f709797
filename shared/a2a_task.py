"""An A2A Task as Parley shows a turn: its job record rendered in A2A 1.0's ProtoJSON or in 0.3's JSON. No I/O.

Shared by the A2A adapter (api/adapters/a2a/translate.py: GetTask, SendMessage's answer, streams) and the worker's
webhook dispatcher (worker/webhooks.py: an A2A push notification carries the task), which may not import `api`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from parley.shared.clock import iso
from parley.shared.events import ErrorCode

ANSWER_ARTIFACT = "answer"
"""The id (and name) of the one artifact a task produces: the agent's answer."""


# ------------------------------------------------------------------------------------------------ dialect


@dataclass(frozen=True)
class Dialect:
    """Renders Parley's view of a task in A2A 1.0's ProtoJSON (`legacy` False) or in 0.3's JSON."""

    legacy: bool

    def state(self, state: str) -> str:
        return state if self.legacy else "TASK_STATE_" + state.upper().replace("-", "_")

    def text(self, text: str) -> dict[str, Any]:
        return {"kind": "text", "text": text} if self.legacy else {"text": text}

    def data(self, value: Any) -> dict[str, Any]:
        if self.legacy:  # 0.3's DataPart holds an object
            return {"kind": "data", "data": value if isinstance(value, dict) else {"value": value}}
        return {"data": value}

    def message(self, role: str, parts: list[dict[str, Any]], message_id: str, task_id: str,
                context_id: str) -> dict[str, Any]:  # fmt: skip
        out = {"messageId": message_id, "contextId": context_id, "taskId": task_id,
               "role": role if self.legacy else f"ROLE_{role.upper()}", "parts": parts}  # fmt: skip
        return {"kind": "message", **out} if self.legacy else out

    def artifact(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        return {"artifactId": ANSWER_ARTIFACT, "name": ANSWER_ARTIFACT, "parts": parts}

    def status_update(self, task_id: str, context_id: str, status: dict[str, Any], final: bool) -> dict[str, Any]:
        update = {"taskId": task_id, "contextId": context_id, "status": status}
        if self.legacy:
            return {"kind": "status-update", **update, "final": final}
        return {"statusUpdate": update}

    def artifact_update(self, task_id: str, context_id: str, parts: list[dict[str, Any]], append: bool,
                        last_chunk: bool) -> dict[str, Any]:  # fmt: skip
        update = {"taskId": task_id, "contextId": context_id, "artifact": self.artifact(parts), "append": append,
                  "lastChunk": last_chunk}  # fmt: skip
        return {"kind": "artifact-update", **update} if self.legacy else {"artifactUpdate": update}

    def stream_task(self, task: dict[str, Any]) -> dict[str, Any]:
        """A task as a stream's event (its first: the snapshot)."""
        return task if self.legacy else {"task": task}

    def send_result(self, task: dict[str, Any]) -> dict[str, Any]:
        """SendMessage's result: 1.0 wraps the task (`{"task": ...}`), 0.3 gives it as is (`kind: "task"`)."""
        return task if self.legacy else {"task": task}


# --------------------------------------------------------------------------------------------- task views

JOB_STATES = {"queued": "submitted", "started": "working", "waiting": "input-required", "finished": "completed",
              "failed": "failed", "canceled": "canceled"}  # fmt: skip
"""A job's status as A2A's task state (a queued job that ran before, i.e. resumed after decisions: working)."""
FINAL_STATES = ("completed", "failed", "canceled")
INTERRUPTED_STATES = ("input-required",)
WORKING_STATUSES = ("started", "resumed", "retrying", "repairing")
"""`status` event messages that mean the turn runs (again)."""


@dataclass
class TaskView:
    """What A2A shows of a turn, from its job record (`from_record`) or from its events (`TaskFold`)."""

    task_id: str
    context_id: str
    state: str
    user_text: str = ""
    answer: str | None = None
    structured: Any = None
    partial: str = ""
    pending: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    timestamp: str | None = None

    def answer_parts(self, dialect: Dialect) -> list[dict[str, Any]]:
        parts = [dialect.text(self.answer or "")]
        if self.structured is not None:
            parts.append(dialect.data(self.structured))
        return parts

    def agent_message(self, dialect: Dialect, parts: list[dict[str, Any]]) -> dict[str, Any]:
        return dialect.message("agent", parts, f"{self.task_id}:agent:{self.state}", self.task_id, self.context_id)

    def status_message(self, dialect: Dialect) -> dict[str, Any] | None:
        """The status's message: the calls waiting (a data part `{"pending": [...]}`), the answer, or the error."""
        if self.state == "input-required":
            names = ", ".join(str(call.get("tool_name")) for call in self.pending)
            text = f"waiting for a decision on: {names}" if names else "waiting for a decision"
            return self.agent_message(dialect, [dialect.text(text), dialect.data({"pending": self.pending})])
        if self.state == "completed":
            return self.agent_message(dialect, self.answer_parts(dialect))
        if self.state in ("failed", "canceled"):
            return self.agent_message(dialect, [dialect.text(self.error or self.state)])
        return None

    def status(self, dialect: Dialect) -> dict[str, Any]:
        status: dict[str, Any] = {"state": dialect.state(self.state)}
        message = self.status_message(dialect)
        if message is not None:
            status["message"] = message
        if self.timestamp:
            status["timestamp"] = self.timestamp
        return status

    def history(self, dialect: Dialect) -> list[dict[str, Any]]:
        messages = []
        if self.user_text:
            messages.append(dialect.message("user", [dialect.text(self.user_text)], f"{self.task_id}:user",
                                            self.task_id, self.context_id))  # fmt: skip
        if self.state == "completed":
            messages.append(self.agent_message(dialect, self.answer_parts(dialect)))
        return messages

    def artifacts(self, dialect: Dialect) -> list[dict[str, Any]]:
        if self.state == "completed":
            return [dialect.artifact(self.answer_parts(dialect))]
        if self.partial:
            return [dialect.artifact([dialect.text(self.partial)])]
        return []

    def render(self, dialect: Dialect, history_length: int | None = None) -> dict[str, Any]:
        """The A2A Task; `history_length` keeps that many of the latest messages (0: none)."""
        history = self.history(dialect)
        if history_length is not None:
            history = history[len(history) - history_length :] if history_length else []
        task: dict[str, Any] = {"id": self.task_id, "contextId": self.context_id, "status": self.status(dialect)}
        artifacts = self.artifacts(dialect)
        if artifacts:
            task["artifacts"] = artifacts
        if history:
            task["history"] = history
        return {"kind": "task", **task} if dialect.legacy else task


def loads_or(value: str | None, default: Any) -> Any:
    try:
        return json.loads(value) if value else default
    except json.JSONDecodeError:
        return default


def record_state(record: dict[str, str]) -> str:
    status = record.get("status", "queued")
    if status == "queued" and record.get("started_at"):
        return "working"
    return JOB_STATES.get(status, "working")


def from_record(job_id: str, record: dict[str, str]) -> TaskView:
    """The task as the job record shows it now (GetTask, CancelTask, a blocking SendMessage)."""
    state = record_state(record)
    result = loads_or(record.get("result"), {}) or {}
    stamp = record.get("ended_at") or record.get("started_at") or record.get("enqueued_at")
    error = record.get("error") or ""
    if state == "canceled" and (not error or error == ErrorCode.CANCELED):
        error = "the task was canceled"
    return TaskView(
        task_id=job_id, context_id=record.get("session_id", ""), state=state, user_text=record.get("message", ""),
        answer=result.get("response"), structured=result.get("structured"), error=error,
        pending=loads_or(record.get("pending"), []) if state == "input-required" else [], timestamp=iso(stamp),
    )  # fmt: skip


def push_body(job_id: str, record: dict[str, str], legacy: bool) -> bytes:
    """What an A2A push notification POSTs for the task: 0.3, the Task itself (`kind: "task"`); 1.0, a
    StreamResponse holding it (`{"task": ...}`), as the a2a-sdk's own sender does."""
    dialect = Dialect(legacy)
    task = dialect.stream_task(from_record(job_id, record).render(dialect))
    return json.dumps(task, separators=(",", ":"), ensure_ascii=False).encode()
