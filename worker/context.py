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


def build_messages(agent: dict[str, Any], history: list[dict[str, Any]], message: str) -> list[dict[str, str]]:
    """System context, instructions (and response shape), the first message and history, the new message.

    The agent's first message is message 0 of the history (stored when the session was created).
    """
    context: list[dict[str, str]] = []
    if agent.get("context"):
        context.append({"role": "system", "content": agent["context"]})
    instructions = instructions_text(agent)
    if instructions:
        context.append({"role": "system", "content": instructions})
    context.extend({"role": item["role"], "content": item["content"]} for item in history)
    context.append({"role": "user", "content": message})
    return context


def exchanges_so_far(history: list[dict[str, Any]]) -> int:
    """How many user messages the session has committed (one per finished turn)."""
    return sum(1 for item in history if item["role"] == "user")
