"""`parley chat` and approvals, without a service: the printed question, the decision posted while the stream
goes on, a call decided elsewhere, the flags, and no terminal to ask on (exit 7, the turn left waiting)."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest

from parley.cli import errors
from parley.cli.chat import run_turn
from parley.cli.errors import AwaitingApproval, exit_code
from parley.cli.main import approval_decider
from parley.cli.render import TurnPrinter, pretty_args
from parley.client import Event, Parley

ASK: dict[str, Any] = {"type": "approval_required", "call_id": "call_1", "tool_name": "http_get", "args": {"url": "https://a.b"}}
EVENTS: list[dict[str, Any]] = [
    {"type": "session", "job_id": "job_1", "session_id": "s1"},
    ASK,
    {"type": "status", "message": "waiting"},
    {"type": "status", "message": "resumed"},
    {"type": "tool_result", "call_id": "call_1", "tool_name": "http_get", "ok": True, "preview": "200 OK"},
    {"type": "delta", "content": "Fetched."},
    {"type": "response", "content": "Fetched.", "session_id": "s1"},
    {"type": "done"},
]


def sse(events: list[dict[str, Any]]) -> bytes:
    return "".join(f"id: 1-{n}\ndata: {json.dumps(e)}\n\n" for n, e in enumerate(events, 1)).encode()


class Service:
    """The chat stream answers `events`; approvals answer `decision_status` (202, or 409 decided elsewhere)."""

    def __init__(self, events: list[dict[str, Any]], decision_status: int = 202) -> None:
        self.events = events
        self.decision_status = decision_status
        self.decisions: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/chat/stream":
            return httpx.Response(200, content=sse(self.events), headers={"Content-Type": "text/event-stream"})
        assert request.url.path == "/api/v1/jobs/job_1/approvals", request.url.path
        body = json.loads(request.content)
        self.decisions.append(body)
        if self.decision_status == 409:
            return httpx.Response(409, json={"error": {"code": "conflict", "message": "call_1 was decided already"}})
        return httpx.Response(202, json={"job_id": "job_1", "call_id": body["call_id"], "approve": body["approve"],
                                         "status": "waiting"})  # fmt: skip

    def client(self) -> Parley:
        return Parley("http://parley.test", "k", http_client=httpx.Client(transport=httpx.MockTransport(self)))


def printer() -> tuple[TurnPrinter, list[str]]:
    lines: list[str] = []
    return TurnPrinter(lambda text, nl: lines.append(text + ("\n" if nl else "")),
                       lambda text: lines.append(f"<{text}>\n")), lines  # fmt: skip


def test_the_question_shows_the_tool_and_its_arguments() -> None:
    shown, lines = printer()
    shown.handle(Event(id="1-1", type="approval_required", data=ASK))
    assert "".join(lines) == ('<? http_get waits for your approval (call call_1), with:>\n'
                              '<    {\n      "url": "https://a.b"\n    }>\n')  # fmt: skip
    assert pretty_args('{"a": 1}') == '{\n  "a": 1\n}' and pretty_args("not json") == "not json"
    assert pretty_args({"x": "y" * 5000}).endswith("…") and len(pretty_args({"x": "y" * 5000})) == 2000


def test_the_decision_is_posted_and_the_stream_goes_on_to_the_answer() -> None:
    service = Service(EVENTS)
    asked: list[tuple[str | None, str | None]] = []

    def decide(job_id: str | None, event: Event) -> tuple[bool, str | None]:
        asked.append((job_id, event.call_id))
        return False, "not that site"

    shown, lines = printer()
    with service.client() as client:
        run_turn(client, "s1", "fetch it", shown, decide)
    assert asked == [("job_1", "call_1")]
    assert service.decisions == [{"call_id": "call_1", "approve": False, "reason": "not that site"}]
    out = "".join(lines)
    assert "<[denied: http_get]>" in out and out.endswith("Fetched.\n") and shown.answer == "Fetched."


def test_a_call_decided_elsewhere_is_said_and_the_turn_goes_on() -> None:
    service = Service(EVENTS, decision_status=409)
    shown, lines = printer()
    with service.client() as client:
        run_turn(client, "s1", "fetch it", shown, lambda job_id, event: (True, None))
    assert service.decisions == [{"call_id": "call_1", "approve": True}]
    assert "<[call call_1 was not decided here: call_1 was decided already]>\n" in lines
    assert shown.answer == "Fetched."


def test_without_a_decider_the_question_is_only_shown() -> None:
    service = Service(EVENTS)
    shown, lines = printer()
    with service.client() as client:
        run_turn(client, "s1", "fetch it", shown)
    assert service.decisions == [] and any("waits for your approval" in line for line in lines)


def test_the_flags_decide_without_asking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # nothing to read: asking would fail
    event = Event(id="1-1", type="approval_required", data=ASK)
    assert approval_decider(True, False)("job_1", event) == (True, None)
    assert approval_decider(False, True)("job_1", event) == (False, "denied by --deny-all")


def test_no_terminal_leaves_the_turn_waiting_with_exit_code_7(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # piped input is not an answer
    service = Service(EVENTS)
    with service.client() as client, pytest.raises(AwaitingApproval) as raised:
        run_turn(client, "s1", "fetch it", printer()[0], approval_decider(False, False))
    assert service.decisions == []
    assert exit_code(raised.value) == errors.AWAITING_APPROVAL == 7
    assert "`parley jobs approve job_1 call_1`" in raised.value.message and "--approve-all" in raised.value.message


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("typed", "decision"), [
    ("y\n", (True, None)),
    ("n\nnot that site\n", (False, "not that site")),
    ("\n\n", (False, None)),  # Enter: the default is no, and no reason
])  # fmt: skip
def test_on_a_terminal_it_asks_run_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                      typed: str, decision: tuple[bool, str | None]) -> None:  # fmt: skip
    monkeypatch.setattr("sys.stdin", Terminal(typed))
    event = Event(id="1-1", type="approval_required", data=ASK)
    assert approval_decider(False, False)("job_1", event) == decision
    assert "Run it? [y/N]" in capsys.readouterr().err
