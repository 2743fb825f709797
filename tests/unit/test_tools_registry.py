"""`ToolRegistry.run` never raises for a tool's problems: each becomes an error the model can act on."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import BaseModel

from parley.shared import logs
from parley.shared.settings import Settings
from parley.shared.store.connection import RedisClients
from parley.tools import MAX_RESULT_CHARS, PREVIEW_CHARS, Tool, ToolContext, ToolError, ToolRegistry, ToolResult, tool
from parley.tools.registry import TOOL_ATTRIBUTE


def made(fn: object) -> Tool:
    found = getattr(fn, TOOL_ATTRIBUTE)
    assert isinstance(found, Tool)
    return found


def context(clients: RedisClients, settings: Settings) -> ToolContext:
    return ToolContext(tenant="alice", session_id="s1", job_id="job_1", redis=clients.text, settings=settings)


@pytest.fixture
def ctx(clients: RedisClients, settings: Settings) -> ToolContext:
    return context(clients, settings)


def call(registry: ToolRegistry, name: str, arguments: str | dict[str, Any], ctx: ToolContext,
         threads: Executor | None = None) -> ToolResult:  # fmt: skip
    """`registry.run` on an event loop of its own, as the worker's loop awaits it."""
    return asyncio.run(registry.run(name, arguments, ctx, threads))


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown, so a tool the registry abandoned ends instead of outliving the test."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def threads(release: threading.Event) -> Iterator[ThreadPoolExecutor]:
    """The bounded pool sync tools run in (the worker's `rt.threads`); at teardown the abandoned tools are let go
    first, then the pool is joined."""
    pool = ThreadPoolExecutor(4, thread_name_prefix="tools")
    yield pool
    release.set()
    pool.shutdown(wait=True)


@tool
def add(a: int, b: int = 0) -> int:
    """Add two integers."""
    return a + b


@tool
def fails(reason: str) -> str:
    """Always fails."""
    if reason == "expected":
        raise ToolError("the thing is closed today")
    raise KeyError(reason)


@tool
def returns(kind: str) -> object:
    """Returns a value of some kind."""
    values: dict[str, object] = {"text": "plain", "dict": {"é": [1, 2]}, "none": None, "long": "x" * 50_000}
    return values[kind]


class Point(BaseModel):
    x: int
    y: int


@tool
def norm(point: Point) -> Point:
    """Manhattan norm, returned as a point."""
    return Point(x=abs(point.x) + abs(point.y), y=0)


@tool
def who(ctx: ToolContext) -> str:
    """Who calls."""
    return f"{ctx.tenant}/{ctx.session_id}/{ctx.job_id}"


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry(made(fn) for fn in (add, fails, returns, norm, who))


def test_runs_with_json_text_or_dict_arguments(registry: ToolRegistry, ctx: ToolContext) -> None:
    for arguments in ('{"a": 2, "b": 3}', {"a": 2, "b": 3}):
        result = call(registry, "add", arguments, ctx)
        assert result.ok and result.content == "5" and result.preview == "5"
    assert call(registry, "add", '{"a": "7"}', ctx).content == "7"  # pydantic's lax mode: "7" is 7


def test_the_context_reaches_the_tool(registry: ToolRegistry, ctx: ToolContext) -> None:
    assert call(registry, "who", "", ctx).content == "alice/s1/job_1"


def test_pydantic_model_arguments(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = call(registry, "norm", {"x": -2, "y": 3}, ctx)
    assert result.ok and json.loads(result.content) == {"x": 5, "y": 0}
    bad = call(registry, "norm", {"x": "left"}, ctx)
    assert not bad.ok
    assert bad.content.startswith("error: invalid arguments for norm:")
    assert "x: Input should be a valid integer" in bad.content and "y: Field required" in bad.content


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("{not json", "error: the arguments are not valid JSON"),
        ("[1, 2]", "error: the arguments must be a JSON object"),
        ('"a"', "error: the arguments must be a JSON object"),
        ("{}", "error: invalid arguments for add: a: Field required"),
        ('{"a": "two"}', "error: invalid arguments for add: a: Input should be a valid integer"),
        ('{"a": 1, "c": 2}', "error: invalid arguments for add: c: Extra inputs are not permitted"),
    ],
)
def test_bad_arguments_are_errors_for_the_model(registry: ToolRegistry, ctx: ToolContext, arguments: str,
                                                message: str) -> None:  # fmt: skip
    result = call(registry, "add", arguments, ctx)
    assert not result.ok
    assert result.content.startswith(message), result.content


