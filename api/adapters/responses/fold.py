"""A turn's event log, folded into the Responses API's streaming events and its `response` object.

A pure function of the job's record (only what never changes after it was accepted) and its events in order:
the same log gives the same numbered events, so a stream resumed with `starting_after=N` on any web replays
exactly what the first stream sent after N, and `GET /v1/responses/{id}` shows what the stream built.

Parley's events map so (docs/protocols.md):
- `session` -> `response.created`; `status` queued -> `response.queued`; the first `started` -> `response.in_progress`.
- `thinking` -> a `reasoning` item (`response.reasoning_text.delta`); `delta` -> an assistant `message` item
  (`response.output_text.delta`); `llm_thought` ends that message as the tool step's `commentary`.
- the agent's own tools (`tool_execution`, `tool_result`) -> `parley:tool_call` items, and `approval_required` ->
  a `parley:approval_request` item whose id is the call id (decide it with `POST /api/v1/jobs/{job}/approvals`);
  the response stays `in_progress` while it waits. Open Responses has no item for a tool the server runs itself
  and asks implementors to prefix their own item types with their slug (its "Extending Items"): `mcp_call` and
  `mcp_approval_request`, which Parley sent before, are OpenAI's and outside the spec's item union. Such an item
  is streamed by `response.output_item.added` and `.done` only (no event of its own), so every client that
  ignores unknown items still rebuilds the response.
- `response` -> the final message (`final_answer`), then a `function_call` item per call of the client's tools,
  then `response.completed` with the usage.
- `error` -> `response.failed` (status `cancelled` for a canceled turn, else `failed`, with the error).
- `status` retrying: what the dead attempt sent is superseded (its open items end `incomplete`, and all its items
  leave the response's output); `repairing`: so is the answer being repaired.
"""

from __future__ import annotations

import json
from typing import Any

from parley.shared.events import ErrorCode, decode, id_key

from .translate import APPROVAL_REQUEST, JOB_PREFIX, TOOL_CALL, response_id

STATUSES = {"queued": "queued", "started": "in_progress", "waiting": "in_progress", "finished": "completed",
            "failed": "failed", "canceled": "cancelled"}  # fmt: skip
"""A job's status as a response's."""
UNSET: dict[str, Any] = {
    "temperature": 1.0, "top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "top_logprobs": 0,
    "max_output_tokens": None, "max_tool_calls": None, "reasoning": None, "user": None, "service_tier": "default",
    "safety_identifier": None, "prompt_cache_key": None,
}  # fmt: skip
"""Fields the Open Responses schema requires that a request cannot set here: the providers' defaults (the agent's
own temperature and max_tokens hold, and are not shown)."""


def _flat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    return {"type": "function", "name": function.get("name"), "description": function.get("description"),
            "parameters": function.get("parameters"), "strict": function.get("strict")}  # fmt: skip


def _tool_choice(record: dict[str, str]) -> Any:
    choice = json.loads(record["tool_choice"]) if record.get("tool_choice") else "auto"
    if isinstance(choice, dict):
        return {"type": "function", "name": (choice.get("function") or {}).get("name")}
    return choice


def base(job_id: str, record: dict[str, str]) -> dict[str, Any]:
    """The response object's fields that never change: all from what the job record kept at accept."""
    shape = json.loads(record["response_shape"]) if record.get("response_shape") else None
    shown = json.loads(record.get("annotations") or "{}")  # what the request set, kept with the job
    text_format: dict[str, Any] = {"type": "text"}
    if isinstance(shape, dict):
        text_format = {"type": "json_schema", "name": shown.get("format_name") or "response", "description": None,
                       "schema": shape, "strict": False}  # fmt: skip
    stateless = "history" in record
    return {
        "id": response_id(job_id), "object": "response", "created_at": int(record.get("enqueued_at") or 0) // 1000,
        "completed_at": None, "status": "queued", "incomplete_details": None, "model": record.get("agent_name", ""),
        "previous_response_id": shown.get("previous_response_id"), "instructions": record.get("instructions"),
        "output": [], "error": None,
        "tools": [_flat_tool(t) for t in json.loads(record.get("client_tools") or "[]")],
        "tool_choice": _tool_choice(record), "truncation": "disabled", "parallel_tool_calls": True,
        "text": {"format": text_format}, "conversation": None if stateless else {"id": record.get("session_id")},
        "store": not stateless, "background": bool(shown.get("background")), "metadata": shown.get("metadata") or {},
        "usage": None, **UNSET,
    }  # fmt: skip


def usage(raw: dict[str, Any] | None) -> dict[str, Any]:
    raw = raw or {}
    prompt, completion = int(raw.get("prompt_tokens", 0)), int(raw.get("completion_tokens", 0))
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": int(raw.get("cached_tokens", 0))},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": int(raw.get("total_tokens", prompt + completion))}  # fmt: skip


