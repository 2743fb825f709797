"""Parley's messages as the Responses API's items, and pages of items as its lists.

A session's message N (`msg_N` in /api/v1) becomes: its text as a `message` item `msg_N` (an assistant's
`output_text`, anyone else's `input_text`), each of an assistant's tool calls K as a `function_call` item `fc_N_K`,
and a tool's answer as a `function_call_output` item `fco_N`. An item's id says where it is, so it is a cursor.
"""

from __future__ import annotations

import json
import re
from typing import Any

from parley.shared.errors import InvalidInput

from .translate import JOB_PREFIX

ITEM_ID = re.compile(r"(msg|fc|fco)_([0-9]{1,18})(?:_([0-9]{1,6}))?")


def _text_part(role: str, text: str) -> dict[str, Any]:
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": []}
    return {"type": "input_text", "text": text}


def message_item(item_id: str, role: str, text: str, images: list[str] | None = None) -> dict[str, Any]:
    content = [_text_part(role, text)]
    content += [{"type": "input_image", "image_url": uri, "detail": "auto"} for uri in images or ()]
    return {"type": "message", "id": item_id, "status": "completed", "role": role, "content": content}


def _call_item(item_id: str, call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {"type": "function_call", "id": item_id, "call_id": call.get("id"), "name": function.get("name"),
            "arguments": function.get("arguments", ""), "status": "completed"}  # fmt: skip


def _output_item(item_id: str, call_id: str, output: str) -> dict[str, Any]:
    return {"type": "function_call_output", "id": item_id, "call_id": call_id, "output": output, "status": "completed"}


def session_items(index: int, message: dict[str, Any]) -> list[tuple[tuple[int, int], dict[str, Any]]]:
    """A stored message's items, each with its position (message index, place within the message)."""
    role, text = message.get("role", "user"), message.get("content") or ""
    if role == "tool":
        return [((index, 0), _output_item(f"fco_{index}", str(message.get("tool_call_id", "")), text))]
    calls = message.get("tool_calls") or []
    out = []
    if text or not calls:
        images = [image for image in message.get("images") or () if isinstance(image, str)]
        out.append(((index, 0), message_item(f"msg_{index}", role, text, images)))
    out += [((index, 1 + k), _call_item(f"fc_{index}_{k}", call)) for k, call in enumerate(calls)]
    return out


def position(item_id: str) -> tuple[int, int]:
    """Where an item id of a conversation is (422 for one this API did not make)."""
    match = ITEM_ID.fullmatch(item_id)
    if match is None:
        raise InvalidInput("after must be an item id this API returned, such as msg_12", field="after")
    kind, index, sub = match.groups()
    return int(index), (1 + int(sub)) if kind == "fc" and sub is not None else 0


def page(items: list[dict[str, Any]], *, limit: int, order: str, after: str | None) -> dict[str, Any]:
    """A list of items (oldest first) as one page of OpenAI's list: `order`, the items after `after`."""
    ordered = items if order == "asc" else items[::-1]
    if after is not None:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise InvalidInput("after must be the id of one of these items", field="after")
        ordered = ordered[ids.index(after) + 1 :]
    return listing(ordered[:limit], has_more=len(ordered) > limit)


def listing(data: list[dict[str, Any]], has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}  # fmt: skip


def input_items(job_id: str, record: dict[str, str]) -> list[dict[str, Any]]:
    """A response's input as items, oldest first: the conversation it brought, its user message, its tool results."""
    hex_id = job_id.removeprefix(JOB_PREFIX)
    out: list[dict[str, Any]] = []

    def next_id(prefix: str) -> str:
        return f"{prefix}_{hex_id}_in{len(out)}"

    for message in json.loads(record.get("history") or "[]"):
        if message.get("role") == "tool":
            out.append(_output_item(next_id("fco"), str(message.get("tool_call_id", "")), message.get("content") or ""))
            continue
        if message.get("content") or not message.get("tool_calls"):
            out.append(message_item(next_id("msg"), message.get("role", "user"), message.get("content") or ""))
        for call in message.get("tool_calls") or ():
            out.append(_call_item(next_id("fc"), call))
    if record.get("message"):
        images = json.loads(record.get("images") or "[]")
        out.append(message_item(next_id("msg"), "user", record["message"], images))
    for result in json.loads(record.get("tool_results") or "[]"):
        out.append(_output_item(next_id("fco"), result.get("tool_call_id", ""), result.get("content", "")))
    return out
