"""The A2A translation (api/adapters/a2a/translate.py), without I/O: envelopes and messages in; cards, tasks and
stream events out, checked against the official a2a-sdk's own parsers for both dialects (1.0 ProtoJSON, 0.3)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from a2a.client.card_resolver import parse_agent_card
from a2a.compat.v0_3 import types as v03
from a2a.types.a2a_pb2 import StreamResponse, Task, TaskState
from a2a.utils.proto_utils import parse_lenient
from google.protobuf.json_format import ParseDict

from parley.api.adapters.a2a import translate
from parley.api.adapters.a2a.translate import Dialect, RpcError, TaskFold, TaskView
from parley.shared import events
from parley.shared.events import EventType

V1, V03 = Dialect(False), Dialect(True)


def _code(call: Any, *args: Any) -> int:
    with pytest.raises(RpcError) as caught:
        call(*args)
    return caught.value.code


# ---------------------------------------------------------------------------------------------- envelopes


def test_the_envelope_names_its_dialect_by_method() -> None:
    assert translate.parse_call({"jsonrpc": "2.0", "id": 1, "method": "SendMessage"}) == translate.Call(
        1, "send", False, {})  # fmt: skip
    legacy = translate.parse_call({"jsonrpc": "2.0", "id": "a", "method": "tasks/resubscribe", "params": {"id": "t"}})
    assert (legacy.kind, legacy.legacy, legacy.params) == ("subscribe", True, {"id": "t"})


@pytest.mark.parametrize(("body", "code"), [
    ([{"jsonrpc": "2.0", "method": "GetTask"}], -32600),  # a batch
    ({"jsonrpc": "1.0", "method": "GetTask"}, -32600),
    ("GetTask", -32600),
    ({"jsonrpc": "2.0", "id": True, "method": "GetTask"}, -32600),
    ({"jsonrpc": "2.0", "id": 1.5, "method": "GetTask"}, -32600),
    ({"jsonrpc": "2.0", "id": 1}, -32600),
    ({"jsonrpc": "2.0", "id": 1, "method": "tasks/explode"}, -32601),
    ({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": [1]}, -32602),
])  # fmt: skip
def test_a_broken_envelope_is_a_json_rpc_error(body: Any, code: int) -> None:
    assert _code(translate.parse_call, body) == code


def test_the_version_header() -> None:
    for fine in (None, "", "1.0", "1.0.1", "1", "0.3", "0.3.0"):
        translate.check_version(fine)
    for wrong in ("2.0", "0.2", "x"):
        assert _code(translate.check_version, wrong) == -32009


def test_error_bodies_in_each_dialect() -> None:
    error = translate.task_not_found("job_x")
    assert translate.error_body(3, error, legacy=False) == {"jsonrpc": "2.0", "id": 3, "error": {
        "code": -32001, "message": "task 'job_x' not found",
        "data": [{"@type": translate.ERROR_INFO_TYPE, "reason": "TASK_NOT_FOUND", "domain": "a2a-protocol.org",
                  "metadata": {}}]}}  # fmt: skip
    assert translate.error_body(3, error, legacy=True)["error"] == {"code": -32001, "message": "task 'job_x' not found"}
    assert translate.request_id({"id": True}) is None and translate.request_id([]) is None


def test_what_is_sent_back_survives_any_string() -> None:
    sent = translate.dumps({"text": "a\ud800b é"})
    assert sent.isascii() and json.loads(sent) == {"text": "a\ud800b é"}


# ----------------------------------------------------------------------------------------------- messages


def _v1(*parts: dict[str, Any], **message: Any) -> dict[str, Any]:
    return {"message": {"messageId": "m", "role": "ROLE_USER", "parts": list(parts), **message}}


def _v03(*parts: dict[str, Any], **message: Any) -> dict[str, Any]:
    return {"message": {"kind": "message", "messageId": "m", "role": "user", "parts": list(parts), **message}}


def test_text_parts_make_the_turn_s_message_in_both_dialects() -> None:
    config = {"returnImmediately": True, "historyLength": 2}
    new = translate.parse_send({**_v1({"text": "a"}, {"text": "b", "mediaType": "text/plain"}, contextId="s1"),
                                "configuration": config}, legacy=False)  # fmt: skip
    assert (new.text, new.context_id, new.task_id, new.blocking, new.history_length) == ("a\nb", "s1", None, False, 2)
    old = translate.parse_send(_v03({"kind": "text", "text": "hi"}, contextId="s2"), legacy=True)
    assert (old.text, old.context_id, old.blocking) == ("hi", "s2", True)
    assert not translate.parse_send({**_v03({"kind": "text", "text": "x"}), "configuration": {"blocking": False}},
                                    legacy=True).blocking  # fmt: skip
    assert translate.parse_send(_v1({"text": "x"}, context_id="snake"), legacy=False).context_id == "snake"


def test_a_decision_is_a_data_part_to_a_waiting_task() -> None:
    decided = translate.parse_send(_v1({"data": {"call_id": "c1", "approve": False, "reason": "no"}}, taskId="job_1"),
                                   legacy=False)  # fmt: skip
    assert decided.task_id == "job_1" and [(d.call_id, d.approve, d.reason) for d in decided.decisions] == [
        ("c1", False, "no")]  # fmt: skip
    old = translate.parse_send(_v03({"kind": "data", "data": {"call_id": "c", "approve": True}}, taskId="j"), True)
    assert old.decisions[0].approve is True


@pytest.mark.parametrize(("params", "legacy", "code"), [
    ({}, False, -32602),
    (_v1(), False, -32602),
    (_v1({"text": "x"}, role="ROLE_AGENT"), False, -32602),
    (_v1({"text": "x", "data": {}}), False, -32602),
    (_v1({"text": 5}), False, -32602),
    (_v1({"url": "https://x/a.png"}), False, -32005),
    (_v1({"raw": "AAAA"}), False, -32005),
    (_v03({"kind": "file", "file": {"uri": "https://x"}}), True, -32005),
    (_v1({"data": {"figs": 1}}), False, -32005),  # data that decides nothing
    (_v1({"data": {"call_id": "c", "approve": True}}), False, -32602),  # a decision without taskId
    (_v1({"data": {"call_id": "c", "approve": "maybe"}}, taskId="j"), False, -32602),
    (_v1({"data": {"call_id": "c", "approve": True}}, {"data": {"call_id": "c", "approve": True}}, taskId="j"),
     False, -32602),
    (_v1({"text": "yes"}, taskId="j"), False, -32602),  # text cannot decide
    (_v1({"text": "x"}, contextId=7), False, -32602),
    (_v1({"text": "x"}, contextId="x" * 201), False, -32602),
    ({**_v1({"text": "x"}), "configuration": {"returnImmediately": "no"}}, False, -32602),
    ({**_v1({"text": "x"}), "configuration": {"historyLength": -1}}, False, -32602),
    (_v1(*[{"text": "x"}] * 101), False, -32602),
])  # fmt: skip
def test_what_a_message_cannot_ask_is_refused(params: dict[str, Any], legacy: bool, code: int) -> None:
    assert _code(translate.parse_send, params, legacy) == code


def test_task_id_params() -> None:
    assert translate.task_id_param({"id": "job_1"}) == "job_1"
    assert _code(translate.task_id_param, {}) == -32602
    assert _code(translate.task_id_param, {"id": ["x"]}) == -32602
    assert translate.history_length(0) == 0 and _code(translate.history_length, True) == -32602


# --------------------------------------------------------------------------------------------------- card


def test_the_card_reads_as_1_0_and_as_0_3() -> None:
    card = translate.agent_card({"id": "agent-1", "name": "Chef", "description": "Cooks."},
                                "http://h/a2a/Chef", "0.1.0")  # fmt: skip
    parsed = parse_agent_card(json.loads(json.dumps(card)))
    assert parsed.name == "Chef" and parsed.capabilities.streaming and parsed.capabilities.push_notifications
    assert [(i.url, i.protocol_binding, i.protocol_version) for i in parsed.supported_interfaces] == [
        ("http://h/a2a/Chef", "JSONRPC", "1.0"), ("http://h/a2a/Chef", "JSONRPC", "0.3")]  # fmt: skip
    assert parsed.security_schemes["bearer"].http_auth_security_scheme.scheme.lower() == "bearer"
    assert list(parsed.security_requirements[0].schemes) == ["bearer"]
    legacy = v03.AgentCard.model_validate(card)
    assert (legacy.url, legacy.protocol_version, legacy.security) == ("http://h/a2a/Chef", "0.3.0", [{"bearer": []}])
    assert legacy.security_schemes is not None and legacy.security_schemes["bearer"].root.type == "http"


# -------------------------------------------------------------------------------------------------- tasks


RECORD = {"status": "finished", "session_id": "s1", "agent_id": "a1", "message": "hi", "enqueued_at": "1000",
          "started_at": "1100", "ended_at": "1200",
          "result": json.dumps({"response": '{"dish": "figs"}', "structured": {"dish": "figs"}})}  # fmt: skip


def test_a_finished_job_is_a_completed_task_with_its_answer() -> None:
    view = translate.from_record("job_1", RECORD)
    task = ParseDict(view.render(V1), Task())
    assert (task.id, task.context_id, task.status.state) == ("job_1", "s1", TaskState.TASK_STATE_COMPLETED)
    assert task.artifacts[0].parts[0].text == '{"dish": "figs"}'
    assert task.artifacts[0].parts[1].data.struct_value["dish"] == "figs"
    assert [m.parts[0].text for m in task.history] == ["hi", '{"dish": "figs"}']
    assert task.status.timestamp.ToMilliseconds() == 1200
    assert len(ParseDict(view.render(V1, history_length=1), Task()).history) == 1
    assert "history" not in view.render(V1, history_length=0)
    legacy = v03.Task.model_validate(view.render(V03))
    assert legacy.status.state == v03.TaskState.completed and legacy.kind == "task"
    assert legacy.artifacts and legacy.artifacts[0].parts[1].model_dump()["data"] == {"dish": "figs"}


@pytest.mark.parametrize(("record", "state"), [
    ({"status": "queued"}, "submitted"),
    ({"status": "queued", "started_at": "5"}, "working"),  # queued again after its decisions: it ran before
    ({"status": "started"}, "working"),
    ({"status": "waiting"}, "input-required"),
    ({"status": "failed", "error": "the model failed"}, "failed"),
    ({"status": "canceled", "error": "canceled"}, "canceled"),
])  # fmt: skip
def test_job_statuses_as_task_states(record: dict[str, str], state: str) -> None:
    view = translate.from_record("job_1", {"session_id": "s", **record})
    assert view.state == state
    assert ParseDict(view.render(V1), Task()).status.state == TaskState.Value(V1.state(state))
    assert v03.Task.model_validate(view.render(V03)).status.state.value == state


def test_a_waiting_job_shows_its_pending_calls_as_a_data_part() -> None:
    pending = [{"call_id": "c1", "kind": "approval", "tool_name": "bump", "args": {}},
               {"call_id": "c2", "kind": "approval", "tool_name": "http_get", "args": {"url": "u"}}]  # fmt: skip
    record = {"status": "waiting", "session_id": "s", "pending": json.dumps(pending),
              "decisions": json.dumps({"c1": {"approve": True}})}  # fmt: skip
    task = ParseDict(translate.from_record("job_1", record).render(V1), Task())
    assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    data = task.status.message.parts[1].data.struct_value
    assert [call["call_id"] for call in data["pending"]] == ["c1", "c2"]
    assert translate.undecided_calls(record) == {"c2"}
    assert translate.undecided_calls({**record, "decisions": "[]"}) == {"c1", "c2"}  # cjson's empty table


# ------------------------------------------------------------------------------------------------ streams


def _event(kind: EventType, **fields: Any) -> dict[str, Any]:
    return events.decode(events.encode(kind, **fields))


def _ids(*stored: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Events as the stream stores them: each with its id (`<ms>-<seq>`, ms since the epoch)."""
    return [(f"{1000 + index}-0", event) for index, event in enumerate(stored)]


