"""The offline `demo` model: no key, no network, plainly labelled, and enough of a model to show
the whole agent loop from the quick start.

It echoes the conversation (so memory can be seen working), calls a built-in tool when the
newest message asks plainly and the agent has that tool ("calc: 2+2", "what time is it in
Tokyo", "remember: ...", "what do you remember", "fetch https://..."), answers from the tool's
result on the next step, and answers JSON in the agent's response shape when asked for JSON.

Any other function tool (the client's, an MCP server's) is called when the newest message names it: a word of the
tool's name of four letters or more that is not a generic verb ("weather" for `get_weather`). A forced
`tool_choice` is honoured: a named function, or "required" (the tool the message plainly asks for, else
the last tool offered: the client's function tools come last), is called with arguments built from its JSON
schema (`forced_call`), so a client trying its own function tools sees a call with no key; "none" calls nothing.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from parley.shared.settings import Settings

from .base import TEXT, ModelStream, ToolCall

LABEL = "[demo model, offline]"
CITY_ZONES = {
    "tokyo": "Asia/Tokyo", "london": "Europe/London", "paris": "Europe/Paris", "berlin": "Europe/Berlin",
    "madrid": "Europe/Madrid", "rome": "Europe/Rome", "moscow": "Europe/Moscow", "cairo": "Africa/Cairo",
    "new york": "America/New_York", "chicago": "America/Chicago", "los angeles": "America/Los_Angeles",
    "san francisco": "America/Los_Angeles", "sao paulo": "America/Sao_Paulo", "sydney": "Australia/Sydney",
    "delhi": "Asia/Kolkata", "mumbai": "Asia/Kolkata", "beijing": "Asia/Shanghai", "shanghai": "Asia/Shanghai",
    "singapore": "Asia/Singapore", "utc": "UTC",
}  # fmt: skip
"""Cities the demo knows by name; any IANA zone ("Europe/Lisbon") works as it is."""
SHAPE_MARKER = "without deviation: "
"""Where the agent's response shape starts in its instructions (worker/turn/context.py writes it)."""

_ASKS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^\s*(?:calc|calculate|compute)\s*:?\s*(?P<arg>.+?)\s*$", re.I | re.S), "calculator"),
    (re.compile(r"^\s*what\s+is\s+(?P<arg>[-+*/%^().\d\s]*\d[-+*/%^().\d\s]*)\?*\s*$", re.I), "calculator"),
    (re.compile(r"\btime\b.*?\bin\s+(?P<arg>[A-Za-z_/ ]+?)\s*[?.!]*\s*$", re.I | re.S), "current_time"),
    (re.compile(r"^\s*remember\s*:?\s*(?P<arg>.+?)\s*$", re.I | re.S), "remember"),
    (re.compile(r"\bwhat\s+do\s+you\s+remember\b|^\s*recall\b", re.I), "recall"),
    (re.compile(r"^\s*(?:fetch|get|open)\s+(?P<arg>https?://\S+)", re.I), "http_get"),
]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content or () if part.get("type") == "text")


def _arguments(tool: str, arg: str | None) -> dict[str, Any]:
    if tool == "calculator":
        return {"expression": (arg or "").replace("^", "**")}
    if tool == "current_time":
        place = (arg or "UTC").strip()
        return {"timezone": CITY_ZONES.get(place.lower(), place)}
    if tool == "remember":
        return {"note": arg or ""}
    if tool == "http_get":
        return {"url": arg or ""}
    return {}