class Fold:
    """Feed it a job's events in order (`feed`); it answers the numbered Responses events each one makes, and
    `snapshot()` is the response object so far."""

    def __init__(self, job_id: str, record: dict[str, str]) -> None:
        self.hex = job_id.removeprefix(JOB_PREFIX)
        self.response = base(job_id, record)
        self.seq = -1
        self.items: list[dict[str, Any]] = []
        self.dropped: set[int] = set()
        self.text_at: int | None = None
        """The output index of the message or reasoning item text goes into now, if any."""
        self.calls: dict[str, int] = {}
        """The agent's tool calls running (call id -> output index of their parley:tool_call item)."""

    # --- the response object

    def snapshot(self) -> dict[str, Any]:
        output = [json.loads(json.dumps(item)) for n, item in enumerate(self.items) if n not in self.dropped]
        return {**self.response, "output": output}

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        return {"type": kind, "sequence_number": self.seq, **fields}

    def _lifecycle(self, kind: str) -> dict[str, Any]:
        return self._event(kind, response=self.snapshot())

    # --- items

    def _add(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        self.items.append(item)
        return [self._event("response.output_item.added", output_index=len(self.items) - 1,
                            item=json.loads(json.dumps(item)))]  # fmt: skip

    def _done(self, index: int) -> dict[str, Any]:
        item = json.loads(json.dumps(self.items[index]))
        return self._event("response.output_item.done", output_index=index, item=item)

    def _open_kind(self) -> str | None:
        return None if self.text_at is None else str(self.items[self.text_at]["type"])

    def _open_text(self, kind: str) -> list[dict[str, Any]]:
        """Start a message (or reasoning) item for text to go into, ending any other open one first."""
        out = self._close_text("completed") if self._open_kind() not in (None, kind) else []
        if self.text_at is not None:
            return out
        index = len(self.items)
        item: dict[str, Any]
        if kind == "message":
            item = {"id": f"msg_{self.hex}_{index}", "type": "message", "status": "in_progress", "role": "assistant",
                    "content": []}  # fmt: skip
            part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
        else:
            item = {"id": f"rs_{self.hex}_{index}", "type": "reasoning", "status": "in_progress", "summary": [],
                    "content": []}  # fmt: skip
            part = {"type": "reasoning_text", "text": ""}
        out += self._add(item)
        self.text_at = index
        item["content"].append(part)
        out.append(self._event("response.content_part.added", item_id=item["id"], output_index=index, content_index=0,
                               part=dict(part)))  # fmt: skip
        return out

    def _text_delta(self, kind: str, piece: str) -> list[dict[str, Any]]:
        out = self._open_text(kind)
        assert self.text_at is not None
        item = self.items[self.text_at]
        item["content"][0]["text"] += piece
        name = "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
        extra: dict[str, Any] = {"logprobs": []} if kind == "message" else {}
        out.append(self._event(name, item_id=item["id"], output_index=self.text_at, content_index=0, delta=piece,
                               **extra))  # fmt: skip
        return out

    def _close_text(self, status: str, phase: str | None = None, text: str | None = None) -> list[dict[str, Any]]:
        """End the open text item (`text` replaces what streamed, when given: the final answer)."""
        if self.text_at is None:
            return []
        index, self.text_at = self.text_at, None
        item = self.items[index]
        part = item["content"][0]
        if text is not None and text != part["text"]:
            out = self._more_text(index, text) if text.startswith(part["text"]) else []
            part["text"] = text
        else:
            out = []
        item["status"] = status
        if item["type"] == "message":
            if phase:
                item["phase"] = phase
            out.append(self._event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                                   text=part["text"], logprobs=[]))  # fmt: skip
        else:
            out.append(self._event("response.reasoning_text.done", item_id=item["id"], output_index=index,
                                   content_index=0, text=part["text"]))  # fmt: skip
        out.append(self._event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                               part=dict(part)))  # fmt: skip
        out.append(self._done(index))
        return out

    def _more_text(self, index: int, text: str) -> list[dict[str, Any]]:
        item = self.items[index]
        rest = text[len(item["content"][0]["text"]) :]
        return [self._event("response.output_text.delta", item_id=item["id"], output_index=index, content_index=0,
                            delta=rest, logprobs=[])]  # fmt: skip

    def _supersede(self, everything: bool) -> list[dict[str, Any]]:
        """A retried attempt (`everything`) or a repaired answer replaces what was sent: open items end incomplete
        and leave the output."""
        out = []
        if self.text_at is not None:
            self.dropped.add(self.text_at)
            out += self._close_text("incomplete")
        if everything:
            for index in self.calls.values():
                self.items[index]["status"] = "incomplete"
                out.append(self._done(index))
            self.calls.clear()
            self.dropped.update(range(len(self.items)))
        return out

    # --- Parley's events

    def feed(self, event_id: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The Responses events one Parley event makes (none for those it has no counterpart of)."""
        kind = event.get("type")
        handler = getattr(self, f"_on_{kind}", None)
        return handler(event_id, event) if handler is not None else []  # type: ignore[no-any-return]

    def _on_session(self, event_id: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        return [self._lifecycle("response.created")]

    def _on_status(self, event_id: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        message = event.get("message")
        if message == "queued":
            return [self._lifecycle("response.queued")]
        if message == "started" and self.response["status"] == "queued":
            self.response["status"] = "in_progress"
            return [self._lifecycle("response.in_progress")]
        if message in ("retrying", "repairing"):
            return self._supersede(everything=message == "retrying")
        return []

    def _on_thinking(self, event_id: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        return self._text_delta("reasoning", str(event.get("message", "")))

    def _on_delta(self, event_id: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        return self._text_delta("message", str(event.get("content", "")))

    def _on_llm_thought(self, event_id: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        if self._open_kind() != "message":
            out = self._close_text("completed") + self._text_delta("message", str(event.get("thought", "")))
        return out + self._close_text("completed", phase="commentary")

    def _on_tool_execution(self, event_id: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        out = self._close_text("completed", phase="commentary")
        index = len(self.items)
        call_id = str(event.get("call_id", index))
        item = {"id": f"ptc_{self.hex}_{index}", "type": TOOL_CALL, "status": "in_progress", "call_id": call_id,
                "name": str(event.get("tool_name", "")), "arguments": json.dumps(event.get("args"), ensure_ascii=False),
                "output": None, "error": None}  # fmt: skip
        out += self._add(item)
        self.calls[call_id] = index
        return out

    def _on_tool_result(self, event_id: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        index = self.calls.pop(str(event.get("call_id", "")), None)
        if index is None:
            return []
        item, ok = self.items[index], event.get("ok", True) is not False
        item.update(status="completed" if ok else "failed", output=str(event.get("preview", "")),
                    error=None if ok else str(event.get("preview", "")))  # fmt: skip
        return [self._done(index)]

    def _on_approval_required(self, event_id: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        out = self._close_text("completed", phase="commentary")
        call_id = str(event.get("call_id", ""))
        item = {"id": call_id, "type": APPROVAL_REQUEST, "status": "completed", "call_id": call_id,
                "name": str(event.get("tool_name", "")),
                "arguments": json.dumps(event.get("args"), ensure_ascii=False)}  # fmt: skip
        out += self._add(item)
        return [*out, self._done(len(self.items) - 1)]

    def _on_response(self, event_id: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        out = self._close_text("completed") if self._open_kind() == "reasoning" else []
        content, calls = str(event.get("content") or ""), event.get("tool_calls") or []
        if content or not calls:
            if self.text_at is None:
                out += self._open_text("message")
            out += self._close_text("completed", phase="final_answer", text=content)
        for call in calls:
            out += self._function_call(call)
        self.response.update(status="completed", usage=usage(event.get("usage")),
                             completed_at=id_key(event_id)[0] // 1000)  # fmt: skip
        return [*out, self._lifecycle("response.completed")]

    def _function_call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        index = len(self.items)
        arguments = str(call.get("arguments", ""))
        item = {"id": f"fc_{self.hex}_{index}", "type": "function_call", "call_id": call.get("id"),
                "name": call.get("name"), "arguments": "", "status": "in_progress"}  # fmt: skip
        out = self._add(item)
        item.update(arguments=arguments, status="completed")
        out.append(self._event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                               delta=arguments))  # fmt: skip
        out.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                               name=item["name"], arguments=arguments))  # fmt: skip
        return [*out, self._done(index)]

    def _on_error(self, event_id: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        out = self._close_text("incomplete")
        for index in self.calls.values():
            self.items[index]["status"] = "incomplete"
            out.append(self._done(index))
        self.calls.clear()
        code = str(event.get("code") or ErrorCode.TURN_FAILED)
        status = "cancelled" if code == ErrorCode.CANCELED else "failed"
        self.response.update(status=status, error={"code": code, "message": str(event.get("message", ""))})
        return [*out, self._lifecycle("response.failed")]


def fold(job_id: str, record: dict[str, str], log: list[tuple[str, str]]) -> Fold:
    """A job's stored events, folded (what `GET /v1/responses/{id}` shows)."""
    folded = Fold(job_id, record)
    for event_id, payload in log:
        folded.feed(event_id, decode(payload))
    return folded
