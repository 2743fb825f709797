"""The fold of a turn's event log into Responses streaming events (api/adapters/responses/fold.py): numbered from 0
without a gap, the same for the same log (a resumed stream replays it), accepted by the `openai` SDK's own stream
accumulator (ResponseStreamState, behind `client.responses.stream`) whose final response matches the fold's, and
what a retried attempt or a repaired answer sent leaves the output."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai._models import construct_type_unchecked
from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent

from parley.api.adapters.responses.fold import Fold, fold
from parley.shared import events
from parley.shared.events import EventType

JOB = "job_" + "ab" * 16
RECORD = {"session_id": "s1", "agent_name": "Chef", "enqueued_at": "1764700000000", "status": "finished"}


def _log(*entries: tuple[EventType, dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f"1764700000{n:03d}-0", events.encode(kind, **fields)) for n, (kind, fields) in enumerate(entries)]


def _all(log: list[tuple[str, str]]) -> tuple[Fold, list[dict[str, Any]]]:
    folded = Fold(JOB, RECORD)
    out = [event for event_id, payload in log for event in folded.feed(event_id, events.decode(payload))]
    return folded, out


def _accumulated(out: list[dict[str, Any]]) -> Any:
    """What the SDK's accumulator makes of the events (it raises on an event out of place)."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for raw in out:
        state.handle_event(construct_type_unchecked(type_=ResponseStreamEvent, value=json.loads(json.dumps(raw))))  # type: ignore[arg-type]
    return state._completed_response


START = [(EventType.SESSION, {"session_id": "s1", "agent_id": "a1", "agent_name": "Chef", "job_id": JOB}),
         (EventType.STATUS, {"message": "queued"}), (EventType.STATUS, {"message": "started"})]  # fmt: skip


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")  # the SDK re-serializes items it
# has no type for (Parley's own) once the response completes: pydantic warns, and the data is kept as sent
def test_a_turn_with_tools_an_approval_and_an_answer() -> None:
    log = _log(
        *START,
        (EventType.THINKING, {"message": "Hmm."}),
        (EventType.DELTA, {"content": "Let me "}), (EventType.DELTA, {"content": "count."}),
        (EventType.LLM_THOUGHT, {"thought": "Let me count.", "turn": 1}),
        (EventType.TOOL_EXECUTION, {"tool_name": "calculator", "args": {"expression": "2+2"}, "call_id": "c1"}),
        (EventType.APPROVAL_REQUIRED, {"call_id": "c1", "tool_name": "calculator", "args": {"expression": "2+2"}}),
        (EventType.STATUS, {"message": "waiting"}), (EventType.STATUS, {"message": "resumed"}),
        (EventType.TOOL_RESULT, {"tool_name": "calculator", "preview": "4", "call_id": "c1", "ok": True}),
        (EventType.DELTA, {"content": "It is "}),
        (EventType.RESPONSE, {"content": "It is 4.", "session_id": "s1", "usage": {"prompt_tokens": 7,
                                                                                  "completion_tokens": 3}}),
        (EventType.DONE, {}),
    )  # fmt: skip
    folded, out = _all(log)
    assert [event["sequence_number"] for event in out] == list(range(len(out)))
    assert _all(log)[1] == out  # a pure function of the log: a resumed stream sends exactly these
    assert [e["type"] for e in out[:3]] == ["response.created", "response.queued", "response.in_progress"]
    assert out[-1]["type"] == "response.completed"
    final = folded.snapshot()
    assert final == fold(JOB, RECORD, log).snapshot() == out[-1]["response"]
    kinds = [(item["type"], item.get("phase")) for item in final["output"]]
    assert kinds == [("reasoning", None), ("message", "commentary"), ("parley:tool_call", None),
                     ("parley:approval_request", None), ("message", "final_answer")]  # fmt: skip
    call = final["output"][2]
    assert (call["output"], call["status"], call["call_id"], call["name"]) == ("4", "completed", "c1", "calculator")
    assert json.loads(call["arguments"]) == {"expression": "2+2"}
    assert final["output"][3]["id"] == "c1"  # the id to decide it with: POST /api/v1/jobs/{job}/approvals
    # Open Responses' extension items: a slug-prefixed type, with the id, type and status every item must have;
    # streamed by output_item.added / .done only, never by an event type outside the spec's
    assert all({"id", "type", "status"} <= set(item) for item in final["output"])
    assert all(e["type"].startswith("response.") for e in out) and not any("mcp" in e["type"] for e in out)
    assert final["output"][4]["content"][0]["text"] == "It is 4."
    deltas = [e["delta"] for e in out if e["type"] == "response.output_text.delta" and e["output_index"] == 4]
    assert "".join(deltas) == "It is 4."  # what streamed adds up to the answer
    assert final["usage"]["input_tokens"] == 7 and final["usage"]["total_tokens"] == 10
    accumulated = _accumulated(out)
    assert accumulated.output_text == "Let me count.It is 4." and accumulated.status == "completed"
    assert [item.to_dict(warnings=False) for item in accumulated.output[2:4]] == final["output"][2:4]


def test_a_retried_attempt_and_a_repaired_answer_leave_the_output() -> None:
    log = _log(
        *START, (EventType.DELTA, {"content": "Half an ans"}),
        (EventType.STATUS, {"message": "retrying", "attempt": 2}), (EventType.STATUS, {"message": "started"}),
        (EventType.DELTA, {"content": "{bad"}), (EventType.STATUS, {"message": "repairing", "reason": "not JSON"}),
        (EventType.DELTA, {"content": "{}"}), (EventType.RESPONSE, {"content": "{}", "session_id": "s1"}),
        (EventType.DONE, {}),
    )  # fmt: skip
    folded, out = _all(log)
    texts = [item["content"][0]["text"] for item in folded.snapshot()["output"]]
    assert texts == ["{}"]
    ended = [e["item"]["status"] for e in out if e["type"] == "response.output_item.done"]
    assert ended == ["incomplete", "incomplete", "completed"]  # the superseded ones said so as they ended
    assert _accumulated(out).output_text == "{}"


def test_client_tool_calls_and_a_cancel() -> None:
    calls = [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}]
    folded, out = _all(_log(*START, (EventType.RESPONSE, {"content": "", "tool_calls": calls, "session_id": "s1"})))
    [call] = folded.snapshot()["output"]
    assert call == {"id": f"fc_{JOB[4:]}_0", "type": "function_call", "call_id": "call_1", "name": "get_weather",
                    "arguments": '{"city": "Oslo"}', "status": "completed"}  # fmt: skip
    assert "response.function_call_arguments.done" in [e["type"] for e in out]
    assert _accumulated(out).output[0].arguments == '{"city": "Oslo"}'

    folded, out = _all(_log(*START, (EventType.DELTA, {"content": "Wai"}),
                            (EventType.ERROR, {"message": "canceled", "code": "canceled"})))  # fmt: skip
    assert out[-1]["type"] == "response.failed"
    snapshot = folded.snapshot()
    assert snapshot["status"] == "cancelled" and snapshot["error"] == {"code": "canceled", "message": "canceled"}
    assert snapshot["output"][0]["status"] == "incomplete"