def plan_tool_call(message: str, available: set[str]) -> tuple[str, dict[str, Any]] | None:
    """The built-in tool a plainly worded message asks for, if the agent has it."""
    for pattern, tool in _ASKS:
        found = pattern.search(message)
        if found and tool in available:
            return tool, _arguments(tool, found.groupdict().get("arg"))
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plausible(spec: Any, message: str) -> Any:
    """A value that fits one argument's JSON Schema: its const, enum, default or example, else one of its type."""
    if not isinstance(spec, dict):
        return message
    for key in ("const", "default"):
        if key in spec:
            return spec[key]
    for key in ("enum", "examples"):
        if isinstance(spec.get(key), list) and spec[key]:
            return spec[key][0]
    kind = spec.get("type", "object" if "properties" in spec else "string")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object":
        return schema_arguments(spec, message)
    if kind == "array":  # one item at most: nested arrays of n items each would grow as n ** depth
        count = spec.get("minItems")
        return [_plausible(spec.get("items"), message)] if isinstance(count, int) and count > 0 else []
    if kind in ("integer", "number"):
        value: float = 1
        if _finite(spec.get("minimum")):
            value = spec["minimum"]
        elif _finite(spec.get("exclusiveMinimum")):
            value = spec["exclusiveMinimum"] + 1
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    formats = {"date": "2026-01-01", "date-time": "2026-01-01T00:00:00Z", "email": "user@example.com",
               "uri": "https://example.com", "url": "https://example.com",
               "uuid": "00000000-0000-4000-8000-000000000000"}  # fmt: skip
    return formats.get(str(spec.get("format")), message[:200])


