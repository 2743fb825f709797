"""Events have one owner (issue 12): every event the worker and the web write has its type in
`events.EventType`, the contract's table is within it, the SDK's types are the same enumeration, and
an `error` event's `code` maps to the HTTP error a waiting request gets in one table.

Checked on the source (every `encode(` call site, every Lua `type = '...'` literal) so that a new
producer cannot slip a free string past the enumeration.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from parley import client
from parley.client import errors as sdk_errors
from parley.shared import events
from parley.shared.errors import BudgetExceeded, Conflict, InvalidAnswer, ModelFailed, TimedOut, turn_error
from parley.shared.events import ErrorCode, EventType

ROOT = Path(__file__).resolve().parents[2]
PRODUCERS = ("api", "worker", "shared")
CONTRACT = ROOT.parent / "shared" / "api-contract.md"
"""The public contract (/work/shared/api-contract.md), beside the repository."""


def encode_calls(package: str) -> list[tuple[str, ast.Call]]:
    """(file:line, call) for every call of `encode` or `events.encode` in a package's source."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            named = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value if isinstance(func, ast.Attribute) else None
            if named == "encode" and (owner is None or (isinstance(owner, ast.Name) and owner.id == "events")):
                found.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return found


def emitted_type(call: ast.Call) -> str | None:
    """The member named by `encode(EventType.X, ...)`'s first argument; None for anything else (a string)."""
    first = call.args[0] if call.args else None
    if isinstance(first, ast.Attribute) and isinstance(first.value, ast.Name) and first.value.id == "EventType":
        return first.attr
    return None


def table_types(markdown: str, heading: str) -> set[str]:
    """The event types in the first column of the table under `heading` (up to the next heading)."""
    section = markdown.split(heading, 1)[1]
    section = re.split(r"\n#{1,3} ", section, maxsplit=1)[0]
    return set(re.findall(r"^\s*\| `([a-z_]+)` \|", section, flags=re.MULTILINE))


def test_every_encode_call_names_a_member_of_the_enumeration() -> None:
    calls = [site for package in PRODUCERS for site in encode_calls(package)]
    assert len(calls) >= 15  # the scan sees the producers (worker/turn, worker/memory, shared/turns)
    offences = [where for where, call in calls if emitted_type(call) not in EventType.__members__]
    assert offences == []


def test_the_producers_emit_every_type_but_none_outside_it() -> None:
    """Lua's `type = '...'` literals (START_TURN's statuses) count as emitted too."""
    names = {emitted_type(call) for package in PRODUCERS for _, call in encode_calls(package)}
    emitted = {EventType[name] for name in names if name is not None and name in EventType.__members__}
    lua_files = (ROOT / "shared" / "store" / "scripts").glob("*.lua")
    lua = {found for path in lua_files for found in re.findall(r"type = '([a-z_]+)'", path.read_text(encoding="utf-8"))}
    assert lua and lua <= set(EventType)
    assert emitted | lua == set(EventType)


def test_encode_refuses_a_type_outside_the_enumeration() -> None:
    with pytest.raises(ValueError):
        events.encode("deltaa", content="x")  # type: ignore[arg-type]
    assert events.encode(EventType.DELTA, content="x") == '{"type":"delta","content":"x"}'


@pytest.mark.skipif(not CONTRACT.exists(), reason="the contract is kept beside the repository, not in it; "
                    "docs/api.md's table (checked below) follows it")  # fmt: skip
def test_the_contract_table_is_within_the_enumeration() -> None:
    contract = table_types(CONTRACT.read_text(encoding="utf-8"), "\n## Chat\n")
    assert {"session", "delta", "response", "error", "done"} <= contract  # the table was found and read
    assert contract <= set(EventType)


def test_the_docs_agent_loop_table_is_within_the_enumeration() -> None:
    documented = table_types((ROOT / "docs" / "api.md").read_text(encoding="utf-8"), "The agent loop")
    assert {"thinking", "tool_execution", "tool_result"} <= documented
    assert documented <= set(EventType)


def test_the_sdk_event_types_are_the_service_s() -> None:
    assert client.EventType is EventType


@pytest.mark.parametrize(("payload", "not_json"), [("{", True), ("[1]", False), ('{"type": 1}', False)])
def test_decode_refuses_what_is_not_an_event(payload: str, not_json: bool) -> None:
    with pytest.raises(events.BadEvent) as info:
        events.decode(payload)
    assert info.value.not_json is not_json


def test_decode_keeps_an_unknown_type_for_the_reader_to_skip() -> None:
    assert events.decode('{"type":"newer","x":1}') == {"type": "newer", "x": 1}


@pytest.mark.parametrize(("code", "expected"), [
    (ErrorCode.CANCELED, Conflict), (ErrorCode.MODEL_TIMEOUT, TimedOut), (ErrorCode.INVALID_ANSWER, InvalidAnswer),
    (ErrorCode.MODEL_FAILED, ModelFailed), (ErrorCode.TURN_FAILED, ModelFailed), (ErrorCode.AGENT_MISSING, ModelFailed),
    (ErrorCode.SUMMARY_FAILED, ModelFailed), (None, ModelFailed),
    (ErrorCode.BUDGET_EXCEEDED, BudgetExceeded),
])  # fmt: skip
def test_each_error_code_has_its_http_error(code: ErrorCode | None, expected: type) -> None:
    error = turn_error(code, "the model said no", job_id="job_1")
    assert type(error) is expected and error.extra == {"job_id": "job_1"}
    assert error.message == ("the turn was canceled" if code == ErrorCode.CANCELED else "the model said no")


@pytest.mark.parametrize("code", list(ErrorCode))
def test_the_sdk_has_an_exception_for_each_turn_error(code: ErrorCode) -> None:
    """A waited-for turn that ends with any code reaches the SDK as one of its named exceptions."""
    status = turn_error(code, "x").status
    assert status in sdk_errors._BY_STATUS
