"""The `@tool` decorator, the catalogue it fills, and `ToolRegistry`, which runs tools for the agent loop.

Every `@tool` function lands in the process-wide `CATALOGUE`, keyed by (module, name). A
`ToolRegistry` holds the tools one deployment offers (see loading.py: built-ins, entry points,
PARLEY_TOOL_MODULES), so a module merely imported somewhere offers nothing to agents.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ValidationError

from parley.shared.text import clean_json
from parley.tools.context import ToolContext, ToolError, ToolResult
from parley.tools.schema import Tool, build_tool

log = logging.getLogger("parley.tools")

MAX_RESULT_CHARS = 16_000
"""Longest result text the model is given, in characters; the rest is cut, with a note saying how much."""

TOOL_ATTRIBUTE = "__parley_tool__"
"""The attribute `@tool` sets on the function it decorates, holding its `Tool`."""

CATALOGUE: dict[tuple[str, str], Tool] = {}
"""Every tool defined in this process, by (module, tool name); a re-imported module replaces its own entries."""

F = TypeVar("F", bound=Callable[..., Any])


@overload
def tool(fn: F) -> F: ...
@overload
def tool(*, name: str | None = None, description: str | None = None,
         timeout_s: float | None = None) -> Callable[[F], F]: ...  # fmt: skip
def tool(fn: F | None = None, *, name: str | None = None, description: str | None = None,
         timeout_s: float | None = None) -> F | Callable[[F], F]:  # fmt: skip
    """Make a typed function a tool: `@tool` or `@tool(name=..., description=..., timeout_s=...)`.

    The JSON Schema comes from the signature (type hints and defaults; the docstring's first
    paragraph is the description and its `Args:` lines describe the parameters) or, when the
    function takes one pydantic model, from that model. A parameter annotated `ToolContext` is
    given the turn's context and is not shown to the model. The function itself is returned
    unchanged (still callable), with its `Tool` under `__parley_tool__`.
    """

    def register(func: F) -> F:
        made = build_tool(func, name=name, description=description, timeout_s=timeout_s)
        CATALOGUE[(made.module, made.name)] = made
        setattr(func, TOOL_ATTRIBUTE, made)
        return func

    return register(fn) if fn is not None else register


def tools_of_module(module: str) -> list[Tool]:
    """The catalogued tools a module defines, in definition order."""
    return [made for (owner, _), made in CATALOGUE.items() if owner == module]


class ToolRegistry:
    """The tools one deployment offers, and the one way to run them."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for made in tools:
            self.add(made)

    def add(self, made: Tool) -> None:
        """Offer `made`; a second tool of the same name is refused (ValueError naming both modules)."""
        known = self._tools.get(made.name)
        if known is not None and known.fn is not made.fn:
            raise ValueError(f"two tools are named {made.name!r}: one in {known.module}, one in {made.module}")
        self._tools[made.name] = made

    def names(self) -> list[str]:
        return sorted(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def describe(self) -> list[dict[str, Any]]:
        """`[{name, description, parameters}]`, by name (what `GET /api/v1/tools` shows)."""
        return [_spec(self._tools[name]) for name in self.names()]

    def openai_tools(self, names: list[str]) -> list[dict[str, Any]]:
        """The Chat Completions `tools` for `names`, in their order, once each.

        A name no tool has (an agent saved when a since-removed tool was deployed) is left out and
        logged; should the model call it anyway, `run` tells it the tool does not exist.
        """
        specs: list[dict[str, Any]] = []
        for name in dict.fromkeys(names):
            made = self._tools.get(name)
            if made is None:
                log.warning("agent names tool %r, which this deployment does not have: left out", name)
                continue
            specs.append({"type": "function", "function": _spec(made)})
        return specs

    async def run(self, name: str, arguments: str | dict[str, Any], ctx: ToolContext,
                  threads: Executor | None = None) -> ToolResult:  # fmt: skip
        """Run one call of the model; never raises for the tool's problems.

        An unknown tool, arguments that are not a JSON object or fail validation, a tool that
        raises, and a tool that runs past its timeout (the tool's `timeout_s`, else
        `PARLEY_TOOL_TIMEOUT_S`) all come back as `ok=False` with an `error: ...` text the model
        can act on. An `async def` tool runs on the caller's event loop and is cancelled at its
        timeout; a plain function runs in `threads` (the worker's bounded pool; None: the loop's
        default executor), with the caller's context variables (log fields). Python cannot kill a
        thread: a sync tool past its timeout is abandoned, it runs on until it returns (its result
        is then dropped) and holds its pool thread meanwhile. Results that are not `str` are
        JSON-encoded; results longer than `MAX_RESULT_CHARS` are cut. Lone surrogates, in the
        arguments the tool is given and in the result, become U+FFFD (`parley.shared.text.clean`).
        """
        made = self._tools.get(name)
        if made is None:
            known = ", ".join(self.names()) or "none"
            return _failed(f"unknown tool {name!r}; the tools are: {known}")
        try:
            validated = made.arguments.model_validate(parse_arguments(arguments))
        except ToolError as error:
            return _failed(str(error))
        except ValidationError as error:
            return _failed(f"invalid arguments for {name}: {_validation_message(error)}")
        timeout_s = made.timeout_s if made.timeout_s is not None else ctx.settings.tool_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                value = await _call(made, validated, ctx, threads)
        except TimeoutError:
            log.warning("tool %s timed out after %ss (job %s): abandoned", name, timeout_s, ctx.job_id)
            return _failed(f"{name} timed out after {timeout_s:g} s")
        except ToolError as error:
            return _failed(str(error) or f"{name} failed")
        except Exception as error:
            log.warning("tool %s raised (job %s)", name, ctx.job_id, exc_info=error)
            return _failed(f"{name} failed: {type(error).__name__}: {error}")
        return ToolResult.of(True, cut(_as_text(value)))


def _spec(made: Tool) -> dict[str, Any]:
    return {"name": made.name, "description": made.description, "parameters": made.parameters}


def _failed(message: str) -> ToolResult:
    return ToolResult.of(False, cut(f"error: {message}"))


def parse_arguments(arguments: str | dict[str, Any]) -> dict[str, Any]:
    """A call's arguments as a dict (lone surrogates as U+FFFD); ToolError saying what is wrong with them."""
    if isinstance(arguments, str):
        if not arguments.strip():
            return {}
        try:
            arguments = json.loads(arguments)
        except ValueError as error:
            raise ToolError(f"the arguments are not valid JSON ({error})") from error
    if not isinstance(arguments, dict):
        raise ToolError("the arguments must be a JSON object of named parameters")
    return clean_json(arguments)  # type: ignore[no-any-return]  # `"\ud800"` in the JSON: U+FFFD for the tool


def _validation_message(error: ValidationError) -> str:
    parts = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "arguments"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)


async def _call(made: Tool, arguments: BaseModel, ctx: ToolContext, threads: Executor | None) -> Any:
    """The tool's value: awaited when it is a coroutine function, else from a pool thread."""
    if inspect.iscoroutinefunction(made.fn):
        return await made.call(arguments, ctx)
    context = contextvars.copy_context()
    try:
        return await asyncio.get_running_loop().run_in_executor(threads, context.run, made.call, arguments, ctx)
    except BaseException as error:
        if isinstance(error, Exception | asyncio.CancelledError):
            raise
        raise RuntimeError(f"{type(error).__name__} {error}".strip()) from None  # SystemExit inside a tool


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value, ensure_ascii=False, default=str)


def cut(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    """`text` cut to at most `limit` characters, ending with a note of how many were left out."""
    if len(text) <= limit:
        return text
    note = f"\n[... cut: {{}} more characters; results are limited to {limit}]"
    keep = limit - len(note.format(len(text)))
    return text[:keep] + note.format(len(text) - keep)
