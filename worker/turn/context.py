"""Rebuild the model's context for a turn from what Redis holds, and nothing else."""

from __future__ import annotations

import json
from typing import Any

CLOSING_MESSAGE = (
    "Thank you for the conversation! We have reached the end of what this conversation can cover, "
    "so I'll close it here. Please start a new conversation if you'd like to continue."
)
"""What an agent answers once a session has had `max_turns` exchanges (as the seed article does)."""


def instructions_text(agent: dict[str, Any]) -> str:
    """The agent's instructions, with its response shape as an instruction to follow."""
    parts = []
    if agent.get("instructions"):
        parts.append(agent["instructions"])
    shape = agent.get("response_shape")
    if shape:
        shown = shape if isinstance(shape, str) else json.dumps(shape, ensure_ascii=False)
        parts.append(f"Answer with RFC 8259 compliant JSON in this shape, without deviation: {shown}")
    return "\n\n".join(parts)


def user_content(text: str, images: list[str]) -> str | list[dict[str, Any]]:
    """A user message's content: its text, with its images as image parts when it has any."""
    if not images:
        return text
    return [{"type": "text", "text": text}, *({"type": "image_url", "image_url": {"url": url}} for url in images)]


def model_message(item: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the model takes it: role and content, plus what ties tool calls to
    their results; nothing of Parley's own bookkeeping (ids, times, token counts)."""
    role = item["role"]
    if role == "tool":
        return {"role": "tool", "tool_call_id": item.get("tool_call_id", ""), "content": item["content"]}
    if role == "user":
        return {"role": "user", "content": user_content(item["content"], item.get("images") or [])}
    message: dict[str, Any] = {"role": role, "content": item["content"]}
    if item.get("tool_calls"):
        message["tool_calls"] = item["tool_calls"]
        message["content"] = item["content"] or None
    return message


NO_RESULT = "(no result: the conversation went on without one)"
"""The result a call is given when the stored conversation has none for it: a client that called its own tool
and then sent a user message instead of the result (every call must be answered before the next message)."""


def images_message(call_id: str, images: list[str]) -> dict[str, Any]:
    """A user message showing a tool result's images (data URIs): Chat Completions takes images in user messages."""
    note = {"type": "text", "text": f"(images returned by the call {call_id})"}
    return {"role": "user", "content": [note, *({"type": "image_url", "image_url": {"url": url}} for url in images)]}


def model_sequence(items: list[dict[str, Any]],
                   tool_results: list[dict[str, str]] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Stored messages (images as data URIs) as the model takes them, each assistant's tool calls answered
    right after it: the images of a step's results follow its last result, and a call with no result gets
    NO_RESULT. `tool_results` (the client's, for the calls the last assistant message left open) come last;
    one for a call not open (answered already) is left out."""
    out: list[dict[str, Any]] = []
    shown: list[dict[str, Any]] = []
    open_calls: list[str] = []

    def close() -> None:
        out.extend({"role": "tool", "tool_call_id": call_id, "content": NO_RESULT} for call_id in open_calls)
        open_calls.clear()
        out.extend(shown)
        shown.clear()

    for item in items:
        if item["role"] == "tool":
            out.append(model_message(item))
            if item.get("images"):
                shown.append(images_message(item.get("tool_call_id", ""), item["images"]))
            if item.get("tool_call_id") in open_calls:
                open_calls.remove(item["tool_call_id"])
            continue
        close()
        out.append(model_message(item))
        if item["role"] == "assistant" and item.get("tool_calls"):
            open_calls.extend(call["id"] for call in item["tool_calls"])
    for result in tool_results or []:
        if result["tool_call_id"] in open_calls:
            open_calls.remove(result["tool_call_id"])
            out.append({"role": "tool", "tool_call_id": result["tool_call_id"], "content": result["content"]})
    close()
    return out


def build_messages(agent: dict[str, Any], history: list[dict[str, Any]], message: str,
                   images: list[str] | None = None,
                   tool_results: list[dict[str, str]] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """System context, instructions (and response shape), the first message and history, the new message
    (or, for a turn that goes on from the client's tool results, those as tool messages).

    The agent's first message is message 0 of the history (stored when the session was created).
    Images in `history` must already be data URIs.
    """
    context: list[dict[str, Any]] = []
    if agent.get("context"):
        context.append({"role": "system", "content": agent["context"]})
    instructions = instructions_text(agent)
    if instructions:
        context.append({"role": "system", "content": instructions})
    context.extend(model_sequence(history, tool_results))
    if tool_results is None:
        context.append({"role": "user", "content": user_content(message, images or [])})
    return context


def exchanges_so_far(history: list[dict[str, Any]]) -> int:
    """How many user messages the session has committed (one per finished turn)."""
    return sum(1 for item in history if item["role"] == "user")
