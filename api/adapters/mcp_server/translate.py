"""Parley's agents and turns in MCP's shapes: an agent as a tool, a call's arguments as a chat request, a
turn's answer (or error, or approval wait) as a tool result. Pure functions: no Redis, no HTTP."""

from __future__ import annotations

import re
from typing import Any

import mcp_types as types
from pydantic import ValidationError

from parley.shared.schema import SESSION_ID_PATTERN, ChatRequest, ChatResponse
from parley.shared.shapes import is_json_schema

TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
"""A valid MCP tool name (the 2025-11-25 revision's rule: 1 to 128 of these characters)."""

SESSION_ID_HELP = (
    "Continue this Parley session (an unknown id starts a session of that id). Omitted: a new session, whose id "
    "the result's `_meta.parley.session_id` names so the next call can continue it."
)
INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "minLength": 1, "description": "What to say to the agent."},
        "session_id": {"type": "string", "pattern": SESSION_ID_PATTERN, "description": SESSION_ID_HELP},
    },
    "required": ["message"],
    "additionalProperties": False,
}
META = "parley"
"""The key under a result's `_meta` that names the turn (`session_id`, `job_id`, `agent_id`, ...)."""


class BadArguments(ValueError):
    """A call's arguments cannot make a chat request; the message says why, for the calling model."""


def tool_name(agent: dict[str, Any], taken: set[str]) -> str:
    """The agent's name when it is a valid MCP tool name no earlier agent took, else its id."""
    name = agent["name"]
    return name if TOOL_NAME.match(name) and name not in taken else agent["id"]


def tools_by_name(agents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The visible agents keyed by their tool name, in the order the key sees them (file agents first)."""
    named: dict[str, dict[str, Any]] = {}
    for agent in agents:
        named[tool_name(agent, set(named))] = agent
    return named


def output_schema(agent: dict[str, Any]) -> dict[str, Any] | None:
    """The agent's response shape as the tool's `outputSchema`, when it is a JSON Schema of an object."""
    shape = agent.get("response_shape")
    if isinstance(shape, dict) and is_json_schema(shape) and shape.get("type", "object") == "object":
        return dict(shape)
    return None


def tool(name: str, agent: dict[str, Any]) -> types.Tool:
    """One agent as one MCP tool."""
    description = agent.get("description") or f"Chat with the Parley agent {agent['name']!r}."
    return types.Tool(name=name, title=agent["name"], description=description, input_schema=INPUT_SCHEMA,
                      output_schema=output_schema(agent))  # fmt: skip


def chat_request(agent: dict[str, Any], arguments: dict[str, Any] | None) -> ChatRequest:
    """The call's arguments as a turn of `agent`; BadArguments says what is wrong with them."""
    arguments = arguments or {}
    unknown = sorted(set(arguments) - set(INPUT_SCHEMA["properties"]))
    if unknown:
        raise BadArguments(f"unknown argument(s) {', '.join(unknown)}: this tool takes `message` and `session_id`")
    if not isinstance(arguments.get("message"), str):
        raise BadArguments("`message` is required and must be a string")
    if "session_id" in arguments and not isinstance(arguments["session_id"], str):
        raise BadArguments("`session_id` must be a string")
    try:
        return ChatRequest(message=arguments["message"], agent=agent["id"], session_id=arguments.get("session_id"))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "arguments"
        raise BadArguments(f"`{where}`: {first['msg']}") from None


def answer(result: ChatResponse, agent: dict[str, Any]) -> types.CallToolResult:
    """A finished turn: the answer as text; a structured answer also as `structuredContent` (an object, as
    MCP wants it: a non-object answer is wrapped as `{"result": ...}` when the tool declares no output schema)."""
    meta = {META: {"session_id": result.session_id, "job_id": result.job_id, "agent_id": result.agent_id,
                   "agent_name": result.agent_name, "status": "finished"}}  # fmt: skip
    structured = result.structured
    if structured is not None and not isinstance(structured, dict):
        structured = None if output_schema(agent) else {"result": structured}
    return types.CallToolResult(content=[types.TextContent(type="text", text=result.response)],
                                structured_content=structured, meta=meta)  # fmt: skip


def failed(message: str, **turn: Any) -> types.CallToolResult:
    """A turn that could not be accepted, failed, was canceled or took too long: a tool error (`isError`)
    the calling model reads, with what is known of the turn under `_meta`."""
    known = {key: value for key, value in turn.items() if value is not None}
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True,
                                meta={META: known} if known else None)  # fmt: skip


def waiting(session_id: str, job_id: str, agent_id: str, pending: list[dict[str, Any]]) -> types.CallToolResult:
    """A turn paused for a person's approval: not an error, but not an answer either. The text says so and
    how it goes on; `_meta` has the job and its pending calls (`status: "waiting"`)."""
    names = ", ".join(sorted({str(call.get("tool_name")) for call in pending})) or "a tool"
    text = (f"The turn waits for a person's approval of {names} (job {job_id}). Decide with POST "
            f"/api/v1/jobs/{job_id}/approvals; its answer then comes in GET /api/v1/jobs/{job_id}, and the next "
            f"call in session {session_id} waits behind it.")  # fmt: skip
    meta = {META: {"session_id": session_id, "job_id": job_id, "agent_id": agent_id, "status": "waiting",
                   "pending": pending}}  # fmt: skip
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], meta=meta)
