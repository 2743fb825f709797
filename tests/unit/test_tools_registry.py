"""`ToolRegistry.run` never raises for a tool's problems: each becomes an error the model can act on."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator

import pytest
from pydantic import BaseModel

from parley.shared.settings import Settings
from parley.shared.store.connection import RedisClients
from parley.tools import MAX_RESULT_CHARS, PREVIEW_CHARS, Tool, ToolContext, ToolError, ToolRegistry, tool
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


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown, so a tool the registry abandoned ends instead of outliving the test."""
    event = threading.Event()
    yield event
    event.set()


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
        result = registry.run("add", arguments, ctx)
        assert result.ok and result.content == "5" and result.preview == "5"
    assert registry.run("add", '{"a": "7"}', ctx).content == "7"  # pydantic's lax mode: "7" is 7


def test_the_context_reaches_the_tool(registry: ToolRegistry, ctx: ToolContext) -> None:
    assert registry.run("who", "", ctx).content == "alice/s1/job_1"


def test_pydantic_model_arguments(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = registry.run("norm", {"x": -2, "y": 3}, ctx)
    assert result.ok and json.loads(result.content) == {"x": 5, "y": 0}
    bad = registry.run("norm", {"x": "left"}, ctx)
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
    result = registry.run("add", arguments, ctx)
    assert not result.ok
    assert result.content.startswith(message), result.content


def test_unknown_tool_lists_the_known_ones(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = registry.run("web_search", "{}", ctx)
    assert not result.ok
    assert result.content == "error: unknown tool 'web_search'; the tools are: add, fails, norm, returns, who"


def test_a_tool_that_raises(registry: ToolRegistry, ctx: ToolContext, caplog: pytest.LogCaptureFixture) -> None:
    expected = registry.run("fails", {"reason": "expected"}, ctx)
    assert (expected.ok, expected.content) == (False, "error: the thing is closed today")
    surprise = registry.run("fails", {"reason": "boom"}, ctx)
    assert (surprise.ok, surprise.content) == (False, "error: fails failed: KeyError: 'boom'")
    assert any(record.exc_info and "tool fails raised" in record.getMessage() for record in caplog.records)


def test_a_tool_that_exits_is_still_only_its_own_failure(ctx: ToolContext) -> None:
    @tool
    def quits() -> str:
        """Calls sys.exit."""
        raise SystemExit(3)

    result = ToolRegistry([made(quits)]).run("quits", {}, ctx)
    assert not result.ok and "SystemExit" in result.content


def test_a_tool_that_sleeps_past_its_timeout_is_abandoned(ctx: ToolContext, release: threading.Event) -> None:
    started = threading.Event()

    @tool(timeout_s=0.2)
    def hangs() -> str:
        """Waits for the test to let it go."""
        started.set()
        release.wait(30)
        return "too late"

    result = ToolRegistry([made(hangs)]).run("hangs", {}, ctx)
    assert (result.ok, result.content) == (False, "error: hangs timed out after 0.2 s")
    assert started.is_set() and not release.is_set()  # the answer came while the tool still ran
    abandoned = [thread for thread in threading.enumerate() if thread.name.startswith("tool-hangs-")]
    assert abandoned and all(thread.daemon for thread in abandoned)


def test_the_default_timeout_is_the_setting(clients: RedisClients, make_settings: Callable[..., Settings],
                                            release: threading.Event) -> None:  # fmt: skip
    @tool
    def waits() -> str:
        """Waits for the test to let it go."""
        release.wait(30)
        return "late"

    ctx = context(clients, make_settings(PARLEY_TOOL_TIMEOUT_S="0.1"))
    assert ToolRegistry([made(waits)]).run("waits", {}, ctx).content == "error: waits timed out after 0.1 s"


def test_results_are_encoded_cut_and_previewed(registry: ToolRegistry, ctx: ToolContext) -> None:
    assert registry.run("returns", {"kind": "text"}, ctx).content == "plain"
    assert registry.run("returns", {"kind": "dict"}, ctx).content == '{"é": [1, 2]}'
    assert registry.run("returns", {"kind": "none"}, ctx).content == "null"
    long = registry.run("returns", {"kind": "long"}, ctx)
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