def test_unknown_tool_lists_the_known_ones(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = call(registry, "web_search", "{}", ctx)
    assert not result.ok
    assert result.content == "error: unknown tool 'web_search'; the tools are: add, fails, norm, returns, who"


def test_a_tool_that_raises(registry: ToolRegistry, ctx: ToolContext, caplog: pytest.LogCaptureFixture) -> None:
    expected = call(registry, "fails", {"reason": "expected"}, ctx)
    assert (expected.ok, expected.content) == (False, "error: the thing is closed today")
    surprise = call(registry, "fails", {"reason": "boom"}, ctx)
    assert (surprise.ok, surprise.content) == (False, "error: fails failed: KeyError: 'boom'")
    assert any(record.exc_info and "tool fails raised" in record.getMessage() for record in caplog.records)


def test_a_tool_that_exits_is_still_only_its_own_failure(ctx: ToolContext) -> None:
    @tool
    def quits() -> str:
        """Calls sys.exit."""
        raise SystemExit(3)

    result = call(ToolRegistry([made(quits)]), "quits", {}, ctx)
    assert not result.ok and "SystemExit" in result.content


def test_a_tool_that_sleeps_past_its_timeout_is_abandoned(ctx: ToolContext, release: threading.Event,
                                                          threads: ThreadPoolExecutor) -> None:  # fmt: skip
    started = threading.Event()
    ran_on: list[str] = []

    @tool(timeout_s=0.2)
    def hangs() -> str:
        """Waits for the test to let it go."""
        ran_on.append(threading.current_thread().name)
        started.set()
        release.wait(30)
        return "too late"

    began = time.monotonic()
    result = call(ToolRegistry([made(hangs)]), "hangs", {}, ctx, threads)
    assert (result.ok, result.content) == (False, "error: hangs timed out after 0.2 s")
    assert time.monotonic() - began < 5
    assert started.is_set() and not release.is_set()  # the answer came while the tool still ran
    assert [name.startswith("tools") for name in ran_on] == [True]  # on the pool it was given, not the event loop


def test_an_async_tool_runs_on_the_loop_and_is_cancelled_at_its_timeout(ctx: ToolContext) -> None:
    seen: list[str] = []

    @tool(timeout_s=0.2)
    async def stalls() -> str:
        """Awaits far longer than its timeout."""
        seen.append(threading.current_thread().name)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "too late"

    began = time.monotonic()
    result = call(ToolRegistry([made(stalls)]), "stalls", {}, ctx)
    assert (result.ok, result.content) == (False, "error: stalls timed out after 0.2 s")
    assert time.monotonic() - began < 5
    assert seen == [threading.current_thread().name, "cancelled"]  # the caller's thread (its loop), then stopped


def test_a_sync_tool_sees_the_caller_s_log_fields(ctx: ToolContext, threads: ThreadPoolExecutor) -> None:
    @tool
    def where() -> str:
        """The log fields of the thread it runs in."""
        return json.dumps(logs.context())

    async def in_a_turn() -> ToolResult:
        logs.set_context(tenant="alice", job_id="job_1")
        return await ToolRegistry([made(where)]).run("where", {}, ctx, threads)

    assert json.loads(asyncio.run(in_a_turn()).content) == {"tenant": "alice", "job_id": "job_1"}


def test_the_default_timeout_is_the_setting(clients: RedisClients, make_settings: Callable[..., Settings],
                                            release: threading.Event, threads: ThreadPoolExecutor) -> None:  # fmt: skip
    @tool
    def waits() -> str:
        """Waits for the test to let it go."""
        release.wait(30)
        return "late"

    ctx = context(clients, make_settings(PARLEY_TOOL_TIMEOUT_S="0.1"))
    assert call(ToolRegistry([made(waits)]), "waits", {}, ctx, threads).content == "error: waits timed out after 0.1 s"


def test_results_are_encoded_cut_and_previewed(registry: ToolRegistry, ctx: ToolContext) -> None:
    assert call(registry, "returns", {"kind": "text"}, ctx).content == "plain"
    assert call(registry, "returns", {"kind": "dict"}, ctx).content == '{"é": [1, 2]}'
    assert call(registry, "returns", {"kind": "none"}, ctx).content == "null"
    long = call(registry, "returns", {"kind": "long"}, ctx)
    assert long.ok and len(long.content) == MAX_RESULT_CHARS
    kept = long.content.index("\n[... cut:")
    assert long.content[:kept] == "x" * kept
    assert long.content.endswith(f"[... cut: {50_000 - kept} more characters; results are limited to 16000]")
    assert len(long.preview) == PREVIEW_CHARS and long.preview.endswith("…")


def test_describe_and_openai_tools(registry: ToolRegistry, caplog: pytest.LogCaptureFixture) -> None:
    described = registry.describe()
    assert [spec["name"] for spec in described] == ["add", "fails", "norm", "returns", "who"]
    assert described[0] == {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "default": 0}},
            "required": ["a"],
        },
    }
    offered = registry.openai_tools(["who", "add", "who", "gone"])
    assert [spec["type"] for spec in offered] == ["function", "function"]
    assert [spec["function"]["name"] for spec in offered] == ["who", "add"]
    assert offered[1]["function"] == described[0]
    assert "gone" in caplog.text


def test_two_tools_of_one_name_are_refused() -> None:
    def first() -> str:
        """One."""
        return "1"

    def second() -> str:
        """Two."""
        return "2"

    with pytest.raises(ValueError, match="two tools are named 'same'"):
        ToolRegistry([made(tool(name="same")(first)), made(tool(name="same")(second))])