def schema_arguments(schema: Any, message: str) -> dict[str, Any]:
    """Arguments for a function whose parameters are `schema`: each required field with a plausible value (a
    string field gets the newest message, as if the model had read its argument there)."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return {}
    required = [name for name in schema.get("required") or () if isinstance(name, str)]
    return {name: _plausible(schema["properties"].get(name), message) for name in required}


def forced_call(tool_choice: Any, tools: list[dict[str, Any]], message: str) -> tuple[str, dict[str, Any]] | None:
    """The call a forced `tool_choice` (OpenAI's chat format) asks for, or None when it forces none."""
    functions = {tool["function"]["name"]: tool["function"] for tool in tools}
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if not isinstance(name, str) or name not in functions:
            return None
    elif tool_choice == "required" and functions:
        planned = plan_tool_call(message, set(functions))
        if planned is not None:
            return planned
        name = list(functions)[-1]
    else:
        return None
    return plan_tool_call(message, {name}) or (name, schema_arguments(functions[name].get("parameters"), message))


GENERIC_WORDS = {"fetch", "create", "update", "delete", "remove", "find", "search", "make", "call", "tool", "tools",
                 "data", "info", "current", "check", "send", "read", "write", "open", "query", "lookup",
                 "list"}  # fmt: skip
"""Words of a tool's name that say nothing of what it is about: never enough to call it."""
KNOWN = {tool for _, tool in _ASKS}
"""The built-in tools the demo has its own patterns for."""


def _name_words(name: str) -> set[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return {w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if len(w) >= 4 and w not in GENERIC_WORDS}


def named_call(message: str, tools: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """A call of the first function tool (other than the built-ins it knows) the newest message names."""
    said = set(re.findall(r"[a-z0-9]+", message.lower()))
    for tool in tools:
        function = tool["function"]
        if function["name"] not in KNOWN and _name_words(function["name"]) & said:
            return function["name"], schema_arguments(function.get("parameters"), message)
    return None


def _tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tool messages that answer the newest assistant step, when the conversation ends with them."""
    results: list[dict[str, Any]] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, message)
    return results


def demo_answer(messages: list[dict[str, Any]]) -> str:
    """The plain answer: the message back, and the earlier one, to show memory works."""
    users = [_text(m["content"]) for m in messages if m["role"] == "user"]
    text = f'{LABEL} You said: "{users[-1]}".'
    if len(users) > 1:
        text += f' Earlier you said: "{users[-2]}". I remember {len(users) - 1} earlier message(s).'
    text += " Set OPENAI_API_KEY or OPENAI_BASE_URL to talk to a real model."
    return text


def _answer_from_tools(messages: list[dict[str, Any]], results: list[dict[str, Any]]) -> str:
    names = {call["id"]: call["function"]["name"] for m in messages for call in m.get("tool_calls") or ()}
    said = "; ".join(f"{names.get(r.get('tool_call_id', ''), 'the tool')} said: {r['content']}" for r in results)
    return f"{LABEL} I used my tools. {said}"


def _shape(messages: list[dict[str, Any]], response_format: dict[str, Any]) -> Any:
    """The shape to answer in: the JSON Schema of `response_format`, else the one in the instructions."""
    schema = (response_format.get("json_schema") or {}).get("schema")
    if schema is not None:
        return schema
    for message in messages:
        text = _text(message["content"]) if message["role"] == "system" else ""
        if SHAPE_MARKER in text:
            shown = text.split(SHAPE_MARKER, 1)[1].strip()
            try:
                return json.loads(shown)
            except json.JSONDecodeError:
                return shown
    return None


def _value_for(spec: Any, text: str) -> Any:
    """A value that fits one field's spec: a JSON Schema, or a description such as "list of strings"."""
    if isinstance(spec, dict) and ("type" in spec or "properties" in spec or "enum" in spec):
        if spec.get("enum"):
            return spec["enum"][0]
        kind = spec.get("type", "object")
        kind = kind[0] if isinstance(kind, list) else kind
        if kind == "object":
            return fill_shape(spec, text)
        return {"string": text, "number": 0, "integer": 0, "boolean": False, "array": [], "null": None}.get(kind, text)
    described = str(spec).lower()
    if "list" in described or "array" in described:
        return []
    if "number" in described or "integer" in described:
        return 0
    if "bool" in described:
        return False
    return text


def fill_shape(shape: Any, text: str) -> Any:
    """A JSON value in `shape` (a JSON Schema object, a seed-style description object, or a string)."""
    if isinstance(shape, dict) and isinstance(shape.get("properties"), dict):
        return {name: _value_for(spec, text) for name, spec in shape["properties"].items()}
    if isinstance(shape, dict) and shape.get("type") not in (None, "object"):
        return _value_for(shape, text)
    if isinstance(shape, dict) and shape:
        return {name: _value_for(spec, text) for name, spec in shape.items()}
    return {"answer": text}


class DemoProvider:
    """Offline answers, labelled as such, streamed a word at a time (pausing with `asyncio.sleep`, so a
    worker's other turns go on meanwhile)."""

    def __init__(self, settings: Settings) -> None:
        self.delay_s = settings.demo_chunk_delay_ms / 1000

    @asynccontextmanager
    async def stream(self, *, model: str, messages: list[dict[str, Any]], temperature: float | None,
               max_tokens: int | None, tools: list[dict[str, Any]] | None = None,
               response_format: dict[str, Any] | None = None,
               tool_choice: Any = None) -> AsyncIterator[ModelStream]:  # fmt: skip
        available = {tool["function"]["name"] for tool in tools or ()}
        results = _tool_results(messages)
        newest = _text(messages[-1]["content"])
        call = None
        if not results and tool_choice != "none":
            call = (forced_call(tool_choice, tools or [], newest) or plan_tool_call(newest, available)
                    or named_call(newest, tools or []))  # fmt: skip
        calls: list[ToolCall] = []
        if call is not None:
            answer = ""
            calls.append(ToolCall(id="call_demo_1", name=call[0], arguments=json.dumps(call[1])))
        else:
            answer = _answer_from_tools(messages, results) if results else demo_answer(messages)
            if response_format:
                answer = json.dumps(fill_shape(_shape(messages, response_format), answer), ensure_ascii=False)
        prompt = sum(len(_text(m["content"]).split()) for m in messages)
        usage = {"prompt_tokens": prompt, "completion_tokens": len(answer.split()),
                 "total_tokens": prompt + len(answer.split())}  # fmt: skip
        yield ModelStream(self._words(answer), usage=usage, tool_calls=calls)

    async def aclose(self) -> None:
        """Nothing to close: the demo holds no connection."""

    async def _words(self, text: str) -> AsyncIterator[tuple[str, str]]:
        if not text:
            return
        words = text.split(" ")
        for index, word in enumerate(words):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield TEXT, word if index == len(words) - 1 else word + " "