def _fold(dialect: Dialect = V1) -> TaskFold:
    return translate.fold("job_1", {"session_id": "s", "message": "hi"}, _ids(
        _event(EventType.SESSION, session_id="s", agent_id="a", agent_name="A", job_id="job_1"),
        _event(EventType.STATUS, message="queued")), dialect)  # fmt: skip


def _parsed(results: list[dict[str, Any]]) -> list[StreamResponse]:
    return [parse_lenient(result, StreamResponse()) for result in results]


def test_a_turn_streams_as_status_and_artifact_updates() -> None:
    folded = _fold()
    assert parse_lenient(folded.snapshot(), StreamResponse()).task.status.state == TaskState.TASK_STATE_SUBMITTED
    out = folded.feed(_event(EventType.STATUS, message="started"))
    out += folded.feed(_event(EventType.DELTA, content="thinking"))
    out += folded.feed(_event(EventType.LLM_THOUGHT, thought="thinking", turn=1))  # a step, not the answer
    out += folded.feed(_event(EventType.TOOL_EXECUTION, tool_name="calculator", args={}))
    out += folded.feed(_event(EventType.DELTA, content="fi"))
    out += folded.feed(_event(EventType.STATUS, message="retrying", attempt=2))
    out += folded.feed(_event(EventType.DELTA, content="fi"))
    out += folded.feed(_event(EventType.DELTA, content="gs"))
    assert not folded.closed
    out += folded.feed(_event(EventType.RESPONSE, content="figs", intent="", session_id="s"))
    assert folded.closed and folded.feed(_event(EventType.DONE)) == []
    parsed = _parsed(out)
    kinds = [p.WhichOneof("payload") for p in parsed]
    assert kinds == ["status_update", "artifact_update", "artifact_update", "artifact_update", "artifact_update",
                     "artifact_update", "status_update"]  # fmt: skip
    chunks = [(p.artifact_update.artifact.parts[0].text, p.artifact_update.append) for p in parsed[1:6]]
    assert chunks == [("thinking", False), ("fi", False), ("fi", False), ("gs", True), ("figs", False)]
    assert parsed[5].artifact_update.last_chunk
    assert parsed[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED


def test_a_wait_closes_the_stream_and_a_new_snapshot_goes_on_after_the_decision() -> None:
    folded = _fold(V03)
    folded.feed(_event(EventType.STATUS, message="started"))
    folded.feed(_event(EventType.APPROVAL_REQUIRED, call_id="c1", tool_name="bump", args={}))
    [waiting] = folded.feed(_event(EventType.STATUS, message="waiting"))
    update = v03.TaskStatusUpdateEvent.model_validate(waiting)
    assert update.final and update.status.state == v03.TaskState.input_required and folded.closed
    assert update.status.message
    assert update.status.message.parts[1].model_dump()["data"]["pending"][0]["call_id"] == "c1"
    backlog = [_event(EventType.STATUS, message=m) for m in ("queued", "started")] + [
        _event(EventType.APPROVAL_REQUIRED, call_id="c1", tool_name="bump", args={}),
        _event(EventType.STATUS, message="waiting"),
        _event(EventType.STATUS, message="decided", call_id="c1")]  # fmt: skip
    later = translate.fold("job_1", {"session_id": "s"}, _ids(*backlog), V1)
    assert later.view.state == "input-required" and translate.stream_ends_at_snapshot(later)
    later.resumed()
    assert not translate.stream_ends_at_snapshot(later) and later.view.pending == []
    assert later.feed(_event(EventType.STATUS, message="resumed")) == []  # working already
    went_on = _ids(*backlog, _event(EventType.STATUS, message="resumed"), _event(EventType.RESPONSE, content="done"))
    ran_on = translate.fold("job_1", {"session_id": "s"}, went_on, V1)
    ran_on.resumed()  # the turn finished before its events were read: it stays completed
    assert ran_on.view.state == "completed" and translate.stream_ends_at_snapshot(ran_on)
    [canceled] = later.feed(_event(EventType.ERROR, message="canceled", code="canceled"))
    assert parse_lenient(canceled, StreamResponse()).status_update.status.state == TaskState.TASK_STATE_CANCELED


def test_a_failed_turn_ends_its_stream_failed_with_the_reason() -> None:
    folded = _fold(V03)
    [failed] = folded.feed(_event(EventType.ERROR, message="the model failed", code="model_failed"))
    update = v03.TaskStatusUpdateEvent.model_validate(failed)
    assert update.final and update.status.state == v03.TaskState.failed
    assert update.status.message and update.status.message.parts[0].model_dump()["text"] == "the model failed"


def test_a_snapshot_midway_holds_the_answer_so_far() -> None:
    backlog = [_event(EventType.STATUS, message="started"), _event(EventType.DELTA, content="fi")]
    folded = translate.fold("job_1", {"session_id": "s", "message": "hi"}, _ids(*backlog), V1)
    snapshot = parse_lenient(folded.snapshot(), StreamResponse()).task
    assert snapshot.status.state == TaskState.TASK_STATE_WORKING and snapshot.artifacts[0].parts[0].text == "fi"
    assert snapshot.status.timestamp.ToMilliseconds() == 1000  # when it started working, from the event's id
    [more] = _parsed(folded.feed(_event(EventType.DELTA, content="gs")))
    assert more.artifact_update.append  # after the snapshot's "fi"
    [done] = _parsed(folded.feed(_event(EventType.RESPONSE, content="figs"), "2500-3")[1:])
    assert done.status_update.status.timestamp.ToMilliseconds() == 2500
    assert TaskView("j", "s", "working").render(V1) == {"id": "j", "contextId": "s",
                                                        "status": {"state": "TASK_STATE_WORKING"}}  # fmt: skip


# ------------------------------------------------------------------------------------------ HTTP's own answers


def test_parley_errors_in_a2a_terms() -> None:
    from parley.api.adapters.a2a import routes
    from parley.shared.errors import Conflict, NotReady, TooManyRequests, Unauthorized

    unauthorized = routes._from_parley(Unauthorized("no key"))
    assert (unauthorized.http_status, unauthorized.code, unauthorized.headers) == (
        401, -32600, {"WWW-Authenticate": "Bearer"})  # fmt: skip
    limited = routes._from_parley(TooManyRequests("slow down", retry_after_s=3))
    assert (limited.http_status, limited.code, limited.headers) == (429, -32603, {"Retry-After": "3"})
    assert limited.metadata == {"parley_code": "too_many_requests"}
    assert routes._from_parley(NotReady("stopping")).http_status == 503
    conflict = routes._from_parley(Conflict("session 's' belongs to another agent"))
    assert (conflict.http_status, conflict.code, conflict.metadata) == (200, -32602, {"parley_code": "conflict"})
    down = routes._store_down()
    assert (down.http_status, down.code, down.headers) == (503, -32603, {"Retry-After": "2"})
    response = routes._error(7, down, legacy=False)
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert json.loads(bytes(response.body))["error"]["data"][0]["metadata"] == {"parley_code": "redis_unavailable"}
